"""The ``codecs`` fuzz target: every frame through ``decode_frame``, a sample round-tripped layer by layer.

``decode_frame`` must return a record (never raise), the record must be JSON, and an ``error``
must read ``offset N, field F: reason``. On a sample (one case in ``roundtrip_every``, chosen by
the case's hash) every layer present is parsed with the plain and the compiled schema, built
back, and compared: the same bytes, the same values in both, and the values ``decode_frame``
reported; and the scapy layers (``codecs/layers.py``, when present) dissect and rebuild the same
bytes. The whole batch is also written as an ERF capture and read back through ``Ingest`` (the
numba record scanner and row/MAD gather): every frame must come back, and a MAD must be found
exactly where ``decode_frame`` found one.
"""
from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np

from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import perf
from madpipe.codecs import smp as smpc
from madpipe.codecs.compiled import compiled
from madpipe.codecs.frame import decode_frame, gid_text, plain
from madpipe.pipeline.fuzz.findings import SEVERITY_BUG, Finding, exc_text, where_raised
from madpipe.pipeline.fuzz.mutate.cases import Cases
from madpipe.pipeline.fuzz.mutate.rng import CaseRng

ERROR_PART = re.compile(r"^offset \d+, field [a-z_][a-z0-9_.\[\]]*: \S")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _roundtrip(layer: str, schema, raw: bytes, problems: list, reported: dict | None = None,
               skip: tuple = ()) -> None:
    """Parse ``raw`` with the plain and the compiled schema, build back, compare with each other
    and with the values ``decode_frame`` reported."""
    values = {}
    for label, sch in (("plain", schema), ("compiled", compiled(schema))):
        try:
            parsed = sch.parse(raw)
            again = sch.build(parsed)
        except Exception as exc:  # a schema that raises on bytes of its own size is a bug
            problems.append(("roundtrip", f"{layer} {label} raises {type(exc).__name__}",
                             f"{layer}: the {label} schema raised {exc_text(exc)} at {where_raised(exc)}"))
            continue
        if again != raw:
            at = _first_diff(again, raw)
            problems.append(("roundtrip", f"{layer} {label} build(parse(x)) != x",
                             f"{layer}: build(parse(x)) != x with the {label} schema "
                             f"(first difference at byte {at} of the layer)"))
        values[label] = _strip(parsed)
    if len(values) == 2 and values["plain"] != values["compiled"]:
        diff = [k for k in values["plain"] if values["plain"].get(k) != values["compiled"].get(k)]
        problems.append(("compiled-differs", f"{layer}: {', '.join(diff[:3])}",
                         f"{layer}: the compiled schema parses other values than the plain one ({', '.join(diff[:5])})"))
    if reported is not None and "plain" in values:
        mine = plain(values["plain"])
        for key, value in reported.items():
            if key in skip or key not in mine:
                continue
            if mine[key] != value:
                problems.append(("record-differs", f"{layer}.{key}",
                                 f"{layer}.{key}: decode_frame says {value!r}, the plain schema {mine[key]!r}"))


def _layer_offsets(data: bytes, rec: dict) -> dict:
    """Where each layer of ``rec`` starts in ``data`` (decode_frame's walk, from what it found)."""
    pos = ibh.LRH_SIZE
    out = {"lrh": 0}
    if "grh" in rec:
        out["grh"] = pos
        pos += ibh.GRH_SIZE
    if "bth" in rec:
        out["bth"] = pos
        pos += ibh.BTH_SIZE
    if "deth" in rec:
        out["deth"] = pos
        pos += ibh.DETH_SIZE
        if rec["bth"]["opcode"] == ibh.OPCODE_UD_SEND_ONLY_IMM:
            pos += 4
    if "mad" in rec:
        out["mad"] = pos
    return out


