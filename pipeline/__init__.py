"""madpipe.pipeline: capture ingest into numpy batches, the mlx4 model (reference and numba kernels), the CLI."""
