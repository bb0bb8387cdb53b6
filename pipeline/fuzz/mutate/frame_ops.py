"""Mutations of any frame: a field, a reserved field, bits, bytes, the length, PktLen, the CRCs, a splice.

Methods of :class:`~madpipe.pipeline.fuzz.mutate.mutator.Mutator` (which uses the tables they read:
``f_bit``, ``f_width``, ``seed_rows``...); each ``_op_NAME`` applies mutation NAME of
:data:`~madpipe.pipeline.fuzz.mutate.mutator.OPS` to the cases ``sel`` of a batch.
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.fuzz.mutate.corpus import WIDTH
from madpipe.pipeline.fuzz.mutate.rng import U64
from madpipe.pipeline.fuzz.mutate.rows import get_bits, low_bits_mask, put_bits, seal_rows


class FrameMutations:
    """The mutations that need nothing of a frame but its bytes and its seed's field table."""

    def _pick_field(self, st, sel, rng, tag):
        sel = sel[self.f_count[st.lay[sel]] > 0]
        s = st.lay[sel]
        u = rng.unit(tag + "f")[sel]
        k = (self.f_cum[s] <= u[:, None]).sum(axis=1)
        return sel, s, np.minimum(k, self.f_count[s] - 1)

    def _fields_inside(self, st, sel, s, k):
        """The cases of ``sel`` whose field ``k`` (of layout ``s``) lies inside the frame: sel, s, k, bit, width."""
        bit = self.f_bit[s, k]
        width = self.f_width[s, k]
        inside = bit + width <= 8 * st.length[sel]
        return sel[inside], s[inside], k[inside], bit[inside], width[inside]

    def _set_field(self, st, sel, s, k, rng, tag, why):
        """Set field k of each selected case's seed layout to a boundary or an interesting value."""
        sel, s, k, bit, width = self._fields_inside(st, sel, s, k)
        if not len(sel):
            return
        big = width > 64
        if big.any():
            self._fill_blob(st, sel[big], bit[big] // 8, width[big] // 8, rng, tag, s[big], k[big], why)
        sel, s, k, bit, width = sel[~big], s[~big], k[~big], bit[~big], width[~big]
        if not len(sel):
            return
        top = low_bits_mask(width)
        old = get_bits(st.rows, sel, bit, width)
        choice = rng.below(tag + "v", 10)[sel]
        rnd = rng.u64(tag + "r")[sel] & top
        msb = U64(1) << (width - 1).astype(U64)
        cand = np.stack([np.zeros_like(top), np.ones_like(top), top, top - U64(1), msb, msb - U64(1),
                         old + U64(1), old - U64(1), old ^ U64(1), rnd])
        value = cand[choice, np.arange(len(sel))] & top
        n_int = self.f_int_len[s, k]
        use_int = (n_int > 0) & rng.chance(tag + "i?", 0.5)[sel]
        if use_int.any():
            at = self.f_int_start[s, k] + rng.below(tag + "i", n_int, sel)
            value = np.where(use_int, self.pool[np.minimum(at, len(self.pool) - 1)] & top, value)
        put_bits(st.rows, sel, bit, width, value)
        st.note(sel, lambda i, j: f"{why} {self.fields[st.lay[i]][k[j]].name} = 0x{int(value[j]):x} "
                                  f"(was 0x{int(old[j]):x})", with_pos=True)

    def _fill_blob(self, st, sel, start, size, rng, tag, s, k, why):
        pattern = rng.pick(tag + "bp", [0x00, 0xFF, 0x80, 0x7F, 0x01, -1])[sel]
        rnd = rng.u64(tag + "br")[sel]
        cols = np.arange(WIDTH)
        sub = st.rows[sel]
        m = (cols[None, :] >= start[:, None]) & (cols[None, :] < (start + size)[:, None])
        fill = np.where(pattern[:, None] >= 0, pattern[:, None],
                        ((rnd[:, None] >> (U64(8) * (cols[None, :] % 8).astype(U64))) & U64(0xFF)).astype(np.int64)
                        ^ cols[None, :] * 37)
        st.rows[sel] = np.where(m, fill & 0xFF, sub).astype(np.uint8)
        st.note(sel, lambda i, j: f"{why} {self.fields[st.lay[i]][k[j]].name} filled with "
                                  + ("random bytes" if pattern[j] < 0 else f"0x{int(pattern[j]):02x}"), with_pos=True)

    def _op_field(self, st, sel, rng, tag):
        sel, s, k = self._pick_field(st, sel, rng, tag)
        self._set_field(st, sel, s, k, rng, tag, "field")

    def _op_reserved(self, st, sel, rng, tag):
        s = st.lay[sel]
        has = self.r_count[s] > 0
        sel, s = sel[has], s[has]
        if not len(sel):
            return
        k = self.r_index[s, rng.below(tag + "rk", self.r_count[s], sel)]
        sel, s, k, bit, width = self._fields_inside(st, sel, s, k)
        if not len(sel):
            return
        small = width <= 64
        if small.any():
            w = width[small]
            top = low_bits_mask(w)
            val = rng.u64(tag + "rv")[sel[small]] & top
            val = np.where(val == 0, top, val)
            put_bits(st.rows, sel[small], bit[small], w, val)
            ks = k[small]
            st.note(sel[small], lambda i, j: f"reserved {self.fields[st.lay[i]][ks[j]].name} = 0x{int(val[j]):x}",
                    with_pos=True)
        big = ~small
        if big.any():
            self._fill_blob(st, sel[big], bit[big] // 8, width[big] // 8, rng, tag, s[big], k[big], "reserved")

    def _op_bitflip(self, st, sel, rng, tag):
        n = 1 + rng.below(tag + "n", 8)[sel]
        L = np.maximum(st.length[sel], 1)
        ok = st.length[sel] > 0
        for j in range(8):
            act = ok & (j < n)
            pos = rng.below(f"{tag}p{j}", 8 * L, sel)
            r = sel[act]
            p = pos[act]
            st.rows[r, p >> 3] ^= (1 << (7 - (p & 7))).astype(np.uint8)
            st.note(r, lambda i, jj, p=p: f"bit flip at byte {int(p[jj]) >> 3} bit {7 - (int(p[jj]) & 7)}",
                    with_pos=True)

    def _op_bytes(self, st, sel, rng, tag):
        n = 1 + rng.below(tag + "n", 4)[sel]
        ok = st.length[sel] > 0
        L = np.maximum(st.length[sel], 1)
        for j in range(4):
            act = ok & (j < n)
            pos = rng.below(f"{tag}p{j}", L, sel)[act]
            val = rng.pick(f"{tag}v{j}", [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x40, -1])[sel][act]
            rnd = (rng.u64(f"{tag}r{j}")[sel][act] & U64(0xFF)).astype(np.int64)
            val = np.where(val < 0, rnd, val)
            r = sel[act]
            st.rows[r, pos] = val.astype(np.uint8)
            st.note(r, lambda i, jj, pos=pos, val=val: f"byte {int(pos[jj])} = 0x{int(val[jj]):02x}", with_pos=True)

    def _op_truncate(self, st, sel, rng, tag):
        L = st.length[sel]
        m = st.mad_off[sel]
        mm = np.where(m >= 0, m, 28)
        cand = np.stack([rng.below(tag + "t0", 8)[sel], 8 + rng.below(tag + "t1", 12)[sel],
                         np.full(len(sel), 20), np.full(len(sel), 28), np.full(len(sel), 48),
                         mm + 23, mm + 24, mm + 64, mm + 255, mm + 256, L - 1, L - 2, L - 6, L - 7,
                         rng.below(tag + "t2", np.maximum(L, 1), sel)])
        new = cand[rng.below(tag + "tc", len(cand))[sel], np.arange(len(sel))]
        new = np.clip(new, 0, np.maximum(L - 1, 0))
        st.length[sel] = new
        st.len_changed[sel] = True
        st.note(sel, lambda i, j: f"truncated to {int(new[j])} bytes (was {int(L[j])})", with_pos=True)

    def _op_extend(self, st, sel, rng, tag):
        L = st.length[sel]
        add = rng.pick(tag + "e", [1, 2, 3, 4, 6, 8, 40, 64, -1])[sel]
        add = np.where(add < 0, 1 + rng.below(tag + "er", WIDTH)[sel], add)
        new = np.minimum(L + add, WIDTH)
        rand = rng.chance(tag + "ez", 0.5)[sel]
        cols = np.arange(WIDTH)
        m = (cols[None, :] >= L[:, None]) & (cols[None, :] < new[:, None])
        noise = ((rng.u64(tag + "en")[sel][:, None] * U64(0x9E3779B97F4A7C15) + cols[None, :].astype(U64)
                  * U64(0xBF58476D1CE4E5B9)) >> U64(56)).astype(np.uint8)
        fill = np.where(rand[:, None], noise, np.uint8(0))
        st.rows[sel] = np.where(m, fill, st.rows[sel])
        st.length[sel] = new
        st.len_changed[sel] = True
        st.note(sel, lambda i, j: f"extended to {int(new[j])} bytes with {'random bytes' if rand[j] else 'zeros'}",
                with_pos=True)

    def _op_pktlen(self, st, sel, rng, tag):
        ok = st.length[sel] >= 8
        sel = sel[ok]
        if not len(sel):
            return
        right = (st.length[sel] - 2) // 4
        cand = np.stack([np.zeros_like(right), np.ones_like(right), right - 1, right + 1, np.full_like(right, 0x7FF),
                         right + 10, right - 10, rng.below(tag + "pr", 0x800)[sel]])
        val = cand[rng.below(tag + "pc", len(cand))[sel], np.arange(len(sel))] & 0x7FF
        val = np.where(val == right, (right + 1) & 0x7FF, val)
        put_bits(st.rows, sel, np.full(len(sel), 37), np.full(len(sel), 11), val.astype(U64))
        st.pktlen_set[sel] = True
        st.note(sel, lambda i, j: f"lrh.pktlen = {int(val[j])} (the length says {int(right[j])})", with_pos=True)

    def _op_crc(self, st, sel, rng, tag):
        L = st.length[sel]
        ok = L >= 10
        sel, L = sel[ok], L[ok]
        if not len(sel):
            return
        which = rng.below(tag + "w", 3)[sel]  # 0 ICRC, 1 VCRC, 2 both
        st.crc_broken[sel] = True
        lnh = st.rows[sel, 1] & 3
        icrc = ((which == 0) | (which == 2)) & (lnh >= 2)
        vcrc = (which == 1) | (which == 2) | (lnh < 2)
        # Recompute first, then break: the frame is right everywhere but where the note says.
        seal_rows(st.rows, st.length, np.isin(np.arange(len(st.length)), sel))
        x = (rng.u64(tag + "x")[sel] | U64(1))
        for k in range(4):
            r = sel[icrc]
            st.rows[r, L[icrc] - 6 + k] ^= ((x[icrc] >> U64(8 * k)) & U64(0xFF)).astype(np.uint8)
        for k in range(2):
            r = sel[vcrc]
            st.rows[r, L[vcrc] - 2 + k] ^= ((x[vcrc] >> U64(8 * k + 32)) & U64(0xFF)).astype(np.uint8) | np.uint8(k == 0)
        st.note(sel, lambda i, j: "bad " + ("ICRC and VCRC" if icrc[j] and vcrc[j] else "ICRC" if icrc[j] else "VCRC"),
                with_pos=True)

    def _op_splice(self, st, sel, rng, tag):
        other = rng.below(tag + "o", len(self.corpus.frames))[sel]
        L = np.minimum(st.length[sel], self.seed_len[other])
        ok = L > 1
        sel, other, L = sel[ok], other[ok], L[ok]
        if not len(sel):
            return
        a = rng.below(tag + "a", L, sel)
        n = 1 + rng.below(tag + "n", np.maximum(L - a, 1), sel)
        cols = np.arange(WIDTH)
        m = (cols[None, :] >= a[:, None]) & (cols[None, :] < (a + n)[:, None])
        st.rows[sel] = np.where(m, self.seed_rows[other], st.rows[sel])
        st.note(sel, lambda i, j: f"bytes {int(a[j])}..{int(a[j] + n[j] - 1)} copied from "
                                  f"{self.corpus.names[other[j]]}", with_pos=True)
