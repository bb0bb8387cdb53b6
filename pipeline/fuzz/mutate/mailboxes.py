"""Mutated QP-context mailboxes for the paravirt target, and the other per-case inputs of the targets.

Each case carries a mailbox mutated from a seed mailbox (P_Key index 128..255, sched_queue port
bit, service type, optpar, GID indices, rate limit, FPP, bit flips), a transition, the issuing
function (``slave``, including values outside 0..79) and the QP number (around the proxy and
tunnel ranges), and for the snoop target the port (1-based, sometimes 0 or 3) and firmware's
status for the MAD. Methods of :class:`~madpipe.pipeline.fuzz.mutate.mutator.Mutator`.
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import qpc
from madpipe.pipeline.fuzz.mutate.cases import BATCH, SLOTS, batch_config
from madpipe.pipeline.fuzz.mutate.corpus import MBOX_SIZE
from madpipe.pipeline.fuzz.mutate.rng import U64
from madpipe.pipeline.fuzz.mutate.rows import low_bits_mask, put_bits

MB_OPS = ("field", "pkey_index", "port", "service_type", "optpar", "mgid", "rate_limit", "fpp", "bitflip",
          "random")
MB_WEIGHTS = np.array([20, 20, 8, 8, 10, 10, 4, 3, 10, 2], dtype=np.float64)

TRANSITION_CODES = np.array(list(qpc.TRANSITIONS.values()), dtype=np.uint8)
SLAVES_ODD = np.array([80, 81, 127, 128, 255, 256, 257, 1000, -1, -2, -128, 2**31 - 1, -2**31], dtype=np.int64)


class MailboxMutations:
    """The mailbox of each case and its command inputs; the snoop target's port and status."""

    def _mailboxes(self, rng, index, notes) -> dict:
        b = len(index)
        mseed = rng.below("mbox seed", len(self.mbox_rows))
        mb = self.mbox_rows[mseed].copy()
        sel_all = np.arange(b)
        mb_ops = np.full((b, SLOTS), -1, dtype=np.int8)
        active = np.ones(b, dtype=bool)
        cum = np.cumsum(MB_WEIGHTS) / MB_WEIGHTS.sum()
        note = _Noter(notes, "mailbox: ")
        for slot in range(SLOTS):
            if slot:
                active &= rng.chance(f"mb more{slot}", 0.5)
            op = np.minimum(np.searchsorted(cum, rng.unit(f"mb op{slot}"), side="right"), len(MB_OPS) - 1)
            mb_ops[active, slot] = op[active]
            for k, name in enumerate(MB_OPS):
                sel = sel_all[active & (op == k)]
                if len(sel):
                    self._mb_op(name, mb, sel, rng, f"mb{slot}", note)
        # Per-case command inputs; the batch's base_proxy_sqpn shapes the QP numbers.
        transition = TRANSITION_CODES[rng.below("transition", len(TRANSITION_CODES))]
        cfgs = {int(bn): batch_config(self.seed, int(bn)) for bn in np.unique(index // BATCH)}
        num_vfs = np.array([cfgs[int(bn)].num_vfs for bn in index // BATCH], dtype=np.int64)
        p = np.array([cfgs[int(bn)].base_proxy_sqpn for bn in index // BATCH], dtype=np.int64)
        slave = rng.below("slave", num_vfs + 1)
        odd = rng.chance("slave odd?", 0.15)
        slave = np.where(odd, SLAVES_ODD[rng.below("slave odd", len(SLAVES_ODD))], slave)
        t = p + 8 * 80
        cand = np.stack([p - 1, p, p + 1, p + 8 * rng.below("qf", 80) + rng.below("qk", 8), p + 639, t - 1, t,
                         t + 8 * rng.below("qf2", 80) + rng.below("qk2", 4), t + 639, t + 640,
                         rng.below("q24", 1 << 24), rng.below("q32", 1 << 32), np.zeros(b, np.int64),
                         np.full(b, 0xFFFFFF), (1 << 24) + p])
        qpn = cand[rng.below("qpn", len(cand)), np.arange(b)] & 0xFFFFFFFF
        if notes is not None:
            for i in range(b):
                notes[i].append(f"mailbox seed {self.corpus.mailbox_names[mseed[i]]}; "
                                f"{qpc.transition_name(int(transition[i]))} by function {int(slave[i])} "
                                f"on QP 0x{int(qpn[i]):x}")
        return dict(mailboxes=mb, mbox_seed=mseed, mb_ops=mb_ops, transition=transition.astype(np.uint8),
                    slave=slave.astype(np.int64), qpn=qpn.astype(np.uint32))

    def _mb_op(self, name, mb, sel, rng, tag, note):
        if name == "field":
            k = rng.below(tag + "k", len(self.mb_off))[sel]
            off, size = self.mb_off[k], self.mb_size[k]
            small = size <= 8
            r, o, z = sel[small], off[small], size[small]
            top = low_bits_mask(8 * z)
            val = np.stack([np.zeros_like(top), np.ones_like(top), top, top >> U64(1),
                            rng.u64(tag + "r")[r] & top])[rng.below(tag + "v", 5)[r], np.arange(len(r))]
            put_bits(mb, r, 8 * o, 8 * z, val)
            names = self.mb_names
            note(r, lambda i, j: f"{names[k[small][j]]} = 0x{int(val[j]):x}")
            big = ~small
            if big.any():
                r, o, z = sel[big], off[big], size[big]
                cols = np.arange(MBOX_SIZE)
                m = (cols[None, :] >= o[:, None]) & (cols[None, :] < (o + z)[:, None])
                mb[r] = np.where(m, np.uint8(0xFF), mb[r])
                note(r, lambda i, j: f"{names[k[big][j]]} filled with 0xff")
        elif name == "pkey_index":
            v = rng.pick(tag + "p", [0, 1, 126, 127, 128, 129, 160, 200, 254, 255])[sel]
            alt = rng.chance(tag + "pa", 0.2)[sel]
            at = np.where(alt, qpc.MBOX_ALT_PKEY_INDEX, qpc.MBOX_PRI_PKEY_INDEX)
            mb[sel, at] = v.astype(np.uint8)
            note(sel, lambda i, j: f"context.{'alt' if alt[j] else 'pri'}_path.pkey_index = {int(v[j])}")
        elif name == "port":
            alt = rng.chance(tag + "oa", 0.3)[sel]
            at = np.where(alt, qpc.MBOX_ALT_SCHED_QUEUE, qpc.MBOX_PRI_SCHED_QUEUE)
            v = np.where(rng.chance(tag + "of", 0.7)[sel], mb[sel, at] ^ 0x40, rng.pick(tag + "ov", [0, 0x40, 0xFF])[sel])
            mb[sel, at] = v.astype(np.uint8)
            note(sel, lambda i, j: f"context.{'alt' if alt[j] else 'pri'}_path.sched_queue = 0x{int(v[j]):02x}")
        elif name == "service_type":
            v = rng.pick(tag + "s", [0, 1, 2, 3, 4, 5, 6, 7, 0xFF])[sel]
            mb[sel, qpc.MBOX_SERVICE_TYPE] = v.astype(np.uint8)
            note(sel, lambda i, j: f"service type = {int(v[j])}")
        elif name == "optpar":
            bits = np.array([0x1, 0x10, 0x20, 0x80, 0x10000, 0x2, 0x100000, 0x80000000], dtype=np.int64)
            v = np.zeros(len(sel), dtype=np.int64)
            for j, bit in enumerate(bits):
                v |= np.where(rng.chance(f"{tag}o{j}", 0.4)[sel], bit, 0)
            v = np.where(rng.chance(tag + "oall", 0.05)[sel], 0xFFFFFFFF, v)
            put_bits(mb, sel, np.full(len(sel), 8 * qpc.MBOX_OPTPAR), np.full(len(sel), 32), v.astype(U64))
            note(sel, lambda i, j: f"optpar = 0x{int(v[j]):x}")
        elif name == "mgid":
            v = rng.pick(tag + "g", [0, 1, 2, 0x7F, 0x80, 0x81, 0xFF])[sel]
            alt = rng.chance(tag + "ga", 0.4)[sel]
            at = np.where(alt, qpc.MBOX_ALT_MGID_INDEX, qpc.MBOX_PRI_MGID_INDEX)
            mb[sel, at] = v.astype(np.uint8)
            note(sel, lambda i, j: f"context.{'alt' if alt[j] else 'pri'}_path.mgid_index = {int(v[j])}")
        elif name == "rate_limit":
            v = rng.pick(tag + "l", [0, 1, 0x100, 0xFFFF])[sel]
            mb[sel, qpc.MBOX_RATE_LIMIT] = (v >> 8).astype(np.uint8)
            mb[sel, qpc.MBOX_RATE_LIMIT + 1] = (v & 0xFF).astype(np.uint8)
            note(sel, lambda i, j: f"context.rate_limit_params = 0x{int(v[j]):x}")
        elif name == "fpp":
            mb[sel, qpc.MBOX_PARAMS2_FPP] |= 0x08
            note(sel, lambda i, j: "context.params2 FPP bit set")
        elif name == "bitflip":
            n = 1 + rng.below(tag + "n", 8)[sel]
            for j in range(8):
                act = j < n
                pos = rng.below(f"{tag}b{j}", 8 * MBOX_SIZE)[sel][act]
                mb[sel[act], pos >> 3] ^= (1 << (7 - (pos & 7))).astype(np.uint8)
                note(sel[act], lambda i, jj, pos=pos: f"bit flip at byte {int(pos[jj]) >> 3}")
        elif name == "random":
            for c in range(0, MBOX_SIZE, 8):
                v = rng.u64(f"{tag}x{c}")[sel]
                for k in range(8):
                    mb[sel, c + k] = ((v >> U64(8 * k)) & U64(0xFF)).astype(np.uint8)
            note(sel, lambda i, j: "every byte random")

    def _port(self, rng) -> np.ndarray:
        port = np.where(rng.chance("port 2", 0.33), 2, 1)
        odd = rng.chance("port odd?", 0.06)
        return np.where(odd, rng.pick("port odd", [0, 3, 255]), port).astype(np.uint8)

    def _status(self, rng) -> np.ndarray:
        odd = rng.chance("status odd?", 0.12)
        return np.where(odd, rng.pick("status odd", [0x0001, 0x001C, 0x000C, 0x8000, 0x7FFF, 0xFFFF]), 0).astype(np.uint16)


class _Noter:
    """Collects per-case notes when tracing (``Mutator.case``); costs nothing otherwise."""

    def __init__(self, notes, prefix=""):
        self.notes = notes
        self.prefix = prefix

    def __call__(self, rows, text):
        if self.notes is None:
            return
        for j, i in enumerate(rows):
            self.notes[int(i)].append(self.prefix + text(int(i), j))
