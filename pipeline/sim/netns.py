"""A private network namespace for a simulated fabric: only loopback, so nothing outside reaches it.

ibsim binds every UDP socket to INADDR_ANY (it has no option to bind one address): on the
machine's own network anyone who can reach the host could, while a capture runs, inject MADs into
the fabric (and into the capture) or crash ibsim. :class:`PrivateNetwork` moves the calling thread
into a fresh network namespace whose only interface is loopback (brought up here: a new
namespace's ``lo`` starts down). Sockets opened and processes started from that thread while it is
inside (ibsim, the relay, opensm, the diags) live there; on leaving, the thread goes back.

How the namespace is made: as root (CAP_SYS_ADMIN), ``unshare(CLONE_NEWNET)``; otherwise a user
namespace too (``unshare(CLONE_NEWUSER | CLONE_NEWNET)``, root mapped to the caller's uid, as
``unshare --user --net --map-root-user`` does), where the kernel allows it unprivileged. That one
needs a single-threaded process and cannot be left: the process stays in a loopback-only network
for the rest of its life (the CLI ends then anyway). Where neither works, :class:`NetnsUnavailable`
says why.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys
import threading

from madpipe.pipeline.sim.protocol import SimError

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, then ifr_flags in the union (40 bytes)
THREAD_NETNS = "/proc/thread-self/ns/net"


class NetnsUnavailable(SimError):
    """No private network namespace can be made here (the reason names the system call)."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _unshare(flags: int) -> int:
    """0, or the errno of ``unshare(flags)`` for the calling thread."""
    return 0 if _libc().unshare(flags) == 0 else ctypes.get_errno()


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _map_root_to_caller(uid: int, gid: int) -> None:
    """uid/gid 0 of the new user namespace is the caller (``unshare --map-root-user``)."""
    with open("/proc/self/setgroups", "w") as f:  # gid_map needs setgroups denied when unprivileged
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def loopback_up() -> None:
    """Bring ``lo`` of the calling thread's network namespace up (SIOCSIFFLAGS, as ``ip link set lo up``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = IFREQ.pack(b"lo", 0)
        flags = IFREQ.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, IFREQ.pack(b"lo", flags | IFF_UP))


def new_namespace() -> str:
    """Move the calling thread into a new network namespace with ``lo`` up; returns how it was made.

    NetnsUnavailable when the kernel refuses both ways (the reasons of both).
    """
    err = _unshare(CLONE_NEWNET)
    how = "network namespace"
    if err == errno.EPERM:  # not root here: a user namespace first, where that is allowed
        threads = _threads()
        if threads > 1:
            raise NetnsUnavailable(
                f"cannot make a private network namespace: unshare(CLONE_NEWNET) needs root, and "
                f"unshare(CLONE_NEWUSER) a single-threaded process (this one has {threads} threads)")
        uid, gid = os.geteuid(), os.getegid()
        err2 = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if err2:
            raise NetnsUnavailable(
                f"cannot make a private network namespace: unshare(CLONE_NEWNET): "
                f"{os.strerror(err)}; unshare(CLONE_NEWUSER|CLONE_NEWNET): {os.strerror(err2)}")
        _map_root_to_caller(uid, gid)
        how, err = "user and network namespace", 0
    if err:
        raise NetnsUnavailable(f"cannot make a private network namespace: unshare(CLONE_NEWNET): "
                               f"{os.strerror(err)}")
    loopback_up()
    return how


class _ThreadState(threading.local):
    depth = 0
    outside: int | None = None  # fd of the namespace the thread came from
    how = ""


_state = _ThreadState()


class PrivateNetwork:
    """The calling thread inside a loopback-only network namespace, from ``enter()`` to ``leave()``.

    >>> net = PrivateNetwork(); net.enter()  # doctest: +SKIP
    ... # start ibsim, the relay, the tools: all inside
    ... net.leave()

    Entries nest: a thread already inside (another capture still running) stays in the same
    namespace, and goes back out when the last one leaves. ``enter()`` raises
    :class:`NetnsUnavailable` where no namespace can be made.
    """

    def __init__(self) -> None:
        self.inside = False

    @property
    def how(self) -> str:
        """"network namespace" or "user and network namespace": how the thread's one was made."""
        return _state.how

    def enter(self) -> None:
        if self.inside:
            return
        if _state.depth == 0:
            outside = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _state.how = new_namespace()
            except BaseException:
                os.close(outside)
                raise
            _state.outside = outside
        _state.depth += 1
        self.inside = True

    def leave(self) -> None:
        """Back to the namespace the thread came from (a user namespace stays: it cannot be left)."""
        if not self.inside:
            return
        self.inside = False
        _state.depth -= 1
        if _state.depth == 0 and _state.outside is not None:
            outside, _state.outside = _state.outside, None
            try:
                _setns(outside)
            except OSError as exc:
                if exc.errno != errno.EPERM:  # EPERM: the outside belongs to the user ns we left
                    raise
            finally:
                os.close(outside)


def namespace_id(pid: int | str = "thread-self") -> int:
    """The inode number naming the network namespace of ``pid`` (two equal ones: the same namespace)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


_said: set[str] = set()


def contain(network: PrivateNetwork, allow_exposure: bool, prog: str = "madpipe") -> str | None:
    """Enter ``network``; None when inside, else why not (only with ``allow_exposure``).

    Where no namespace can be made, refuse with :class:`NetnsUnavailable` naming the flag that
    allows it; with ``allow_exposure``, say so once on stderr (per process) and return the reason.
    """
    try:
        network.enter()
        return None
    except NetnsUnavailable as exc:
        if not allow_exposure:
            raise NetnsUnavailable(f"{exc}: refusing to run ibsim, whose UDP ports would be open to "
                                   "the network (--allow-network-exposure runs it anyway)") from None
        if str(exc) not in _said:
            _said.add(str(exc))
            print(f"{prog}: {exc}: ibsim's UDP ports are open on every interface while it runs "
                  "(--allow-network-exposure)", file=sys.stderr)
        return str(exc)
