"""Mutations of a frame's MAD: directed-route hops, P_KeyTable blocks, unasked responses, class, attribute.

Methods of :class:`~madpipe.pipeline.fuzz.mutate.mutator.Mutator`; each ``_op_NAME`` applies mutation NAME of
:data:`~madpipe.pipeline.fuzz.mutate.mutator.OPS` to those cases of ``sel`` whose seed carries a MAD.
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs import wire
from madpipe.pipeline.fuzz.mutate.fields import ATTR_IDS
from madpipe.pipeline.fuzz.mutate.rng import U64

PKEY_BLOCKS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF])


class MadMutations:
    """The mutations that rewrite the MAD of a frame (at the seed's MAD offset)."""

    def _mad_rows(self, st, sel):
        ok = (st.mad_off[sel] >= 0) & (st.mad_off[sel] + 256 <= st.length[sel])
        return sel[ok], st.mad_off[sel[ok]]

    def _op_hops(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        rows[sel, m + wire.MAD_MGMT_CLASS] = madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
        old_cnt = rows[sel, m + wire.SMP_HOP_CNT].astype(np.int64)
        cnt = rng.pick(tag + "hc", [-1, -1, 0, 1, 2, 63, 64, 65, 127, 128, 255])[sel]
        cnt = np.where(cnt < 0, old_cnt, cnt)
        ptr = rng.pick(tag + "hp", [0, 1, -1, -2, -3, 63, 64, 255, -4])[sel]
        ptr = np.select([ptr == -1, ptr == -2, ptr == -3, ptr == -4],
                        [cnt, cnt + 1, cnt + 2, rng.below(tag + "hr", 256)[sel]], ptr) & 0xFF
        rows[sel, m + wire.SMP_HOP_CNT] = cnt.astype(np.uint8)
        rows[sel, m + wire.SMP_HOP_PTR] = ptr.astype(np.uint8)
        # Paths that disagree with the count: a zero or 255 hop inside, hops past hop_cnt, the D bit.
        kind = rng.below(tag + "hk", 5)[sel]
        at = 1 + rng.below(tag + "ha", np.maximum(np.minimum(cnt, 63), 1), sel)
        a = kind == 1
        rows[sel[a], m[a] + 128 + at[a]] = 0
        a = kind == 2
        rows[sel[a], m[a] + 128 + at[a]] = 0xFF
        a = kind == 3
        past = np.minimum(cnt + 1, 63)
        rows[sel[a], m[a] + 128 + past[a]] = (1 + rng.below(tag + "hv", 254)[sel][a]).astype(np.uint8)
        a = kind == 4
        rows[sel[a], m[a] + 4] ^= 0x80
        what = ["", ", a zero hop inside the path", ", hop 255 inside the path", ", a hop past hop_cnt",
                ", the D bit flipped"]
        st.note(sel, lambda i, j: f"directed route: hop_cnt = {int(cnt[j])}, hop_ptr = {int(ptr[j])}{what[kind[j]]}",
                with_pos=True)

    def _op_pkey_block(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        cls = rows[sel, m + wire.MAD_MGMT_CLASS]
        is_smp = (cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED) | (cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
        rows[sel[~is_smp], m[~is_smp] + 1] = madc.IB_MGMT_CLASS_SUBN_LID_ROUTED
        set_method = rng.chance(tag + "ks", 0.8)[sel]
        rows[sel[set_method], m[set_method] + 3] = madc.IB_MGMT_METHOD_SET
        rows[sel, m + wire.MAD_ATTR_ID] = 0
        rows[sel, m + wire.MAD_ATTR_ID + 1] = smpc.IB_SMP_ATTR_PKEY_TABLE
        block = PKEY_BLOCKS[rng.below(tag + "kb", len(PKEY_BLOCKS))[sel]]
        block = np.where(rng.chance(tag + "kr?", 0.1)[sel], rng.below(tag + "kr", 0x10000)[sel], block)
        port = np.where(rng.chance(tag + "kp?", 0.8)[sel], 0,
                        rng.pick(tag + "kp", [1, 2, 36, 254, 255, 0xFFFF])[sel])
        amod = (port << 16) | block
        for k in range(4):
            rows[sel, m + wire.MAD_ATTR_MOD + k] = ((amod >> (24 - 8 * k)) & 0xFF).astype(np.uint8)
        new_data = rng.chance(tag + "kd", 0.5)[sel]
        if new_data.any():
            r = sel[new_data]
            mm = m[new_data]
            for i in range(32):
                pk = (rng.u64(f"{tag}kk{i}")[r] & U64(0xFFFF)).astype(np.int64)
                pk = np.where(rng.chance(f"{tag}kz{i}", 0.6)[r], 0, pk)
                rows[r, mm + wire.SMP_DATA + 2 * i] = (pk >> 8).astype(np.uint8)
                rows[r, mm + wire.SMP_DATA + 2 * i + 1] = (pk & 0xFF).astype(np.uint8)
        st.note(sel, lambda i, j: f"P_KeyTable {'Set' if set_method[j] else 'MAD'} block {int(block[j])}"
                                  + (f" switch port {int(port[j])}" if port[j] else "")
                                  + (", new P_Keys" if new_data[j] else ""), with_pos=True)

    def _op_response(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        method = rng.pick(tag + "rm", [0x81, 0x81, 0x81, 0x86, 0x92, 0x94, 0x95, -1])[sel]
        method = np.where(method < 0, rows[sel, m + wire.MAD_METHOD] | 0x80, method)
        rows[sel, m + wire.MAD_METHOD] = method.astype(np.uint8)
        tid = rng.u64(tag + "rt")[sel]
        for k in range(8):
            rows[sel, m + wire.MAD_TID + k] = ((tid >> U64(56 - 8 * k)) & U64(0xFF)).astype(np.uint8)
        dr = rows[sel, m + wire.MAD_MGMT_CLASS] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
        rows[sel[dr], m[dr] + 4] |= 0x80
        st.note(sel, lambda i, j: f"a response without a request: method 0x{int(method[j]):02x}, "
                                  f"tid 0x{int(tid[j]):016x}", with_pos=True)

    def _op_class(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        old = rows[sel, m + wire.MAD_MGMT_CLASS].astype(np.int64)
        dr, lid = madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE, madc.IB_MGMT_CLASS_SUBN_LID_ROUTED
        swap = np.where(old == dr, lid, np.where(old == lid, dr, -1))
        other = rng.pick(tag + "c", [0x01, 0x81, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x21, 0x30, 0x80, 0xFF])[sel]
        new = np.where((swap >= 0) & rng.chance(tag + "cs", 0.6)[sel], swap, other)
        rows[sel, m + wire.MAD_MGMT_CLASS] = new.astype(np.uint8)
        st.note(sel, lambda i, j: f"mad.mgmt_class = 0x{int(new[j]):02x} (was 0x{int(old[j]):02x})", with_pos=True)

    def _op_attr(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        attr = rng.pick(tag + "a", ATTR_IDS)[sel]
        st.rows[sel, m + wire.MAD_ATTR_ID] = (attr >> 8).astype(np.uint8)
        st.rows[sel, m + wire.MAD_ATTR_ID + 1] = (attr & 0xFF).astype(np.uint8)
        st.note(sel, lambda i, j: f"mad.attr_id = 0x{int(attr[j]):04x}", with_pos=True)
