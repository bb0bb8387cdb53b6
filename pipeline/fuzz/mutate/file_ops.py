"""Whole-file mutations for ``madpipe fuzz --target files``: case N of seed S is a list of edits
to one seed file, every random choice drawn from a generator keyed by (S, N) alone.

An edit is a list of byte replacements ``(at, n, new)``: ``n`` bytes at ``at`` become ``new``
(``n == -1``: everything from ``at`` on, which cuts the file). Edits apply in order, field edits
first and cuts last, so that dropping any edit still leaves a case (the minimiser drops them).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from madpipe.codecs.capture import LINKTYPE_ERF, LINKTYPE_INFINIBAND, LINKTYPE_USER0
from madpipe.pipeline.fuzz.mutate.file_seeds import Field, SeedFile

Replacement = tuple[int, int, bytes]


@dataclass(frozen=True)
class Edit:
    note: str
    parts: tuple[Replacement, ...]


# Values that matter per field, beyond the boundaries of its width.
NAMED_VALUES = {
    "linktype": (0, 1, LINKTYPE_USER0, LINKTYPE_ERF, LINKTYPE_INFINIBAND, 0x0FFFFFFF, LINKTYPE_ERF | 0x10000000),
    "magic": (0xA1B2C3D4, 0xA1B23C4D, 0xD4C3B2A1, 0x4D3CB2A1, 0x0A0D0D0A, 0x1A2B3C4D, 0x4D3C2B1A),
    "if_tsresol.value": (0, 3, 6, 9, 10, 18, 19, 20, 63, 0x80, 0x80 | 30, 0x80 | 63, 0x80 | 64, 0xFF),
    "block.type": (0, 1, 2, 3, 4, 5, 6, 7, 0x0A0D0D0A, 0x80000000, 0xBAD),
    "erf.type": (0, 1, 2, 21, 25, 0x80 | 21, 0x80 | 25, 0x7F, 0xFF),
    "erf.ext type": (0, 0x80, 0x83, 0xFF),
    "erf.flags": (0, 3, 4, 7, 0xFF),
    ".code": (0, 1, 2, 9, 14, 0x7FFC, 0xFFFF),
    "interface_id": (0, 1, 2, 3, 0xFFFF),
    "ts": (0, 999_999, 1_000_000, 999_999_999, 1_000_000_000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF),
    "byte_order_magic": (0x1A2B3C4D, 0x4D3C2B1A, 0),
    "version": (0, 1, 2, 4, 0xFFFF),
    "transition": (0, 0x19, 0x1A, 0x1B, 0x21, 0x22, 0xFF),
    "record_size": (0, 1, 263, 264, 265, 528, 0xFFFFFFFF),
}
TEXT_VALUES = ("0", "-1", "1", "2", "79", "80", "127", "128", "255", "256", "65535", "65536", "4294967295",
               "4294967296", "1e3", "1.5", "1e400", "0x10", "0x80", "1_0", "\u0661", "null", "true", "[]",
               "{}", '"x"', '"INIT2RTR"', '"2RST"', '""', "9" * 5000, "[" * 5000, '"' + "0" * 511 + '"',
               '"' + "zz" * 256 + '"', "#", " ", "\n", "\t", "\\u0000", "\x00", "\xff")
WEIGHTS = {"field": 40, "length": 14, "flip": 12, "zero": 6, "unit": 12, "splice": 8, "bytes": 4, "cut": 4}


class FileMutator:
    """Cases of one run: ``case(i)`` is (seed index, edits), the same in every run with ``seed``."""

    def __init__(self, seeds: list[SeedFile], seed: int):
        self.seeds = seeds
        self.seed = seed
        kinds = [s.kind for s in seeds]
        # Captures are most of the readers: 7 cases in 10; each trace (JSON Lines, binary) and the map file 1 in 10.
        share = {"capture": 0.7, "trace": 0.2, "pkey-map": 0.1}
        self.pick = np.array([share[k] / kinds.count(k) for k in kinds])
        self.pick /= self.pick.sum()

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, index, 0xF11E5])

    def case(self, index: int) -> tuple[int, list[Edit]]:
        rng = self.rng(index)
        which = int(rng.choice(len(self.seeds), p=self.pick))
        seed = self.seeds[which]
        n = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
        names = list(WEIGHTS)
        p = np.array([WEIGHTS[k] for k in names], float)
        edits = [_EDITS[names[int(rng.choice(len(names), p=p / p.sum()))]](seed, rng, self.seeds) for _ in range(n)]
        if rng.random() < 0.15:
            edits.append(_cut(seed, rng, self.seeds))
        cuts = [e for e in edits if any(r[1] == -1 for r in e.parts)]
        return which, [e for e in edits if e not in cuts] + cuts

    def build(self, which: int, edits: list[Edit]) -> bytes:
        return apply(self.seeds[which].data, edits)


def apply(data: bytes, edits: list[Edit]) -> bytes:
    out = bytearray(data)
    for e in edits:
        for at, n, new in e.parts:
            at = min(at, len(out))
            end = len(out) if n < 0 else min(at + n, len(out))
            out[at:end] = new
    return bytes(out)


def _int_values(f: Field, old: int) -> list[int]:
    top = (1 << (8 * f.size)) - 1
    values = [0, 1, top, top - 1, top >> 1, (top >> 1) + 1, old + 1, old - 1, old + 4, old - 4, old * 2, old ^ 0x80]
    for key, named in NAMED_VALUES.items():
        if f.name.endswith(key) or key in f.name:
            values += list(named) * 3
    return [v & top for v in values]


def _field_edit(f: Field, seed: SeedFile, rng, value=None) -> Edit:
    if f.order == "":
        if seed.kind == "capture":
            new = bytes([int(rng.integers(256))])
            return Edit(f"{f.name} (offset {f.offset}): byte -> 0x{new[0]:02x}", ((f.offset, 1, new),))
        text = TEXT_VALUES[int(rng.integers(len(TEXT_VALUES)))] if value is None else value
        return Edit(f"{f.name} (offset {f.offset}) -> {text[:20]!r}", ((f.offset, f.size, text.encode("utf-8")),))
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}.get(f.size)
    if fmt is None:  # an option value of odd length: its first byte
        f = Field(f.offset, 1, f.name, f.order)
        fmt = "B"
    old = struct.unpack_from(f.order + fmt, seed.data, f.offset)[0]
    if value is None:
        values = _int_values(f, old)
        value = values[int(rng.integers(len(values)))] if rng.random() < 0.85 else int.from_bytes(rng.bytes(f.size), "little")
    value &= (1 << (8 * f.size)) - 1
    if rng.random() < 0.05:  # the value in the other byte order
        f = Field(f.offset, f.size, f.name, ">" if f.order == "<" else "<")
    new = struct.pack(f.order + fmt, value)
    return Edit(f"{f.name} (offset {f.offset}): {old} -> {value}", ((f.offset, f.size, new),))


def _field(seed, rng, _seeds) -> Edit:
    if not seed.fields:
        return _flip(seed, rng, _seeds)
    return _field_edit(seed.fields[int(rng.integers(len(seed.fields)))], seed, rng)


def _length(seed, rng, _seeds) -> Edit:
    lengths = [f for f in seed.fields if any(w in f.name for w in ("len", "length", "size", "incl", "caplen"))]
    if not lengths:
        return _field(seed, rng, _seeds)
    f = lengths[int(rng.integers(len(lengths)))]
    if f.order == "":
        return _field_edit(f, seed, rng)
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[f.size]
    old = struct.unpack_from(f.order + fmt, seed.data, f.offset)[0]
    deltas = (-13, -8, -4, -3, -1, 1, 3, 4, 8, 16, 64, -old, 1 << 20, (1 << 20) + 64)
    return _field_edit(f, seed, rng, old + int(deltas[int(rng.integers(len(deltas)))]))


def _flip(seed, rng, _seeds) -> Edit:
    k = int(rng.integers(1, 9))
    parts = []
    for _ in range(k):
        at = int(rng.integers(len(seed.data)))
        parts.append((at, 1, bytes([seed.data[at] ^ (1 << int(rng.integers(8)))])))
    return Edit(f"{k} bit flips at {', '.join(str(p[0]) for p in parts)}", tuple(parts))


def _boundary(seed, rng) -> int:
    marks = [f.offset for f in seed.fields] + [f.offset + f.size for f in seed.fields] + [a for u in seed.units for a in u]
    if not marks or rng.random() < 0.2:
        return int(rng.integers(len(seed.data) + 1))
    return max(0, min(len(seed.data), marks[int(rng.integers(len(marks)))] + int(rng.integers(-3, 4))))


def _zero(seed, rng, _seeds) -> Edit:
    at, n = _boundary(seed, rng), int(rng.integers(1, 33))
    return Edit(f"zeroed {n} bytes at {at}", ((at, n, bytes(n)),))


def _bytes(seed, rng, _seeds) -> Edit:
    at, n = _boundary(seed, rng), int(rng.integers(1, 17))
    new = rng.integers(0, 256, n, dtype=np.uint8).tobytes() if rng.random() < 0.7 else b"\xff" * n
    return Edit(f"{n} random bytes at {at}", ((at, n, new),))


def _unit(seed, rng, _seeds) -> Edit:
    if len(seed.units) < 2:
        return _zero(seed, rng, _seeds)
    i, j = (int(x) for x in rng.integers(len(seed.units), size=2))
    (a, b), (c, d) = seed.units[i], seed.units[j]
    how = int(rng.integers(3))
    if how == 0:
        return Edit(f"record/block {i} (offset {a}) dropped", ((a, b - a, b""),))
    if how == 1:
        return Edit(f"record/block {i} (offset {a}) repeated after {j}", ((d, 0, seed.data[a:b]),))
    if i > j:
        i, j, a, b, c, d = j, i, c, d, a, b
    if i == j:
        return Edit(f"record/block {i} (offset {a}) cut in half", ((a + (b - a) // 2, (b - a) - (b - a) // 2, b""),))
    return Edit(f"records/blocks {i} and {j} swapped", ((c, d - c, seed.data[a:b]), (a, b - a, seed.data[c:d])))


def _splice(seed, rng, seeds) -> Edit:
    others = [s for s in seeds if s.kind == seed.kind]
    other = others[int(rng.integers(len(others)))]
    src = _boundary(other, rng)
    n = int(rng.integers(1, 257))
    at = _boundary(seed, rng)
    chunk = other.data[src:src + n]
    overwrite = rng.random() < 0.5
    return Edit(f"{len(chunk)} bytes of {other.name} from {src} {'over' if overwrite else 'into'} offset {at}",
                ((at, len(chunk) if overwrite else 0, chunk),))


def _cut(seed, rng, _seeds) -> Edit:
    at = _boundary(seed, rng)
    return Edit(f"cut at {at} of {len(seed.data)} bytes", ((at, -1, b""),))


_EDITS = {"field": _field, "length": _length, "flip": _flip, "zero": _zero, "unit": _unit, "splice": _splice,
          "bytes": _bytes, "cut": _cut}
