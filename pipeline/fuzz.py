"""``madpipe fuzz``: targets that judge mutated cases, the runner, and what it reports.

::

    from madpipe.pipeline import fuzz
    summary = fuzz.run(fuzz.Options(seed=1, count=100_000, targets=["codecs", "snoop", "paravirt"]))
    summary.groups            # {signature: Group(count, examples)}: what was found, deduplicated
    fuzz.check_frame(b"...")  # the codecs target on one frame (also the atheris entry point's check)

Cases come from :mod:`madpipe.pipeline.mutate`: case ``i`` of seed ``s`` is the same frame,
mailbox and inputs in any run with the same corpus, so ``--replay s:i`` replays it exactly.

Targets (each judges a whole batch; a finding names the case, what happened and why):

- ``codecs``: every frame through ``decode_frame``. It must return a record (never raise), the
  record must be JSON, and an ``error`` must read ``offset N, field F: reason``. On a sample
  (one case in ``roundtrip_every``, chosen by the case's hash) every layer present is parsed with
  the plain and the compiled schema, built back, and compared: the same bytes, the same values in
  both, and the values ``decode_frame`` reported; and the scapy layers (``codecs/layers.py``,
  when present) dissect and rebuild the same bytes. The whole batch is also written as an ERF
  capture and read back through ``Ingest`` (the numba record scanner and row/MAD gather): every
  frame must come back, and a MAD must be found exactly where ``decode_frame`` found one.
- ``snoop``: each case's MAD (with its port and firmware status) through the numba ``smp_snoop``
  kernel and through the pure-Python reference, in case order from the batch's starting state:
  every output and the final state must agree bit for bit. The kernel's out-of-range conditions
  (a P_KeyTable block that spills into the next port's row or would leave the table, GUIDInfo
  past its 16 records, a port out of range) are findings of severity ``kernel``. The batch's
  capture also goes through ``fabric.snoop_capture`` (both rules): requests and responses are
  paired there, so responses without requests reach it.
- ``paravirt``: each case's mailbox through ``paravirt.rewrite`` (numba) and
  ``rewrite_reference``: output bytes, return code and finding must agree. P_Key indices
  128..255 (a read spilling into the next row of ``virt2phys_pkey``) and reads past the table are
  ``kernel`` findings. P_KeyTable MADs also go through ``virtual_pkey_getresp`` with their
  32-bit attribute modifier as the block.
- ``tshark``: the batch as an ERF capture through ``tshark``: a crash (pinned to its frame by
  bisection), a hang (timeout) or a frame tshark calls malformed or a dissector bug is a finding
  of severity ``tool``, grouped by tshark's message.
- ``ibsim``: each case's MAD sent to an ibsim started for the run (with opensm run once, so
  LID-routed SMPs reach their SMA), then a directed-route SubnGet(NodeInfo) probe: a simulator
  that exits or stops answering is a finding (and is restarted).

Findings are grouped by signature (target, kind, key); each group counts every occurrence and
keeps the first ``keep`` examples in case order, each written as a frame to the findings capture
(ERF, like ibdump's; its timestamp is the case number in seconds) and as a JSON line.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from madpipe.codecs import ib_headers as ibh, mad as madc, perf, qpc, smp as smpc
from madpipe.codecs.capture import CaptureWriter
from madpipe.codecs.compiled import compiled
from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.frame import decode_frame, gid_text, plain
from madpipe.pipeline.mutate import BATCH, Cases, CaseRng, Corpus, Mutator, batch_config

TARGETS = ("codecs", "snoop", "paravirt", "tshark", "ibsim")
DEFAULT_TARGETS = ("codecs", "snoop", "paravirt")

SEVERITY_BUG = "bug"        # madpipe itself: a crash, a kernel/reference mismatch, a broken round trip
SEVERITY_KERNEL = "kernel"  # the modelled C would index past its arrays (madpipe reproduces or refuses)
SEVERITY_TOOL = "tool"      # an outside tool: tshark, ibsim

ERROR_PART = re.compile(r"^offset \d+, field [a-z_][a-z0-9_.\[\]]*: \S")


# -- findings ------------------------------------------------------------------------------------

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


def _where(exc: BaseException) -> str:
    """file:line of the innermost traceback frame inside madpipe (or the innermost at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "/codecs/" in f.filename or "/pipeline/" in f.filename]
    f = (mine or frames or [None])[-1]
    if f is None:
        return "?"
    return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}"


