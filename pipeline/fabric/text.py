"""P_Key tables as text: the ``smpquery pkeys`` layout, and how many of a port's entries to show."""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.fabric.model import PortState

_PKEY_LINE = "%4d: " + " ".join(["0x%s"] * 8)


def format_pkeys(table: np.ndarray, entries: int) -> list[str]:
    """``smpquery pkeys`` layout: 8 P_Keys a line, prefixed by the first index."""
    hexes = np.asarray(table, dtype=">u2").tobytes().hex()
    keys = [hexes[i:i + 4] for i in range(0, len(hexes), 4)]
    lines = []
    for start in range(0, entries, 8):
        row = keys[start:start + 8]
        if len(row) == 8:
            lines.append(_PKEY_LINE % (start, *row))
        else:
            lines.append(f"{start:4d}: " + " ".join("0x" + k for k in row))
    return lines


def shown_entries(state: PortState) -> int:
    """How many entries to print: the NodeInfo capacity when known, else through the last block written."""
    if state.capacity:
        return min(state.capacity, len(state.table))
    last = max((b for b in state.blocks if b < 4), default=0)
    return (last + 1) * 32
