"""How numba kernels run: ``jit.njit`` (decided on a kernel's first call, never at import: ahead
of time, numba's JIT or plain Python), the ahead-of-time kernels (``aot``: which, where, when;
``aot_build``: the compile), their argument check (``guard``), a fresh output's pages mapped
on another core while a kernel fills it, or asked to be small ones (``populate``), 8 bytes at any position as one word
(``unaligned``: kernels' helpers), and the helper threads that run GIL-free kernels beside the
caller (``workers``: what ``concurrent.futures`` gives, without importing ``logging``).
May import: nothing in madpipe (the standard library and numpy, and numba only while compiling).
Kernel modules live with their flow (``ingest/kernels.py``, ``mlx4/snoop_kernels.py``...).
"""
