"""Fabric-wide P_Key state from a capture: every target port gets its own ``phys_pkey_cache``.

A port is named by how the SM reached it: the DLID of a LID-routed SMP, or the directed-route
path (hops 1..hop_cnt, plus the final DLID when the route ends LID-routed), and the switch port
from bits 16-31 of attr_mod. When the capture also holds a PortInfo answer that gives the LID
behind a directed-route path, that port is named by its LID as well, and LID-routed and
directed-route SMPs to it are one port. NodeInfo answers give each port's P_Key capacity.

Two rules decide what a capture's SMPs did to a table:

- ``set`` (the kernel's rule, default): a SubnSet(P_KeyTable) is applied when its SubnGetResp
  (same TID, from that port) has status 0; with no answer in the capture it is applied and
  counted as unconfirmed; with an error status it is not applied.
- ``getresp``: every SubnGetResp(P_KeyTable) with status 0 sets the table the port reported
  (answers to Get and to Set alike).

Each port's MADs go through smp_snoop's P_KeyTable rule in frame order, as Sets with the status
decided above, on a cache of the kernel's shape ``uint16[2, 128]`` whose row 0 is the port's
table. So block numbers past the table behave as the kernel's: blocks 4..7 spill into row 1
(reported as a finding), larger ones are refused.

How it runs (bounded memory: a capture larger than memory works):

1. One pass streams batches (:meth:`Ingest.raw`, no row copy; a thread reads and walks the next
   chunks meanwhile, :mod:`madpipe.pipeline.ingest.readahead`). A kernel picks the P_KeyTable
   SMPs and their fields, and the NodeInfo and directed-route PortInfo answers, out of the read
   buffer; routes get dense ids and ports dense slots, and :func:`snoop_ports` runs each batch
   over the per-port caches ``uint16[P, 2, 128]`` in one kernel call.
2. A port is named when its first SMP is met, by the answers met so far. An SM asks a path's
   PortInfo before it programs the port's P_Keys, so the names almost always hold; when an answer
   later in the capture changes one (checked at the end), the capture is snooped once more with
   every name known from the start. The result is the same either way.
3. Pairing (rule ``set``): P_KeyTable Sets and GetResps are numbered in one sequence; a Set's
   answer is the first GetResp with its TID from its port at most ``PAIR_WINDOW`` (65536) places
   before or after it in that sequence. Sets wait, in order, until the sequence has run
   ``PAIR_WINDOW`` past them (or the file ends), so at most about 2 * PAIR_WINDOW Sets (64 bytes
   of P_Keys each) and 3 * PAIR_WINDOW GetResps are held, plus one batch (~30 MB in all). A
   capture with at most PAIR_WINDOW P_KeyTable Sets and GetResps is paired exactly as "the first
   GetResp of the TID anywhere in the capture"; past the bound, an answer further away than
   PAIR_WINDOW is not seen: the Set counts as unconfirmed (and is applied), and an earlier
   GetResp with a reused TID further away is ignored. ``pair_window=None`` lifts the bound.
4. Events and findings are spooled as fixed records (in memory up to ``spool_memory`` bytes
   each, by default an eighth of the memory available, within 16 MiB..1 GiB; then in an
   anonymous temporary file) and read back in order when printed.

Memory is then bounded by the batch (a 2 MiB chunk, at most 64k records), the pairing window,
the fabric's size (512 bytes of cache per port, a few hundred bytes per route) and ``spool_memory``.

This module is the driver; beside it: :mod:`~madpipe.pipeline.fabric.model` (the result's types),
:mod:`~madpipe.pipeline.fabric.routes` (naming routes and ports), :mod:`~madpipe.pipeline.fabric.snoop_pass`
(one pass's state: slots, caches, pairing), :mod:`~madpipe.pipeline.fabric.spool` (event and finding
records) and :mod:`~madpipe.pipeline.fabric.text` (the ``smpquery pkeys`` layout).
"""
from __future__ import annotations

import os

import numpy as np

from madpipe.pipeline.fabric import kernels as kf
from madpipe.pipeline.fabric.model import FROM_RULES, FabricSnoop
from madpipe.pipeline.fabric.routes import Routes
from madpipe.pipeline.fabric.snoop_pass import UNBOUNDED, SnoopPass, extract_buffers
from madpipe.pipeline.fabric.spool import spool_memory as default_spool_memory
from madpipe.pipeline.ingest import readahead
from madpipe.pipeline.ingest.reader import Ingest
from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.mlx4.profiles import resolve

#: P_KeyTable Sets and GetResps a Set's answer may be away from (see the module docstring).
PAIR_WINDOW = 1 << 16

#: Read buffers the reader thread cycles through: it reads and walks the next chunks while the
#: snoop works on one (4 let it read on through a pairing decision; 2 stalled it, 8 ran slower).
READ_AHEAD_SETS = 4

