"""What ``madpipe capture`` and ``madpipe replay`` report: the tool runs of a capture, each replayed
MAD and the replay's summary (a table or JSON Lines), and the answers written as a capture.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import TYPE_CHECKING

from madpipe.codecs.capture import CaptureWriter
from madpipe.pipeline.sim.packets import LEFT_OUT, sim_request_frame
from madpipe.pipeline.sim.protocol import SimRequest
from madpipe.pipeline.sim.replay import Item, Outcome, ReplayResult, mad_status
from madpipe.pipeline.sim.replay_safety import changed_ports, changes_state, destination, dry_run_line

if TYPE_CHECKING:
    from madpipe.pipeline.sim.capture import SimCapture


# -- capture ------------------------------------------------------------------------------------------

def print_capture_report(capture: SimCapture, path: str, linktype: int, frames: int, out) -> None:
    """``madpipe capture``'s report: a table of the tool runs (start, seconds, MADs), then one line on
    the capture written to ``path`` (``frames`` frames of ``linktype``) and what was left out."""
    datagrams = capture.relay.datagrams
    t0 = capture.runs[0].start_ns if capture.runs else 0
    out.write(f"{'run':>3} {'start':>9} {'seconds':>8} {'MADs':>6}  tool\n")
    for n, r in enumerate(capture.runs, 1):
        mads = sum(r.start_ns <= d.ts_ns <= r.end_ns for d in datagrams)
        cmd = " ".join([r.name, *(_short(a) for a in r.argv[1:])])
        out.write(f"{n:3d} {(r.start_ns - t0) / 1e9:9.3f} {r.seconds:8.3f} {mads:6d}  {cmd}\n")
    c = capture.counts
    size = os.path.getsize(path)
    line = (f"{path}: {frames} frames, {size} bytes, link type {linktype}; "
            f"{c['datagrams']} datagrams from {c['clients']} client attachment{'s' * (c['clients'] != 1)}")
    left_out = {k: c[k] for k in LEFT_OUT if c[k]}
    if left_out:
        line += "; left out: " + ", ".join(f"{v} {k}" for k, v in left_out.items())
    relay = {k: v for k, v in capture.relay.counts.items() if k != "ctl"}
    if relay:
        line += "; relay: " + ", ".join(f"{v} {k}" for k, v in relay.items())
    if c["source LID unknown"]:
        line += f"; {c['source LID unknown']} LID-routed requests with an unknown source LID (0)"
    out.write(line + "\n")


def _short(arg: str) -> str:
    """Tool arguments as a reader wants them: file names without the temporary directory."""
    return os.path.basename(arg) if os.sep in arg else arg


# -- replay -------------------------------------------------------------------------------------------

def replay_progress(err):
    """``replay``'s ``progress``: a line on ``err`` (redrawn in place on a terminal)."""
    def show(result: ReplayResult, done: int, total: int) -> None:
        line = (f"replay: {done}/{total} sent, {_answered(result)} answered, "
                f"{_timed_out(result)} timed out")
        if err.isatty():
            err.write("\r" + line)
        else:
            err.write(line + "\n")
        err.flush()
    return show


def _answered(result: ReplayResult) -> int:
    return sum(o.result == "answered" for o in result.outcomes)


def _timed_out(result: ReplayResult) -> int:
    return sum(o.result == "timed out" for o in result.outcomes)


def outcome_record(o: Outcome) -> dict:
    """One replayed MAD as its ``-T json`` record."""
    m = o.item.mad
    rec = {"type": "mad", "frame": o.item.frame, "mgmt_class": m[1], "method": m[3],
           "attr_id": int.from_bytes(m[16:18], "big"), "attr_mod": int.from_bytes(m[20:24], "big"),
           "tid": int.from_bytes(m[8:16], "big"), "dlid": o.item.dlid, "result": o.result}
    if o.answer is not None:
        rec["status"] = mad_status(o.answer.mad)
        rec["rtt_us"] = round((o.answer.ts_ns - o.sent_ns) / 1000, 1)
    return rec


SUMMARY_KEYS = ("sent", "answered", "answered with MAD status", "timed out", "undeliverable",
                "send error", "no answer expected", "came back", "unmatched answers")


def summary_record(result: ReplayResult, load: Counter) -> dict:
    """The summary of ``-T json`` (without its ``type``): the replay's counts and ``load_items``'s."""
    d = {k.replace(" ", "_"): result.counts[k] for k in SUMMARY_KEYS}
    d.update(frames=load["frames"], replayed=len(result.outcomes), seconds=round(result.seconds, 6))
    for k in ("not a MAD", "responses left out", "filtered out"):
        d[k.replace(" ", "_")] = load[k]
    d["set_ports"] = changed_ports([o.item for o in result.outcomes if o.result != "send error"])
    return d


