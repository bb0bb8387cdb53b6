"""What ``madpipe fuzz`` finds: a :class:`Finding` per case, :class:`Group` by signature, and the :class:`Reporter`.

Findings are grouped by signature (target, kind, key); each group counts every occurrence and
keeps the first ``keep`` examples in case order, each written as a frame to the findings capture
(ERF, like ibdump's; its timestamp is the case number in seconds) and as a JSON line.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from madpipe.codecs.capture import CaptureWriter
from madpipe.pipeline.fuzz.mutate.mutator import Mutator

SEVERITY_BUG = "bug"        # madpipe itself: a crash, a kernel/reference mismatch, a broken round trip
SEVERITY_KERNEL = "kernel"  # the modelled C would index past its arrays (madpipe reproduces or refuses)
SEVERITY_TOOL = "tool"      # an outside tool: tshark, ibsim


@dataclass
class Finding:
    """One case a target found something in. ``key`` groups findings of one kind that are alike."""

    target: str
    kind: str
    severity: str
    case: int
    key: str
    what: str
    frame: bool = True          # the case's frame is the evidence (False: the mailbox is)
    data: dict = field(default_factory=dict)

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.target, self.kind, self.key)


@dataclass
class Group:
    """Every finding with one signature: how many, and the first examples in case order."""

    target: str
    kind: str
    severity: str
    key: str
    count: int = 0
    examples: list = field(default_factory=list)


def where_raised(exc: BaseException) -> str:
    """file:line of the innermost traceback frame inside madpipe (or the innermost at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "/codecs/" in f.filename or "/pipeline/" in f.filename]
    f = (mine or frames or [None])[-1]
    if f is None:
        return "?"
    return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}"


def exc_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class Reporter:
    """Where kept findings go: the findings capture, the JSON Lines file, a callback."""

    def __init__(self, mutator: Mutator, capture_path: str | None = None, jsonl_path: str | None = None,
                 on_finding=None):
        self.mutator = mutator
        self.writer = CaptureWriter(capture_path) if capture_path else None
        self.jsonl = open(jsonl_path, "w") if jsonl_path else None
        self.on_finding = on_finding
        self.frames = 0

    def record(self, f: Finding, group_no: int) -> dict:
        case = self.mutator.case(f.case)
        rec = {"type": "finding", "target": f.target, "kind": f.kind, "severity": f.severity, "what": f.what,
               "key": f.key, "group": group_no, "seed": self.mutator.seed, "case": f.case,
               "replay": f"{self.mutator.seed}:{f.case}", "corpus_seed": case.corpus.names[int(case.seed_id[0])]}
        if f.frame:
            rec["frame_len"] = int(case.length[0])
            rec["mutations"] = [n for n in case.notes[0] if not n.startswith("mailbox")]
            rec["changed_fields"] = _jsonable_changes(case.changed_fields(0))
            if self.writer is not None:
                self.writer.write(case.frame(0), ts_ns=f.case * 1_000_000_000)
                self.frames += 1
                rec["capture_frame"] = self.frames
        else:
            rec["mutations"] = [n for n in case.notes[0] if n.startswith("mailbox")]
            rec["changed_fields"] = _jsonable_changes(case.mailbox_changes(0))
        rec.update(f.data)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(rec) + "\n")
            self.jsonl.flush()
        if self.on_finding is not None:
            self.on_finding(rec)
        return rec

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()


def _jsonable_changes(changes: list[dict]) -> list[dict]:
    out = []
    for c in changes:
        c = dict(c)
        for k in ("old", "new"):
            if isinstance(c.get(k), int) and c[k] >= 1 << 64:
                c[k] = f"0x{c[k]:x}"[:34] + ("…" if len(f"{c[k]:x}") > 32 else "")
        out.append(c)
    return out
