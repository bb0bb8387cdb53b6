"""``madpipe bench``'s measurements: seeded workloads, baseline kernels, every stage timed against a
baseline in the same run.
May import: any library subpackage (not pipeline.cli).
"""
