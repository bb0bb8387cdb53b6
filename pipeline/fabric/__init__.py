"""Fabric-wide snoop of a capture (every port's ``phys_pkey_cache``, events, findings), of a file or as
it arrives (``live/``), the diff of two captures and the HTML report.
May import: madpipe.codecs, pipeline.kernels, pipeline.ingest, pipeline.decode, pipeline.mlx4.
"""
