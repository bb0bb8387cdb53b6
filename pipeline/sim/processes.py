"""The processes madpipe runs against ibsim: finding the tools, running them, and stopping them.

Every process is started through :func:`_spawn` and stopped by its pid (:func:`stop_process`:
SIGTERM, then SIGKILL); :func:`leftover_processes` names any still running, and whatever is left
at exit is stopped then. :class:`Ibsim` is the simulator itself, in remote mode on a base port
that :func:`free_base` finds free.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from madpipe.pipeline.sim.protocol import (
    IBSIM_MAX_CLIENTS,
    SIM_CTL,
    SIM_CTL_DISCONNECT,
    SimError,
    parse_sim_ctl,
    sim_ctl,
)

UMAD2SIM_ENV = "MADPIPE_UMAD2SIM"
UMAD2SIM_PATHS = (
    "/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so",
    "/usr/lib/aarch64-linux-gnu/umad2sim/libumad2sim.so",
    "/usr/lib64/umad2sim/libumad2sim.so",
    "/usr/lib/umad2sim/libumad2sim.so",
    "/usr/local/lib/umad2sim/libumad2sim.so",
)
INSTALL_HINT = "install the Debian packages ibsim-utils, opensm and infiniband-diags"
#: Where ibsim's example topologies are (Debian's ibsim-utils, then source installs).
IBSIM_EXAMPLE_DIRS = (
    "/usr/share/doc/ibsim-utils/net-examples",
    "/usr/share/doc/ibsim/net-examples",
    "/usr/local/share/doc/ibsim/net-examples",
)


# -- processes --------------------------------------------------------------------------------------

_started: dict[int, subprocess.Popen] = {}  # every process this module started and not yet reaped


def _spawn(argv: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
    _started[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen, grace: float = 2.0) -> int | None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL after ``grace`` seconds."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
    finally:
        if proc.poll() is not None:
            _started.pop(proc.pid, None)
    return proc.returncode


def leftover_processes() -> list[int]:
    """Pids of processes this module started that are still running (tests assert it is empty)."""
    return [pid for pid, proc in list(_started.items()) if proc.poll() is None]


@atexit.register
def _stop_all() -> None:
    for proc in list(_started.values()):
        stop_process(proc, grace=0.5)


def find_tool(name: str) -> str:
    """Path of ``name`` on PATH, /usr/sbin and /sbin included (opensm and the diags live there)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise SimError(f"{name} is not installed ({INSTALL_HINT})")
    return path


def find_umad2sim() -> str:
    """Path of libumad2sim.so: $MADPIPE_UMAD2SIM, else the usual package locations."""
    override = os.environ.get(UMAD2SIM_ENV)
    if override:
        if not os.path.exists(override):
            raise SimError(f"{UMAD2SIM_ENV}={override}: no such file")
        return override
    for path in UMAD2SIM_PATHS:
        if os.path.exists(path):
            return path
    raise SimError(f"libumad2sim.so is not installed ({INSTALL_HINT}; or set {UMAD2SIM_ENV})")


def find_topology(name: str | os.PathLike) -> str:
    """The topology file ``name`` names: a path, or a bare name of ibsim's examples (``net.2sw2path4hca``)."""
    path = os.fspath(name)
    if os.path.isfile(path):
        return path
    if os.sep not in path:
        for folder in IBSIM_EXAMPLE_DIRS:
            if os.path.isfile(os.path.join(folder, path)):
                return os.path.join(folder, path)
        examples = next((d for d in IBSIM_EXAMPLE_DIRS if os.path.isdir(d)), None)
        if examples is not None:
            names = sorted(n for n in os.listdir(examples) if n.startswith("net"))
            raise SimError(f"{path}: no such topology file, nor an example of ibsim's in {examples} "
                           f"({', '.join(names)})")
    raise SimError(f"{path}: no such topology file")


