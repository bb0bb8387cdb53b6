"""Values as infiniband-diags and ``madpipe craft`` write them: numbers in decimal or 0x hex, lists
and ranges (``0-3``, ``1,3``), directed-route paths (``0,1,3``), method names, times in seconds.
Errors are :class:`CraftArgError`, one line naming the flag the value came from.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from madpipe.codecs.errors import MadpipeError

METHODS = {"get": 0x01, "set": 0x02, "getresp": 0x81, "send": 0x03, "trap": 0x05,
           "report": 0x06, "trap-repress": 0x07, "report-resp": 0x86}


class CraftArgError(MadpipeError):
    """A value madpipe cannot use, named by the flag it came from."""


def number(flag: str, text: str) -> int:
    try:
        value = int(text, 0)
    except (TypeError, ValueError):
        raise CraftArgError(f"{flag} {text!r} is not a number (decimal or 0x hex)") from None
    if value < 0:
        raise CraftArgError(f"{flag} {text!r} is negative")
    return value


def numbers(flag: str, text: str) -> list[int]:
    """'0-3' -> [0, 1, 2, 3]; '1,3' -> [1, 3]; '0x10' -> [16]."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if sep:
            first, last = number(flag, lo), number(flag, hi)
            if last < first:
                raise CraftArgError(f"{flag} range {part!r} runs backwards")
            if last - first >= 65536:
                raise CraftArgError(f"{flag} range {part!r} is too long")
            out.extend(range(first, last + 1))
        else:
            out.append(number(flag, part))
    return out


def dr_hops(text: str) -> list[int]:
    """-D 0,1,3 -> hops [1, 3]: entry 0 is the local port (infiniband-diags' form)."""
    entries = [number("-D", part) for part in text.split(",")]
    if entries[0] != 0:
        raise CraftArgError(f"-D {text}: a directed route starts at the local port 0 "
                            "(infiniband-diags' form, e.g. -D 0,1,3)")
    hops = entries[1:]
    if len(hops) > 63:
        raise CraftArgError(f"-D {text}: {len(hops)} hops, a directed route holds at most 63 "
                            "(--hop-cnt with --raw sends a larger hop count)")
    bad = [p for p in hops if p > 0xFF]
    if bad:
        raise CraftArgError(f"-D {text}: port {bad[0]} does not fit a byte (0..255)")
    return hops


def method_arg(text: str) -> int:
    key = text.lower().replace("_", "-")
    if key in METHODS:
        return METHODS[key]
    value = number("--method", text)
    if value > 0xFF:
        raise CraftArgError(f"--method {text}: a method is one byte")
    return value


def parse_time(text) -> int:
    """Seconds (text or Decimal) -> integer nanoseconds, exactly."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise CraftArgError(f"time {text!r} is not a number of seconds") from None
    if not value.is_finite() or value < 0:
        raise CraftArgError(f"time {text!r} must be a non-negative number of seconds")
    return int((value * 1_000_000_000).to_integral_value(ROUND_HALF_EVEN))
