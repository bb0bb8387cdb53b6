"""Output helpers shared by commands: JSON Lines, field trees, hex dumps, summaries."""
from __future__ import annotations

import functools
import sys
from collections import Counter


def jsonl(record: dict, out=None) -> None:
    import json  # here: a text command never needs it

    (out or sys.stdout).write(json.dumps(record, separators=(",", ":")) + "\n")


def tree(record: dict, out=None, indent: int = 0, layer: str = "") -> None:
    """Print a nested record as an indented field tree, hex for numbers where it reads better, the
    name of a class, method or opcode beside its number, a NodeDescription as its text."""
    out = out or sys.stdout
    pad = "    " * indent
    for key, value in record.items():
        if isinstance(value, dict):
            out.write(f"{pad}{key}:\n")
            tree(value, out, indent + 1, key)
        elif isinstance(value, list) and len(value) > 8 and all(isinstance(v, int) for v in value):
            out.write(f"{pad}{key}:\n")
            for i in range(0, len(value), 8):
                row = " ".join(f"0x{v:04x}" for v in value[i:i + 8])
                out.write(f"{pad}    [{i:3d}] {row}\n")
        elif (layer, key) == ("attr", "node_string") and _node_string(value):
            out.write(f"{pad}{key}: {_node_string(value)}\n")  # the bytes in hex: -x or -T json
        else:
            named = _names().get((layer, key))
            text = f" [{named(value)}]" if named and isinstance(value, int) else ""
            out.write(f"{pad}{key}: {_scalar(key, value)}{text}\n")


def _node_string(value) -> str | None:
    """NodeDescription's 64 bytes (hex in the record) as the text they hold, quoted."""
    try:
        text = bytes.fromhex(value).split(b"\0", 1)[0].decode("ascii")
    except (ValueError, TypeError):
        return None
    return repr(text) if text.isprintable() else None


@functools.lru_cache(maxsize=1)
def _names() -> dict:
    """(layer, field) -> the function naming its value (loaded on the first tree)."""
    from madpipe.codecs import mad
    from madpipe.codecs.ib_headers import opcode_name

    return {("mad", "mgmt_class"): mad.mgmt_class_name, ("mad", "method"): mad.method_name,
            ("bth", "opcode"): opcode_name}


def _scalar(key: str, value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value} (0x{value:x})" if value > 9 else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def hexdump(data: bytes, out=None) -> None:
    """tshark -x style: offset, 16 bytes in hex, then printable ASCII."""
    out = out or sys.stdout
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexpart = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.write(f"{off:04x}  {hexpart:<47}  {text}\n")


def count_record(record: dict, counts: Counter) -> None:
    """Add one decoded record to `madpipe decode`'s counts (decoded, errors, CRCs ok/bad, MADs)."""
    counts["decoded"] += 1
    if "error" in record:
        counts["errors"] += 1
    for key in ("icrc_ok", "vcrc_ok"):
        if record.get(key) is True:
            counts[key] += 1
        elif record.get(key) is False:
            counts[key.replace("_ok", "_bad")] += 1
    if "mad" in record:
        counts["mads"] += 1
