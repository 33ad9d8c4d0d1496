"""The attack corpus: programs a careful reviewer runs against a code sandbox, each in both
modes, each asserting what the sandbox promises (see ``tts_graph.sandbox``).

An attack prints ``ESCAPED`` when what it tried worked; the test also checks the host side
(no file appeared, the server saw no connection, no process is left, the caller lives).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tts_graph.sandbox import GUARD_CANNOT_STOP, run_python, sandbox_mode
from tts_graph.sandbox import host as sandbox

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["namespaces", "guard", "guard-no-netns"])
def mode(request, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The two modes; guard also as on a kernel without unprivileged network namespaces."""
    if request.param == "namespaces":
        if sandbox_mode() != "namespaces":
            pytest.skip("namespaces mode needs root and namespaces")
        return "namespaces"
    netns = request.param == "guard" and sandbox._unshare("--map-root-user", "--net") is not None
    monkeypatch.setattr(sandbox, "_MODE", ("guard", netns))
    return "guard"


def _limit(mode: str, attack: str) -> None:
    """Skip an attack guard mode documents it cannot stop (the list is the documentation)."""
    if mode == "guard" and attack in GUARD_CANNOT_STOP:
        pytest.skip(f"guard mode cannot stop {attack}: {GUARD_CANNOT_STOP[attack]}")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable host directory (mode 0777): only the sandbox keeps the code out."""
    d = Path(tempfile.mkdtemp(prefix="tts-sbx-attack-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    d.rmdir()


def _escaped(r: sandbox.SandboxResult) -> bool:
    return "ESCAPED" in r.stdout


# ------------------------------------------------------------------------------------- sockets
def test_host_unix_socket_is_unreachable(mode: str, open_dir: Path) -> None:
    path = str(open_dir / "host.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(4)
    srv.settimeout(0.2)
    seen: list[bytes] = []

    def serve() -> None:
        end = time.monotonic() + 15
        while time.monotonic() < end and not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                seen.append(conn.recv(64))
                conn.sendall(b"HOST-ACK")

    stop = threading.Event()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        code = textwrap.dedent(f"""
            import socket
            for family, kind in ((socket.AF_UNIX, socket.SOCK_STREAM),
                                 (socket.AF_UNIX, socket.SOCK_DGRAM)):
                try:
                    s = socket.socket(family, kind)
                    s.settimeout(2)
                    s.connect({path!r})
                    s.sendall(b"hello")
                    if s.recv(16) == b"HOST-ACK":
                        print("ESCAPED")
                except OSError as exc:
                    print("refused", exc)
            try:  # a datagram pair can sendto() any path
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                a.sendto(b"hello", {path!r})
                print("ESCAPED")
            except OSError as exc:
                print("refused", exc)
        """)
        # the premise: outside the sandbox the same code reaches the server
        plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=20)
        assert "ESCAPED" in plain.stdout
        seen.clear()
        r = run_python(code)
        assert r.passed, r.stderr
        assert not _escaped(r) and seen == [], (r.stdout, seen)
        assert r.stdout.count("refused") == 3
    finally:
        stop.set()
        t.join()
        srv.close()


def test_tcp_to_loopback_is_unreachable(mode: str) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        r = run_python(textwrap.dedent(f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("ESCAPED")
        """))
        assert not r.passed and not _escaped(r)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


# ------------------------------------------------------------------ writes outside the work dir
WRITES = {
    "open": "open({t!r}, 'w').write('x')",
    "os.rename": "open('f', 'w').write('x')\nimport os\nos.rename('f', {t!r})",
    "sqlite3": "import sqlite3\nc = sqlite3.connect({t!r})\nc.execute('create table t (x)')\n"
               "c.commit()",
    "shutil": "import shutil\nopen('f', 'w').write('x')\nshutil.copyfile('f', {t!r})",
    "shutil.move": "import shutil\nopen('f', 'w').write('x')\nshutil.move('f', {t!r})",
    "symlink": "import os\nos.symlink({t!r}, 'link')\nopen('link', 'w').write('x')",
    "/proc/self/fd": "import os\nfd = os.open({d!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
                     "open(f'/proc/self/fd/{{fd}}/escaped', 'w').write('x')",
    "dir_fd": "import os\nfd = os.open({d!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
              "os.close(os.open('escaped', os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
    "subprocess": "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo x > {t}'], "
                  "check=True)",
    "os.fork": "import os, sys\npid = os.fork()\nif pid == 0:\n"
               "    try:\n        open({t!r}, 'w').write('x')\n    finally:\n        os._exit(0)\n"
               "os.waitpid(pid, 0)\nif not os.path.exists({t!r}):\n    sys.exit(1)",
    "_posixsubprocess": "import _posixsubprocess, os\nr, w = os.pipe()\n"
                        "pid = _posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'echo x > {t}'], "
                        "[b'/bin/sh'], True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, "
                        "True, False, -1, None, None, None, -1, None, False)\n"
                        "os.close(w)\n_, status = os.waitpid(pid, 0)\n"
                        "assert os.waitstatus_to_exitcode(status) == 0",
    "ctypes": "import ctypes\nlibc = ctypes.CDLL(None)\n"
              "assert libc.creat({t!r}.encode(), 0o644) >= 0",
}


