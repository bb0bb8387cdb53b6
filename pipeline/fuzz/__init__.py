"""Fuzzing: the seeded structure-aware mutator (``mutate/``), the targets that judge its cases
(``targets/``), the runner and the findings it saves as captures.
May import: madpipe.codecs, pipeline.kernels, pipeline.ingest, pipeline.decode, pipeline.mlx4, pipeline.fabric, pipeline.sim.
"""