def _exc_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# -- the codecs target ---------------------------------------------------------------------------

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
                             f"{layer}: the {label} schema raised {_exc_text(exc)} at {_where(exc)}"))
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
        return [("scapy-crash", f"dissect {type(exc).__name__} at {_where(exc)}",
                 f"scapy: LRH(frame) raised {_exc_text(exc)} at {_where(exc)}")]
    try:
        again = bytes(pkt)
    except Exception as exc:
        return [("scapy-crash", f"build {type(exc).__name__} at {_where(exc)}",
                 f"scapy: bytes(LRH(frame)) raised {_exc_text(exc)} at {_where(exc)}")]
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
        return None, [("crash", f"{type(exc).__name__} at {_where(exc)}",
                       f"decode_frame raised {_exc_text(exc)} at {_where(exc)}")]
    problems = []
    try:
        json.dumps(rec)
    except (TypeError, ValueError) as exc:
        problems.append(("not-json", _exc_text(exc), f"the decode record is not JSON: {_exc_text(exc)}"))
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
            problems.append(("crash", f"roundtrip {type(exc).__name__} at {_where(exc)}",
                             f"checking the round trip raised {_exc_text(exc)} at {_where(exc)}"))
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
        from madpipe.pipeline.ingest import Ingest

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
                            f"Ingest raised {_exc_text(exc)} at {_where(exc)} on the batch from case "
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


# -- the snoop target ----------------------------------------------------------------------------

SNOOP_OUTPUTS = ("pkey_change_bitmap", "master_event", "slave_events", "finding", "lid_change", "client_rereg",
                 "gid_change", "snooped")


def snoop_inputs(cases: Cases) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the cases whose seed carries a MAD, uint8[M, 256] those MADs from the frames)."""
    rows = np.flatnonzero(cases.mad_off >= 0)
    idx = cases.mad_off[rows][:, None] + np.arange(madc.MAD_SIZE)[None, :]
    return rows, np.ascontiguousarray(cases.frames[rows[:, None], idx])


def snoop_state(cfg):
    """The batch's starting state: init_pkeys, VF rows set as an operator would, maybe a random cache."""
    from madpipe.pipeline import snoop

    cache, v2p = snoop.init_pkeys(cfg.num_vfs, 2, cfg.pkey_table_len, cfg.snoop_master)
    rng = cfg.rng("snoop state")
    for slave in range(cfg.num_vfs + 1):
        if slave == cfg.snoop_master:
            continue
        for port in range(2):
            k = int(rng.integers(0, 6))
            idx = rng.integers(0, cfg.pkey_table_len, size=k)
            v2p[slave, port, idx] = rng.integers(0, cfg.pkey_table_len, size=k)
    if cfg.random_cache:
        keep = rng.random(cache.shape) < 0.7
        cache[:] = np.where(keep, cache, rng.integers(0, 1 << 16, size=cache.shape)).astype(np.uint16)
    lids = rng.integers(0, 1 << 16, size=(3, 2))
    return (cache, v2p, lids[0].astype(np.uint16), lids[1].astype(np.uint16),
            (lids[2] & 0xF).astype(np.uint8))


def snoop_finding_key(mad: np.ndarray, port: int, code: int) -> tuple[str, str]:
    """(kind, key) of a kernel out-of-range condition, by what the MAD asked for."""
    kind = "spill" if code == 1 else "refused"
    attr_id = (int(mad[16]) << 8) | int(mad[17])
    attr_mod = int.from_bytes(mad[20:24].tobytes(), "big")
    if not 1 <= port <= 2:
        return kind, "port_num outside 1..num_ports: refused"
    if attr_id == smpc.IB_SMP_ATTR_PKEY_TABLE:
        bn = attr_mod & 0xFFFF
        if code == 1:
            return kind, "P_KeyTable block 4..7 on port 1 spills into port 2's row of phys_pkey_cache"
        if port == 2 and 4 <= bn <= 7:
            return kind, "P_KeyTable block 4..7 on port 2 would write past phys_pkey_cache: refused"
        return kind, "P_KeyTable block past phys_pkey_cache: refused"
    if attr_id == smpc.IB_SMP_ATTR_GUID_INFO:
        return kind, "GUIDInfo block (attr_mod) >= 16 indexes past all_rec_per_port: refused"
    return kind, f"attribute 0x{attr_id:04x}: {kind}"