def roundtrip_problems(data: bytes, rec: dict) -> list[tuple[str, str, str]]:
    """The layer-by-layer round trip of one decoded frame: (kind, key, what) for each problem."""
    problems: list = []
    at = _layer_offsets(data, rec)
    if "lrh" in rec:
        _roundtrip("lrh", ibh.LRH, data[:8], problems, rec["lrh"])
    if "grh" in rec:
        g = at["grh"]
        grh = dict(rec["grh"])
        _roundtrip("grh", ibh.GRH, data[g:g + 40], problems, grh, skip=("sgid", "dgid"))
        for key, off in (("sgid", 8), ("dgid", 24)):
            if gid_text(data[g + off:g + off + 16]) != grh[key]:
                problems.append(("record-differs", f"grh.{key}", f"grh.{key}: decode_frame says {grh[key]}"))
    if "bth" in rec:
        b = at["bth"]
        _roundtrip("bth", ibh.BTH, data[b:b + 12], problems, rec["bth"])
    if "deth" in rec:
        d = at["deth"]
        _roundtrip("deth", ibh.DETH, data[d:d + 8], problems, rec["deth"])
    if "mad" in rec:
        m = at["mad"]
        _roundtrip("mad", madc.MADHeader, data[m:m + 24], problems, rec["mad"])
    if "attr" in rec and "mad" in rec:
        m = at["mad"]
        raw = data[m:m + madc.MAD_SIZE]
        cls = rec["mad"]["mgmt_class"]
        attr = {k: v for k, v in rec["attr"].items() if k not in ("name", "block")}
        if cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
            _roundtrip("smp", smpc.SMPDirected, raw, problems)
            _roundtrip("attr", smpc.attribute_schema(rec["mad"]["attr_id"]), raw[64:128], problems, attr)
            s = rec["smp"]
            used = min(raw[7], 63)
            for key, off in (("initial_path", 128), ("return_path", 192)):
                if s[key] != list(raw[off + 1:off + 1 + used]):
                    problems.append(("record-differs", f"smp.{key}", f"smp.{key} is not hops 1..hop_cnt of the path"))
        elif cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED:
            _roundtrip("smp", smpc.SMP, raw, problems)
            _roundtrip("attr", smpc.attribute_schema(rec["mad"]["attr_id"]), raw[64:128], problems, attr)
        elif cls == madc.IB_MGMT_CLASS_PERF_MGMT and rec["mad"]["attr_id"] in perf.PERF_ATTRIBUTES:
            _roundtrip("perf", perf.PerfMAD, raw, problems)
            _roundtrip("attr", perf.attribute_schema(rec["mad"]["attr_id"]), raw[64:256], problems, attr)
    return problems


_LAYERS_MODULE: list = []


def scapy_layers():
    """``madpipe.codecs.layers`` when it can be imported (scapy layers, issue 4), else None."""
    if not _LAYERS_MODULE:
        try:
            from madpipe.codecs import layers
        except Exception:
            layers = None
        _LAYERS_MODULE.append(layers)
    return _LAYERS_MODULE[0]


def scapy_problems(data: bytes) -> list[tuple[str, str, str]]:
    """Dissect ``data`` with the scapy layers (from the LRH) and rebuild it: the same bytes back."""
    layers = scapy_layers()
    if layers is None or not data:
        return []
    try:
        pkt = layers.LRH(data)
    except Exception as exc:
        return [("scapy-crash", f"dissect {type(exc).__name__} at {where_raised(exc)}",
                 f"scapy: LRH(frame) raised {exc_text(exc)} at {where_raised(exc)}")]
    try:
        again = bytes(pkt)
    except Exception as exc:
        return [("scapy-crash", f"build {type(exc).__name__} at {where_raised(exc)}",
                 f"scapy: bytes(LRH(frame)) raised {exc_text(exc)} at {where_raised(exc)}")]
    if again != data:
        top = pkt.lastlayer().name if pkt is not None else "?"
        at = _first_diff(again, data)
        return [("scapy-roundtrip", f"{top}: rebuilt {'longer' if len(again) > len(data) else 'shorter' if len(again) < len(data) else 'different'}",
                 f"scapy: bytes(LRH(frame)) differs from the frame at byte {at} "
                 f"({len(again)} bytes rebuilt, {len(data)} read; innermost layer {top})")]
    return []


def check_frame(data: bytes, roundtrip: bool = True, scapy: bool = False):
    """The codecs target on one frame: ``(record or None, [(kind, key, what), ...])``.

    ``decode_frame`` must return a JSON-ready record, never raise; an ``error`` must name offset
    and field; with ``roundtrip`` every layer is checked as :func:`roundtrip_problems` says, and
    with ``scapy`` the scapy layers too.
    """
    try:
        rec = decode_frame(data)
    except Exception as exc:
        return None, [("crash", f"{type(exc).__name__} at {where_raised(exc)}",
                       f"decode_frame raised {exc_text(exc)} at {where_raised(exc)}")]
    problems = []
    try:
        json.dumps(rec)
    except (TypeError, ValueError) as exc:
        problems.append(("not-json", exc_text(exc), f"the decode record is not JSON: {exc_text(exc)}"))
    err = rec.get("error")
    if err is not None:
        for part in str(err).split("; "):
            if not ERROR_PART.match(part):
                problems.append(("unclear-error", re.sub(r"\d+", "N", part)[:80],
                                 f"error does not name offset and field: {part!r}"))
    if roundtrip:
        try:
            problems += roundtrip_problems(data, rec)
        except Exception as exc:
            problems.append(("crash", f"roundtrip {type(exc).__name__} at {where_raised(exc)}",
                             f"checking the round trip raised {exc_text(exc)} at {where_raised(exc)}"))
    if scapy and "error" not in rec:
        # What decodes must re-encode to the same bytes; a frame refused with an error need not.
        problems += scapy_problems(data)
    return rec, problems


