"""The code sandbox: each limit holds, in the mode in force and in the audit-hook fallback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import tts_graph.sandbox
from tts_graph.sandbox import host as sandbox
from tts_graph.sandbox import run_python, sandbox_mode


def _netns_guard() -> bool:
    return sandbox._unshare("--map-root-user", "--net") is not None


MODES = ["auto", "guard-netns", "guard-hook"]


@pytest.fixture(params=MODES)
def mode(request, monkeypatch):  # type: ignore[no-untyped-def]
    """``auto``: the mode the probe picks (namespaces here, as root); the guard fallback with
    a network namespace (``unshare -rn``) and with the socket audit hook only."""
    if request.param == "auto":
        sandbox_mode()
    elif request.param == "guard-netns":
        if not _netns_guard():
            pytest.skip("unprivileged network namespaces are not available")
        monkeypatch.setattr(sandbox, "_MODE", ("guard", True))
    else:
        monkeypatch.setattr(sandbox, "_MODE", ("guard", False))
    return sandbox._mode()[0]


namespaces_only = pytest.mark.skipif(
    "sandbox_mode() != 'namespaces'", reason="needs root and namespaces"
)


def test_mode_is_probed_once_and_documented() -> None:
    assert sandbox_mode() in ("namespaces", "guard")
    assert sandbox_mode() == sandbox_mode()
    if os.geteuid() == 0 and sandbox._unshare("--net", "--mount") is not None:
        assert sandbox_mode() == "namespaces"
    promises = tts_graph.sandbox.__doc__ or ""
    assert "namespaces" in promises and "guard" in promises


def test_passes_and_captures_output(mode: str) -> None:
    r = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)\n")
    assert (r.passed, r.reason) == (True, "passed")
    assert r.stdout == "out\n" and r.stderr == "err\n"


def test_failure_reports_the_exception(mode: str) -> None:
    r = run_python("raise ValueError('boom')\n")
    assert not r.passed
    assert r.reason == "exit 1: ValueError: boom"
    assert "Traceback" in r.stderr


def test_infinite_loop_is_killed_by_the_time_limit(mode: str) -> None:
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert (r.passed, r.reason) == (False, "timeout")
    assert elapsed < 3


def test_sleeping_code_is_killed_too() -> None:
    start = time.monotonic()
    r = run_python("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert r.reason == "timeout" and time.monotonic() - start < 3


def test_memory_bomb_fails_with_a_memory_error(mode: str) -> None:
    r = run_python("x = bytearray(2 * 1024**3)\nprint('allocated')\n", memory_mb=256)
    assert not r.passed
    assert r.reason == "memory limit"
    assert "MemoryError" in r.stderr and "allocated" not in r.stdout
    # a growing list hits the same wall
    r = run_python("x = []\nwhile True:\n    x.append(' ' * 10**6)\n", memory_mb=256)
    assert r.reason == "memory limit"


@pytest.fixture
def listener():  # type: ignore[no-untyped-def]
    """A real TCP server on 127.0.0.1, so a connect would succeed without the sandbox."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


CONNECT = textwrap.dedent("""
    import socket
    s = socket.socket()
    s.settimeout(3)
    s.connect(("127.0.0.1", {port}))
    print("connected")
""")


def test_socket_connect_to_loopback_fails(mode: str, listener: int) -> None:
    code = CONNECT.format(port=listener)
    # the premise: outside the sandbox the same code connects
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=20)
    assert plain.stdout.strip() == "connected"
    r = run_python(code)
    assert not r.passed
    assert "connected" not in r.stdout
    assert "Network is unreachable" in r.stderr or "network access is disabled" in r.stderr


