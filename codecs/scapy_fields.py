"""scapy fields the InfiniBand layers need beyond scapy's own.

A field that sits after its layer's payload on the wire (:class:`AfterPayload`: the LRH's ICRC
and VCRC, the SMP fields after the 64-byte data area), construct's fixed-count arrays
(:class:`FixedFieldList`, :class:`FixedPacketList`), and a directed route's path and hop count.
Used by :mod:`madpipe.codecs.layers` and :mod:`madpipe.codecs.mad_layers`.
"""
from __future__ import annotations

from scapy.fields import ByteField, FieldListField, PacketListField, StrFixedLenField, _FieldContainer

from madpipe.codecs import smp as smpc
from madpipe.codecs.errors import CraftError

__all__ = ["AfterPayload", "FixedFieldList", "FixedPacketList", "DRPathField", "HopCountField", "path_hops"]


class AfterPayload(_FieldContainer):
    """A field that sits after its layer's payload on the wire.

    ``at >= 0``: after the first ``at`` bytes of the payload (the SMP fields after the 64-byte
    data area). ``at < 0``: ``-at`` bytes before the end of the packet (the LRH's ICRC and VCRC).
    Dissection takes the field's bytes from there; building adds nothing in place, the owning
    layer's ``post_build`` puts the bytes where they belong (``LRH``, ``_DataArea``).
    """

    __slots__ = ["fld", "at"]

    def __init__(self, fld, at: int):
        self.fld = fld
        self.at = at

    def getfield(self, pkt, s):
        start = self.at if self.at >= 0 else len(s) + self.at
        if start < 0 or start >= len(s):
            return s, None  # a frame too short to hold the field: left unset
        rest, val = self.fld.getfield(pkt, s[start:])
        end = len(s) - len(rest)
        return s[:start] + s[end:], val

    def addfield(self, pkt, s, val):
        return s


class FixedFieldList(FieldListField):
    """A construct ``Array(n, int)``: exactly n items, a shorter list is padded with zeros."""

    def __init__(self, name, field, count: int):
        super().__init__(name, [field.default] * count, field, count_from=lambda pkt: count)
        self.max_count = count

    def i2m(self, pkt, val):
        val = list(super().i2m(pkt, val) or [])
        return val + [self.field.default] * (self.max_count - len(val))


class FixedPacketList(PacketListField):
    """A construct ``Array(n, Struct)``: exactly n elements, a shorter list is padded with defaults."""

    def __init__(self, name, cls, count: int):
        super().__init__(name, None, cls, count_from=lambda pkt: count)
        self.max_count = count

    def addfield(self, pkt, s, val):
        val = list(val or [])
        val += [self.cls() for _ in range(self.max_count - len(val))]
        return super().addfield(pkt, s, val)


class DRPathField(StrFixedLenField):
    """A 64-byte directed-route path. A list given is the hops 1..n (entry 0, unused, is 0)."""

    def __init__(self, name):
        super().__init__(name, bytes(smpc.IB_SMP_MAX_PATH_HOPS), smpc.IB_SMP_MAX_PATH_HOPS)

    def any2i(self, pkt, x):
        if isinstance(x, (list, tuple)):
            if len(x) >= smpc.IB_SMP_MAX_PATH_HOPS:
                raise CraftError(f"a directed-route path holds at most 63 hops, not {len(x)}")
            return bytes([0, *x]).ljust(smpc.IB_SMP_MAX_PATH_HOPS, b"\0")
        return super().any2i(pkt, x)

    def i2repr(self, pkt, x):
        entries = list(x or b"")
        while entries and not entries[-1]:
            entries.pop()
        return f"[{', '.join(map(str, entries))}]"


class HopCountField(ByteField):
    """hop_cnt: None counts the hops of initial_path (up to its last non-zero entry)."""

    def i2m(self, pkt, x):
        if x is None and pkt is not None:
            x = len(path_hops(pkt.initial_path))
        return super().i2m(pkt, x)


def path_hops(path: bytes) -> list[int]:
    """Entries 1..n of a path, n being its last non-zero entry."""
    entries = list(path or b"")
    while len(entries) > 1 and not entries[-1]:
        entries.pop()
    return entries[1:]