class SnoopTarget:
    name = "snoop"

    def __init__(self, fabric: bool = True):
        self.fabric = fabric
        self.stats = Counter()

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        from madpipe.pipeline import snoop

        rows, mads = snoop_inputs(cases)
        if not len(rows):
            return []
        port = np.ascontiguousarray(cases.port_num[rows])
        status = np.ascontiguousarray(cases.status[rows])
        state = snoop_state(cfg)
        kw = dict(num_vfs=cfg.num_vfs, master=cfg.snoop_master, profile=cfg.snoop_profile,
                  pkey_table_len=cfg.pkey_table_len, port_mgmt_change_events=cfg.port_mgmt_change_events)
        out = []
        results = []
        for run in (snoop.smp_snoop, snoop.smp_snoop_reference):
            cache, v2p, lid, sm_lid, sm_sl = (a.copy() for a in state)
            try:
                res = run(cache, v2p, mads, port, status, port_lid=lid, sm_lid=sm_lid, sm_sl=sm_sl, **kw)
            except Exception as exc:
                return [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[rows[0]]),
                                f"{run.__name__} {type(exc).__name__} at {_where(exc)}",
                                f"{run.__name__} raised {_exc_text(exc)} at {_where(exc)} on the batch "
                                f"from case {int(cases.index[0])}")]
            results.append((res, cache))
        (k, kcache), (r, rcache) = results
        self.stats["MADs"] += len(rows)
        self.stats["snooped"] += int(k.snooped.sum())
        self.stats["master events"] += int(k.master_event.sum())
        differs = np.zeros(len(rows), dtype=bool)
        which = {}
        for name in SNOOP_OUTPUTS:
            try:
                a, b = getattr(k, name), getattr(r, name)
            except Exception as exc:  # a result that cannot even be read is a bug of its own
                return out + [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[rows[0]]),
                                      f"SnoopResult.{name} {type(exc).__name__} at {_where(exc)}",
                                      f"reading SnoopResult.{name} raised {_exc_text(exc)} at {_where(exc)} "
                                      f"on the batch from case {int(cases.index[0])}")]
            d = (a != b) if a.ndim == 1 else (a != b).any(axis=1)
            if d.any():
                which[name] = d
                differs |= d
        if differs.any():
            first = int(np.flatnonzero(differs)[0])
            names = [n for n, d in which.items() if d[first]]
            out.append(Finding(self.name, "mismatch", SEVERITY_BUG, int(cases.index[rows[first]]),
                               f"{', '.join(names)} ({cfg.snoop_profile})",
                               f"smp_snoop kernel and reference disagree on {', '.join(names)} "
                               f"(profile {cfg.snoop_profile}; the first of {int(differs.sum())} MADs of the batch)",
                               data={"profile": cfg.snoop_profile, "port_num": int(port[first]),
                                     "status": int(status[first])}))
        elif not (np.array_equal(kcache, rcache) and np.array_equal(k.port_lid, r.port_lid)
                  and np.array_equal(k.sm_lid, r.sm_lid) and np.array_equal(k.sm_sl, r.sm_sl)):
            out.append(Finding(self.name, "mismatch", SEVERITY_BUG, int(cases.index[rows[-1]]), "final state",
                               "smp_snoop kernel and reference end the batch with different state"))
        for j in np.flatnonzero(k.finding != 0):
            kind, key = snoop_finding_key(mads[j], int(port[j]), int(k.finding[j]))
            self.stats[kind] += 1
            out.append(Finding(self.name, kind, SEVERITY_KERNEL, int(cases.index[rows[j]]), key,
                               f"{key} (attr_mod 0x{int.from_bytes(mads[j, 20:24].tobytes(), 'big'):08x}, "
                               f"port_num {int(port[j])})",
                               data={"code": int(k.finding[j]), "port_num": int(port[j]),
                                     "profile": cfg.snoop_profile}))
        if self.fabric:
            out += self._fabric(cases, cfg, ctx)
        return out

    def _fabric(self, cases, cfg, ctx) -> list[Finding]:
        from madpipe.pipeline import fabric

        out = []
        for rule in fabric.FROM_RULES:
            try:
                res = fabric.snoop_capture(ctx.capture(), rule, cfg.snoop_profile)
            except Exception as exc:
                out.append(Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[0]),
                                   f"snoop_capture --from {rule} {type(exc).__name__} at {_where(exc)}",
                                   f"fabric.snoop_capture(rule={rule!r}) raised {_exc_text(exc)} at {_where(exc)} "
                                   f"on the batch from case {int(cases.index[0])} (pairing of requests and "
                                   "responses across the batch)"))
                continue
            self.stats[f"fabric {rule} events"] += len(res.events)
            if res.file_error:
                out.append(Finding(self.name, "fabric", SEVERITY_BUG, int(cases.index[0]), "file error",
                                   f"snoop_capture reports {res.file_error!r} on a well-formed capture"))
        return out


# -- the paravirt target -------------------------------------------------------------------------

def paravirt_device(cfg):
    """The batch's device: virt2phys_pkey (any byte values), active ports, SMI, from the batch hash."""
    rng = cfg.rng("paravirt device")
    v2p = rng.integers(0, 128, size=(80, 2, 128), dtype=np.uint8)
    odd = rng.random(v2p.shape) < 0.003
    v2p[odd] = rng.integers(128, 256, size=int(odd.sum()), dtype=np.uint8)
    active = rng.integers(0, 4, size=80, dtype=np.uint8)
    active[rng.random(80) < 0.7] = 3
    smi = (rng.random((80, 2)) < 0.2).astype(np.uint8)
    phys = rng.integers(0, 1 << 16, size=128, dtype=np.uint16)
    return v2p, active, smi, phys


PARAVIRT_KEYS = {
    1: "update_pkey_index: P_Key index 128..255 reads the next row of virt2phys_pkey",
    2: "update_pkey_index: the read would leave virt2phys_pkey: refused",
}