@pytest.fixture
def open_dir():  # type: ignore[no-untyped-def]
    """A world-writable directory the sandbox user can reach (under /tmp, mode 0777)."""
    d = Path(tempfile.mkdtemp(prefix="tts-sbx-open-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_writes_outside_the_working_directory_fail(mode: str, open_dir: Path,
                                                   tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    targets = [open_dir / "escaped.txt", tmp_path / "escaped.txt", Path("/etc/tts-escaped")]
    if Path("/dev/shm").is_dir():
        targets.append(Path("/dev/shm/tts-escaped"))
    for target in targets:
        r = run_python(f"open({str(target)!r}, 'w').write('x')\n")
        assert not r.passed, target
        assert ("Read-only file system" in r.stderr or "Permission denied" in r.stderr
                or "outside the working directory" in r.stderr), r.stderr
        assert not target.exists(), target
    r = run_python(f"import os\nos.mkdir({str(open_dir / 'd')!r})\n")
    assert not r.passed and not (open_dir / "d").exists()


def test_the_working_directory_is_writable_and_thrown_away(mode: str) -> None:
    code = textwrap.dedent("""
        import os
        open("data.txt", "w").write("hello")
        os.mkdir("sub")
        open("sub/x", "w").write("y")
        print(os.getcwd())
        print(open("data.txt").read())
    """)
    r = run_python(code)
    assert r.passed, r.stderr
    cwd, content = r.stdout.split()
    assert content == "hello"
    assert not Path(cwd).exists()
    assert not Path(cwd).parent.exists()


def test_output_flood_is_capped(mode: str) -> None:
    start = time.monotonic()
    r = run_python("while True:\n    print('x' * 10000)\n", timeout_s=5)
    assert not r.passed
    assert r.reason in ("file size limit", "timeout")
    assert len(r.stdout) <= sandbox.MAX_OUTPUT
    assert time.monotonic() - start < 8


@namespaces_only
def test_namespaces_mode_runs_as_an_unprivileged_user() -> None:
    r = run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n")
    assert r.passed, r.stderr
    uid, gid = sandbox._nobody()  # type: ignore[misc]
    assert r.stdout.split()[:2] == [str(uid), str(gid)]
    # and cannot regain privileges or remount anything writable
    r = run_python("import os\nos.setuid(0)\n")
    assert not r.passed and "PermissionError" in r.reason


@namespaces_only
def test_namespaces_mode_kills_the_whole_process_tree() -> None:
    marker = f"{time.time_ns() % 10**6 + 1000}.25"
    code = textwrap.dedent(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()  # leaves the process group: only the PID namespace can catch it
            os.execv("/bin/sleep", ["sleep", "{marker}"])
        time.sleep(60)
    """)
    r = run_python(code, timeout_s=0.5)
    assert r.reason == "timeout"
    time.sleep(0.2)
    leftovers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd:
                leftovers.append(pid)
    assert leftovers == []


@namespaces_only
def test_namespaces_mode_limits_processes() -> None:
    code = textwrap.dedent("""
        import os, sys
        n = 0
        try:
            for _ in range(500):
                if os.fork() == 0:
                    import time; time.sleep(5); os._exit(0)
                n += 1
        except OSError:
            print("limited at", n)
            sys.stdout.flush()
            os._exit(0)
        print("not limited")
    """)
    r = run_python(code, timeout_s=5)
    assert "limited at" in r.stdout, (r.stdout, r.stderr)


@namespaces_only
def test_namespaces_mode_hides_the_interpreter_owners_home() -> None:
    # the interpreter must stay runnable for the sandbox user, wherever it is installed
    r = run_python("import sys, math, json, hashlib, collections\nprint(sys.version)\n")
    assert r.passed, r.stderr
    assert r.stdout.strip() == sys.version


HUMANEVAL_PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
HUMANEVAL_TEST = textwrap.dedent("""
    def check(candidate):
        assert candidate(2, 3) == 5
        assert candidate(-1, 1) == 0
""")


def test_humaneval_style_correct_passes_wrong_fails(mode: str) -> None:
    good = HUMANEVAL_PROMPT + "    return a + b\n" + HUMANEVAL_TEST + "\ncheck(add)\n"
    bad = HUMANEVAL_PROMPT + "    return a - b\n" + HUMANEVAL_TEST + "\ncheck(add)\n"
    assert run_python(good).passed
    r = run_python(bad)
    assert not r.passed and r.reason.startswith("exit 1: AssertionError")


def test_guard_mode_refuses_subprocesses(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sandbox, "_MODE", ("guard", False))
    r = run_python("import subprocess\nsubprocess.run(['true'])\n")
    assert not r.passed and "disabled" in r.reason
