"""How numba kernels run: the ``njit`` switch (ahead of time, numba's JIT, or plain Python) and the
ahead-of-time build.
May import: nothing in madpipe (the standard library and numpy, and numba only while compiling).
Kernel modules live with their flow (``ingest/kernels.py``, ``mlx4/snoop_kernels.py``...).
"""
