"""pcapng blocks as the capture reader uses them, every length, option and timestamp checked.

A block's body is what lies between its 8-byte header and its trailing length. A body that
does not hold what its type needs raises :class:`BlockError`: the reader turns it into a
per-frame skip (a packet block) or into the interface's error, carried by the packets that name
that interface; nothing here raises anything else.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

INT64_MAX = (1 << 63) - 1

BLOCK_IDB = 1       # Interface Description Block
BLOCK_PACKET = 2    # Packet Block (obsolete)
BLOCK_SPB = 3       # Simple Packet Block
BLOCK_EPB = 6       # Enhanced Packet Block
PACKET_BLOCKS = (BLOCK_PACKET, BLOCK_SPB, BLOCK_EPB)
BLOCK_NAMES = {BLOCK_PACKET: "packet block", BLOCK_SPB: "simple packet block", BLOCK_EPB: "enhanced packet block"}

OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14
# Finer than this many digits, a 64-bit tick count covers less than two seconds: no capture tool
# writes it, and a damaged option is the likelier story.
MAX_DECIMAL_TSRESOL = 19
MAX_BINARY_TSRESOL = 63


class BlockError(ValueError):
    """A block whose body does not hold what its type needs: ``field`` and why."""

    def __init__(self, field: str, reason: str):
        self.field = field
        super().__init__(f"field {field}: {reason}")


@dataclass(frozen=True, slots=True)
class Interface:
    """What an IDB says about the packets that name it; ``error`` when the IDB is corrupt."""

    linktype: int
    num: int = 1000   # ticks -> ns: ticks * num // den (default if_tsresol 6: microseconds)
    den: int = 1
    offset_s: int = 0  # if_tsoffset: seconds added to every timestamp
    resolution: str = "microseconds (default)"
    error: str | None = None

    def ts_ns(self, ticks: int) -> int:
        return ticks * self.num // self.den + self.offset_s * 1_000_000_000


def interface(body: bytes, order: str) -> Interface:
    """The Interface an IDB body declares; a corrupt one is an Interface with ``error`` set."""
    try:
        return _interface(body, order)
    except BlockError as exc:
        linktype = struct.unpack_from(order + "H", body)[0] if len(body) >= 2 else -1
        return Interface(linktype, error=f"interface description block is corrupt: {exc}")


def _interface(body: bytes, order: str) -> Interface:
    if len(body) < 8:
        raise BlockError("length", f"{len(body)} bytes of body, an IDB needs 8 before its options")
    linktype = struct.unpack_from(order + "H", body)[0]
    fields = {"linktype": linktype}
    for code, value in options(body, 8, order):
        if code == OPT_IF_TSRESOL:
            if len(value) != 1:
                raise BlockError("if_tsresol", f"option length {len(value)}, not 1")
            fields.update(_tsresol(value[0]))
        elif code == OPT_IF_TSOFFSET:
            if len(value) != 8:
                raise BlockError("if_tsoffset", f"option length {len(value)}, not 8")
            fields["offset_s"] = struct.unpack(order + "q", value)[0]
    return Interface(**fields)


def _tsresol(v: int) -> dict:
    if v & 0x80:
        if (v & 0x7F) > MAX_BINARY_TSRESOL:
            raise BlockError("if_tsresol", f"0x{v:02x}: 2^-{v & 0x7F} s is finer than any capture tool writes")
        return {"num": 1_000_000_000, "den": 1 << (v & 0x7F), "resolution": f"2^-{v & 0x7F} s"}
    if v > MAX_DECIMAL_TSRESOL:
        raise BlockError("if_tsresol", f"{v}: 10^-{v} s is finer than any capture tool writes")
    num, den = (10 ** (9 - v), 1) if v <= 9 else (1, 10 ** (v - 9))
    return {"num": num, "den": den, "resolution": f"10^-{v} s"}


def options(body: bytes, pos: int, order: str):
    """(code, value) of each option from ``pos`` to opt_endofopt or the end of the body."""
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        if code == OPT_ENDOFOPT:
            return
        if pos + 4 + length > len(body):
            raise BlockError(f"option {code}", f"length {length} at body offset {pos} runs past the block")
        yield code, body[pos + 4:pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)
    if pos != len(body):
        raise BlockError("options", f"{len(body) - pos} bytes left over after the last option")


@dataclass(slots=True)
class PacketFields:
    iface: int
    ticks: int
    data: bytes
    orig_len: int


def packet_fields(btype: int, body: bytes, order: str) -> PacketFields:
    """Interface, timestamp ticks, captured bytes and wire length of a packet block."""
    if btype == BLOCK_SPB:
        if len(body) < 4:
            raise BlockError("length", f"{len(body)} bytes of body, 4 needed")
        orig = struct.unpack_from(order + "I", body)[0]
        # The captured part is what the block holds, up to the original length (RFC, 4.4).
        return PacketFields(0, 0, body[4:4 + orig], orig)
    if len(body) < 20:
        raise BlockError("length", f"{len(body)} bytes of body, 20 needed")
    if btype == BLOCK_EPB:
        iface, hi, lo, incl, orig = struct.unpack_from(order + "IIIII", body)
    else:
        iface, _drops, hi, lo, incl, orig = struct.unpack_from(order + "HHIIII", body)
    if 20 + incl > len(body):
        raise BlockError("captured length", f"{incl} bytes run past the {len(body) - 20} the block holds")
    return PacketFields(iface, (hi << 32) | lo, body[20:20 + incl], orig)


def timestamp_error(iface: Interface, index: int, ts_ns: int) -> str | None:
    """Why a timestamp cannot be an int64 of nanoseconds since 1970, or None when it can."""
    if 0 <= ts_ns <= INT64_MAX:
        return None
    offset = f", if_tsoffset {iface.offset_s} s" if iface.offset_s else ""
    side = "before 1970" if ts_ns < 0 else "past 2262"
    return (f"field timestamp: {side}, outside int64 nanoseconds (interface {index}: "
            f"{iface.resolution}{offset}; is its if_tsresol right?)")
