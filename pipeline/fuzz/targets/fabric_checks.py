"""Verdicts on a tool run against a malicious fabric: crash sites, sanitizer reports, wrong answers.

- :func:`core_backtrace`: the backtrace of a core file, by ``gdb -batch``; :func:`crash_site`
  the first frame of it that is the tool's own (not libc's abort path);
- :func:`sanitizer_report`: an AddressSanitizer / UndefinedBehaviorSanitizer report in a tool's
  output, and the first frame of the tool's own that it names;
- :func:`wrong_answers`: what ``smpquery nodeinfo|portinfo|switchinfo`` printed against the answer
  it was given, as madpipe decodes that answer (a printed value that disagrees misleads whoever
  reads it).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs import wire

# -- crashes ----------------------------------------------------------------------------------------

#: Frames of the abort path and of libc that say nothing about where a tool went wrong.
_NOISE = re.compile(r"^(__pthread_kill|pthread_kill|raise|abort|__GI_|__assert|__libc_|__stack_chk|malloc_printerr|"
                    r"_int_free|_int_malloc|_int_realloc|"
                    r"__fortify|__chk_fail|__.*_chk$|_IO_|__interceptor_|__asan_|__sanitizer|__ubsan|"
                    r"__memcpy|__memmove|__strlen|__memset|__strcpy|mem(cpy|move|set|cmp)$|str\w+$|\?\?$)")
#: Source files of glibc, as its debug info names them (./malloc/malloc.c, ../sysdeps/posix/raise.c).
_LIBC_SOURCE = re.compile(r"^\.{1,2}/(nptl|malloc|stdlib|sysdeps|csu|string|libio|assert|debug|signal)/")
_GDB_FRAME = re.compile(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\S+) \(.*?\)(?: at (\S+))?(?: from (\S+))?")


def find_core(folder: str, pid: int) -> str | None:
    """The core file a crashed process left in ``folder`` (core_pattern ``core`` or ``core.PID``)."""
    for name in (f"core.{pid}", "core"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    found = sorted(glob.glob(os.path.join(folder, "core*")))
    return found[0] if found else None


def core_backtrace(binary: str, core: str, timeout: float = 60.0) -> list[str] | None:
    """The frames of ``gdb -batch -ex bt`` on ``core``; None when gdb is not installed."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return None
    try:
        p = subprocess.run([gdb, "-batch", "-nx", "-ex", "bt 16", binary, core], capture_output=True,
                           text=True, timeout=timeout, errors="replace", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [f"(gdb did not finish within {timeout:g} s)"]
    frames = [ln.strip() for ln in p.stdout.splitlines() if ln.startswith("#")]
    return [f for k, f in enumerate(frames) if k == 0 or f != frames[k - 1]]  # gdb shows frame 0 twice


def crash_site(frames: list[str]) -> str | None:
    """The first frame of a gdb backtrace that is the tool's own: ``function (file:line)`` or ``function [lib]``."""
    for ln in frames:
        m = _GDB_FRAME.match(ln)
        if not m or _NOISE.match(m.group(2)) or _LIBC_SOURCE.match(m.group(3) or ""):
            continue
        if m.group(3):
            return f"{m.group(2)} ({os.path.basename(m.group(3))})"
        lib = os.path.basename(m.group(4) or "")
        if lib.startswith(("libc.so", "libc-")):
            continue
        return f"{m.group(2)} [{lib}]" if lib else m.group(2)
    return None


def core_pattern() -> str:
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            return f.read().strip()
    except OSError:
        return "?"


# -- sanitizers -------------------------------------------------------------------------------------

_SAN_START = re.compile(r"(ERROR: (AddressSanitizer|LeakSanitizer|MemorySanitizer|ThreadSanitizer): (\S+)"
                        r"|(\S+:\d+(?::\d+)?): runtime error: (.*))")
_SAN_FRAME = re.compile(r"#\d+ 0x[0-9a-f]+ in (\S+) (\S+)")


def sanitizer_report(output: str) -> tuple[str, str] | None:
    """(what, site) of the first sanitizer report in a tool's output, or None.

    ``what`` is the report's kind (``AddressSanitizer: heap-buffer-overflow``, ``runtime error:
    ...``); ``site`` the first stack frame outside the sanitizer runtime and libc (or UBSan's
    file:line).
    """
    m = _SAN_START.search(output)
    if m is None:
        return None
    if m.group(4):  # UBSan: file:line:col: runtime error: what
        return f"runtime error: {m.group(5).strip()[:120]}", m.group(4).rsplit(":", 1)[0] \
            if m.group(4).count(":") == 2 else m.group(4)
    what = f"{m.group(2)}: {m.group(3)}"
    for f in _SAN_FRAME.finditer(output, m.end()):
        func, where = f.group(1), f.group(2)
        if _NOISE.match(func) or "libasan" in where or "/libc." in where:
            continue
        return what, f"{func} ({where.rsplit('/', 1)[-1]})"
    return what, "?"


# -- wrong answers ------------------------------------------------------------------------------------

_DUMP_LINE = re.compile(r"^(\w+):\.+(\S.*)$")
#: libibmad's printed names (mad_dump_nodeinfo, _portinfo, _switchinfo) -> madpipe's schema fields.
PRINTED_FIELDS = {
    smpc.IB_SMP_ATTR_NODE_INFO: {
        "BaseVers": "base_version", "ClassVers": "class_version", "NumPorts": "num_ports",
        "SystemGuid": "sys_guid", "Guid": "node_guid", "PortGuid": "port_guid", "PartCap": "partition_cap",
        "DevId": "device_id", "Revision": "revision", "LocalPort": "local_port_num", "VendorId": "vendor_id"},
    smpc.IB_SMP_ATTR_PORT_INFO: {
        "GidPrefix": "gid_prefix", "Lid": "lid", "SMLid": "master_sm_lid", "CapMask": "capability_mask",
        "DiagCode": "diag_code", "MkeyLeasePeriod": "m_key_lease_period", "LocalPort": "local_port_num",
        "ProtectBits": "m_key_protect_bits", "LMC": "lmc", "SMSL": "master_sm_sl", "InitType": "init_type",
        "VLHighLimit": "vl_high_limit", "VLArbHighCap": "vl_arb_high_cap", "VLArbLowCap": "vl_arb_low_cap",
        "InitReply": "init_type_reply", "VLStallCount": "vl_stall_count", "HoqLife": "hoq_life",
        "PartEnforceInb": "partition_enforcement_inbound", "PartEnforceOutb": "partition_enforcement_outbound",
        "FilterRawInb": "filter_raw_inbound", "FilterRawOutb": "filter_raw_outbound",
        "MkeyViolations": "m_key_violations", "PkeyViolations": "p_key_violations",
        "QkeyViolations": "q_key_violations", "GuidCap": "guid_cap", "ClientReregister": "client_reregister",
        "McastPkeyTrapSuppressionEnabled": "multicast_pkey_trap_suppression_enabled",
        "SubnetTimeout": "subnet_timeout", "RespTimeVal": "resp_time_value", "LocalPhysErr": "local_phy_errors",
        "OverrunErr": "overrun_errors", "MaxCreditHint": "max_credit_hint", "RoundTrip": "link_round_trip_latency",
        "CapabilityMask2": "capability_mask2", "NeighborMTU": "neighbor_mtu", "MtuCap": "mtu_cap"},
    smpc.IB_SMP_ATTR_SWITCH_INFO: {
        "LinearFdbCap": "linear_fdb_cap", "RandomFdbCap": "random_fdb_cap", "McastFdbCap": "multicast_fdb_cap",
        "LinearFdbTop": "linear_fdb_top", "DefPort": "default_port",
        "DefMcastPrimPort": "default_multicast_primary_port",
        "DefMcastNotPrimPort": "default_multicast_not_primary_port", "LifeTime": "life_time_value",
        "StateChange": "port_state_change", "OptSLtoVLMapping": "optimized_sl_to_vl_mapping_programming",
        "LidsPerPort": "lids_per_port", "PartEnforceCap": "partition_enforcement_cap",
        "InboundPartEnf": "inbound_enforcement_cap", "OutboundPartEnf": "outbound_enforcement_cap",
        "FilterRawInbound": "filter_raw_inbound_cap", "FilterRawOutbound": "filter_raw_outbound_cap",
        "EnhancedPort0": "enhanced_port0", "MulticastFDBTop": "multicast_fdb_top"},
}
#: smpquery's operation -> the attribute it queries and prints.
SMPQUERY_ATTRS = {"nodeinfo": smpc.IB_SMP_ATTR_NODE_INFO, "portinfo": smpc.IB_SMP_ATTR_PORT_INFO,
                  "switchinfo": smpc.IB_SMP_ATTR_SWITCH_INFO}
_MTU = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
_NODE_TYPE = {1: "Channel Adapter", 2: "Switch", 3: "Router"}


def printed_fields(output: str) -> dict[str, str]:
    """``Name: value`` of libibmad's dump lines (``Name:.....value``), first occurrence of each."""
    out: dict[str, str] = {}
    for ln in output.splitlines():
        m = _DUMP_LINE.match(ln.strip())
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out


def _as_int(text: str) -> int | None:
    try:
        return int(text.split()[0], 0)
    except (ValueError, IndexError):
        return None


def wrong_answers(op: str, query_mod: int, answer: bytes, output: str) -> list[tuple[str, str]]:
    """(field, why) for every value ``smpquery OP`` printed that the ``answer`` MAD does not say."""
    attr = SMPQUERY_ATTRS.get(op)
    if attr is None:
        return []
    printed = printed_fields(output)
    if not printed:
        return []
    out = []
    status = int.from_bytes(answer[wire.MAD_STATUS:wire.MAD_STATUS + 2], "big") & ~smpc.IB_SMP_DIRECTION
    got_attr = int.from_bytes(answer[wire.MAD_ATTR_ID:wire.MAD_ATTR_ID + 2], "big")
    got_mod = int.from_bytes(answer[wire.MAD_ATTR_MOD:wire.MAD_ATTR_MOD + 4], "big")
    method = answer[wire.MAD_METHOD]
    if status:
        out.append(("mad.status", f"printed {smpc.attribute_name(attr)} from an answer with status {status:#06x}"))
    if method != madc.IB_MGMT_METHOD_GET_RESP:
        out.append(("mad.method", f"printed {smpc.attribute_name(attr)} from an answer whose method is "
                                  f"{madc.method_name(method)} ({method:#04x}), not a GetResp"))
    if got_attr != attr:
        out.append(("mad.attr_id", f"printed as {smpc.attribute_name(attr)} an answer carrying "
                                   f"{smpc.attribute_name(got_attr)} ({got_attr:#06x})"))
        return out  # its fields are another attribute's: comparing them says nothing more
    if op == "portinfo" and (got_mod & 0xFF) != (query_mod & 0xFF):
        out.append(("mad.attr_mod", f"printed as port {query_mod & 0xFF} an answer for port {got_mod & 0xFF} "
                                    f"(attribute modifier {got_mod:#x})"))
    values = smpc.attribute_schema(attr).parse(answer[wire.SMP_DATA:wire.SMP_DATA + 64])
    for name, field in PRINTED_FIELDS[attr].items():
        if name not in printed:
            continue
        want = int(values[field])
        shown = printed[name]
        if field in ("neighbor_mtu", "mtu_cap"):
            if want in _MTU and _as_int(shown) != _MTU[want]:
                out.append((f"attr.{field}", f"{name} printed {shown!r}, the answer says {_MTU[want]}"))
            continue
        number = _as_int(shown)
        if number is not None and number != want:
            out.append((f"attr.{field}", f"{name} printed {shown!r}, the answer says {want} ({want:#x})"))
    if attr == smpc.IB_SMP_ATTR_NODE_INFO and "NodeType" in printed:
        want = int(values["node_type"])
        if want in _NODE_TYPE and printed["NodeType"] != _NODE_TYPE[want]:
            out.append(("attr.node_type", f"NodeType printed {printed['NodeType']!r}, the answer says {want} "
                                          f"({_NODE_TYPE[want]})"))
    return out
