"""``madpipe diff``'s output: a :class:`~madpipe.pipeline.fabric.diff.CaptureDiff` as text (a table of
the entries that differ, port by port, then the VFs) or as JSON Lines with a ``type`` key.
"""
from __future__ import annotations

from madpipe.pipeline.decode.output import jsonl
from madpipe.pipeline.fabric import diff
from madpipe.pipeline.fabric.diff import KIND_TEXT, membership
from madpipe.pipeline.fabric.model import titled
from madpipe.pipeline.fabric.text import format_pkeys, shown_entries

# -- text ------------------------------------------------------------------------------------------

def _pkey(value: int | None) -> str:
    return "-" if value is None else f"0x{value:04x}"


def port_label(p) -> str:
    """``lid 0x0004 path 1,3,1 port 0 "Hca2"`` (the node's NodeDescription when a capture has it),
    then B's name when it differs, then the GUID."""
    text = titled(p.pid.label(), _node(p))
    if p.b_named_differently:
        text += f" (in b: {p.b.title()})"
    if p.guid is not None:
        text += f" guid 0x{p.guid:016x}"
    return text


def _node(p) -> str | None:
    return next((s.node for s in (p.a, p.b) if s is not None and s.node is not None), None)


def _capacity(p) -> str:
    caps = {s.capacity for s in (p.a, p.b) if s is not None and s.capacity}
    return "".join(f", {c} pkeys capacity" for c in sorted(caps))


def _entry_note(e) -> str:
    if e.kind == "membership":
        return f"{membership(e.a)} -> {membership(e.b)}"
    if e.kind == "added":
        return membership(e.b)
    if e.kind == "removed":
        return f"was {membership(e.a)}"
    return ""


def partitions_text(changes) -> str:
    words = []
    for c in changes:
        if c.kind == "added":
            words.append(f"0x{c.partition:04x} added ({membership(c.b)})")
        elif c.kind == "removed":
            words.append(f"0x{c.partition:04x} removed (was {membership(c.a)})")
        else:
            words.append(f"0x{c.partition:04x} {membership(c.a)} -> {membership(c.b)}")
    return ", ".join(words)


def _entries_table(entries, out, index_name: str = "index") -> None:
    out.write(f"  {'block':>5} {index_name:>5}  {'change':<13} {'a':<7} {'b':<7} membership\n")
    for e in entries:
        out.write(f"  {e.block:5d} {e.index:5d}  {KIND_TEXT[e.kind]:<13} {_pkey(e.a):<7} {_pkey(e.b):<7} "
                  f"{_entry_note(e)}".rstrip() + "\n")


def _table(state) -> list[str]:
    return format_pkeys(state.table, shown_entries(state))


def print_text(d, out) -> None:
    for side, name in ((d.a, "a"), (d.b, "b")):
        out.write(f"{name}: {side.path}: {len(side.ports)} ports\n")
    out.write("\n")
    for p in d.changed:
        if p.status == "changed":
            out.write(f"Port {port_label(p)}{_capacity(p)}:\n")
            _entries_table(p.entries, out)
            if p.partitions:
                out.write(f"  partitions: {partitions_text(p.partitions)}\n")
        else:
            side = "a" if p.status == "only_a" else "b"
            other = "b" if side == "a" else "a"
            state = p.a or p.b
            out.write(f"Only in {side}: port {port_label(p)}{_capacity(p)} ({other} never set its table):\n")
            for line in _table(state):
                out.write(line + "\n")
        out.write("\n")
    if d.vfs is not None:
        h = d.a.snoop.host
        out.write(f"VFs of host lid 0x{h.pid.lid:04x} port {h.port_num} ({h.num_vfs} VFs, mlx4 virt2phys_pkey):\n")
        for v in d.vfs:
            if not v.entries:
                out.write(f"  VF {v.vf}: no difference\n")
                continue
            out.write(f"  VF {v.vf}:\n")
            out.write(f"    {'index':>5} {'phys':>5}  {'change':<13} {'a':<7} {'b':<7} membership\n")
            for e in v.entries:
                out.write(f"    {e.index:5d} {int(v.v2p[e.index]):5d}  {KIND_TEXT[e.kind]:<13} {_pkey(e.a):<7} "
                          f"{_pkey(e.b):<7} {_entry_note(e)}".rstrip() + "\n")
            if v.partitions:
                out.write(f"    partitions: {partitions_text(v.partitions)}\n")
        out.write("\n")
    out.write(summary(d) + "\n")


