"""VF P_Key index maps: what an operator writes to sysfs, as a file madpipe reads.

On an mlx4 host, ``echo PHYS > /sys/class/infiniband/mlx4_0/iov/<vf>/ports/<port>/pkey_idx/<index>``
sets ``virt2phys_pkey[vf][port-1][index] = PHYS``. A map file holds one such assignment a line:

    # vf port index phys
    1 1 0 1      # vm1: its P_Key index 0 is physical index 1
    1 1 1 0
    2 1 0 2

applied on top of ``init_pkeys`` (master identity; VF index 0 -> 0, the rest -> 127).
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs.errors import MadpipeError, read_text
from madpipe.pipeline.mlx4 import snoop


def read_pkey_map(path: str, num_vfs: int, master: int = 0, profile="mainline") -> np.ndarray:
    """init_pkeys' virt2phys_pkey with the file's assignments applied (``uint8[F, 2, 128]``, F the
    profile's MLX4_MFUNC_MAX)."""
    _, v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=master, profile=profile)
    lines = read_text(path).split("\n")
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        names = ("vf", "port", "index", "phys")
        if len(fields) != 4:
            raise MadpipeError(f"{path}, line {n}: expected 'VF PORT INDEX PHYS', got {text!r}")
        try:
            vf, port, index, phys = (int(x, 0) for x in fields)
        except ValueError:
            raise MadpipeError(f"{path}, line {n}: not integers: {text!r}") from None
        limits = {"vf": (1, num_vfs), "port": (1, 2), "index": (0, 127), "phys": (0, 127)}
        for name, value, written in zip(names, (vf, port, index, phys), fields):
            low, high = limits[name]
            if not low <= value <= high:
                # As written, cut: a hexadecimal one may have more decimal digits than str() makes.
                shown = written if len(written) <= 24 else written[:20] + "..."
                raise MadpipeError(f"{path}, line {n}, field {name}: {shown} is outside {low}..{high}")
        v2p[vf, port - 1, index] = phys
    return v2p
