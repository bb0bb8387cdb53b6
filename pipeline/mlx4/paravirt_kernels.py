"""numba kernels for the mlx4 master's QP-context rewrite, over plain arrays.

Same semantics as ``paravirt_reference`` (read its docstring for the rules, the sources and what
of mainline is left out); the tests compare the two bit for bit. The kernels take validated,
C-contiguous arrays and write their outputs into arrays passed in; ``paravirt`` is the checked
Python API around them.

Arguments, one row per command:

- ``mailboxes`` ``uint8[N, 256]`` (in), ``out`` ``uint8[N, 256]`` (out; the in-place kernel writes
  ``mailboxes`` itself);
- ``transition`` ``uint8[N]``: the mlx4 command opcode (``TRANSITION_*`` below, the numbers of
  ``include/linux/mlx4/cmd.h``);
- ``slave`` ``int32[N]``, ``qpn`` ``uint32[N]`` (the command's input modifier);
- ``v2p`` ``uint8[F, 2, 128]`` (``virt2phys_pkey``), ``active_ports`` ``uint8[F]``,
  ``smi_enabled`` ``uint8[F, 2]``, F = ``mfunc_max`` (``MLX4_MFUNC_MAX`` of the profile);
- scalars ``base_proxy_sqpn``, ``master``, ``rules`` (the profile's ``RULE_*`` bits,
  :attr:`~madpipe.pipeline.mlx4.profiles.Profile.rules`), ``mfunc_max``, ``fw_reserved_qps``;
- Ethernet (``RULE_ETH_PORTS``, :mod:`.eth_reference`): ``port_types`` ``uint8[2]`` (2 = Ethernet),
  ``last_vf`` (the last function ``mlx4_get_vf_indx`` knows: num_vfs, at most F - 1), ``vport``
  ``uint16[F, 2, 8]`` (``eth_reference.VPORT_*`` columns), ``smac_registered`` ``uint8[F, 2, 128]``;
- ``rc`` ``int32[N]`` and ``finding`` ``int8[N]`` (out).

Only the bytes the C may change are written (pri/alt sched_queue, params2, pkey_index, the two
mgid_index bytes, qkey), and only when the command is accepted, so the in-place kernel leaves a
rejected or refused row exactly as it was. Every value is read before any byte is written.
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.kernels.jit import njit
from madpipe.pipeline.mlx4.eth_kernels import RULE_ETH_PORTS
from madpipe.pipeline.mlx4.paravirt_rows import make_rewrite_rows

#: The rows of batches whose ports are all InfiniBand, and of those with RULE_ETH_PORTS. The read
#: ahead (``read_ahead``) is one byte of each cache line of row i + LOOKAHEAD_ROWS: a rewrite is a
#: few dozen branches on bytes spread over the whole 256-byte row, and loads of rows further on,
#: which nothing waits for, let the memory system fetch them while the branches of this row
#: resolve (in place: ~4.8 -> ~3.7 ms for 100k mailboxes on a 2-core EPYC VM).
_rewrite_rows_ib = make_rewrite_rows(False)
_rewrite_rows_eth = make_rewrite_rows(True)


#: Rows copied and then rewritten together by rewrite_kernel: 64 KB of input, still in L2 when
#: the rewrite reads the copy.
CHUNK_ROWS = 256


@njit
def _rewrite_rows(mailboxes, start, stop, transition, slave, qpn, v2p, base_proxy_sqpn, master, rules, mfunc_max,
                  active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport, smac_registered, rc,
                  finding, read_ahead):
    """Rewrite rows start..stop - 1 of ``mailboxes`` in place; with ``read_ahead``, touch the rows
    LOOKAHEAD_ROWS on. Returns a sum of the bytes read ahead (kept only so that those reads stay)."""
    if (rules & RULE_ETH_PORTS) != 0:
        return _rewrite_rows_eth(mailboxes, start, stop, transition, slave, qpn, v2p, base_proxy_sqpn, master, rules,
                                mfunc_max, active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport,
                                smac_registered, rc, finding, read_ahead)
    return _rewrite_rows_ib(mailboxes, start, stop, transition, slave, qpn, v2p, base_proxy_sqpn, master, rules,
                           mfunc_max, active_ports, smi_enabled, fw_reserved_qps, None, last_vf, None, None, rc,
                           finding, read_ahead)


@njit
def rewrite_kernel(mailboxes, out, transition, slave, qpn, v2p, base_proxy_sqpn, master, rules, mfunc_max,
                   active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport, smac_registered, rc,
                   finding):
    """Rewrite every row of ``mailboxes`` into ``out``; ``mailboxes`` is not modified.

    A chunk of rows is copied, then rewritten in place while it is still in the cache: the input
    is read once and the output written once (a bulk copy of everything, then a second pass,
    read and wrote the whole output twice). Returns 0."""
    src = mailboxes.view(np.uint64)
    dst = out.view(np.uint64)
    for start in range(0, mailboxes.shape[0], CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, mailboxes.shape[0])
        for i in range(start, stop):
            for k in range(src.shape[1]):
                dst[i, k] = src[i, k]
        _rewrite_rows(out, start, stop, transition, slave, qpn, v2p, base_proxy_sqpn, master, rules, mfunc_max,
                      active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport, smac_registered, rc,
                      finding, False)
    return 0


@njit
def rewrite_inplace_kernel(mailboxes, transition, slave, qpn, v2p, base_proxy_sqpn, master, rules, mfunc_max,
                           active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport, smac_registered,
                           rc, finding):
    """Rewrite every row of ``mailboxes`` in place (rejected and refused rows stay as they were).

    Returns a sum of the bytes read ahead (kept only so that those reads stay)."""
    return _rewrite_rows(mailboxes, 0, mailboxes.shape[0], transition, slave, qpn, v2p, base_proxy_sqpn,
                         master, rules, mfunc_max, active_ports, smi_enabled, fw_reserved_qps, port_types,
                         last_vf, vport, smac_registered, rc, finding, True)