class ParavirtTarget:
    name = "paravirt"

    def __init__(self, device=None):
        """``device``: (v2p, active_ports, smi_enabled, phys_table) for every batch; default: a
        random one per batch (:func:`paravirt_device`)."""
        self.device = device
        self.stats = Counter()

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        from madpipe.pipeline import paravirt

        v2p, active, smi, phys = self.device if self.device is not None else paravirt_device(cfg)
        kw = dict(base_proxy_sqpn=cfg.base_proxy_sqpn, master=cfg.paravirt_master, profile=cfg.paravirt_profile,
                  active_ports=active, smi_enabled=smi, fw_reserved_qps=cfg.fw_reserved_qps, return_findings=True)
        args = (np.ascontiguousarray(cases.mailboxes), cases.transition, cases.slave, cases.qpn, v2p)
        out = []
        results = []
        for run in (paravirt.rewrite, paravirt.rewrite_reference):
            try:
                results.append(run(*args, **kw))
            except Exception as exc:
                return [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[0]),
                                f"{run.__name__} {type(exc).__name__} at {_where(exc)}",
                                f"{run.__name__} raised {_exc_text(exc)} at {_where(exc)} on the batch "
                                f"from case {int(cases.index[0])}", frame=False)]
        (ko, krc, kf), (ro, rrc, rf) = results
        self.stats["mailboxes"] += len(cases)
        for rc, n in zip(*np.unique(krc, return_counts=True)):
            self.stats[f"rc {int(rc)}"] += int(n)
        d_out = (ko != ro).any(axis=1)
        d_rc = krc != rrc
        d_f = kf != rf
        for j in np.flatnonzero(d_out | d_rc | d_f):
            names = [n for n, d in (("mailbox", d_out), ("rc", d_rc), ("finding", d_f)) if d[j]]
            t = qpc.transition_name(int(cases.transition[j]))
            out.append(Finding(self.name, "mismatch", SEVERITY_BUG, int(cases.index[j]),
                               f"{'+'.join(names)} {t} ({cfg.paravirt_profile})",
                               f"rewrite kernel and reference disagree on {', '.join(names)} for {t} "
                               f"(kernel rc {int(krc[j])} finding {int(kf[j])}, reference rc {int(rrc[j])} "
                               f"finding {int(rf[j])})", frame=False, data=self._inputs(cases, j, cfg)))
        for j in np.flatnonzero(kf != 0):
            code = int(kf[j])
            kind = "spill" if code == 1 else "refused"
            self.stats[kind] += 1
            pkey = int(cases.mailboxes[j, qpc.MBOX_PRI_PKEY_INDEX])
            key = PARAVIRT_KEYS[code]
            if code == 2:
                key += " (function outside 0..79)" if not 0 <= cases.slave[j] < 80 else " (P_Key index 128..255 of function 79, port 2)"
            out.append(Finding(self.name, kind, SEVERITY_KERNEL, int(cases.index[j]), key,
                               f"{key} (pkey_index {pkey}, function {int(cases.slave[j])}, "
                               f"{qpc.transition_name(int(cases.transition[j]))})", frame=False,
                               data={"code": code, **self._inputs(cases, j, cfg)}))
        out += self._getresp(cases, cfg, v2p, phys)
        return out

    def _inputs(self, cases, j, cfg) -> dict:
        return {"mailbox": cases.mailboxes[j].tobytes().hex(),
                "transition": qpc.transition_name(int(cases.transition[j])), "slave": int(cases.slave[j]),
                "qpn": int(cases.qpn[j]), "profile": cfg.paravirt_profile, "master": cfg.paravirt_master,
                "base_proxy_sqpn": cfg.base_proxy_sqpn}

    def _getresp(self, cases, cfg, v2p, phys) -> list[Finding]:
        """P_KeyTable MADs through virtual_pkey_getresp: a MAD, or Refused; never anything else."""
        from madpipe.pipeline import paravirt

        out = []
        rows, mads = snoop_inputs(cases)
        is_pkey = (mads[:, 16] == 0) & (mads[:, 17] == smpc.IB_SMP_ATTR_PKEY_TABLE)
        for j in np.flatnonzero(is_pkey):
            k = int(rows[j])
            block = int.from_bytes(mads[j, 20:24].tobytes(), "big")
            port = 2 if cases.port_num[k] == 2 else 1
            slave = int(cases.slave[k])
            self.stats["getresp"] += 1
            try:
                _mad, finding = paravirt.virtual_pkey_getresp(phys, v2p, slave, port, block, mads[j],
                                                              return_finding=True)
            except paravirt.Refused as exc:
                self.stats["getresp refused"] += 1
                if not 0 <= slave < 80:
                    where = "function outside 0..79"
                elif "P_Key table" in str(exc):
                    where = "a virt2phys_pkey value of 160..255 reads past the P_Key table"
                else:
                    where = "block past the table"
                out.append(Finding(self.name, "refused", SEVERITY_KERNEL, int(cases.index[k]),
                                   f"virtual_pkey_getresp: {where}: refused",
                                   str(exc),
                                   data={"slave": slave, "port_num": port, "block": block}))
                continue
            except Exception as exc:
                out.append(Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[k]),
                                   f"virtual_pkey_getresp {type(exc).__name__} at {_where(exc)}",
                                   f"virtual_pkey_getresp(function {slave}, port {port}, block {block}) raised "
                                   f"{_exc_text(exc)} at {_where(exc)}"))
                continue
            if finding:
                self.stats["getresp spill"] += 1
                what = "block past the row" if block >= 4 else "a virt2phys_pkey value of 128..159"
                out.append(Finding(self.name, "spill", SEVERITY_KERNEL, int(cases.index[k]),
                                   f"virtual_pkey_getresp: {what} reads outside the function's row",
                                   f"virtual_pkey_getresp(function {slave}, port {port}, block {block}): {what}",
                                   data={"slave": slave, "port_num": port, "block": block}))
        return out


