"""Captures -> numpy batches: the streaming reader, its kernels, read-ahead and progress.
May import: madpipe.codecs, pipeline.kernels.
"""