def print_summary(result: ReplayResult, load: Counter, out) -> None:
    """The summary table: frames read and left out, MADs sent and what became of them, the time."""
    c = result.counts
    rows = [("frames read", load["frames"]), ("  not a MAD", load["not a MAD"]),
            ("  responses left out", load["responses left out"]),
            ("  filtered out (-Y)", load["filtered out"]),
            ("MADs sent", c["sent"]), ("  answered", c["answered"]),
            ("    with a non-zero MAD status", c["answered with MAD status"]),
            ("  timed out", c["timed out"]), ("  no answer expected", c["no answer expected"]),
            ("  came back to us, the addressee", c["came back"]),
            ("errors: returned undeliverable", c["undeliverable"]),
            ("errors: could not send", c["send error"]),
            ("answers matching nothing sent", c["unmatched answers"])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.write(f"{k:<{width}} {v:8d}\n")
    rate = c["sent"] / result.seconds if result.seconds else 0.0
    out.write(f"{'seconds':<{width}} {result.seconds:8.3f}  ({rate:.0f} MADs/s)\n")


FAILED = ("undeliverable", "timed out", "send error")


def failure_line(result: ReplayResult) -> str | None:
    """One line on the MADs that did not get through (returned undeliverable, timed out, not
    sent) with the first frame of each kind, or None when every one did."""
    parts = []
    for kind in FAILED:
        frames = [o.item.frame for o in result.outcomes if o.result == kind]
        if frames:
            what = {"undeliverable": "came back undeliverable", "timed out": "timed out",
                    "send error": "could not be sent"}[kind]
            parts.append(f"{len(frames)} {what} (first: frame {frames[0]})")
    if not parts:
        return None
    return f"{', '.join(parts)} of {len(result.outcomes)} MADs"


def print_json(result: ReplayResult, load: Counter, out) -> None:
    """``-T json``: a record per replayed MAD, then the summary."""
    for o in result.outcomes:
        out.write(json.dumps(outcome_record(o), separators=(",", ":")) + "\n")
    out.write(json.dumps({"type": "summary", **summary_record(result, load)}, separators=(",", ":")) + "\n")


def write_answers(path: str, result: ReplayResult) -> None:
    """The answers the fabric sent back (not those returned undeliverable, not timeouts) as a
    capture: each as the native IB packet of its ``struct sim_request``, at the time it came."""
    with CaptureWriter(path) as w:
        for a in result.answers:
            if not (a.returned or a.timed_out):
                w.write(sim_request_frame(SimRequest(a.dlid, a.slid, a.dqp, a.sqp, 0, a.mad)), a.ts_ns)


def changed_ports_text(items: list[Item], verb: str) -> str:
    """The line naming the ports the state-changing MADs of ``items`` address ("" if none)."""
    ports = changed_ports(items)
    if not ports:
        return ""
    n = sum(map(changes_state, items))
    return f"{n} Sets {verb} {len(ports)} port{'s' * (len(ports) != 1)}: {', '.join(ports)}\n"


def print_dry_run(items: list[Item], load: Counter, fmt: str, out) -> None:
    """``--dry-run``: a line (or a ``-T json`` record) per MAD saying where it would go and the
    port it would change, then the ports every Set would change."""
    if fmt == "json":
        for it in items:
            m = it.mad
            rec = {"type": "mad", "frame": it.frame, "mgmt_class": m[1], "method": m[3],
                   "attr_id": int.from_bytes(m[16:18], "big"), "attr_mod": int.from_bytes(m[20:24], "big"),
                   "tid": int.from_bytes(m[8:16], "big"), "dlid": it.dlid, "to": destination(it),
                   "changes_state": changes_state(it), "result": "dry run"}
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        summary = {"type": "summary", "dry_run": True, "frames": load["frames"], "would_send": len(items),
                   "state_changing": sum(map(changes_state, items)), "set_ports": changed_ports(items)}
        out.write(json.dumps(summary, separators=(",", ":")) + "\n")
        return
    for it in items:
        out.write(dry_run_line(it) + "\n")
    out.write(f"would send {len(items)} MADs of {load['frames']} frames\n")
    out.write(changed_ports_text(items, "would change") or "no MAD would set or announce state\n")
