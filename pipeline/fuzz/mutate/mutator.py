"""The seeded, structure-aware mutator behind ``madpipe fuzz``: batches of mutated frames and mailboxes.

::

    from madpipe.pipeline.fuzz.mutate.corpus import Corpus
    from madpipe.pipeline.fuzz.mutate.mutator import Mutator
    mut = Mutator(Corpus.builtin(), seed=1)
    cases = mut.batch(0, 4096)          # cases 0..4095: frames uint8[B, WIDTH], length int64[B], ...
    one = mut.case(17)                  # case 17 alone, with notes on what was mutated
    one.frame(0), one.notes[0], one.changed_fields(0)

**Reproducible by case number.** Every random decision of case ``i`` is a hash of ``(seed, i,
decision)`` (splitmix64, computed for the whole batch at once with numpy), never a draw from a
stream shared with other cases: case ``i`` is the same whether it is generated in a batch of 4096,
alone, or in another process. Settings that belong to a batch of the stateful targets (the snoop
state, the paravirt device) are a hash of ``(seed, i // BATCH)``
(:func:`~madpipe.pipeline.fuzz.mutate.cases.batch_config`).

**Structure-aware.** A seed frame (from a capture or the built-in corpus) is split into its fields
by walking the construct schemas of each layer
(:func:`~madpipe.pipeline.fuzz.mutate.fields.frame_fields`): LRH, GRH, BTH, DETH, the MAD header,
the SMP (LID-routed or directed-route) with the attribute's own fields in its data area, PerfMgt
attributes, the ICRC and the VCRC. Each case applies one to four mutations, each
chosen from :data:`OPS`:

=============  ==============================================================================
field          one field set to a boundary value (0, 1, max, max-1, the top bit, +-1 of what was
               there) or a value known to matter for it (classes, methods, attribute IDs, the
               permissive LID, QP1's Q_Key...)
reserved       a reserved field set non-zero
bitflip        1..8 bits flipped anywhere in the frame
bytes          1..4 bytes set to 0x00, 0xff, 0x7f, 0x80, 0x01 or random
truncate       the frame cut at a layer boundary or anywhere
extend         bytes appended (zeros or random)
pktlen         LRH PktLen made wrong (0, 1, off by one, 0x7ff, random)
hops           directed route: hop_cnt/hop_ptr out of range (64, 255, hop_cnt + 1, ...) and
               paths that disagree with them (zero or 255 hops, hops past hop_cnt, D bit)
pkey_block     made a SubnSet(P_KeyTable) whose block is past the table (4..7, 8, 0xffff, ...)
response       made a response nobody asked for (GetResp with a fresh TID, D bit set)
class          management class swapped (LID-routed <-> directed route, SA, PerfMgt, vendor)
attr           attribute ID changed, so the data is read with another attribute's schema
crc            ICRC or VCRC corrupted (otherwise both are recomputed after mutation)
splice         a byte range copied from another seed
=============  ==============================================================================

After the mutations, PktLen is fixed to the new length half the time a mutation changed the
length, and the CRCs are recomputed (95%) unless a ``crc`` mutation broke them on purpose.

Each case also carries a QP-context mailbox for the paravirt target (mutated from built-in
mailboxes: P_Key index 128..255, sched_queue port bit, service type, optpar, GID indices, rate
limit, FPP, bit flips), a transition, the issuing function (``slave``, including values outside
0..79) and the QP number (around the proxy and tunnel ranges), and for the snoop target the
port (1-based, sometimes 0 or 3) and firmware's status for the MAD.

This module holds :class:`Mutator` and :data:`OPS`; its parts live in their own modules of
``madpipe.pipeline.fuzz.mutate``, and their names are imported from there: ``rng`` (the
counter-based randomness), ``fields`` (fields of a frame, values that matter), ``corpus`` (seeds:
``Corpus``, ``WIDTH``), ``rows`` (bit fields and CRCs of many rows at once), ``cases`` (``Cases``,
``batch_config``, ``BATCH``), and the mutations by family: ``frame_ops``, ``mad_ops``,
``mailboxes``.
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import qpc
from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.field_table import Field
from madpipe.pipeline.fuzz.mutate.cases import SLOTS, Cases
from madpipe.pipeline.fuzz.mutate.corpus import MBOX_SIZE, WIDTH, Corpus
from madpipe.pipeline.fuzz.mutate.fields import field_weight, frame_fields, interesting_for, layout_key, mad_offset
from madpipe.pipeline.fuzz.mutate.frame_ops import FrameMutations
from madpipe.pipeline.fuzz.mutate.mad_ops import MadMutations
from madpipe.pipeline.fuzz.mutate.mailboxes import MailboxMutations
from madpipe.pipeline.fuzz.mutate.rng import U64, CaseRng
from madpipe.pipeline.fuzz.mutate.rows import put_bits, seal_rows

OPS = ("field", "reserved", "bitflip", "bytes", "truncate", "extend", "pktlen", "hops", "pkey_block",
       "response", "class", "attr", "crc", "splice")
OP_WEIGHTS = np.array([22, 5, 12, 6, 6, 4, 5, 8, 12, 5, 4, 5, 3, 3], dtype=np.float64)


class Mutator(FrameMutations, MadMutations, MailboxMutations):
    """Mutated cases from a corpus and a seed; ``batch(start, n)`` and ``case(i)`` agree exactly."""

    def __init__(self, corpus: Corpus, seed: int):
        self.corpus = corpus
        self.seed = int(seed)
        n = len(corpus.frames)
        if n == 0:
            raise MadpipeError("the corpus has no frames")
        self.seed_rows = np.zeros((n, WIDTH), dtype=np.uint8)
        self.seed_len = np.zeros(n, dtype=np.int64)
        self.seed_mad = np.full(n, -1, dtype=np.int64)
        # Field tables per layout (frames of one shape share one): seeds index them through lay.
        layouts: dict[tuple, int] = {}
        tables: list[list[Field]] = []
        self.lay = np.zeros(n, dtype=np.int64)
        for s, frame in enumerate(corpus.frames):
            self.seed_rows[s, :len(frame)] = np.frombuffer(frame, dtype=np.uint8)
            self.seed_len[s] = len(frame)
            self.seed_mad[s] = mad_offset(frame)
            key = layout_key(frame, int(self.seed_mad[s]))
            if key not in layouts:
                layouts[key] = len(tables)
                tables.append(frame_fields(frame))
            self.lay[s] = layouts[key]
        self.fields = tables
        n_lay = len(tables)
        fmax = max(1, max(len(t) for t in tables))
        self.f_bit = np.zeros((n_lay, fmax), dtype=np.int64)
        self.f_width = np.zeros((n_lay, fmax), dtype=np.int64)
        self.f_cum = np.ones((n_lay, fmax), dtype=np.float64)
        self.f_count = np.zeros(n_lay, dtype=np.int64)
        self.f_int_start = np.zeros((n_lay, fmax), dtype=np.int64)
        self.f_int_len = np.zeros((n_lay, fmax), dtype=np.int64)
        reserved = []
        pool: list[int] = []
        pool_at: dict[str, tuple[int, int]] = {}
        for s, table in enumerate(tables):
            self.f_count[s] = len(table)
            w = np.array([field_weight(f) for f in table] or [1.0])
            self.f_cum[s, :len(w)] = np.cumsum(w) / w.sum()
            for k, f in enumerate(table):
                self.f_bit[s, k] = f.bit
                self.f_width[s, k] = f.width
                key = f.name.split("[", 1)[0]
                if key not in pool_at:
                    vals = interesting_for(f.name)
                    pool_at[key] = (len(pool), len(vals))
                    pool.extend(vals)
                self.f_int_start[s, k], self.f_int_len[s, k] = pool_at[key]
            reserved.append([k for k, f in enumerate(table) if f.reserved])
        self.pool = np.array(pool or [0], dtype=U64)
        rmax = max(1, max(len(r) for r in reserved))
        self.r_count = np.array([len(r) for r in reserved], dtype=np.int64)
        self.r_index = np.zeros((n_lay, rmax), dtype=np.int64)
        for s, r in enumerate(reserved):
            self.r_index[s, :len(r)] = r
        # Mailboxes.
        self.mbox_rows = np.frombuffer(b"".join(corpus.mailboxes), dtype=np.uint8).reshape(-1, MBOX_SIZE)
        leaves = [(name, off, size) for name, off, size, _ in qpc.leaf_fields()]
        self.mb_off = np.array([o for _, o, _ in leaves], dtype=np.int64)
        self.mb_size = np.array([s for _, _, s in leaves], dtype=np.int64)
        self.mb_names = [name for name, _, _ in leaves]

    # -- public ----------------------------------------------------------------------------------

    def batch(self, start: int, count: int, trace: bool = False) -> Cases:
        index = np.arange(start, start + count, dtype=np.int64)
        return self.cases(index, trace)

    def case(self, index: int) -> Cases:
        """Case ``index`` alone, with ``notes[0]`` saying what each mutation did."""
        return self.cases(np.array([index], dtype=np.int64), trace=True)

    def cases(self, index: np.ndarray, trace: bool = False) -> Cases:
        rng = CaseRng(self.seed, index)
        b = len(index)
        notes = [[] for _ in range(b)] if trace else None
        sid = rng.below("seed", len(self.corpus.frames))
        rows = self.seed_rows[sid].copy()
        length = self.seed_len[sid].copy()
        mad_off = self.seed_mad[sid].copy()
        st = _State(rows, length, mad_off, sid, self.lay[sid], notes)
        ops = np.full((b, SLOTS), -1, dtype=np.int8)
        active = np.ones(b, dtype=bool)
        for slot in range(SLOTS):
            if slot:
                active &= rng.chance(f"more{slot}", 0.5)
            op = np.searchsorted(np.cumsum(OP_WEIGHTS) / OP_WEIGHTS.sum(), rng.unit(f"op{slot}"), side="right")
            op = np.minimum(op, len(OPS) - 1)
            ops[active, slot] = op[active]
            for k, name in enumerate(OPS):
                sel = np.flatnonzero(active & (op == k))
                if len(sel):
                    getattr(self, "_op_" + name)(st, sel, rng, f"s{slot}")
        # PktLen follows a changed length half the time; CRCs are recomputed unless broken on purpose.
        fix = np.flatnonzero(st.len_changed & ~st.pktlen_set & rng.chance("fix pktlen", 0.5) & (length >= 8))
        if len(fix):
            put_bits(rows, fix, 8 * 4 + 5 + np.zeros(len(fix), np.int64), np.full(len(fix), 11),
                     ((length[fix] - 2) // 4).astype(U64))
            st.note(fix, lambda i: f"PktLen set to follow the new length ({(int(length[i]) - 2) // 4})")
        reseal = ~st.crc_broken & ~rng.chance("stale crc", 0.05)
        stale = np.flatnonzero(~reseal & ~st.crc_broken)
        st.note(stale, lambda i: "CRCs left as the seed had them (stale)")
        seal_rows(rows, length, reseal)
        cols = np.arange(WIDTH)
        rows[cols[None, :] >= length[:, None]] = 0
        cases = Cases(index=index, frames=rows, length=length, seed_id=sid, mad_off=mad_off, ops=ops,
                      corpus=self.corpus, notes=notes, **self._mailboxes(rng, index, notes),
                      port_num=self._port(rng), status=self._status(rng))
        return cases


class _State:
    """The frames of a batch while mutations are applied, and what they did to lengths and CRCs."""

    def __init__(self, rows, length, mad_off, sid, lay, notes):
        self.rows, self.length, self.mad_off, self.sid, self.lay, self.notes = rows, length, mad_off, sid, lay, notes
        n = len(length)
        self.len_changed = np.zeros(n, dtype=bool)
        self.pktlen_set = np.zeros(n, dtype=bool)
        self.crc_broken = np.zeros(n, dtype=bool)

    def note(self, rows, text, with_pos=False):
        if self.notes is None:
            return
        for j, i in enumerate(rows):
            i = int(i)
            self.notes[i].append(text(i, j) if with_pos else text(i))


__all__ = ["OPS", "Mutator"]