# -- the tshark target ---------------------------------------------------------------------------

TSHARK_FIELDS = ("frame.number", "_ws.malformed", "_ws.expert.message", "_ws.expert.severity", "_ws.col.Info",
                 "frame.protocols")
PA_ERROR = 8388608  # _ws.expert.severity of an error


def _normalize(text: str) -> str:
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    return re.sub(r"\d+", "N", text)


class TsharkTarget:
    name = "tshark"

    def __init__(self, workdir: str, timeout: float = 60.0):
        self.tshark = shutil.which("tshark")
        if self.tshark is None:
            raise MadpipeError("--target tshark: tshark is not installed (Debian package tshark)")
        self.confdir = os.path.join(workdir, "wireshark-config")
        os.makedirs(self.confdir, exist_ok=True)
        self.timeout = timeout
        self.stats = Counter()

    def _run(self, path: str):
        cmd = [self.tshark, "-n", "-r", path, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
               "-E", "aggregator=\x1f"]
        for f in TSHARK_FIELDS:
            cmd += ["-e", f]
        env = {**os.environ, "WIRESHARK_CONFIG_DIR": self.confdir}
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return None, "hang"
        if p.returncode < 0 or p.returncode not in (0, 2):
            return p, "crash"
        return p, None

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        out = []
        path = ctx.capture()
        p, trouble = self._run(path)
        self.stats["frames"] += len(cases)
        if trouble:
            return self._bisect(cases, ctx, trouble)
        records = getattr(ctx, "records", None)
        for line in p.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) < len(TSHARK_FIELDS) or not parts[0].isdigit():
                continue
            k = int(parts[0]) - 1
            if not 0 <= k < len(cases):
                continue
            malformed, messages, severities, info, protocols = parts[1:6]
            msgs = [m for m in messages.split("\x1f") if m]
            sev = [int(s) for s in severities.split("\x1f") if s.isdigit()]
            bug = [m for m in msgs if "issector bug" in m]
            if bug:
                kind, msg = "dissector-bug", bug[0]
            elif malformed or "Malformed Packet" in info or any(s >= PA_ERROR for s in sev):
                kind = "malformed"
                errs = [m for m, s in zip(msgs, sev) if s >= PA_ERROR] or msgs
                msg = errs[0] if errs else info
            else:
                continue
            self.stats[kind] += 1
            rec = records[k] if records is not None else decode_frame(cases.frame(k))
            madpipe = "madpipe decodes it cleanly" if rec is not None and "error" not in rec else "madpipe reports an error too"
            # Grouped by tshark's message, the protocols it went through and madpipe's verdict;
            # "Exception occurred" says little by itself, so the Info column's words join it there.
            what_info = re.sub(r"[\[(].*", "", _normalize(info)).strip() if "Exception" in msg else ""
            key = " | ".join(x for x in (_normalize(msg), what_info, protocols.replace("erf:", ""), madpipe) if x)
            out.append(Finding(self.name, kind, SEVERITY_TOOL, int(cases.index[k]), key,
                               f"tshark: {msg} (Info: {info[:100]}); {madpipe}",
                               data={"tshark_info": info, "tshark_expert": msgs}))
        return out

    def _bisect(self, cases: Cases, ctx, trouble: str) -> list[Finding]:
        """Find the frame that makes tshark crash or hang, by halving the batch."""
        lo, hi = 0, len(cases)
        path = os.path.join(ctx.workdir, "tshark-bisect.pcap")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ctx.write_capture(path, cases, lo, mid)
            _, t = self._run(path)
            if t:
                hi = mid
            else:
                lo = mid
        ctx.write_capture(path, cases, lo, lo + 1)
        p, t = self._run(path)
        if not t:
            what = f"tshark {trouble}ed on the batch from case {int(cases.index[0])} but on no single frame of it"
            return [Finding(self.name, trouble, SEVERITY_TOOL, int(cases.index[lo]), "batch only", what)]
        detail = "" if p is None else f" (exit {p.returncode}: {(p.stderr or '').strip().splitlines()[-1:]})"
        self.stats[trouble] += 1
        return [Finding(self.name, trouble, SEVERITY_TOOL, int(cases.index[lo]), trouble,
                        f"tshark {'did not finish within %g s' % self.timeout if trouble == 'hang' else 'crashed'}"
                        f" on this frame{detail}")]


# -- the ibsim target ----------------------------------------------------------------------------

IBSIM_TOPOLOGY = """# madpipe fuzz: one switch, two channel adapters
Switch\t8 "Switch1"
[1]\t"Hca1"[1]
[2]\t"Hca2"[1]

Hca\t2 "Hca1"
[1]\t"Switch1"[1]

Hca\t2 "Hca2"
[1]\t"Switch1"[2]
"""


