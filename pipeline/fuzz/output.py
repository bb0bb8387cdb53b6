"""What ``madpipe fuzz`` reports: the run's progress line, its summary (text or a JSON record), one
replayed case and what each target makes of it; where findings go, and which targets can run here.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.decode.output import hexdump, jsonl
from madpipe.pipeline.decode.text import line
from madpipe.pipeline.fuzz.findings import _jsonable_changes
from madpipe.pipeline.fuzz.runner import Options, Summary
from madpipe.pipeline.fuzz.targets.codecs import scapy_layers


def findings_jsonl_path(path: str) -> str:
    """Where the findings written as the capture ``path`` go as JSON Lines: its name with ``.jsonl``."""
    root, ext = os.path.splitext(path)
    return (root if ext.lower() in (".pcap", ".pcapng", ".cap") else path) + ".jsonl"


def unavailable(target: str) -> str | None:
    """Why ``target`` cannot run on this machine (an outside tool missing), or None."""
    if target == "tshark" and shutil.which("tshark") is None:
        return "tshark is not installed"
    if target == "ibsim" and shutil.which("ibsim") is None:
        return "ibsim is not installed (Debian package ibsim-utils)"
    return None


class Progress:
    """The run's progress on one stderr line, redrawn at most twice a second (``run``'s ``progress``)."""

    def __init__(self, count, seconds):
        self.count, self.seconds, self.last = count, seconds, 0.0

    def __call__(self, s) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        total = f"/{self.count:,}" if self.count else f" ({s.seconds:.0f}/{self.seconds:.0f} s)"
        rate = s.cases / s.seconds if s.seconds else 0
        bugs = sum(g.count for g in s.groups.values() if g.severity == "bug")
        sys.stderr.write(f"\rmadpipe fuzz: {s.cases:,}{total} cases, {rate:,.0f}/s, {len(s.groups)} kinds of "
                         f"finding, {bugs} bugs ")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def _stats_text(name: str, c) -> str:
    order = {
        "codecs": ["decoded", "refused with an error", "full MADs", "roundtrip", "scapy", "ingested"],
        "snoop": ["MADs", "snooped", "master events", "spill", "refused"],
        "paravirt": ["mailboxes", "spill", "refused", "getresp", "getresp spill", "getresp refused"],
        "tshark": ["frames", "malformed", "dissector-bug", "crash", "hang"],
        "ibsim": ["sent", "answers", "dead", "silent"],
        "files": ["captures", "traces", "pkey-maps", "commands", "read whole", "cut short", "refused", "reports"],
    }.get(name, [])
    keys = [k for k in order if k in c] + sorted(k for k in c if k not in order)
    return ", ".join(f"{c[k]:,} {k}" for k in keys)


def print_text(s: Summary, opts: Options, out, capture=None, jsonl_path=None) -> None:
    """The run's summary: its figures, the findings by kind (the first case of each), where they were saved."""
    rate = s.cases / s.seconds if s.seconds else 0
    out.write(f"madpipe fuzz: seed {opts.seed}, {s.cases:,} cases (from {opts.start}) in {s.seconds:.1f} s "
              f"({rate:,.0f}/s, {opts.jobs} jobs); corpus {s.corpus} ({s.seeds} seeds, digest {s.corpus_digest})\n")
    for name in opts.targets:
        if name in s.stats:
            out.write(f"  {name:<9} {_stats_text(name, s.stats[name])}\n")
    if "codecs" in opts.targets and scapy_layers() is None:
        out.write("  (the scapy layers, madpipe.codecs.layers, cannot be imported: not checked)\n")
    bugs = s.findings("bug")
    if s.groups:
        out.write("\nFindings (the first case of each replays with --replay SEED:CASE):\n")
        out.write(f"  {'count':>9}  {'target':<8}  {'kind':<16}  {'severity':<8}  {'first case':>10}  what\n")
        order = {"bug": 0, "tool": 1, "kernel": 2}
        for g in sorted(s.groups.values(), key=lambda g: (order.get(g.severity, 3), g.target, g.kind, -g.count)):
            first = g.examples[0] if g.examples else {}
            what = first.get("what", g.key) if g.severity != "kernel" else g.key
            out.write(f"  {g.count:>9,}  {g.target:<8}  {g.kind:<16}  {g.severity:<8}  "
                      f"{first.get('case', ''):>10}  {what[:160]}\n")
    out.write("\n")
    if not bugs:
        out.write("No crash and no mismatch in madpipe.\n")
    else:
        out.write(f"{sum(g.count for g in bugs):,} bug findings in {len(bugs)} kinds: replay them with --replay.\n")
    if capture:
        kept = sum(1 for g in s.groups.values() for e in g.examples if "capture_frame" in e)
        out.write(f"Findings written to {capture} ({kept} frames) and {jsonl_path}.\n")