def _has_full_mad(rec: dict | None) -> bool:
    return rec is not None and "attr" in rec


class CodecsTarget:
    name = "codecs"

    def __init__(self, seed: int, roundtrip_every: int = 8, scapy_every: int = 64):
        self.seed = seed
        self.roundtrip_every = max(1, roundtrip_every)
        self.scapy_every = max(1, scapy_every)
        self.stats = Counter()

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        out = []
        rng = CaseRng(self.seed, cases.index)
        rt = rng.below("roundtrip sample", self.roundtrip_every) == 0
        sc = rng.below("scapy sample", self.scapy_every) == 0
        have_scapy = scapy_layers() is not None
        records = []
        for k in range(len(cases)):
            data = cases.frame(k)
            rec, problems = check_frame(data, roundtrip=bool(rt[k]), scapy=bool(sc[k]) and have_scapy)
            records.append(rec)
            self.stats["decoded"] += 1
            self.stats["roundtrip"] += int(rt[k])
            self.stats["scapy"] += int(sc[k] and have_scapy)
            if rec is not None and "error" in rec:
                self.stats["refused with an error"] += 1
            if _has_full_mad(rec):
                self.stats["full MADs"] += 1
            for kind, key, what in problems:
                out.append(Finding(self.name, kind, SEVERITY_BUG, int(cases.index[k]), key, what))
        ctx.records = records
        out += self._ingest(cases, ctx, records)
        return out

    def _ingest(self, cases: Cases, ctx, records) -> list[Finding]:
        """The batch's ERF capture back through Ingest: every frame, MADs where decode_frame found them."""
        from madpipe.pipeline.ingest.reader import Ingest

        out = []
        path = ctx.capture()
        ing = Ingest(path)
        got_rows, got_len, got_off = [], [], []
        try:
            for batch in ing:
                got_rows.append(batch.data)
                got_len.append(batch.length)
                got_off.append(batch.mad_offset)
        except Exception as exc:
            return [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[0]), f"ingest {type(exc).__name__}",
                            f"Ingest raised {exc_text(exc)} at {where_raised(exc)} on the batch from case "
                            f"{int(cases.index[0])}")]
        self.stats["ingested"] += ing.frames
        n = len(cases)
        if ing.frames != n or ing.error or sum(ing.skipped.values()):
            return [Finding(self.name, "ingest", SEVERITY_BUG, int(cases.index[0]), "frames lost",
                            f"Ingest read {ing.frames} of {n} frames (error {ing.error!r}, skipped {dict(ing.skipped)})")]
        rows = np.concatenate(got_rows) if got_rows else np.zeros((0, 336), np.uint8)
        length = np.concatenate(got_len)
        mad_off = np.concatenate(got_off).astype(np.int64)
        bad_len = np.flatnonzero(length != cases.length)
        for k in bad_len[:1]:
            out.append(Finding(self.name, "ingest", SEVERITY_BUG, int(cases.index[k]), "length",
                               f"Ingest says {int(length[k])} bytes, the frame has {int(cases.length[k])}"))
        width = rows.shape[1]
        cols = np.arange(width)
        want = np.where(cols[None, :] < np.minimum(cases.length, width)[:, None], cases.frames[:, :width], 0)
        bad_rows = np.flatnonzero((rows != want).any(axis=1))
        for k in bad_rows[:1]:
            out.append(Finding(self.name, "ingest", SEVERITY_BUG, int(cases.index[k]), "row bytes",
                               "Ingest's row differs from the frame's bytes"))
        expect = np.array([_layer_offsets(cases.frame(k), r)["mad"] if _has_full_mad(r) else -1
                           for k, r in enumerate(records)], dtype=np.int64)
        bad = np.flatnonzero(expect != mad_off)
        for k in bad:
            e, g = int(expect[k]), int(mad_off[k])
            key = "MAD missed" if g < 0 else "MAD where decode_frame found none" if e < 0 else "MAD at another offset"
            out.append(Finding(self.name, "ingest-differs", SEVERITY_BUG, int(cases.index[k]), key,
                               f"Ingest's MAD offset {g} but decode_frame's {e}"))
        return out
