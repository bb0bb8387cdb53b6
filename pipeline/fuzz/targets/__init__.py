"""Fuzz targets, one a module: each takes a batch of cases and returns findings.
May import: madpipe.codecs, pipeline.ingest, pipeline.mlx4, pipeline.fabric, pipeline.sim (the flows it
exercises), pipeline.fuzz.mutate and .findings.
"""
