"""A warm start for the test suite's MPI ranks: one process imports torch once and forks a rank per launch.

Every rank a test launches is still a real process started by ``mpiexec`` (``python tests/zygote.py ARGS``, the
*client*, with the launcher's environment, PMI descriptor and stdio). The client hands that environment, its open
file descriptors, its directory and ``ARGS`` to the *server* (``serve``: torch already imported), which forks a
child that becomes the rank: it takes the client's descriptors at their numbers and its environment, then runs
``ARGS`` as ``python ARGS`` would (a script, or ``-m MODULE``). The client forwards the signals it gets to that
child and ends as the child ended (same exit code, same signal); a client killed outright takes the child with
it. Without a server (``RINGX_TEST_ZYGOTE`` unset or not answering) the client simply becomes ``python ARGS``.

Why: importing torch costs ~3 s of CPU per process on the 2-core machine, and the suite starts hundreds of ranks.

Not for signals sent from outside to a rank's pid (the client is what ``mpiexec`` sees; ``SIGSTOP`` stops the
client, not the rank): tests/reliability_probe.py's signal probes launch plain ``python``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

ENV = "RINGX_TEST_ZYGOTE"  # the server's socket path
CLIENT = str(Path(__file__).resolve())
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT)
_INT = struct.Struct("!i")


def wrap(args: list[str]) -> list[str]:
    """``python ARGS`` as a launch through the server when one runs (``mpirun.run(n, wrap(args))``)."""
    return [CLIENT, *args] if os.environ.get(ENV) else list(args)


# The server ------------------------------------------------------------------------------------------------


def start(sock: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server at ``sock`` (torch imported with ``env``: OMP_NUM_THREADS is read when torch loads) and wait
    until it listens."""
    proc = subprocess.Popen([sys.executable, CLIENT, "--serve", str(sock)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    end = time.monotonic() + 120
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise RuntimeError(f"the zygote did not start:\n{proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.05)
    return proc


# What the ranks import, once here: torch, and what torch imports only when first used (dynamo and the
# distributed packages, ~2 s more per rank), then the suite. Nothing here may start a thread or initialize MPI.
WARM_MORE = "RINGX_ZYGOTE_WARM"  # a launch's environment: more modules to import here before its fork
WARM = ("numpy", "torch", "torch.distributed", "torch._dynamo", "torch.distributed.fsdp", "torch.distributed.tensor",
        "mpi4py", "ringx", "ringx_suite.store", "ringx_drivers.driver", "ringx_drivers.drivers.attention",
        "ringx_drivers.drivers.step", "ringx_drivers.drivers.infer", "ringx_drivers.drivers.collectives")


def serve(path: str) -> int:
    import importlib
    import threading

    for name in WARM:
        importlib.import_module(name)
    if threading.active_count() > 1 or "mpi4py.MPI" in sys.modules:
        raise SystemExit(f"tests/zygote.py: importing {WARM} started a thread or MPI: forking from here is unsafe")

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(128)
    os.rename(path + ".tmp", path)  # exists only once it listens
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}  # child pid -> its client's connection
    while True:
        ready, _, _ = select.select([listener, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(children)
        if listener in ready:
            conn, _ = listener.accept()
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            _warm_more(request["env"].get(WARM_MORE, ""))
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for s in (listener, *children.values()):
                    s.close()
                for fd in (wake_r, wake_w):
                    os.close(fd)
                return _become_rank(conn, request, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            with contextlib.suppress(OSError):
                conn.sendall(_INT.pack(pid))


def _warm_more(names: str) -> None:
    """Modules a launch asks for (``RINGX_ZYGOTE_WARM``, comma-separated), imported here once and kept for later
    forks: what only some tests' ranks need (transformers: ~3 s per rank) and the other sessions should not pay."""
    import importlib
    import threading

    for name in filter(None, names.split(",")):
        if name not in sys.modules:
            importlib.import_module(name)
            if threading.active_count() > 1:
                raise SystemExit(f"tests/zygote.py: importing {name} started a thread: forking from here is unsafe")


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(_INT.pack(os.waitstatus_to_exitcode(status)))
            conn.close()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 250)
    while len(data) < 4 or len(data) < 4 + _INT.unpack(data[:4])[0]:
        more = conn.recv(1 << 20)
        if not more:
            raise ValueError("short request")
        data += more
    return json.loads(data[4:4 + _INT.unpack(data[:4])[0]]), list(fds)


def _become_rank(conn: socket.socket, request: dict, fds: list[int]) -> int:
    """In the forked child: take the client's descriptors, environment and directory, then run its ARGS."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn.close()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000) for fd in fds]  # out of the way of the targets
    for fd in fds:
        os.close(fd)
    for fd, (target, inheritable) in zip(high, request["fds"], strict=True):
        os.dup2(fd, target, inheritable=inheritable)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    _watch_client(request["pid"])
    _fresh_stdio()
    _exit_as_finalized()
    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    args = request["args"]
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        if args[0] == "-m":
            sys.path[:] = [request["cwd"], *extra, *request["site_path"]]
            sys.argv = args[1:]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.path[:] = [str(Path(args[0]).resolve().parent), *extra, *request["site_path"]]
            sys.argv = list(args)
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as e:
        return _exit_code(e.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 - what python does with an uncaught exception
        traceback.print_exc()
        return 1
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _exit_as_finalized() -> None:
    """A rank that finalized MPI and then ends with ``os._exit`` (the drivers' agreed stop, exit 2) tells the
    launcher itself. Cold, every rank leaves MPI_Finalize's barrier and exits within microseconds; warm, each
    client learns of its rank's end a few scheduler slices apart, and mpiexec kills the ranks still running when
    one ends unfinalized (exit 9 instead of 2)."""
    real_exit = os._exit

    def _exit(code: int) -> None:
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_finalized():
            _pmi_finalize()
        real_exit(code)

    os._exit = _exit


def _watch_client(pid: int) -> None:
    """Die with the client: what mpiexec kills is the client."""
    import threading

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="zygote-client-watch").start()


def _fresh_stdio() -> None:
    """sys.stdin/stdout/stderr on the descriptors just taken, buffered as python would buffer them there."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    enc = sys.stdout.encoding if sys.stdout else "utf-8"

    def stream(fd: int, errors: str, line: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=enc, errors=errors,
                                line_buffering=line or raw.isatty(), write_through=unbuffered)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=enc)
    sys.stdout = sys.__stdout__ = stream(1, "strict", False)
    sys.stderr = sys.__stderr__ = stream(2, "backslashreplace", True)


# The client ------------------------------------------------------------------------------------------------


def client(args: list[str]) -> int:
    path = os.environ.get(ENV)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError
        sock.connect(path)
    except OSError:  # no server: be the rank ourselves
        sock.close()
        os.execv(sys.executable, [sys.executable, *args])
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd != sock.fileno():
            with contextlib.suppress(OSError):
                fds.append((fd, os.get_inheritable(fd)))
    sent = [fd for fd, _ in fds]
    request = {"args": args, "env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid(), "fds": fds,
               # what python puts after a script's folder and PYTHONPATH: the standard library, site-packages
               "site_path": [p for p in sys.path[1:] if p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]}
    body = json.dumps(request).encode()
    socket.send_fds(sock, [_INT.pack(len(body)) + body], sent)
    child = _INT.unpack(_recv_exact(sock))[0]
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    try:
        status = _INT.unpack(_recv_exact(sock))[0]
    except ConnectionError:
        print("tests/zygote.py: the server went away", file=sys.stderr)
        return 1
    if status == 0:
        _pmi_finalize()
    if status < 0:  # killed by a signal: end the same way, as mpiexec would have seen the rank end
        if -status not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status
    os._exit(status)


def _pmi_finalize() -> None:
    """Tell the launcher this rank is done, as MPI_Finalize would have. The case workers end with os._exit(0) after
    their last barrier (a gloo teardown race); mpiexec kills every rank of a job when one ends without finalizing,
    and without this the ranks whose clients learn of their rank's end a moment later would be killed. A rank that
    finalized already gets a second, harmless request (PMI-1 wire protocol, as MPICH's hydra speaks it)."""
    fd = os.environ.get("PMI_FD", "")
    if not fd.isdigit():
        return
    with contextlib.suppress(OSError):
        os.write(int(fd), b"cmd=finalize\n")
        ready, _, _ = select.select([int(fd)], [], [], 5.0)
        if ready:
            os.read(int(fd), 1024)  # cmd=finalize_ack


def _recv_exact(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < _INT.size:
        more = sock.recv(_INT.size - len(data))
        if not more:
            raise ConnectionError("closed")
        data += more
    return data


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(sys.argv[2]))
    sys.exit(client(sys.argv[1:]))