def sim_module():
    """``madpipe.pipeline.sim`` (ibsim processes and protocol, issue 5) when it is there, else None."""
    try:
        from madpipe.pipeline import sim
    except Exception:
        return None
    needed = ("Ibsim", "SimClient", "SimRequest", "free_base", "find_tool", "find_umad2sim", "run_tool")
    return sim if all(hasattr(sim, n) for n in needed) else None


class IbsimTarget:
    """Mutated MADs to a simulator started for the run; a dead or silent simulator is a finding."""

    name = "ibsim"

    def __init__(self, workdir: str, timeout: float = 1.0):
        self.sim = sim_module()
        if self.sim is None:
            raise MadpipeError("--target ibsim: madpipe.pipeline.sim (ibsim support, issue 5) is not available "
                               "in this install")
        self.sim.find_tool("ibsim")
        self.workdir = os.path.join(workdir, "ibsim")
        os.makedirs(self.workdir, exist_ok=True)
        self.topology = os.path.join(self.workdir, "fabric.net")
        Path(self.topology).write_text(IBSIM_TOPOLOGY)
        self.timeout = timeout
        self.stats = Counter()
        self.ibsim = None
        self.client = None
        self.restarts = 0
        self._tid = 0x7A5E0000
        self._start()

    def _start(self) -> None:
        sim = self.sim
        self.base = sim.free_base(7400 + 11 * (os.getpid() % 50), "0.0.0.0")
        self.ibsim = sim.Ibsim(self.topology, self.base, self.workdir)
        self.ibsim.start()
        try:
            self._opensm()
            self.client = sim.SimClient("127.0.0.1", self.base, node="Hca2", timeout=self.timeout + 1)
        except BaseException:
            self.ibsim.stop()
            raise

    def _opensm(self) -> None:
        """opensm --once through umad2sim, so the fabric has LIDs; skipped (DR only) without opensm."""
        sim = self.sim
        try:
            opensm, umad2sim = sim.find_tool("opensm"), sim.find_umad2sim()
        except MadpipeError:
            self.stats["no opensm: LIDs unassigned"] = 1
            return
        parts = os.path.join(self.workdir, "partitions.conf")
        Path(parts).write_text("Default=0x7fff, ipoib : ALL=full;\n")
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SIM_HOST")}
        env.update(LD_PRELOAD=umad2sim, IBSIM_SERVER_NAME="127.0.0.1", IBSIM_SERVER_PORT=str(self.base),
                   OSM_TMP_DIR=self.workdir, OSM_CACHE_DIR=self.workdir, SIM_HOST="Hca1")
        log = os.path.join(self.workdir, "opensm.log")
        sim.run_tool([opensm, "-e", "-f", log, "-P", parts, "--once"], env, self.workdir, 60.0)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None
        if self.ibsim is not None:
            self.ibsim.stop()
            self.ibsim = None

    def _probe(self) -> bool:
        """A directed-route SubnGet(NodeInfo) to the client's own node: True when it is answered."""
        from madpipe.codecs import build

        self._tid += 1
        tid = self._tid
        mad = build.smp_mad(madc.IB_MGMT_METHOD_GET, smpc.IB_SMP_ATTR_NODE_INFO, b"", tid=tid, directed=True)
        self.client.send(self.sim.SimRequest(0xFFFF, 0xFFFF, 0, 0, 0, mad))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r = self.client.recv(left)
            if r is None:
                return False
            # ibsim puts its client number in TID bits 32-63 of requests: match the low 32 bits.
            if r.tid & 0xFFFFFFFF == tid & 0xFFFFFFFF and r.mad[16:18] == mad[16:18] and r.response:
                return True
            self.stats["answers"] += 1

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        out = []
        for k in np.flatnonzero(cases.mad_off >= 0):
            frame = cases.frames[k].tobytes()  # zero past the frame's length
            m = int(cases.mad_off[k])
            mad = frame[m:m + madc.MAD_SIZE]
            avail = max(0, min(madc.MAD_SIZE, int(cases.length[k]) - m))
            b = 48 if frame[1] & 3 == 3 else 8
            dlid = int.from_bytes(frame[2:4], "big")
            slid = int.from_bytes(frame[6:8], "big")
            dqp = int.from_bytes(frame[b + 5:b + 8], "big")
            sqp = int.from_bytes(frame[b + 17:b + 20], "big")
            req = self.sim.SimRequest(dlid, slid, dqp, sqp, 0, mad, length=avail)
            try:
                self.client.send(req)
                self.stats["sent"] += 1
                answered = self._probe()
            except (OSError, MadpipeError) as exc:  # SimError: the data socket was refused
                answered = False
                err = str(exc)
            else:
                err = None
            if answered:
                continue
            code = None
            if self.ibsim is not None and self.ibsim.proc is not None:
                try:
                    code = self.ibsim.proc.wait(0.5)  # a dying process: give it the time to go
                except subprocess.TimeoutExpired:
                    code = None
            if code is not None:
                kind, what = "dead", f"ibsim exited with status {code} after this MAD"
                log = self.ibsim.log().strip().splitlines()[-3:]
                data = {"exit": code, "log": log}
            else:
                kind, what = "silent", (f"ibsim stopped answering a directed-route probe within {self.timeout:g} s "
                                        f"after this MAD" + (f" ({err})" if err else ""))
                data = {}
            self.stats[kind] += 1
            out.append(Finding(self.name, kind, SEVERITY_TOOL, int(cases.index[k]), kind, what, data=data))
            self.close()
            self.restarts += 1
            self._start()
        return out