@dataclass
class ToolRun:
    """One tool run against the simulator: what ran, how it ended, what it printed."""

    name: str
    argv: list[str]
    returncode: int
    output: str
    start_ns: int
    end_ns: int
    errors: list[str] = field(default_factory=list)  # error lines of the tool's log (opensm)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def read_log(path: str) -> str:
    """The text of a log file a tool wrote, or "" when there is none."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def tail_lines(text: str, lines: int = 4) -> str:
    """The last ``lines`` non-blank lines of a tool's output, on one line."""
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def run_tool(argv: list[str], env: dict, cwd: str, timeout: float, name: str | None = None,
             abort=None, preexec_fn=None) -> ToolRun:
    """Run one tool to its end; output merged.

    The tool is stopped by its pid after ``timeout`` seconds, or as soon as ``abort()`` returns
    a reason (the simulator it talks to is gone: umad2sim would wait for it forever).
    ``preexec_fn`` runs in the child before the tool (the fuzzer lifts its core-size limit there).
    """
    name = name or os.path.basename(argv[0])
    start = time.time_ns()
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile(mode="w+", dir=cwd, errors="replace") as log:
        proc = _spawn(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        try:
            while True:
                try:
                    proc.wait(min(0.1, max(deadline - time.monotonic(), 0.001)))
                    break
                except subprocess.TimeoutExpired:
                    why = abort() if abort is not None else None
                    if why is None and time.monotonic() < deadline:
                        continue
                    stop_process(proc)
                    log.seek(0)
                    why = why or f"did not finish within {timeout:g} s"
                    raise SimError(f"{name} {why} and was stopped: {tail_lines(log.read())}") from None
        finally:
            stop_process(proc)
        log.seek(0)
        output = log.read()
    return ToolRun(name, argv, proc.returncode, output, start, time.time_ns())


# -- ports ---------------------------------------------------------------------------------------

def busy_port(base: int, host: str) -> int | None:
    """The first UDP port of base..base+10 that cannot be bound on ``host``, or None if all are free."""
    for port in range(base, base + 1 + IBSIM_MAX_CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((host, port))
        except OSError:
            return port
        finally:
            s.close()
    return None


def free_base(start: int, host: str, avoid: range | None = None, tries: int = 200) -> int:
    """The first base port from ``start`` (in steps of 11) whose 11 ports are free on ``host``."""
    base = start
    for _ in range(tries):
        if base + IBSIM_MAX_CLIENTS >= 65536:
            break
        if (avoid is None or base > avoid[-1] or base + IBSIM_MAX_CLIENTS < avoid[0]) \
                and busy_port(base, host) is None:
            return base
        base += IBSIM_MAX_CLIENTS + 1
    raise SimError(f"no 11 free consecutive UDP ports from {start} on {host}")


# -- ibsim ---------------------------------------------------------------------------------------

class Ibsim:
    """An ibsim process in remote mode on ``base``..``base``+10, started and stopped by pid.

    ibsim binds its sockets to every address (INADDR_ANY: it has no option to bind one), so it is
    started from inside a private network (:class:`~madpipe.pipeline.sim.netns.PrivateNetwork`,
    as SimCapture and the fuzz target do); madpipe only ever talks to it on ``host``, loopback.
    """

    def __init__(self, topology: str | os.PathLike, base: int, workdir: str, host: str = "127.0.0.1"):
        self.topology = os.fspath(topology)
        self.base, self.host, self.workdir = base, host, workdir
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, "ibsim.log")

    def start(self, timeout: float = 10.0) -> None:
        if not os.path.isfile(self.topology):
            raise SimError(f"{self.topology}: no such topology file")
        busy = busy_port(self.base, "0.0.0.0")
        if busy is not None:
            raise SimError(f"UDP port {busy} is in use: ibsim needs {self.base}..{self.base + 10} "
                           "free (another ibsim?); choose another base port")
        with open(self.log_path, "w") as log:
            self.proc = _spawn([find_tool("ibsim"), "-s", "-n", "-r", "-l", str(self.base),
                                self.topology], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Ping the control socket until ibsim's loop answers (DISCONNECT of the empty slot 0)."""
        deadline = time.monotonic() + timeout
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.settimeout(0.05)
            s.connect((self.host, self.base))
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SimError(f"ibsim exited with status {self.proc.returncode} on "
                                   f"{self.topology}: {tail_lines(self.log())}")
                try:
                    s.send(sim_ctl(0, SIM_CTL_DISCONNECT))
                    if parse_sim_ctl(s.recv(SIM_CTL.size + 16)):
                        return
                except (TimeoutError, ConnectionRefusedError):
                    time.sleep(0.02)
        self.stop()
        raise SimError(f"ibsim did not answer on {self.host}:{self.base} within {timeout:g} s")

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

