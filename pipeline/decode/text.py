"""Decoded frames as text: one line a frame (``madpipe decode``'s default output) and the run's counts."""
from __future__ import annotations

from collections import Counter

from madpipe.codecs import mad
from madpipe.codecs.ib_headers import opcode_name


def summary(name: str, c: Counter) -> str:
    text = (f"{name}: {c['read']} frames read, {c['decoded']} decoded ({c['mads']} MADs), "
            f"{c['errors']} with errors, {c['skipped']} skipped; "
            f"ICRC {c['icrc_ok']} ok {c['icrc_bad']} bad, VCRC {c['vcrc_ok']} ok {c['vcrc_bad']} bad")
    if c["shown"] != c["read"]:
        text += f"; {c['shown']} shown"
    return text


def seconds_text(elapsed_ns: int) -> str:
    """``elapsed_ns`` as seconds to the microsecond, rounded half to even from the exact integer
    (a float of an epoch time has no nanoseconds to spare: 5198598 ns printed as 0.005198)."""
    us, rest = divmod(abs(elapsed_ns), 1000)
    if rest > 500 or (rest == 500 and us & 1):
        us += 1
    sign = "-" if elapsed_ns < 0 and us else ""
    return f"{sign}{us // 1_000_000}.{us % 1_000_000:06d}"


def line(r: dict, first_ts: float, elapsed_ns: int | None = None) -> str:
    """One frame, one line: number, time, SLID -> DLID, class, method, attribute, modifier, TID, status.

    The time is ``elapsed_ns`` (exact) when given, else ``r['ts'] - first_ts``."""
    elapsed = f"{r['ts'] - first_ts:11.6f}" if elapsed_ns is None else f"{seconds_text(elapsed_ns):>11}"
    head = f"{r['frame']:6d} {elapsed}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"
    lrh = r.get("lrh")
    if lrh is None:
        return f"{head} [error: {r.get('error')}]"
    parts = [head, f"{lrh['slid']:#06x} -> {lrh['dlid']:#06x}"]
    m = r.get("mad")
    if m is not None:
        attr = r.get("attr", {}).get("name") or f"0x{m['attr_id']:04x}"
        parts += [
            f"{mad.mgmt_class_name(m['mgmt_class']):<10}",
            f"{mad.method_name(m['method']):<11}",
            f"{attr:<20}",
            f"mod={m['attr_mod']:#010x}",
            f"tid={m['tid']:#018x}",
            mad.status_text(m["status"]) if m["mgmt_class"] != mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
            else _dr_status(m["status"]),
        ]
        smp = r.get("smp") or {}
        if "hop_cnt" in smp:
            parts.append(f"hops={smp['hop_ptr']}/{smp['hop_cnt']} path={','.join(map(str, smp['initial_path']))}")
        a = r.get("attr") or {}
        if "pkeys" in a:
            keys = " ".join(f"[{i}]0x{p:04x}" for i, p in enumerate(a["pkeys"]) if p)
            parts.append(f"block {a['block']}: {keys or '(all zero)'}")
    elif "bth" in r:
        parts.append(opcode_name(r["bth"]["opcode"]))
        parts.append(f"qp {r['bth']['dqp']:#x} psn {r['bth']['psn']}")
        if "payload_len" in r:
            parts.append(f"{r['payload_len']} bytes")
    elif "raw_len" in r:
        parts.append(f"raw packet, {r['raw_len']} bytes")
    if r.get("icrc_ok") is False or r.get("vcrc_ok") is False:
        parts.append(f"[bad CRC: icrc_ok={r.get('icrc_ok')} vcrc_ok={r.get('vcrc_ok')}]")
    if "error" in r:
        parts.append(f"[error: {r['error']}]")
    return " ".join(parts)


def _dr_status(status: int) -> str:
    text = mad.status_text(status)
    return f"{text} D" if status & mad.IB_SMP_DIRECTION else text
