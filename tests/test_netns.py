"""The simulated fabric listens only to madpipe: ibsim, the relay, opensm and the diags run in a
private network namespace with only loopback (pipeline/sim/netns.py).

Read from /proc while a capture runs: every process of the run is in a namespace other than the
machine's, with no interface but ``lo``, and none of its sockets is in the machine's UDP table.
Where no namespace can be made (reproduced for real: a user namespace without a uid mapping
inside a throwaway network namespace), capture refuses unless --allow-network-exposure. And the
bundled captures regenerate inside the namespace, with pcaps/README.md's own commands.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import stop_leftover_processes
from test_sim import PCAPS, TOPOLOGY, need_sim_tools

from madpipe.codecs import mad as madc
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.frame import decode_frame
from madpipe.codecs.wire import IB_SMP_ATTR_PKEY_TABLE
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.sim.capture import SimCapture
from madpipe.pipeline.sim.netns import PrivateNetwork, namespace_id

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def back_outside():
    """Every test starts and ends in the test process's own network namespace, nothing left running."""
    before = namespace_id()
    yield
    left = stop_leftover_processes()
    assert not left, f"processes left running: {left}"
    assert namespace_id() == before, "the test thread was left inside a private network namespace"


# -- /proc ----------------------------------------------------------------------------------------