def summary_json(s: Summary, opts: Options, capture=None, jsonl_path=None) -> dict:
    """The run's summary as the last JSON Lines record of ``-T json``."""
    return {
        "type": "summary", "seed": opts.seed, "start": opts.start, "cases": s.cases,
        "seconds": round(s.seconds, 3), "jobs": opts.jobs, "targets": list(opts.targets),
        "corpus": s.corpus, "corpus_digest": s.corpus_digest, "seeds": s.seeds,
        "stats": {k: dict(v) for k, v in s.stats.items()},
        "groups": [{"target": g.target, "kind": g.kind, "severity": g.severity, "key": g.key, "count": g.count,
                    "first_case": g.examples[0]["case"] if g.examples else None} for g in s.groups.values()],
        "bugs": sum(g.count for g in s.findings("bug")),
        "interrupted": s.interrupted, "capture": capture, "jsonl": jsonl_path,
    }


def print_replay(seed: int, index: int, one, findings, targets, out, *, format: str = "text",
                 hex: bool = False) -> None:
    """Case ``index`` of ``seed`` as ``replay`` returned it (``one``, ``findings``): the frame, its
    mutations and changed fields, its decode and each target's findings; -T json: a ``case`` record,
    then one per finding."""
    frame = one.frame(0)
    rec = decode_frame(frame, 1, 0.0)
    if format == "json":
        jsonl({"type": "case", "seed": seed, "case": index, "corpus_seed": one.corpus.names[int(one.seed_id[0])],
               "frame": frame.hex(), "mutations": one.notes[0],
               "changed_fields": _jsonable_changes(one.changed_fields(0)),
               "mailbox": one.mailboxes[0].tobytes().hex(), "decode": rec}, out)
        for f in findings:
            jsonl({"type": "finding", "target": f.target, "kind": f.kind, "severity": f.severity, "what": f.what,
                   "key": f.key, "case": f.case, **f.data}, out)
        return
    out.write(f"case {seed}:{index}, from {one.corpus.names[int(one.seed_id[0])]}, {len(frame)} bytes\n")
    out.write("mutations:\n")
    for n in one.notes[0]:
        out.write(f"  {n}\n")
    changes = one.changed_fields(0)
    if changes:
        out.write("changed fields: " + ", ".join(f"{c['field']} {_short(c['old'])} -> {_short(c['new'])}"
                                                for c in changes) + "\n")
    out.write("decode: " + line(rec, 0.0).rstrip() + "\n")
    if "error" in rec:
        out.write(f"  error: {rec['error']}\n")
    if hex:
        hexdump(frame, out)
    out.write("targets:\n")
    for name in targets:
        mine = [f for f in findings if f.target == name]
        if not mine:
            out.write(f"  {name}: nothing found\n")
        for f in mine:
            out.write(f"  {name}: {f.kind} ({f.severity}): {f.what}\n")


def _short(v) -> str:
    if isinstance(v, int):
        return f"0x{v:x}" if v < 1 << 64 else f"0x{v:x}"[:18] + "…"
    return str(v)


def print_files_text(s: Summary, opts, out) -> None:
    """``--target files``: the summary, then where the minimised files went."""
    print_text(s, opts, out)
    if opts.write:
        kept = sum(1 for g in s.groups.values() for e in g.examples if "file" in e)
        out.write(f"Findings written to {opts.write}/ ({kept} minimised files) and {opts.write}/findings.jsonl.\n")


def print_files_replay(seed: int, index: int, seed_file, edits, minimal, data: bytes, findings, out, *,
                       format: str = "text", hex: bool = False) -> None:
    """One case of ``--target files`` again: its seed file, edits, findings and their minimal edits."""
    if format == "json":
        jsonl({"type": "case", "seed": seed, "case": index, "seed_file": seed_file.name, "bytes": len(data),
               "edits": [e.note for e in edits]}, out)
        for f, keep in zip(findings, minimal):
            jsonl({"type": "finding", "target": f.target, "kind": f.kind, "severity": f.severity, "what": f.what,
                   "key": f.key, "case": f.case, "minimal_edits": [e.note for e in keep], **f.data}, out)
        return
    out.write(f"case {seed}:{index}, from {seed_file.name} ({len(seed_file.data)} bytes), now {len(data)} bytes\n")
    out.write("edits:\n")
    for e in edits:
        out.write(f"  {e.note}\n")
    if hex:
        hexdump(data, out)
    if not findings:
        out.write("files: nothing found (every command ended 0, 1 or 2; decode and snoop agree)\n")
    for f, keep in zip(findings, minimal):
        out.write(f"files: {f.kind}: {f.what}\n  minimal edits: {'; '.join(e.note for e in keep)}\n")
