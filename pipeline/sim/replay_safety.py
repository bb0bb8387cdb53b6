"""What a replay would change: the MADs that set or announce state, and the ports they address.

``madpipe replay --umad`` talks to real hardware, where a replayed SubnSet(P_KeyTable) rewrites a
production port's partitions. :func:`changes_state` says which MADs do that (Set, Trap,
TrapRepress, SA Delete), :func:`destination` and :func:`changed_port` say where a MAD goes and
which port a Set rewrites, for ``--dry-run``, for the refusal without ``--allow-set`` and for the
summary.
"""
from __future__ import annotations

from collections import Counter

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs import wire
from madpipe.pipeline.sim.replay import SMP_CLASSES, Item

STATE_CHANGING_METHODS = (madc.IB_MGMT_METHOD_SET, madc.IB_MGMT_METHOD_TRAP,
                          madc.IB_MGMT_METHOD_TRAP_REPRESS, madc.IB_MGMT_METHOD_DELETE)
"""Set writes an attribute, Trap and TrapRepress tell an SM of events, SA Delete removes records."""


def changes_state(item: Item) -> bool:
    """True for a MAD whose method sets or announces state (a request, not a response)."""
    return item.method in STATE_CHANGING_METHODS


def attr_id(item: Item) -> int:
    return int.from_bytes(item.mad[16:18], "big")


def attr_mod(item: Item) -> int:
    return int.from_bytes(item.mad[20:24], "big")


def dr_path(item: Item) -> list[int] | None:
    """The directed route's initial path (hops 1..hop_cnt), or None for a LID-routed MAD."""
    if item.mad[1] != madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        return None
    hops = min(item.mad[wire.SMP_HOP_CNT], wire.IB_SMP_MAX_PATH_HOPS - 1)
    return list(item.mad[wire.SMP_INITIAL_PATH + 1:wire.SMP_INITIAL_PATH + 1 + hops])


def destination(item: Item) -> str:
    """Where a MAD goes, as the diags write it: ``DR 0,1,3`` (smpquery -D) or ``LID 0x0004``."""
    path = dr_path(item)
    if path is not None and item.dlid == wire.IB_PERMISSIVE_LID:
        return "DR " + ",".join(map(str, [0, *path]))
    return f"LID {item.dlid:#06x}"


def what(item: Item) -> str:
    """``SubnSet PortInfo``: the class, method and attribute of a MAD."""
    cls, attr = item.mad[1], attr_id(item)
    name = smpc.attribute_name(attr) if cls in SMP_CLASSES else f"attr 0x{attr:04x}"
    return f"{madc.mgmt_class_name(cls)} {madc.method_name(item.method)} {name}"


def changed_port(item: Item) -> str:
    """The port a state-changing MAD rewrites: its destination and, where the attribute modifier
    names one (PortInfo, a switch's P_KeyTable), the port number, with the attribute."""
    where = destination(item)
    attr, mod = attr_id(item), attr_mod(item)
    if item.mad[1] in SMP_CLASSES and attr == smpc.IB_SMP_ATTR_PORT_INFO:
        where += f" port {mod & 0xFF}"
    elif item.mad[1] in SMP_CLASSES and attr == smpc.IB_SMP_ATTR_PKEY_TABLE and smpc.pkey_switch_port(mod):
        where += f" port {smpc.pkey_switch_port(mod)}"
    name = smpc.attribute_name(attr) if item.mad[1] in SMP_CLASSES else madc.mgmt_class_name(item.mad[1])
    return f"{where} ({name})"


def changed_ports(items: list[Item]) -> list[str]:
    """Every port a state-changing MAD of ``items`` rewrites, once each, in first-seen order."""
    return list(dict.fromkeys(changed_port(it) for it in items if changes_state(it)))


def state_changing_counts(items: list[Item]) -> Counter[str]:
    """How many MADs of each state-changing kind (``SubnMgmtDR Set P_KeyTable``: 8)."""
    return Counter(what(it) for it in items if changes_state(it))


def refusal_line(items: list[Item], device: str) -> str:
    """The one line that says what a replay to a umad device would have sent without --allow-set."""
    kinds = state_changing_counts(items)
    n = sum(kinds.values())
    ports = changed_ports(items)
    return (f"refused: {n} of {len(items)} MADs would set or announce state on umad device {device} "
            f"({', '.join(f'{v} {k}' for k, v in kinds.items())}; {len(ports)} "
            f"port{'s' * (len(ports) != 1)}): nothing sent; --allow-set sends them, --dry-run lists "
            "them, -Y 'mad.method==0x01' replays only the Gets")


def dry_run_line(item: Item) -> str:
    """One MAD as ``--dry-run`` prints it: frame, what, where, and whether it changes state."""
    line = f"{item.frame:6d} {what(item):<40} -> {destination(item)}"
    mod = attr_mod(item)
    if mod:
        line += f" mod={mod:#010x}"
    if changes_state(item):
        line += f"  changes {changed_port(item)}"
    return line
