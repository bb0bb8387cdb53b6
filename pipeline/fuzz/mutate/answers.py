"""Mutations of the answers a fabric sends back: a malicious node's GetResp, field by field.

``madpipe fuzz --target opensm|diags`` rewrites the MADs ibsim returns to the tool under test.
Which answers are mutated, and how, depends only on the run's seed, the case number and the
answer's identity (class, attribute, modifier, the directed-route path or the answering LID,
and how many such answers the case saw before): a tool that asks in another order still gets
the same answers, so ``--replay SEED:CASE`` is the same exchange.

Each mutated answer gets one to three :class:`Edit` s, each a field of the answer (named as
``madpipe decode -T json`` names it, from the codecs' schemas) set to a value that matters for
it: counts (NumPorts, LinearFDBTop, capacities), port numbers, LIDs, GUIDs, capability bits,
directed-route hop pointer, hop count and path bytes, attribute ID and modifier (block and port
numbers), MAD status; or a boundary value, the old value plus or minus one, or a bit flipped.
An edit is plain data (field, bit offset, width, old and new value), so a finding is minimised by
dropping edits and replayed from the list that is left.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import perf, wire
from madpipe.codecs import smp as smpc
from madpipe.codecs.field_table import Field
from madpipe.pipeline.fuzz.mutate.fields import interesting_for, mad_fields
from madpipe.pipeline.fuzz.mutate.rng import CaseRng

#: Values that matter in an answer, beyond the frame mutator's (by field name, without [index]).
ANSWER_VALUES: dict[str, list[int]] = {
    "attr.num_ports": [0, 1, 2, 8, 9, 36, 37, 64, 127, 254, 255],
    "attr.local_port_num": [0, 1, 2, 9, 37, 254, 255],
    "attr.node_type": [0, 1, 2, 3, 4, 0xFF],
    "attr.partition_cap": [0, 1, 32, 33, 64, 0x7FFF, 0xFFFF],
    "attr.sys_guid": [0, 1, 0xFFFFFFFFFFFFFFFF],
    "attr.node_guid": [0, 1, 0xFFFFFFFFFFFFFFFF],
    "attr.port_guid": [0, 1, 0xFFFFFFFFFFFFFFFF],
    "attr.capability_mask": [0, 0xFFFFFFFF, 1 << 1, 1 << 9, 1 << 15, 1 << 16, 1 << 31],
    "attr.capability_mask2": [0, 0xFFFF, 1 << 1, 1 << 2],
    "attr.lid": [0, 1, 0xBFFF, 0xC000, 0xFFFE, 0xFFFF],
    "attr.master_sm_lid": [0, 1, 0xC000, 0xFFFF],
    "attr.lmc": [0, 1, 7],
    "attr.port_state": [0, 1, 2, 3, 4, 5, 15],
    "attr.phys_port_state": [0, 1, 2, 3, 4, 5, 6, 7, 15],
    "attr.link_width_enabled": [0, 0xFF, 0x10, 0x1F],
    "attr.link_width_supported": [0, 0xFF, 0x10, 0x1F],
    "attr.link_width_active": [0, 0xFF, 3, 0x10],
    "attr.link_speed_active": [0, 3, 15],
    "attr.neighbor_mtu": [0, 1, 5, 6, 15],
    "attr.mtu_cap": [0, 1, 5, 6, 15],
    "attr.vl_cap": [0, 1, 5, 8, 15],
    "attr.operational_vls": [0, 5, 8, 15],
    "attr.guid_cap": [0, 1, 8, 255],
    "attr.linear_fdb_cap": [0, 1, 64, 0xBFFF, 0xC000, 0xFFFF],
    "attr.linear_fdb_top": [0, 1, 63, 64, 0xBFFF, 0xC000, 0xFFFF],
    "attr.multicast_fdb_cap": [0, 1, 0x3FFF, 0x4000, 0xFFFF],
    "attr.multicast_fdb_top": [0, 0xBFFF, 0xC000, 0xFFFF],
    "attr.random_fdb_cap": [0, 1, 0xFFFF],
    "attr.lids_per_port": [0, 1, 0xFFFF],
    "attr.partition_enforcement_cap": [0, 1, 0xFFFF],
    "attr.default_port": [0, 1, 9, 255],
    "attr.enhanced_port0": [0, 1],
    "attr.ports": [0, 1, 9, 36, 37, 254, 255],
    "attr.pkeys": [0x0000, 0xFFFF, 0x7FFF, 0x8000, 0x8001, 0x0001],
    "attr.port_select": [0, 1, 9, 255],
    "mad.status": [0x0000, 0x0001, 0x0004, 0x0008, 0x000C, 0x001C, 0x8000, 0xFFFF],
    "mad.attr_mod": [0, 1, 2, 7, 8, 9, 0xFF, 0x100, 0xFFFF, 0x10000, 0x80000000, 0xFFFFFFFF],
    "mad.attr_id": [smpc.IB_SMP_ATTR_NODE_INFO, smpc.IB_SMP_ATTR_PORT_INFO, smpc.IB_SMP_ATTR_SWITCH_INFO,
                    smpc.IB_SMP_ATTR_PKEY_TABLE, smpc.IB_SMP_ATTR_LINEAR_FORWARD_TABLE,
                    smpc.IB_SMP_ATTR_NODE_DESC, 0x0000, 0xFFFF],
    "mad.method": [madc.IB_MGMT_METHOD_GET_RESP, madc.IB_MGMT_METHOD_GET, madc.IB_MGMT_METHOD_SET, 0x86, 0xFF],
    "smp.hop_ptr": [0, 1, 2, 63, 64, 65, 0x80, 0xFF],
    "smp.hop_cnt": [0, 1, 2, 63, 64, 65, 0x80, 0xFF],
    "smp.initial_path": [0, 1, 2, 9, 0x7F, 0xFF],
    "smp.return_path": [0, 1, 2, 9, 0x7F, 0xFF],
}

#: How often a kind of field is picked, relative to an attribute field (1.0).
HEADER_WEIGHT = {"mad.status": 0.8, "mad.attr_mod": 0.8, "smp.hop_ptr": 0.6, "smp.hop_cnt": 0.6,
                 "mad.attr_id": 0.25, "mad.method": 0.2, "mad.class_version": 0.1, "mad.base_version": 0.1,
                 "smp.dr_slid": 0.2, "smp.dr_dlid": 0.2, "mad.tid": 0.05}
EDITS_PER_ANSWER = (1, 1, 1, 2, 2, 3)


@dataclass(frozen=True)
class Edit:
    """One field of an answer changed: ``field`` at bit ``bit`` of the MAD, ``width`` bits, old -> new."""

    field: str
    bit: int
    width: int
    old: int
    new: int

    def note(self) -> str:
        return f"{self.field} {self.old:#x} -> {self.new:#x}"

    def to_json(self) -> dict:
        return {"field": self.field, "bit": self.bit, "width": self.width, "old": self.old, "new": self.new}

    @classmethod
    def from_json(cls, d: dict) -> Edit:
        return cls(d["field"], int(d["bit"]), int(d["width"]), int(d["old"]), int(d["new"]))


def get_field(mad: bytes, bit: int, width: int) -> int:
    end = bit + width
    first, last = bit // 8, (end + 7) // 8
    word = int.from_bytes(mad[first:last], "big")
    return (word >> (8 * last - end)) & ((1 << width) - 1)


def put_field(mad: bytearray, bit: int, width: int, value: int) -> None:
    end = bit + width
    first, last = bit // 8, (end + 7) // 8
    shift = 8 * last - end
    mask = ((1 << width) - 1) << shift
    word = int.from_bytes(mad[first:last], "big")
    word = (word & ~mask) | ((value << shift) & mask)
    mad[first:last] = word.to_bytes(last - first, "big")


#: Fields that differ from run to run (a TID is the tool's own): an edit of one flips the same bits
#: of whatever the field holds, so a replay changes the answer as the run did.
RELATIVE_FIELDS = ("mad.tid",)


def apply_edits(mad: bytes, edits) -> bytes:
    out = bytearray(mad)
    for e in edits:
        value = e.new
        if e.field in RELATIVE_FIELDS:
            value = get_field(out, e.bit, e.width) ^ e.old ^ e.new
        put_field(out, e.bit, e.width, value)
    return bytes(out)


def answer_key(mad: bytes, slid: int) -> str:
    """What names an answer across runs: class, attribute, modifier, and the path or the answering LID."""
    cls = mad[wire.MAD_MGMT_CLASS]
    attr = int.from_bytes(mad[wire.MAD_ATTR_ID:wire.MAD_ATTR_ID + 2], "big")
    mod = int.from_bytes(mad[wire.MAD_ATTR_MOD:wire.MAD_ATTR_MOD + 4], "big")
    if cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        hops = min(mad[wire.SMP_HOP_CNT], smpc.IB_SMP_MAX_PATH_HOPS - 1)
        where = "dr:" + ",".join(str(b) for b in mad[wire.SMP_INITIAL_PATH:wire.SMP_INITIAL_PATH + hops + 1])
    else:
        where = f"lid:{slid}"
    return f"{cls:#04x}/{attr:#06x}/{mod:#x}/{where}"


def attribute_name(mad: bytes) -> str:
    """The attribute of an answer as people say it: NodeInfo, PortInfo, PortCounters..."""
    cls = mad[wire.MAD_MGMT_CLASS]
    attr = int.from_bytes(mad[wire.MAD_ATTR_ID:wire.MAD_ATTR_ID + 2], "big")
    if cls in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        return smpc.attribute_name(attr)
    if cls == madc.IB_MGMT_CLASS_PERF_MGMT:
        return perf.attribute_name(attr)
    return f"class{cls:#04x}/Attr{attr:#06x}"


class AnswerMutator:
    """Decides, per answer, whether and how it is mutated: ``edits(case, key, mad)``."""

    def __init__(self, seed: int, rate: float):
        self.seed, self.rate = int(seed), float(rate)
        self._tables: dict[bytes, tuple[list[Field], np.ndarray]] = {}

    def _fields(self, mad: bytes) -> tuple[list[Field], np.ndarray]:
        shape = mad[:4] + mad[wire.MAD_ATTR_ID:wire.MAD_ATTR_ID + 2]  # what mad_fields depends on
        got = self._tables.get(shape)
        if got is None:
            fields = [f for f in mad_fields(mad, 0) if f.width <= 64]
            weight = np.array([_weight(f) for f in fields], dtype=np.float64)
            got = self._tables[shape] = (fields, np.cumsum(weight) / weight.sum())
        return got

    def edits(self, case: int, key: str, mad: bytes) -> list[Edit]:
        """The edits answer ``key`` (with its occurrence number) of case ``case`` gets; [] for none."""
        digest = hashlib.blake2b(f"{case}|{key}".encode(), digest_size=8).digest()
        rng = CaseRng(self.seed, np.array([int.from_bytes(digest, "big") >> 1], dtype=np.int64))
        if not rng.chance("mutate", self.rate)[0]:
            return []
        fields, cum = self._fields(mad)
        out: list[Edit] = []
        work = bytearray(mad)
        n = EDITS_PER_ANSWER[int(rng.below("edits", len(EDITS_PER_ANSWER))[0])]
        for k in range(n):
            f = fields[min(int(np.searchsorted(cum, rng.unit(f"field{k}")[0], side="right")), len(fields) - 1)]
            old = get_field(work, f.bit, f.width)
            new = self._value(rng, f, old, f"value{k}")
            if new == old:
                new = old ^ 1
            put_field(work, f.bit, f.width, new)
            out.append(Edit(f.name, f.bit, f.width, old, new))
        return out

    @staticmethod
    def _value(rng: CaseRng, f: Field, old: int, stream: str) -> int:
        top = (1 << f.width) - 1
        key = f.name.split("[", 1)[0]
        known = ANSWER_VALUES.get(key) or interesting_for(f.name)
        how = int(rng.below(stream + "how", 10)[0])
        if known and how < 5:
            return known[int(rng.below(stream + "pick", len(known))[0])] & top
        if how < 8:
            bounds = [0, 1, top, top - 1, 1 << (f.width - 1), (old + 1) & top, (old - 1) & top]
            return bounds[int(rng.below(stream + "pick", len(bounds))[0])]
        return old ^ (1 << int(rng.below(stream + "bit", f.width)[0]))


def _weight(f: Field) -> float:
    if f.reserved or f.name.startswith(("smp.resv2[", "class_data[", "perf.resv")):
        return 0.05
    if f.name.startswith(("smp.initial_path[", "smp.return_path[")):
        return 0.01  # 128 of them: about one pick in twenty
    if f.name.startswith("attr."):
        return 0.4 if f.name.startswith(("attr.pkeys[", "attr.ports[")) else 1.0
    return HEADER_WEIGHT.get(f.name, 0.0)
