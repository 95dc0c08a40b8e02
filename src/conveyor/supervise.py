"""The supervisor of one command job: a tiny process between the worker and the command.

Run as ``python -I -S -c SOURCE FD`` (no site, no conveyor import: starts in ~15 ms); it reads
its configuration (argv, environment) as JSON from pipe FD, so nothing of it shows in ``ps``.
The worker starts it in a new session, so it leads the process group the command and all of its
descendants live in. It:

- asks the kernel for SIGTERM when the worker dies (``PR_SET_PDEATHSIG``), even by ``kill -9``;
- forks the command with its resource limits (``RLIMIT_AS``, ``RLIMIT_CPU``) and execs it;
- on SIGTERM (from the worker on cancel/timeout/shutdown, or from the kernel), sends SIGTERM to
  the whole group, then SIGKILL after the grace period;
- when the command exits, writes how it ended (``{"exit": n}``, ``{"signal": n}`` or
  ``{"exec_error": ...}``) to the status pipe, kills the descendants that left the group
  (``setsid``, daemons: as a child subreaper it inherits them when their parents exit), then
  SIGKILLs whatever is left of the group, so no background grandchild outlives the job.

The command's stdin/stdout/stderr are the worker's pipes, inherited untouched.
"""

SOURCE = r"""
import ctypes, json, os, signal, sys, time
def read_all(fd):
    data = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data
cfg = json.loads(read_all(int(sys.argv[1])))
status = cfg["status_fd"]
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    _libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned descendants come back to us
except Exception:
    pass
def sweep():
    # Descendants that left the group (setsid, daemonize) were reparented to us: kill them.
    me = str(os.getpid())
    for _ in range(50):
        found = False
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/" + d + "/stat") as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == me:
                found = True
                try:
                    os.kill(int(d), signal.SIGKILL)
                    os.waitpid(int(d), 0)
                except OSError:
                    pass
        if not found:
            return
if os.getppid() != cfg["parent"]:
    os.killpg(0, signal.SIGKILL)
grace = cfg["grace"]
state = {"child": 0, "deadline": None}
def on_term(signum, frame):
    if state["deadline"] is None:
        state["deadline"] = time.monotonic() + grace
        signal.signal(signal.SIGALRM, lambda s, f: os.killpg(0, signal.SIGKILL))
        signal.setitimer(signal.ITIMER_REAL, max(grace, 0.001))
        try:
            os.killpg(0, signal.SIGTERM)
        except ProcessLookupError:
            pass
signal.signal(signal.SIGTERM, signal.SIG_IGN)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.close(status)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import resource
    for name, value in (("RLIMIT_AS", cfg["memory"]), ("RLIMIT_CPU", cfg["cpu"])):
        if value:
            lim = getattr(resource, name)
            resource.setrlimit(lim, (value, value) if name == "RLIMIT_AS" else (value, value + 1))
    try:
        if cfg["cwd"]:
            os.chdir(cfg["cwd"])
        os.execvpe(cfg["argv"][0], cfg["argv"], cfg["env"])
    except OSError as exc:
        os.write(w, json.dumps({"exec_error": exc.strerror or str(exc), "errno": exc.errno,
                                "path": cfg["argv"][0]}).encode())
    os._exit(127)
os.close(w)
signal.signal(signal.SIGTERM, on_term)
_, st = os.waitpid(pid, 0)
failed = read_all(r)
if failed:
    out = json.loads(failed)
elif os.WIFSIGNALED(st):
    out = {"signal": os.WTERMSIG(st)}
else:
    out = {"exit": os.WEXITSTATUS(st)}
if state["deadline"] is not None:
    out["terminated"] = True
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(status, json.dumps(out).encode())
try:
    sweep()
except Exception:
    pass
os.close(status)
os.killpg(0, signal.SIGKILL)
"""
