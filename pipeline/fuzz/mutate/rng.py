"""Counter-based randomness for the mutator: every decision of case ``i`` is a hash of ``(seed, i, decision)``.

splitmix64, computed for a whole batch at once with numpy, never a draw from a stream shared with
other cases: case ``i`` is the same whether it is generated in a batch of 4096, alone, or in
another process.
"""
from __future__ import annotations

import zlib

import numpy as np

U64 = np.uint64
MASK64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (arithmetic wraps, as intended)."""
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def stream_id(name: str) -> int:
    return zlib.crc32(name.encode()) | (zlib.crc32(name[::-1].encode()) << 32)


class CaseRng:
    """Random numbers for many cases at once: value k of case i is ``mix(mix(seed, i), k)``.

    ``stream`` names a decision ("seed", "op1", ...); the same name gives the same numbers, so
    adding a decision never changes the others.
    """

    def __init__(self, seed: int, index: np.ndarray):
        key = _mix(np.array([(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & MASK64], dtype=U64))[0]
        self.base = _mix(np.asarray(index, dtype=U64) * U64(0xD1B54A32D192ED03) ^ key)
        self.n = len(self.base)

    def u64(self, stream: str) -> np.ndarray:
        return _mix(self.base ^ U64(stream_id(stream)))

    def below(self, stream: str, n, sel: np.ndarray | None = None) -> np.ndarray:
        """int64 in 0..n-1 for every case, or for the cases ``sel`` (then ``n`` may be one per case of sel)."""
        u = self.u64(stream)
        if sel is not None:
            u = u[sel]
        return (u % np.maximum(np.asarray(n), 1).astype(U64)).astype(np.int64)

    def unit(self, stream: str) -> np.ndarray:
        return (self.u64(stream) >> U64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def chance(self, stream: str, p) -> np.ndarray:
        return self.unit(stream) < p

    def pick(self, stream: str, values) -> np.ndarray:
        values = np.asarray(values)
        return values[self.below(stream, len(values))]
