"""Output helpers shared by commands: JSON Lines, field trees, hex dumps, summaries."""
from __future__ import annotations

import json
import sys
from collections import Counter


def jsonl(record: dict, out=None) -> None:
    (out or sys.stdout).write(json.dumps(record, separators=(",", ":")) + "\n")


def tree(record: dict, out=None, indent: int = 0) -> None:
    """Print a nested record as an indented field tree, hex for numbers where it reads better."""
    out = out or sys.stdout
    pad = "    " * indent
    for key, value in record.items():
        if isinstance(value, dict):
            out.write(f"{pad}{key}:\n")
            tree(value, out, indent + 1)
        elif isinstance(value, list) and len(value) > 8 and all(isinstance(v, int) for v in value):
            out.write(f"{pad}{key}:\n")
            for i in range(0, len(value), 8):
                row = " ".join(f"0x{v:04x}" for v in value[i:i + 8])
                out.write(f"{pad}    [{i:3d}] {row}\n")
        else:
            out.write(f"{pad}{key}: {_scalar(key, value)}\n")


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
