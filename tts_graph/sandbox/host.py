"""The host side of the sandbox: picks the mode once per process, starts the child
(``tts_graph.sandbox.child``) with the limits and mounts of that mode, kills it on timeout
and turns its exit into a verdict. What each mode promises: ``tts_graph.sandbox``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .child import BOOTSTRAP, GUARD

MAX_OUTPUT = 20_000
FSIZE_MB = 16
NPROC = 64
SANDBOX_USER = "nobody"
# What guard mode does not stop even where the kernel has Landlock and seccomp (the attack
# corpus in the tests skips exactly these in guard mode); namespaces mode stops them all.
GUARD_CANNOT_STOP = {
    "the caller's environment": "the code runs as the caller's user, so it may read "
                                "/proc/<pid>/environ of the caller's processes, and any file "
                                "that user may read",
}
MASKED_DIRS = ("/run", "/var/run", "/var/tmp", "/dev/shm", "/run/user", "/var/lib/docker")


#: the child's exit status when it could not set the sandbox up (``child.die``)
SETUP_FAILED = 97


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    reason: str
    stdout: str
    stderr: str

    @property
    def setup_failed(self) -> bool:
        """The sandbox itself could not be set up: the code never ran (an infrastructure
        failure, not a verdict on the code)."""
        return self.reason.startswith("sandbox setup failed")


# ------------------------------------------------------------------------------ mode selection
_MODE: tuple[str, bool] | None = None
_MODE_LOCK = threading.Lock()


def _nobody() -> tuple[int, int] | None:
    try:
        import pwd

        pw = pwd.getpwnam(SANDBOX_USER)
    except (ImportError, KeyError):
        return None
    return pw.pw_uid, pw.pw_gid


def _unshare(*flags: str) -> list[str] | None:
    exe = shutil.which("unshare")
    if exe is None:
        return None
    cmd = [exe, *flags, "--"]
    try:
        ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None
    return cmd if ok else None


def _probe() -> tuple[str, bool]:
    """(mode, network namespace in force)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0 and _nobody() is not None:
        cmd = _unshare("--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
        if cmd is not None:
            result = _run(_PROBE_PROGRAM, "namespaces", timeout_s=20, memory_mb=512,
                          disk_mb=1, prefix=cmd)
            if result.passed:
                return "namespaces", True
    return "guard", _unshare("--map-root-user", "--net") is not None


_PROBE_PROGRAM = "import socket\nprint('ok')\n"


def sandbox_mode() -> str:
    """``"namespaces"`` or ``"guard"`` (see the module docstring), probed once."""
    return _mode()[0]


def _mode() -> tuple[str, bool]:
    global _MODE
    with _MODE_LOCK:
        if _MODE is None:
            forced = os.environ.get("TTS_GRAPH_SANDBOX_MODE")
            if forced == "guard":
                _MODE = ("guard", _unshare("--map-root-user", "--net") is not None)
            else:
                _MODE = _probe()
        return _MODE


# ------------------------------------------------------------------------------------- running
def run_python(code: str, *, timeout_s: float = 10, memory_mb: int = 512,
               disk_mb: int = 64) -> SandboxResult:
    """Run ``code`` as a script in the sandbox; ``passed`` when it exits 0 in time.

    ``reason`` is ``"passed"``, ``"timeout"``, ``"memory limit"``, ``"cpu time limit"``,
    ``"file size limit"`` or ``"exit N: <last line of stderr>"``.
    """
    mode, netns = _mode()
    if mode == "namespaces":
        prefix = _unshare("--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
    else:
        prefix = _unshare("--map-root-user", "--net") if netns else []
    return _run(code, mode, timeout_s=timeout_s, memory_mb=memory_mb, disk_mb=disk_mb,
                prefix=prefix or [], no_net_guard=not netns)


def _run(code: str, mode: str, *, timeout_s: float, memory_mb: int, disk_mb: int,
         prefix: list[str], no_net_guard: bool = False) -> SandboxResult:
    host = Path(tempfile.mkdtemp(prefix="tts-sandbox-"))
    try:
        host.chmod(0o711)  # the sandbox user must traverse it to reach its working directory
        wd = host / "work"
        wd.mkdir()
        (host / "stage").mkdir(mode=0o700)
        (wd / "main.py").write_text(code, encoding="utf-8")
        uid, gid = _nobody() or (-1, -1)
        limits = {
            "RLIMIT_AS": memory_mb * 1024 * 1024,
            "RLIMIT_CPU": math.ceil(timeout_s) + 1,
            "RLIMIT_FSIZE": FSIZE_MB * 1024 * 1024,
            "RLIMIT_CORE": 0,
        }
        if mode == "namespaces":
            limits["RLIMIT_NPROC"] = NPROC
        cfg = {
            "mode": mode,
            "wd": str(wd),
            "stage": str(host / "stage"),
            "uid": uid,
            "gid": gid,
            "disk_mb": disk_mb,
            "limits": limits,
            "reach": [sys.executable, os.path.dirname(sys.executable), sys.prefix,
                      sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],
            "guard": GUARD.format(no_net=no_net_guard),
            "netns": not no_net_guard,
            "mask": list(MASKED_DIRS),
        }
        argv = [*prefix, sys.executable, "-I", "-c", BOOTSTRAP, json.dumps(cfg)]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=host, start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
            timed_out = False
            try:
                proc.wait(timeout=timeout_s + 0.5)  # + the bootstrap's start-up
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
            stdout, stderr = _tail(out), _tail(err)
        return SandboxResult(*_verdict(proc.returncode, timed_out, stderr), stdout, stderr)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.wait()


def _tail(f) -> str:  # type: ignore[no-untyped-def]
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - MAX_OUTPUT * 4))
    return f.read().decode("utf-8", "replace")[-MAX_OUTPUT:]


def _verdict(rc: int | None, timed_out: bool, stderr: str) -> tuple[bool, str]:
    if timed_out:
        return False, "timeout"
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if rc == 0:
        return True, "passed"
    if rc == SETUP_FAILED and last.startswith("sandbox setup failed"):
        return False, last
    if "MemoryError" in last or (rc == -signal.SIGKILL and "MemoryError" in stderr):
        return False, "memory limit"
    if rc == -signal.SIGXCPU:
        return False, "cpu time limit"
    if rc == -signal.SIGXFSZ or "File too large" in last:
        return False, "file size limit"
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return False, f"killed by {name}" + (f": {last}" if last else "")
    return False, f"exit {rc}" + (f": {last}" if last else "")