def summary(d) -> str:
    c = d.counts()
    if not d.differ:
        text = f"no differences: {c['same']} ports with the same P_Key tables"
        if d.vfs is not None:
            text += f", {c['vfs']} VFs with the same virtual tables"
        return text
    text = (f"{c['ports_a']} ports in a, {c['ports_b']} in b: {c['changed']} changed, {c['same']} unchanged, "
            f"{c['only_a']} only in a, {c['only_b']} only in b; entries: {c['entries_added']} added, "
            f"{c['entries_removed']} removed, {c['entries_membership']} membership changed, "
            f"{c['entries_changed']} P_Key changed")
    if d.vfs is not None:
        text += f"; VFs: {c['vfs_changed']} of {c['vfs']} see a difference"
    return text


# -- JSON Lines ------------------------------------------------------------------------------------

def _port_json(p) -> dict:
    rec = {**p.pid.as_json(), "node_description": _node(p), "guid": p.guid}
    if p.b_named_differently:
        rec["b_port"] = p.b.pid.as_json()
    return rec


def print_json(d, out) -> None:
    for p in d.ports:
        rec = {"type": "port", "status": p.status, **_port_json(p),
               "capacity_a": p.a.capacity if p.a else None, "capacity_b": p.b.capacity if p.b else None}
        if p.status in ("only_a", "only_b"):
            rec["pkeys"] = [int(x) for x in (p.a or p.b).table]
        jsonl(rec, out)
        for e in p.entries:
            jsonl({"type": "entry", **_port_json(p), "block": e.block, "index": e.index, "kind": e.kind,
                   "a": e.a, "b": e.b}, out)
        if p.status == "changed":
            for c in p.partitions:
                jsonl({"type": "partition", **_port_json(p), "partition": c.partition, "kind": c.kind,
                       "a": c.a, "b": c.b}, out)
    if d.vfs is not None:
        h = d.a.snoop.host
        for v in d.vfs:
            jsonl({"type": "vf", "host_lid": h.pid.lid, "port_num": h.port_num, "vf": v.vf,
                   "status": "changed" if v.entries else "same",
                   "virt2phys_pkey": [int(x) for x in v.v2p],
                   "pkeys_a": [int(x) for x in v.a], "pkeys_b": [int(x) for x in v.b]}, out)
            for e in v.entries:
                jsonl({"type": "vf_entry", "vf": v.vf, "index": e.index, "phys_index": int(v.v2p[e.index]),
                       "kind": e.kind, "a": e.a, "b": e.b}, out)
            for c in v.partitions:
                jsonl({"type": "vf_partition", "vf": v.vf, "partition": c.partition, "kind": c.kind,
                       "a": c.a, "b": c.b}, out)
    c = d.counts()
    jsonl({"type": "summary", "a": d.a.path, "b": d.b.path, "differ": d.differ,
           **{k: int(c[k]) for k in ("ports_a", "ports_b", "changed", "same", "only_a", "only_b")},
           "entries": {k: int(c["entries_" + k]) for k in diff.KINDS},
           "vfs": c["vfs"] if d.vfs is not None else None,
           "vfs_changed": c["vfs_changed"] if d.vfs is not None else None,
           "file_error_a": d.a.snoop.file_error, "file_error_b": d.b.snoop.file_error}, out)
