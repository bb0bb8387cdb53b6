"""The mlx4 SR-IOV master's model: ``smp_snoop``, QP-context paravirtualization, VF P_Key maps, traces;
each numba kernel (``*_kernels``; the rewrite's row loop in ``paravirt_rows``) beside the pure-Python
reference it must equal (``*_reference``).
May import: madpipe.codecs, pipeline.kernels.
"""
