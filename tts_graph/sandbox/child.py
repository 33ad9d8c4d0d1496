"""The child side of the sandbox: the code that runs in the sandboxed interpreter, before the
untrusted program, as source text.

The child is started as ``python -I``, in a fresh directory and often as another user, where
this package may not be importable; so what it runs is passed to it on the command line
(``-c``) rather than imported. ``BOOTSTRAP`` sets up the namespaces, mounts, limits, Landlock
and seccomp, then starts ``main.py`` (or, in the ``guard`` mode, ``GUARD``, which installs an
audit hook and then runs ``main.py``). ``tts_graph.sandbox.host`` starts it and reads the
verdict.
"""

# ------------------------------------------------------------------------------ the bootstrap
# Runs as ``python -I -c BOOTSTRAP CONFIG_JSON`` (as root inside the new namespaces in the
# ``namespaces`` mode), sets everything up, then execs the interpreter on main.py.
BOOTSTRAP = r"""
import ctypes, json, os, platform, resource, signal, stat, struct, sys
cfg = json.loads(sys.argv[1])
wd = cfg["wd"]
libc = ctypes.CDLL(None, use_errno=True)

def die(msg):
    os.write(2, ("sandbox setup failed: " + msg + "\n").encode())
    os._exit(97)

# seccomp: a filter on the socket() syscall refuses AF_UNIX wherever its socket file lives
# (a list of masked directories can never know them all), and io_uring, which could make a
# socket past it. guard mode also refuses process creation (fork, vfork, clone without
# CLONE_THREAD: threads still work) and, without a network namespace, IP sockets.
# arch: (AUDIT_ARCH, socket, socketpair, clone, fork, vfork)
_SYS = {"x86_64": (0xC000003E, 41, 53, 56, 57, 58), "aarch64": (0xC00000B7, 198, 199, 220)}

def seccomp(allow_inet, deny_fork):
    arch = _SYS.get(platform.machine())
    if arch is None:
        return "no seccomp filter for " + platform.machine()
    audit, nr_socket, nr_pair, nr_clone, *nr_forks = arch
    LD, JEQ, JGE, JSET, AND, RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
    ALLOW, KILL, EPERM, ENOSYS = 0x7FFF0000, 0x80000000, 0x50001, 0x50026
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, audit), (RET, 0, 0, KILL), (LD, 0, 0, 0)]
    if audit == 0xC000003E:  # the x32 ABI's numbers would slip past the checks below
        prog += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, EPERM)]
    for nr in (425, 426, 427):  # io_uring_setup, _enter, _register
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    sock = [(LD, 0, 0, 16)]
    if allow_inet:  # harmless inside an empty network namespace
        sock += [(JEQ, 0, 1, 2), (RET, 0, 0, ALLOW), (JEQ, 0, 1, 10), (RET, 0, 0, ALLOW)]
    sock += [(RET, 0, 0, EPERM)]
    prog += [(JEQ, 0, len(sock), nr_socket), *sock]
    # a connected stream pair cannot reach anything else; a datagram one could sendto() a path
    pair = [(LD, 0, 0, 16), (JEQ, 0, 4, 1), (LD, 0, 0, 24), (AND, 0, 0, 0xF),
            (JEQ, 0, 1, 1), (RET, 0, 0, ALLOW), (RET, 0, 0, EPERM)]
    prog += [(JEQ, 0, len(pair), nr_pair), *pair]
    if deny_fork:
        clone = [(LD, 0, 0, 16), (JSET, 0, 1, 0x10000), (RET, 0, 0, ALLOW), (RET, 0, 0, EPERM)]
        prog += [(JEQ, 0, len(clone), nr_clone), *clone]
        prog += [(JEQ, 0, 1, 435), (RET, 0, 0, ENOSYS)]  # clone3: libc falls back to clone
        for nr in nr_forks:
            prog += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    prog += [(RET, 0, 0, ALLOW)]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Prog(len(prog), ctypes.addressof(buf))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: needed without privileges
        return "no_new_privs: " + os.strerror(ctypes.get_errno())
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        return "seccomp: " + os.strerror(ctypes.get_errno())
    return None

# Landlock (guard mode): writes only beneath the working directory (and to /dev/null), no
# TCP bind/connect without a network namespace, no signals to processes outside the domain
# (the caller). Best effort: the kernel may not have it; the audit hook still guards.
def landlock(no_tcp):
    sc = {"x86_64": 444, "aarch64": 444}.get(platform.machine())
    if sc is None:
        return 0
    abi = libc.syscall(sc, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return 0
    write = 2 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048 | 4096  # write, remove, make *
    write |= 8192 if abi >= 2 else 0  # REFER (links and renames across directories)
    write |= 16384 if abi >= 3 else 0  # TRUNCATE
    net = 3 if abi >= 4 and no_tcp else 0  # BIND_TCP | CONNECT_TCP, no rule allows them
    scoped = 1 | 2 if abi >= 6 else 0  # abstract UNIX sockets, signals
    attr = struct.pack("QQQ", write, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = libc.syscall(sc, attr, size, 0)
    if fd < 0:
        return 0
    for path, rights in ((wd, write), ("/dev/null", 2 | (16384 if abi >= 3 else 0))):
        pfd = os.open(path, os.O_PATH)
        rule = struct.pack("=Qi", rights, pfd)
        ok = libc.syscall(sc + 1, fd, 1, rule, 0) == 0  # LANDLOCK_RULE_PATH_BENEATH
        os.close(pfd)
        if not ok:
            die("landlock rule: " + os.strerror(ctypes.get_errno()))
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(sc + 2, fd, 0) != 0:
        die("landlock: " + os.strerror(ctypes.get_errno()))
    os.close(fd)
    return abi

if cfg["mode"] == "namespaces":
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_char_p]
    RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    KEEP = {2: 2, 4: 4, 8: 8, 1024: 1024, 2048: 2048, 4096: 1 << 21}  # ST_* -> MS_*

    def mount(src, target, fstype, flags, data=None, *, must=True):
        enc = lambda s: s.encode() if isinstance(s, str) else s
        if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
            err = ctypes.get_errno()
            if must:
                die(f"mount {target}: {os.strerror(err)}")
            return err
        return 0

    mount(None, "/", None, REC | PRIVATE)
    code = open(os.path.join(wd, "main.py"), "rb").read()
    uid, gid = cfg["uid"], cfg["gid"]

    # the interpreter's directories must stay reachable for the sandbox user: cover each
    # directory it may not traverse with a tmpfs holding only what the interpreter needs
    def blocker(path):
        cur = "/"
        for part in path.strip("/").split("/"):
            if not part:
                continue
            st = os.stat(cur)
            if not st.st_mode & stat.S_IXOTH:
                return cur
            cur = os.path.join(cur, part)
        return None

    need = sorted({os.path.realpath(p) for p in cfg["reach"]})
    need = [p for p in need if not any(p != q and p.startswith(q + "/") for q in need)]
    plan = [(p, b) for p in need if (b := blocker(p)) is not None]
    stage = cfg["stage"]
    for i, (p, _) in enumerate(plan):
        os.mkdir(os.path.join(stage, str(i)))
        mount(p, os.path.join(stage, str(i)), None, BIND | REC)
    for b in sorted({b for _, b in plan}, key=len):
        mount("tmpfs", b, "tmpfs", NOSUID | NODEV, "mode=0755,size=64k")
    for i, (p, _) in enumerate(plan):
        os.makedirs(p, mode=0o755, exist_ok=True)
        mount(os.path.join(stage, str(i)), p, None, BIND | REC)

    # defence in depth behind the seccomp filter: where system sockets live (docker, systemd,
    # databases), the child sees fresh empty directories (made read-only below). /tmp stays
    # (read-only): the working directory, and perhaps the interpreter, live under it.
    keep = [wd, *need]
    for d in cfg["mask"]:
        if os.path.isdir(d) and not os.path.islink(d) and not any(
                k == d or k.startswith(d + "/") for k in keep):
            mount("tmpfs", d, "tmpfs", NOSUID | NODEV | NOEXEC, "mode=0755,size=4k")

    # the working directory: a fresh tmpfs owned by the sandbox user
    mount("tmpfs", wd, "tmpfs", NOSUID | NODEV,
          f"mode=0700,uid={uid},gid={gid},size={cfg['disk_mb']}m")
    wdfd = os.open(wd, os.O_RDONLY | os.O_DIRECTORY)
    with open(os.path.join(wd, "main.py"), "wb") as f:
        f.write(code)
    os.chown(os.path.join(wd, "main.py"), uid, gid)

    # every other mount read-only
    def unescape(s):
        return s.encode().decode("unicode_escape").encode("latin-1").decode()

    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(unescape(line.split()[4]))
    for mp in dict.fromkeys(points):
        if mp == wd:
            continue
        try:
            st = os.statvfs(mp)
        except OSError:
            continue
        if st.f_flag & 1:
            continue
        flags = REMOUNT | BIND | RDONLY
        for st_bit, ms_bit in KEEP.items():
            if st.f_flag & st_bit:
                flags |= ms_bit
        err = mount(None, mp, None, flags, must=False)
        if err and not (mp.startswith("/proc/") or mp.startswith("/sys/")):
            die(f"cannot make {mp} read-only: {os.strerror(err)}")

    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG, cleared by the uid change
    os.fchdir(wdfd)
    os.close(wdfd)
else:
    os.chdir(wd)

for name, value in cfg["limits"].items():
    lim = getattr(resource, name)
    try:
        resource.setrlimit(lim, (value, value))
    except (ValueError, OSError) as exc:
        if name != "RLIMIT_NPROC":
            die(f"{name}: {exc}")
env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.getcwd(), "TMPDIR": os.getcwd()}
if cfg["mode"] == "namespaces":
    why = seccomp(allow_inet=True, deny_fork=False)
    if why:  # without the filter a host UNIX socket is one connect() away: no namespaces mode
        die(why)
    os.execve(sys.executable, [sys.executable, "-I", "-B", "main.py"], env)
landlock(no_tcp=not cfg["netns"])
seccomp(allow_inet=cfg["netns"], deny_fork=True)  # best effort here, like the audit hook
os.execve(sys.executable, [sys.executable, "-I", "-B", "-c", cfg["guard"]], env)
"""

