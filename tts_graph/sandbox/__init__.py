"""Run untrusted Python (a model's HumanEval completion) in a sandboxed subprocess.

``run_python(code)`` writes ``code`` to ``main.py`` in a throwaway directory and runs
``sys.executable -I main.py`` there, with a wall-clock timeout that kills the whole process
tree. Two modes; ``sandbox_mode()`` says which one is in force (chosen once per process):

``namespaces`` (running as root, with ``unshare`` and mounts permitted; what these machines use)
    The child runs under ``unshare --net --mount --pid --fork --kill-child --mount-proc``:

    - **no network**: a new network namespace holds only a down loopback device, so every
      connect, to 127.0.0.1 too, fails;
    - **no host UNIX socket**: a network namespace does not cover sockets that live as files
      (PostgreSQL's in /tmp, Docker's and systemd's in /run), and read-only mounts do not stop
      ``connect()``. A seccomp filter refuses ``socket(AF_UNIX)``, datagram ``socketpair``
      (a stream pair is connected and reaches nothing else) and io_uring (which could create a
      socket past the filter): robust wherever a socket file lives, which a list of masked
      directories cannot be. ``/run``, ``/var/run``, ``/var/tmp`` and ``/dev/shm`` are also
      covered by empty read-only mounts. Without a seccomp filter for the machine's
      architecture (x86-64 and arm64 have one) this mode is not used;
    - **writes outside the working directory refused**: in the new mount namespace the working
      directory is a fresh tmpfs (``disk_mb`` big, gone when the child exits) and *every* other
      mount is remounted read-only, ``/tmp``, ``/var/tmp`` and ``/dev/shm`` included; then the
      child drops to the ``nobody`` user and group (no supplementary groups), so it can neither
      remount anything writable again nor write what ``nobody`` may not write. Directories on
      the interpreter's path that ``nobody`` may not traverse (root's home, when Python lives
      under it, as with pyenv) are covered by a read-only tmpfs that shows only the
      interpreter's own tree, which also hides the rest of them from the code;
    - **the process tree dies with it**: the child is PID 1 of a new PID namespace, so when it
      is killed (timeout) every process it started dies too, even one that left the process
      group;
    - **resource limits** set in the child before it runs the code: ``RLIMIT_AS`` (memory),
      ``RLIMIT_CPU`` (timeout + 1 s), ``RLIMIT_FSIZE`` (any one file, and the captured
      stdout/stderr), ``RLIMIT_NPROC`` (processes of ``nobody``), ``RLIMIT_CORE`` = 0.

``guard`` (not root, or namespaces not permitted)
    The same resource limits, a throwaway working directory and a process-group kill; no network
    through ``unshare -rn`` (an unprivileged user + network namespace) when the kernel allows
    it. Where the kernel has them: Landlock lets the code write only beneath the working
    directory (and to ``/dev/null``), refuses TCP bind/connect when there is no network
    namespace, and (ABI 6+) refuses signals to processes outside the sandbox; seccomp refuses
    AF_UNIX sockets, io_uring, fork/vfork/clone (threads still work) and, without a network
    namespace, IP sockets. An audit hook installed before the code runs gives clear errors for
    writes outside the working directory (``open``, ``os.*``, ``shutil``, ``sqlite3``), sockets,
    subprocesses, ``os.kill`` of another process and ``ctypes``.
    What guard mode **cannot** stop: reading whatever the calling user may read (their home
    directory, keys, the caller's environment through ``/proc/<pid>/environ``, since the code
    runs as the caller's user and sees its processes); and, on a kernel without Landlock or
    seccomp, whatever gets around the audit hook (``os.open(..., dir_fd=...)``, internals that
    raise no audit event), which is **not a security boundary**. ``tts-graph eval --scorer code``
    refuses to run in this mode unless ``--accept-weak-sandbox`` is given.

``TTS_GRAPH_SANDBOX_MODE=guard`` forces the ``guard`` mode (for tests of it).

The temporary directory is deleted afterwards in both modes. Output is captured in files, not
pipes, so a program that prints without end is stopped by ``RLIMIT_FSIZE`` instead of filling
the caller's memory; ``SandboxResult`` keeps the last ``MAX_OUTPUT`` characters of each.
"""

from .host import GUARD_CANNOT_STOP, MAX_OUTPUT, SandboxResult, run_python, sandbox_mode

__all__ = ["GUARD_CANNOT_STOP", "MAX_OUTPUT", "SandboxResult", "run_python", "sandbox_mode"]
