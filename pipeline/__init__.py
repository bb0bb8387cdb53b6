"""madpipe.pipeline: what madpipe does with captures, one subpackage per flow.

kernels (numba's switch, ahead-of-time build) <- ingest (captures -> numpy batches) <- decode
(text, JSON Lines, CRC checks, display filter), mlx4 (the master's model), fabric (fabric-wide
snoop, diff, report) <- columns (DataFrames, CSV/Parquet); craft (frames by hand -> a capture),
sim (ibsim, replay), fuzz, bench; cli on top, imported by none of them. The README's "Layout"
section draws the arrows.
"""