# Installed before the code in the ``guard`` mode: refuse writes outside the working
# directory, sockets (unless a network namespace is in force), subprocesses and ctypes.
GUARD = r"""
import os, runpy, sys
_wd = os.path.realpath(os.getcwd())
_no_net = {no_net}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_AF_UNIX = 1

def _inside(path):
    if isinstance(path, int):
        return True
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == _wd or p.startswith(_wd + os.sep) or p == os.devnull

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & _WRITE)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory: {{path}}")
    elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.utime", "os.symlink", "os.link", "os.rename", "shutil.rmtree",
                   "shutil.move", "shutil.copyfile", "shutil.copytree"):
        paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
        for p in paths[:2] if event in ("os.rename", "os.link", "os.symlink") else paths[:1]:
            if not _inside(p):
                raise PermissionError(f"sandbox: {{event}} outside the working directory: {{p}}")
    elif event == "sqlite3.connect" and args[0] not in (":memory:", b":memory:", ""):
        if not _inside(args[0]):
            raise PermissionError(f"sandbox: sqlite3 outside the working directory: {{args[0]}}")
    elif event in ("os.kill", "os.killpg") and args[0] != os.getpid():
        raise PermissionError(f"sandbox: {{event}} is disabled")
    elif _no_net and event == "socket.__new__" and args[1] != _AF_UNIX:
        raise PermissionError("sandbox: network access is disabled")
    elif _no_net and event in ("socket.connect", "socket.bind", "socket.sendto",
                               "socket.sendmsg"):  # a UNIX pair (asyncio's) stays usable
        raise PermissionError("sandbox: network access is disabled")
    elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "os.forkpty", "ctypes.dlopen", "ctypes.dlsym"):
        raise PermissionError(f"sandbox: {{event}} is disabled")

sys.addaudithook(_hook)
del _hook
runpy.run_path("main.py", run_name="__main__")
"""