#: Bytes the snoop reads at a time (the other readers' Ingest.CHUNK_BYTES is 4 MiB). Once the
#: snoop's kernels ran as fast as the reader, half the chunk let the two threads overlap sooner
#: and waste less waiting on each other: `madpipe snoop` of the 1M-frame SM capture, 24 runs of
#: each in turn, 0.97x and 0.91x the time of 4 MiB chunks (1 MiB: 1.05x of 2; 3 MiB: 1.03x),
#: and 10 MiB less memory (8 MiB of buffers).
READ_CHUNK = 2 << 20


# -- the Python API around fabric.kernels --------------------------------------------------------

def snoop_ports(phys_pkey_cache: np.ndarray, slot: np.ndarray, attr_mod: np.ndarray, data: np.ndarray,
                port_num: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """smp_snoop of SubnSet(P_KeyTable)s answered with status 0, each on its own port's cache.

    ``phys_pkey_cache`` ``uint16[P, 2, 128]`` (updated in place): P masters' caches, as
    ``init_pkeys`` leaves them or later; item n goes to ``phys_pkey_cache[slot[n]]`` (``int32[N]``)
    with attribute modifier ``attr_mod[n]`` (``uint32[N]``) and SMP data ``data[n]`` (``uint8[N, 64]``),
    on physical port ``port_num`` (1 or 2) of a master with no VFs. Returns
    ``(pkey_change_bitmap uint32[N], finding int8[N], old uint16[N, 32])``: what
    :func:`madpipe.pipeline.mlx4.snoop.smp_snoop` gives for the same MADs run port by port, and the
    entries each block covered before it (garbage for refused items).
    """
    snoop._check_array("phys_pkey_cache", phys_pkey_cache, np.uint16,
                       (None, snoop.MLX4_MAX_PORTS, snoop.MLX4_MAX_PORT_PKEYS), writeable=True)
    n = len(slot)
    snoop._check_array("slot", slot, np.int32, (n,))
    snoop._check_array("attr_mod", attr_mod, np.uint32, (n,))
    snoop._check_array("data", data, np.uint8, (n, 64))
    snoop._check_int("port_num", port_num, 1, snoop.MLX4_MAX_PORTS)
    if n and (int(slot.min()) < 0 or int(slot.max()) >= len(phys_pkey_cache)):
        raise ValueError(f"slot must be in 0..{len(phys_pkey_cache) - 1}")
    bitmap = np.empty(n, np.uint32)
    finding = np.empty(n, np.int8)
    old = np.empty((n, 32), np.uint16)
    kf.snoop_ports(slot, attr_mod, data, port_num, phys_pkey_cache, bitmap, finding, old)
    return bitmap, finding, old


def snoop_capture(path: str | os.PathLike, rule: str = "set", profile: str = "new", *,
                  host: int | None = None, num_vfs: int = 0, port_num: int = 1,
                  v2p: np.ndarray | None = None, pair_window: int | None = PAIR_WINDOW,
                  batch: int = 1 << 16, spool_memory: int | None = None) -> FabricSnoop:
    """Run the fabric snoop over a capture file; see the module docstring.

    With ``host`` (a LID), that port is also run as an mlx4 master's port ``port_num`` with
    ``num_vfs`` VFs and the given ``virt2phys_pkey`` (``init_pkeys``'s when None): the result's
    ``host`` is a :class:`~madpipe.pipeline.fabric.model.HostView`. ``pair_window`` None pairs over
    the whole capture (memory then grows with the number of Sets). ``spool_memory``: bytes of
    event (and of finding) records held in memory before they spill to a temporary file (None:
    :func:`~madpipe.pipeline.fabric.spool.spool_memory`).
    """
    if rule not in FROM_RULES:
        raise ValueError(f"rule must be one of {FROM_RULES}, got {rule!r}")
    resolve(profile)  # a one-line error for a name that is not a profile
    if host is not None and v2p is not None:
        snoop.check_v2p(v2p, profile)
    window = UNBOUNDED if pair_window is None else int(pair_window)
    if window < 0:
        raise ValueError(f"pair_window must be >= 0, got {pair_window}")
    if spool_memory is None:
        spool_memory = default_spool_memory()
    buffers = extract_buffers(batch)
    routes = Routes()

    def one_pass(learn: bool):
        run = SnoopPass(routes, rule, profile, window, host, num_vfs, port_num, v2p, spool_memory, batch)
        ing = Ingest(path, batch, READ_CHUNK)
        for raw in readahead.ahead(ing.raw(sets=READ_AHEAD_SETS), sets=READ_AHEAD_SETS):
            run.batch(raw, buffers, learn)
        run.decide(final=True)
        return run, ing

    run, ing = one_pass(learn=True)
    routes.finish()
    if not run.names_hold():
        # An answer late in the capture renamed a port met before it (a PortInfo naming the LID
        # behind a path after Sets to that path): snoop again, knowing every name from the start.
        run.close()
        run, ing = one_pass(learn=False)
        result = run.result(ing)
        result.passes = 2
        return result
    return run.result(ing)