# -- batch context -------------------------------------------------------------------------------

class BatchContext:
    """Per batch: the ERF capture of its frames (written once, on first use), decode records."""

    def __init__(self, cases: Cases, workdir: str):
        self.cases = cases
        self.workdir = workdir
        self.path = os.path.join(workdir, f"batch-{os.getpid()}.pcap")
        self._written = False
        self.records = None

    def capture(self) -> str:
        if not self._written:
            self.write_capture(self.path, self.cases, 0, len(self.cases))
            self._written = True
        return self.path

    @staticmethod
    def write_capture(path: str, cases: Cases, lo: int, hi: int) -> None:
        with CaptureWriter(path) as w:
            for k in range(lo, hi):
                w.write(cases.frame(k), ts_ns=int(cases.index[k]) * 1_000_000_000)


# -- options, runner, summary --------------------------------------------------------------------

@dataclass
class Options:
    seed: int = 0
    count: int | None = 10_000
    seconds: float | None = None
    targets: tuple = DEFAULT_TARGETS
    corpus: str | None = None
    jobs: int = 1
    roundtrip_every: int = 8
    scapy_every: int = 64
    keep: int = 3
    start: int = 0
    tshark_timeout: float = 60.0
    ibsim_timeout: float = 1.0


@dataclass
class Summary:
    cases: int = 0
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)          # target -> Counter
    groups: dict = field(default_factory=dict)         # signature -> Group
    interrupted: bool = False
    corpus: str = "builtin"
    corpus_digest: str = ""
    seeds: int = 0

    def findings(self, severity: str | None = None) -> list[Group]:
        return [g for g in self.groups.values() if severity is None or g.severity == severity]


def _make_targets(opts: Options, workdir: str, names) -> list:
    out = []
    for name in names:
        if name == "codecs":
            out.append(CodecsTarget(opts.seed, opts.roundtrip_every, opts.scapy_every))
        elif name == "snoop":
            out.append(SnoopTarget())
        elif name == "paravirt":
            out.append(ParavirtTarget())
        elif name == "tshark":
            out.append(TsharkTarget(workdir, opts.tshark_timeout))
        elif name == "ibsim":
            out.append(IbsimTarget(workdir, opts.ibsim_timeout))
        else:
            raise MadpipeError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    return out


