"""``madpipe check``'s output: a :class:`~madpipe.pipeline.check.tables.CaptureCheck` as text (the
ports that break the policy, as ``madpipe diff`` shows ports, then a summary) or JSON Lines.
"""
from __future__ import annotations

from collections import Counter

from madpipe.pipeline.check.partitions_conf import DEFAULT_PKEY, Policy
from madpipe.pipeline.check.tables import CaptureCheck, PortCheck
from madpipe.pipeline.decode.output import jsonl
from madpipe.pipeline.fabric.diff import FULL_MEMBER, PARTITION_MASK
from madpipe.pipeline.fabric.model import titled


def partition_names(policy: Policy) -> dict[int, str]:
    """P_Key base -> the partition's name (the first statement's, as opensm keeps it)."""
    names = {DEFAULT_PKEY: "Default"}
    for p in policy.partitions:
        names.setdefault(p.pkey, p.name or f"0x{p.pkey:04x}")
    return names


def _key(pkey: int, names: dict[int, str]) -> str:
    kind = "full" if pkey & FULL_MEMBER else "limited"
    return f"0x{pkey:04x} ({names.get(pkey & PARTITION_MASK, 'no partition')}, {kind})"


def port_label(p: PortCheck) -> str:
    """``lid 0x0004 path 1,3,1 port 0 "Hca2" guid 0x...`` (the node's NodeDescription when the
    capture has it); a switch port says what it faces."""
    text = titled(p.pid.label(), p.node) if p.pid is not None else "port"
    if p.guid is not None:
        text += f" guid 0x{p.guid:016x}"
    if p.facing is not None:
        text += f" (facing 0x{p.facing:016x})"
    return text


def _pkeys(keys) -> str:
    return " ".join(f"0x{k:04x}" for k in sorted(keys)) or "(none)"


def print_text(c: CaptureCheck, out) -> None:
    names = partition_names(c.policy)
    sm = f"0x{c.sm_guid:016x}" if c.sm_guid is not None else "unknown (no NodeInfo of a route of no hops)"
    out.write(f"policy: {c.policy.path}: {len(names)} partitions; capture: {c.path}: SM port {sm}\n\n")
    for p in c.ports:
        if p.status == "violation":
            out.write(f"Port {port_label(p)}:\n")
            for k in p.missing:
                out.write(f"  missing     {_key(k, names)}\n")
            for k in p.extra:
                out.write(f"  extra       {_key(k, names)}: the policy does not give this port that partition\n")
            for held, want in p.membership:
                out.write(f"  membership  {_key(held, names)}: the policy says {_key(want, names)}\n")
            out.write(f"  holds {_pkeys(p.held)}; policy: {_pkeys(p.required)}\n\n")
        elif p.status == "never programmed":
            out.write(f"Never programmed: {p.why} guid 0x{p.guid:016x}: the policy gives it "
                      f"{_pkeys(p.required)}, the capture holds no P_KeyTable of it\n\n")
    for m in c.absent:
        name = "SELF" if m.what == "SELF" else f"0x{m.guid:016x}"
        out.write(f"{c.policy.path}:{m.line}:{m.col}: {name}: no such port in the capture (no NodeInfo "
                  "answer names it)\n")
    out.write(summary(c) + "\n")


def counts(c: CaptureCheck) -> Counter:
    n: Counter[str] = Counter(p.status for p in c.ports)
    for p in c.ports:
        n["missing"] += len(p.missing) if p.status == "violation" else 0
        n["extra"] += len(p.extra)
        n["membership"] += len(p.membership)
    return n


def summary(c: CaptureCheck) -> str:
    n = counts(c)
    checked = n["ok"] + n["violation"]
    if not c.violations:
        text = f"as the policy says: {checked} ports checked"
    else:
        text = (f"{n['violation']} of {checked} ports break the policy ({n['missing']} P_Keys missing, "
                f"{n['extra']} extra, {n['membership']} wrong membership); {n['never programmed']} "
                "ports the policy names never programmed")
    if n["not checked"]:
        whys = Counter(p.why for p in c.ports if p.status == "not checked")
        text += f"; not checked: {', '.join(f'{v} ({k})' for k, v in whys.items())}"
    if c.absent:
        text += f"; {len(c.absent)} members name no port of the capture"
    return text


def print_json(c: CaptureCheck, out) -> None:
    for p in c.ports:
        rec = {"type": "port", "status": p.status,
               **(p.pid.as_json() if p.pid else {"lid": None, "dr_path": None, "port": None}),
               "node_description": p.node, "guid": p.guid, "facing": p.facing, "pkeys": sorted(p.held), "required": sorted(p.required),
               "missing": p.missing, "extra": p.extra,
               "membership": [{"held": h, "required": w} for h, w in p.membership]}
        if p.why:
            rec["where" if p.status == "never programmed" else "why"] = p.why
        jsonl(rec, out)
    for m in c.absent:
        jsonl({"type": "absent", "member": m.what, "guid": m.guid, "line": m.line, "col": m.col}, out)
    n = counts(c)
    jsonl({"type": "summary", "capture": c.path, "policy": c.policy.path, "passed": not c.violations,
           "sm_guid": c.sm_guid, **{k.replace(" ", "_"): int(n[k]) for k in
                                    ("ok", "violation", "never programmed", "not checked", "missing", "extra",
                                     "membership")},
           "absent": len(c.absent), "warnings": c.policy.warnings, "file_error": c.file_error}, out)


