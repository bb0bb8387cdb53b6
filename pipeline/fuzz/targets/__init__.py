"""Fuzz targets, one a module: each takes a batch of cases and returns findings.
May import: madpipe.codecs, the pipeline subpackages it exercises, pipeline.fuzz.mutate and .findings.
"""