class _Worker:
    """What a process needs to judge batches: the mutator and the in-process targets."""

    def __init__(self, opts: Options, corpus: Corpus, names, workdir: str):
        self.mutator = Mutator(corpus, opts.seed)
        self.workdir = workdir
        self.keep = opts.keep
        self.targets = _make_targets(opts, workdir, names)

    def run_batch(self, start: int, count: int):
        cases = self.mutator.batch(start, count)
        cfg = batch_config(self.mutator.seed, start // BATCH)
        ctx = BatchContext(cases, self.workdir)
        groups: dict = {}
        for target in self.targets:
            for f in target.check(cases, cfg, ctx):
                g = groups.setdefault(f.signature, [0, []])
                g[0] += 1
                if len(g[1]) < self.keep:
                    g[1].append(f)
        stats = {t.name: Counter(t.stats) for t in self.targets}
        for t in self.targets:
            t.stats.clear()
        return start, count, stats, groups

    def close(self):
        for t in self.targets:
            if hasattr(t, "close"):
                t.close()


_W: _Worker | None = None


def _pool_init(opts, corpus, names, workdir):
    global _W
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    _W = _Worker(opts, corpus, names, workdir)


def _pool_batch(args):
    return _W.run_batch(*args)


def load_corpus(path: str | None) -> Corpus:
    return Corpus.builtin() if path is None else Corpus.from_path(path)


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


def run(opts: Options, reporter_factory=None, progress=None) -> Summary:
    """Run the fuzzer. ``reporter_factory(mutator) -> Reporter``; ``progress(cases, seconds, groups)``."""
    names = list(dict.fromkeys(opts.targets))
    for n in names:
        if n not in TARGETS:
            raise MadpipeError(f"unknown target {n!r}; targets: {', '.join(TARGETS)}")
    corpus = load_corpus(opts.corpus)
    mutator = Mutator(corpus, opts.seed)
    summary = Summary(corpus=corpus.source, corpus_digest=corpus.digest(), seeds=len(corpus.frames))
    reporter = reporter_factory(mutator) if reporter_factory else Reporter(mutator)
    workdir = tempfile.mkdtemp(prefix="madpipe-fuzz-")
    in_pool = [n for n in names if n != "ibsim"]
    parent_targets = []
    pool = None
    t0 = time.monotonic()
    try:
        if "ibsim" in names:
            parent_targets = _make_targets(opts, workdir, ["ibsim"])
        plan = _batches(opts)
        jobs = max(1, int(opts.jobs))
        if jobs > 1 and in_pool:
            # Kernels load once here, before the fork, so the workers do not each load them.
            _warm(in_pool)
            ctx = multiprocessing.get_context("fork")
            pool = ctx.Pool(jobs, _pool_init, (opts, corpus, in_pool, workdir))
            results = _ordered(pool, plan, jobs * 2, opts, t0)
        else:
            worker = _Worker(opts, corpus, in_pool, workdir) if in_pool else None
            results = (_local(worker, s, n) for s, n in _timed(plan, opts, t0))
        for start, count, stats, groups in results:
            if parent_targets:
                cases = mutator.batch(start, count)
                cfg = batch_config(opts.seed, start // BATCH)
                ctx_ = BatchContext(cases, workdir)
                for t in parent_targets:
                    for f in t.check(cases, cfg, ctx_):
                        g = groups.setdefault(f.signature, [0, []])
                        g[0] += 1
                        if len(g[1]) < opts.keep:
                            g[1].append(f)
                    stats[t.name] = Counter(t.stats)
                    t.stats.clear()
            summary.cases += count
            _merge(summary, stats, groups, opts.keep, reporter)
            summary.seconds = time.monotonic() - t0
            if progress is not None:
                progress(summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        for t in parent_targets:
            t.close()
        reporter.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.monotonic() - t0
    return summary


def _warm(names) -> None:
    for name in ("snoop", "paravirt"):
        if name in names:
            importlib.import_module(f"madpipe.pipeline.{name}")


def _local(worker, start, count):
    if worker is None:
        return start, count, {}, {}
    return worker.run_batch(start, count)


def _batches(opts: Options):
    """(start, count) of each batch: aligned to BATCH so that a case's batch never depends on the run."""
    start = opts.start
    end = None if opts.count is None else opts.start + opts.count
    while end is None or start < end:
        stop = (start // BATCH + 1) * BATCH
        if end is not None:
            stop = min(stop, end)
        yield start, stop - start
        start = stop


def _timed(plan, opts: Options, t0: float):
    for item in plan:
        if opts.seconds is not None and time.monotonic() - t0 >= opts.seconds:
            return
        yield item


def _ordered(pool, plan, depth: int, opts: Options, t0: float):
    """Results of pool batches in batch order, with at most ``depth`` batches in flight."""
    pending = []
    plan = _timed(plan, opts, t0)
    for item in plan:
        pending.append(pool.apply_async(_pool_batch, (item,)))
        if len(pending) >= depth:
            yield pending.pop(0).get()
    while pending:
        if opts.seconds is not None:
            # Out of time: take what finishes within it; the rest is dropped with the pool.
            pending[0].wait(max(0.0, opts.seconds - (time.monotonic() - t0)))
            if not pending[0].ready():
                return
        yield pending.pop(0).get()


def _merge(summary: Summary, stats, groups, keep: int, reporter: Reporter) -> None:
    for name, c in stats.items():
        summary.stats.setdefault(name, Counter()).update(c)
    for sig in sorted(groups, key=lambda s: min(f.case for f in groups[s][1]) if groups[s][1] else 0):
        count, examples = groups[sig]
        g = summary.groups.get(sig)
        if g is None:
            first = examples[0]
            g = summary.groups[sig] = Group(first.target, first.kind, first.severity, first.key)
        g.count += count
        for f in sorted(examples, key=lambda f: f.case):
            if len(g.examples) < keep:
                g.examples.append(reporter.record(f, list(summary.groups).index(sig) + 1))


# -- replay --------------------------------------------------------------------------------------

def replay(seed: int, index: int, targets, corpus_path: str | None = None, opts: Options | None = None):
    """Case ``index`` of ``seed`` again: (Cases of one, [Finding]) on the targets given.

    The stateful snoop target replays the batch from its first case to ``index`` (its state
    depends on them); the other targets judge the case alone.
    """
    opts = opts or Options(seed=seed)
    corpus = load_corpus(corpus_path)
    mutator = Mutator(corpus, seed)
    one = mutator.case(index)
    cfg = batch_config(seed, index // BATCH)
    workdir = tempfile.mkdtemp(prefix="madpipe-replay-")
    findings = []
    try:
        for name in targets:
            t = _make_targets(opts, workdir, [name])[0]
            try:
                if name == "snoop":
                    start = (index // BATCH) * BATCH
                    cases = mutator.batch(start, index - start + 1)
                    t.fabric = False
                else:
                    cases = mutator.batch(index, 1)
                    if name == "codecs":
                        t.roundtrip_every = 1
                        t.scapy_every = 1
                found = t.check(cases, cfg, BatchContext(cases, workdir))
                findings += [f for f in found if f.case == index]
            finally:
                if hasattr(t, "close"):
                    t.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return one, findings


__all__ = [
    "DEFAULT_TARGETS", "TARGETS", "CodecsTarget", "Finding", "Group", "IbsimTarget", "Options", "ParavirtTarget",
    "Reporter", "SnoopTarget", "Summary", "TsharkTarget", "check_frame", "replay", "roundtrip_problems", "run",
]