@pytest.mark.parametrize("attack", list(WRITES))
def test_writes_outside_the_working_directory_fail(mode: str, attack: str,
                                                   open_dir: Path) -> None:
    _limit(mode, attack)
    target = open_dir / "escaped"
    code = WRITES[attack].format(t=str(target), d=str(open_dir)) + "\nprint('ESCAPED')\n"
    r = run_python(code)
    assert "TypeError" not in r.stderr, r.stderr  # the attack itself must be well formed
    assert not r.passed and not _escaped(r), (r.reason, r.stdout)
    assert list(open_dir.iterdir()) == [], r.stderr


# ------------------------------------------------------------------------------ resource bombs
def test_memory_bomb(mode: str) -> None:
    r = run_python("x = bytearray(8 * 1024**3)\nprint('ESCAPED')\n", memory_mb=256)
    assert (r.passed, r.reason) == (False, "memory limit") and not _escaped(r)


def test_cpu_bomb(mode: str) -> None:
    start = time.monotonic()
    r = run_python("import threading\n"
                   "def spin():\n    while True:\n        pass\n"
                   "for _ in range(4):\n    threading.Thread(target=spin).start()\n",
                   timeout_s=1)
    assert not r.passed and r.reason in ("timeout", "cpu time limit")
    assert time.monotonic() - start < 5


def _leftovers(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return found


def _marker() -> str:
    return f"{time.time_ns() % 10**7 + 1000}.{os.getpid() % 97 + 1}"


def test_fork_bomb(mode: str) -> None:
    marker = _marker()
    start = time.monotonic()
    r = run_python(textwrap.dedent(f"""
        import os
        n = 0
        for _ in range(100000):
            try:
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", "{marker}"])
                n += 1
            except OSError:
                pass
        if n > 200:
            print("ESCAPED", n)
    """), timeout_s=3)
    assert not _escaped(r), r.stdout
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    assert _leftovers(marker) == []


def test_a_child_does_not_outlive_the_sandbox(mode: str) -> None:
    marker = _marker()
    r = run_python(textwrap.dedent(f"""
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        print("parent done")
    """))
    time.sleep(0.3)
    assert _leftovers(marker) == [], r


def test_killing_the_parent_or_the_caller_fails(mode: str) -> None:
    """Run from a helper process, so a successful attack kills the helper, not pytest."""
    attack = textwrap.dedent("""
        import os, signal, sys
        for pid in {{os.getppid(), int(sys.argv[1]) if len(sys.argv) > 1 else 0, CALLER}}:
            if pid > 1:
                for how in ("kill", "pidfd"):
                    try:
                        if how == "kill":
                            os.kill(pid, signal.SIGKILL)
                        else:
                            signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)
                        print("ESCAPED", how, pid)
                    except OSError as exc:
                        print("refused", how, pid, exc)
    """)
    helper = textwrap.dedent(f"""
        import json, os, sys
        from tts_graph.sandbox import host as sandbox
        sandbox._MODE = {sandbox._mode()!r}
        r = sandbox.run_python({attack!r}.replace("CALLER", str(os.getpid())))
        print(json.dumps(r.__dict__))
    """)
    proc = subprocess.run([sys.executable, "-c", helper], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, (proc.returncode, proc.stderr)  # the caller lives
    r = json.loads(proc.stdout)
    assert "ESCAPED" not in r["stdout"], r


def test_huge_stdout_is_capped(mode: str) -> None:
    start = time.monotonic()
    r = run_python("import sys\nsys.stdout.write('x' * 200_000_000)\nprint('ESCAPED')\n",
                   memory_mb=1024, timeout_s=5)
    assert not r.passed and r.reason in ("file size limit", "timeout"), r.reason
    assert len(r.stdout) <= sandbox.MAX_OUTPUT and not _escaped(r)
    assert time.monotonic() - start < 8


def test_the_callers_environment_is_not_readable(mode: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _limit(mode, "the caller's environment")
    secret = f"tts-secret-{time.time_ns()}"
    monkeypatch.setenv("TTS_SANDBOX_TEST_SECRET", secret)
    r = run_python(textwrap.dedent(f"""
        import os
        found = "{secret[:11]}" + "{secret[11:]}" in repr(dict(os.environ))
        for pid in os.listdir("/proc"):
            try:
                if "{secret[:11]}".encode() + b"{secret[11:]}" in open(
                        f"/proc/{{pid}}/environ", "rb").read():
                    found = True
            except OSError:
                pass
        print("ESCAPED" if found else "clean")
    """))
    assert r.passed, r.stderr
    assert r.stdout.strip() == "clean"


def test_ordinary_code_still_runs(mode: str) -> None:
    """The filters leave what solutions use: threads, asyncio (a stream socketpair inside),
    files in the working directory, /dev/null."""
    r = run_python(textwrap.dedent("""
        import asyncio, concurrent.futures, os, sqlite3
        async def main():
            await asyncio.sleep(0)
            return 7
        assert asyncio.run(main()) == 7
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            assert sum(ex.map(abs, range(-5, 5))) == 25
        sqlite3.connect("local.db").execute("create table t (x)")
        open(os.devnull, "w").write("x")
        print("ok")
    """))
    assert (r.passed, r.stdout) == (True, "ok\n"), r.stderr