def udp_sockets(table_pid: int | str) -> dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """inode -> local address of every UDP socket in the network namespace ``table_pid`` sees."""
    found = {}
    for name in ("udp", "udp6"):
        for line in Path(f"/proc/{table_pid}/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            raw = bytes.fromhex(fields[1].split(":")[0])  # host-order 32-bit words
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = ipaddress.ip_address(raw)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def interfaces(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        for task in os.listdir(f"/proc/{p}/task"):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return tree


def look_at_run(pid: int, outside_ns: int, outside: dict) -> tuple[Counter, list[str]]:
    """One look at the processes of a run: what was seen, and every socket reachable from outside.

    madpipe itself (``pid``) starts and ends outside, with no socket then: only its sockets count.
    """
    seen, problems = Counter(), []
    for p in process_tree(pid):
        comm = Path(f"/proc/{p}/comm").read_text().strip()
        if p != pid and namespace_id(p) == outside_ns:
            problems.append(f"{comm} ({p}) runs in the machine's network namespace")
        if p != pid and interfaces(p) != {"lo"}:
            problems.append(f"{comm} ({p}) sees interfaces {sorted(interfaces(p))}")
        inside = udp_sockets(p)
        for inode in socket_inodes(p):
            if inode in outside:
                problems.append(f"{comm} ({p}) has a UDP socket on {outside[inode]} outside")
            elif inode in inside:
                seen[f"{comm} sockets"] += 1
                addr = inside[inode]
                if not (addr.is_loopback or addr.is_unspecified):  # unspecified: lo is all there is
                    problems.append(f"{comm} ({p}) has a UDP socket on {addr}")
        seen[comm] += 1
    return seen, problems


# -- while a capture runs -------------------------------------------------------------------------

def _madpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "madpipe.pipeline.cli.main", *args]


# How madpipe is run: as it is (root makes a network namespace, anyone else a user namespace too),
# and, as root, also as a user without privileges (a user namespace mapping the caller to uid 1000,
# without capabilities after exec: madpipe then needs a user namespace of its own).
AS_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
MODES = {"as it is": ([], "network namespace" if os.geteuid() == 0 else "user and network namespace"),
         "as a user": (AS_USER, "user and network namespace")}


@pytest.mark.parametrize("mode", list(MODES))
def test_no_socket_of_a_running_capture_is_reachable_from_outside(tmp_path, mode):
    need_sim_tools()
    prefix, how = MODES[mode]
    if prefix and (os.geteuid() != 0 or shutil.which("unshare") is None):
        pytest.skip("as root only (otherwise the first case is this one), with unshare (util-linux)")
    outside_ns = namespace_id(os.getpid())
    proc = subprocess.Popen([*prefix, *_madpipe("capture", "--sim", TOPOLOGY, "--sm-node", "Hca1", "--partitions",
                                                str(PCAPS / "partitions-a.conf"), "--queries",
                                                "-w", str(tmp_path / "q.pcap"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, problems, looks, most_ibsim_sockets = Counter(), [], 0, 0
    try:
        while proc.poll() is None:
            try:
                s, p = look_at_run(proc.pid, outside_ns, udp_sockets(os.getpid()))
            # A tool ended while we looked; or, as a user, was ending or changing credentials:
            # its /proc/PID/ns/net refused root for that moment (CI saw it once). The look is
            # dropped whole, so a process never readable would leave no look to count below.
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            seen.update(s)
            most_ibsim_sockets = max(most_ibsim_sockets, s["ibsim sockets"])
            problems += p
            looks += 1
            time.sleep(0.005)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert not problems, problems[:5]
    assert f"in a private {how} (loopback only)" in err
    # the looks did see the run: ibsim's 11 sockets, the relay's in madpipe, opensm or a diag
    assert most_ibsim_sockets == 11, seen  # its control socket and one per client slot
    assert seen["python sockets"] or seen[Path(sys.executable).name + " sockets"], seen
    assert seen["opensm"] + seen["smpquery"] + seen["ibnetdiscover"], seen
    assert looks >= 10


def test_private_network_enters_nests_and_leaves():
    outside = namespace_id()
    first, second = PrivateNetwork(), PrivateNetwork()
    first.enter()
    try:
        inside = namespace_id()
        assert inside != outside and interfaces("thread-self") == {"lo"}
        second.enter()  # a second capture from the same thread shares the namespace
        assert namespace_id() == inside
        second.leave()
        assert namespace_id() == inside
        seen = {}
        t = threading.Thread(target=lambda: seen.update(ns=namespace_id()))
        t.start()  # threads started inside (the relay's) are inside too
        t.join()
        assert seen["ns"] == inside
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # lo is up
            s.bind(("127.0.0.1", 0))
            s.sendto(b"up", s.getsockname())
            s.settimeout(1)
            assert s.recv(8) == b"up"
    finally:
        first.leave()
    assert namespace_id() == outside


def test_a_capture_and_its_tools_are_inside_while_it_runs():
    need_sim_tools()
    outside = namespace_id()
    with SimCapture(TOPOLOGY, sm_node="Hca1") as capture:
        assert capture.contained and capture.exposure is None
        inside = namespace_id()
        assert inside != outside and namespace_id(capture.ibsim.proc.pid) == inside
        run = capture.run("sh", "-c", "readlink /proc/self/ns/net")
        assert run.output.strip() == f"net:[{inside}]"
    assert namespace_id() == outside


@pytest.mark.tools("ibsim", "opensm")
def test_the_fuzz_target_runs_ibsim_inside(tmp_path):
    from madpipe.pipeline.fuzz.targets.ibsim import IbsimTarget

    need_sim_tools()
    outside = namespace_id()
    target = IbsimTarget(str(tmp_path))
    try:
        assert namespace_id(target.ibsim.proc.pid) != outside
        assert target._probe()  # and the target's own client reaches it there
    finally:
        target.close()
    assert namespace_id() == outside


# -- where no namespace can be made ---------------------------------------------------------------

# A throwaway network namespace (lo up), then a user namespace that maps no uid: in there
# unshare(CLONE_NEWNET) lacks CAP_SYS_ADMIN and unshare(CLONE_NEWUSER) an uid mapping, as for a
# user on a host without unprivileged user namespaces. The outer namespace keeps the test's own
# ibsim off the machine's network all the same.
_BOOT = ("import os, sys; from madpipe.pipeline.sim.netns import loopback_up; loopback_up(); "
         "os.execvp(sys.argv[1], sys.argv[1:])")


def _without_namespaces(*args: str) -> subprocess.CompletedProcess:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    outer = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user", "--net"]
    argv = [*outer, sys.executable, "-c", _BOOT, unshare, "--user", *_madpipe(*args)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if "unshare failed" in proc.stderr:
        pytest.skip(f"this kernel makes no namespace for the test either: {proc.stderr.strip()}")
    return proc


def test_refused_where_no_namespace_can_be_made(tmp_path):
    need_sim_tools()
    out = tmp_path / "x.pcap"
    proc = _without_namespaces("capture", "--sim", TOPOLOGY, "-w", str(out))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("madpipe capture: cannot make a private network namespace: "
                           "unshare(CLONE_NEWNET): Operation not permitted")
    assert line.endswith("(--allow-network-exposure runs it anyway)")
    assert not out.exists()


def test_allowed_exposure_says_so_once(tmp_path):
    need_sim_tools()
    out = tmp_path / "x.pcap"
    proc = _without_namespaces("capture", "--sim", TOPOLOGY, "--sm-node", "Hca1", "-w", str(out),
                               "--allow-network-exposure")
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "open on every interface" in ln]
    assert len(said) == 1 and said[0].startswith("madpipe capture: cannot make a private network")
    assert "on the machine's network" in proc.stderr
    with CaptureReader(out) as cap:
        assert sum(1 for _ in cap) > 200


# -- the bundled captures, regenerated inside -----------------------------------------------------

def readme_capture_commands() -> list[list[str]]:
    """The ``madpipe capture`` command lines of pcaps/README.md, as its sh block writes them."""
    text = (PCAPS / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    env, commands = {}, []
    for line in block.splitlines():
        words = shlex.split(line)
        if len(words) == 1 and "=" in words[0]:
            name, value = words[0].split("=", 1)
            env[name] = value
        elif words and words[0] == "madpipe":
            commands.append([re.sub(r"^\$(\w+)$", lambda m: env[m.group(1)], w) for w in words[1:]])
    return commands


def _masked(packet: bytes, get_tids: set[bytes]) -> bytes:
    """An SMP without what opensm and the diags vary from run to run on their own (measured
    outside any namespace): the TID (libibmad starts it at random; opensm numbers its MADs in
    the order its threads send them), the data of every attribute but P_KeyTable, a directed
    route's path bytes past the hop count (uninitialized), and the CRCs computed over them
    (checked apart). The data: a Get's is uninitialized, and opensm has Gets and Sets to one port
    in flight at once, so an answer may come before or after a Set it raced; a later Set of that
    port (PortInfo, SwitchInfo) may be built from whichever answer came. CI saw a directed-route
    SMP whose data differed once more after the answers to Gets were masked (which attribute,
    its message did not say; a failure now names each differing SMP).
    The P_Key tables, what these captures are for, opensm computes from partitions.conf alone:
    their Sets and the answers to them are compared byte for byte, and so is every header."""
    mad = bytearray(packet[28:28 + madc.MAD_SIZE])
    tid, mad[8:16] = bytes(mad[8:16]), bytes(8)
    attr_id = int.from_bytes(mad[16:18], "big")
    answers_get = mad[3] == madc.IB_MGMT_METHOD_GET_RESP and tid in get_tids
    if attr_id != IB_SMP_ATTR_PKEY_TABLE or mad[3] == madc.IB_MGMT_METHOD_GET or answers_get:
        mad[64:128] = bytes(64)  # SMP data, LID-routed and directed-route alike
    if mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        hops = mad[7]
        mad[128 + hops + 1:192] = bytes(63 - hops)
        mad[192 + hops + 1:256] = bytes(63 - hops)
    return bytes(packet[:28]) + bytes(mad)


def _described(counter: Counter) -> list[str]:
    """What a failure names: each SMP's method, attribute, modifier and its data's first bytes."""
    out = []
    for (_, packet), count in sorted(counter.items()):
        mad = packet[28:]
        out.append(f"{count} x method 0x{mad[3]:02x} attr 0x{int.from_bytes(mad[16:18], 'big'):04x} "
                   f"mod 0x{int.from_bytes(mad[20:24], 'big'):08x} status 0x{int.from_bytes(mad[4:6], 'big'):04x} "
                   f"data {mad[64:96].hex()}")
    return out


def _comparable(records: list[tuple[int, bytes]]) -> Counter:
    """The records as a multiset of (length, masked SMP): their order is the threads' too."""
    get_tids = {p[36:44] for _, p in records if p[31] == madc.IB_MGMT_METHOD_GET}
    return Counter((n, _masked(p, get_tids)) for n, p in records)


def _records(path) -> tuple[bytes, list[tuple[int, bytes]]]:
    with CaptureReader(path) as cap:
        packets = [(p.orig_len, p.data) for p in cap]
        assert cap.error is None
    return Path(path).read_bytes()[:24], packets


@pytest.mark.slow
def test_bundled_captures_regenerate_inside_the_namespace(tmp_path, capsys):
    need_sim_tools()
    commands = readme_capture_commands()
    assert len(commands) == 3
    for argv in commands:
        w = argv.index("-w") + 1
        bundled, argv[w] = ROOT / argv[w], str(tmp_path / Path(argv[w]).name)
        argv = [str(ROOT / a) if a.startswith("pcaps/") else a for a in argv]
        assert main(argv) == 0
        assert "in a private network namespace (loopback only)" in capsys.readouterr().err
        head, made = _records(argv[w])
        bundled_head, expected = _records(bundled)
        assert head == bundled_head and len(made) == len(expected), bundled.name
        assert os.path.getsize(argv[w]) == os.path.getsize(bundled)
        # every record alike but for the timestamps and what the tools vary run to run
        got, want = _comparable(made), _comparable(expected)
        pkey_sets = [p for _, p in made if p[31] == madc.IB_MGMT_METHOD_SET
                     and int.from_bytes(p[44:46], "big") == IB_SMP_ATTR_PKEY_TABLE]
        assert pkey_sets, bundled.name  # the tables compared byte for byte are there
        assert got == want, (bundled.name, _described(got - want), _described(want - got))
        assert all(r["icrc_ok"] and r["vcrc_ok"] for r in (decode_frame(p) for _, p in made))
