"""Frames -> text lines, field trees, hex and JSON Lines; ICRC/VCRC checks in bulk; ``-Y`` filters.
May import: madpipe.codecs, pipeline.kernels, pipeline.ingest.
"""
