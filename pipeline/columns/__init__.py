"""Captures as columns: pandas DataFrames of frames and of port tables, CSV/Parquet export, many
captures at once (processes or dask).
May import: madpipe.codecs, pipeline.kernels, pipeline.ingest, pipeline.decode, pipeline.fabric.
"""
