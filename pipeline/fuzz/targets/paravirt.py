"""The ``paravirt`` fuzz target: each case's mailbox through ``paravirt.rewrite`` (numba) and ``rewrite_reference``.

Output bytes, return code and finding must agree. Each batch's device has its own port types (IB,
Ethernet or one of each, so mainline's RoCE path runs), VF vport state and registered MACs. P_Key indices 128..255 (a read spilling into
the next row of ``virt2phys_pkey``) and reads past the table are ``kernel`` findings. P_KeyTable
MADs also go through ``virtual_pkey_getresp`` with their 32-bit attribute modifier as the block.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from madpipe.codecs import qpc
from madpipe.codecs import smp as smpc
from madpipe.pipeline.fuzz.findings import SEVERITY_BUG, SEVERITY_KERNEL, Finding, exc_text, where_raised
from madpipe.pipeline.fuzz.mutate.cases import Cases
from madpipe.pipeline.fuzz.targets.snoop import snoop_inputs


def paravirt_device(cfg):
    """The batch's device: virt2phys_pkey (any byte values), active ports, SMI, from the batch hash,
    sized for the batch's profile (80 or 128 functions)."""
    from madpipe.pipeline.mlx4.profiles import resolve

    f = resolve(cfg.paravirt_profile).mfunc_max
    rng = cfg.rng("paravirt device")
    v2p = rng.integers(0, 128, size=(f, 2, 128), dtype=np.uint8)
    odd = rng.random(v2p.shape) < 0.003
    v2p[odd] = rng.integers(128, 256, size=int(odd.sum()), dtype=np.uint8)
    active = rng.integers(0, 4, size=f, dtype=np.uint8)
    active[rng.random(f) < 0.7] = 3
    smi = (rng.random((f, 2)) < 0.2).astype(np.uint8)
    phys = rng.integers(0, 1 << 16, size=128, dtype=np.uint16)
    return v2p, active, smi, phys


def paravirt_eth(cfg, functions: int) -> dict:
    """The batch's Ethernet state (rewrite's keywords): port types, num_vfs, vport, registered MACs."""
    from madpipe.pipeline.mlx4 import eth_reference as eth
    from madpipe.pipeline.mlx4 import paravirt

    rng = cfg.rng("paravirt ethernet")
    vport = paravirt.vport_state(cfg.paravirt_profile)
    vport[:, :, eth.VPORT_DEFAULT_VLAN] = rng.choice([eth.MLX4_VGT, eth.MLX4_VGT, 0, 100], (functions, 2))
    for column, top in ((eth.VPORT_DEFAULT_QOS, 8), (eth.VPORT_LINK_STATE, 3), (eth.VPORT_SPOOFCHK, 2),
                        (eth.VPORT_VLAN_IDX, 128), (eth.VPORT_MAC_IDX, 128), (eth.VPORT_QOS_VPORT, 8),
                        (eth.VPORT_VLAN_PROTO, 2)):
        vport[:, :, column] = rng.integers(0, top, (functions, 2))
    types = [(1, 1), (2, 2), (1, 2), (2, 1)][int(rng.integers(0, 4))]
    return dict(port_types=np.array(types, dtype=np.uint8), vport=vport,
                num_vfs=None if rng.random() < 0.5 else int(rng.integers(0, 65)),
                smac_registered=(rng.random((functions, 2, 128)) < 0.7).astype(np.uint8))


PARAVIRT_KEYS = {
    1: "update_pkey_index: P_Key index 128..255 reads the next row of virt2phys_pkey",
    2: "update_pkey_index: the read would leave virt2phys_pkey: refused",
}


class ParavirtTarget:
    name = "paravirt"

    def __init__(self, device=None):
        """``device``: (v2p, active_ports, smi_enabled, phys_table) for every batch; default: a
        random one per batch (:func:`paravirt_device`)."""
        self.device = device
        self.stats = Counter()
        self._port_types: list[int] = []

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        from madpipe.pipeline.mlx4 import paravirt

        v2p, active, smi, phys = self.device if self.device is not None else paravirt_device(cfg)
        eth = paravirt_eth(cfg, len(v2p))
        self._port_types = eth["port_types"].tolist()
        kw = dict(base_proxy_sqpn=cfg.base_proxy_sqpn, master=cfg.paravirt_master, profile=cfg.paravirt_profile,
                  active_ports=active, smi_enabled=smi, fw_reserved_qps=cfg.fw_reserved_qps, return_findings=True,
                  **eth)
        args = (np.ascontiguousarray(cases.mailboxes), cases.transition, cases.slave, cases.qpn, v2p)
        out = []
        results = []
        for run in (paravirt.rewrite, paravirt.rewrite_reference):
            try:
                results.append(run(*args, **kw))
            except Exception as exc:
                return [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[0]),
                                f"{run.__name__} {type(exc).__name__} at {where_raised(exc)}",
                                f"{run.__name__} raised {exc_text(exc)} at {where_raised(exc)} on the batch "
                                f"from case {int(cases.index[0])}", frame=False)]
        (ko, krc, kf), (ro, rrc, rf) = results
        self.stats["mailboxes"] += len(cases)
        for rc, n in zip(*np.unique(krc, return_counts=True)):
            self.stats[f"rc {int(rc)}"] += int(n)
        d_out = (ko != ro).any(axis=1)
        d_rc = krc != rrc
        d_f = kf != rf
        for j in np.flatnonzero(d_out | d_rc | d_f):
            names = [n for n, d in (("mailbox", d_out), ("rc", d_rc), ("finding", d_f)) if d[j]]
            t = qpc.transition_name(int(cases.transition[j]))
            out.append(Finding(self.name, "mismatch", SEVERITY_BUG, int(cases.index[j]),
                               f"{'+'.join(names)} {t} ({cfg.paravirt_profile})",
                               f"rewrite kernel and reference disagree on {', '.join(names)} for {t} "
                               f"(kernel rc {int(krc[j])} finding {int(kf[j])}, reference rc {int(rrc[j])} "
                               f"finding {int(rf[j])})", frame=False, data=self._inputs(cases, j, cfg)))
        for j in np.flatnonzero(kf != 0):
            code = int(kf[j])
            kind = "spill" if code == 1 else "refused"
            self.stats[kind] += 1
            pkey = int(cases.mailboxes[j, qpc.MBOX_PRI_PKEY_INDEX])
            key = PARAVIRT_KEYS[code]
            if code == 2:
                f = len(v2p)   # the profile's MLX4_MFUNC_MAX
                port_bit = (int(ko[j, qpc.MBOX_PRI_SCHED_QUEUE]) >> 6) & 1
                if 0 <= (int(cases.slave[j]) * 2 + port_bit) * 128 + pkey < f * 256:   # not the P_Key read
                    key = "mainline Ethernet path: the C would divide by zero (no VF on the port) or index past vf_oper: refused"
                else:
                    key += (f" (function outside 0..{f - 1})" if not 0 <= cases.slave[j] < f
                            else f" (P_Key index 128..255 of function {f - 1}, port 2)")
            out.append(Finding(self.name, kind, SEVERITY_KERNEL, int(cases.index[j]), key,
                               f"{key} (pkey_index {pkey}, function {int(cases.slave[j])}, "
                               f"{qpc.transition_name(int(cases.transition[j]))})", frame=False,
                               data={"code": code, **self._inputs(cases, j, cfg)}))
        out += self._getresp(cases, cfg, v2p, phys)
        return out

    def _inputs(self, cases, j, cfg) -> dict:
        return {"mailbox": cases.mailboxes[j].tobytes().hex(),
                "transition": qpc.transition_name(int(cases.transition[j])), "slave": int(cases.slave[j]),
                "qpn": int(cases.qpn[j]), "profile": cfg.paravirt_profile, "master": cfg.paravirt_master,
                "base_proxy_sqpn": cfg.base_proxy_sqpn, "port_types": self._port_types}

    def _getresp(self, cases, cfg, v2p, phys) -> list[Finding]:
        """P_KeyTable MADs through virtual_pkey_getresp: a MAD, or Refused; never anything else."""
        from madpipe.pipeline.mlx4 import paravirt

        out = []
        rows, mads = snoop_inputs(cases)
        is_pkey = (mads[:, 16] == 0) & (mads[:, 17] == smpc.IB_SMP_ATTR_PKEY_TABLE)
        for j in np.flatnonzero(is_pkey):
            k = int(rows[j])
            block = int.from_bytes(mads[j, 20:24].tobytes(), "big")
            port = 2 if cases.port_num[k] == 2 else 1
            slave = int(cases.slave[k])
            self.stats["getresp"] += 1
            try:
                _mad, finding = paravirt.virtual_pkey_getresp(phys, v2p, slave, port, block, mads[j],
                                                              profile=cfg.paravirt_profile, return_finding=True)
            except paravirt.Refused as exc:
                self.stats["getresp refused"] += 1
                if not 0 <= slave < len(v2p):
                    where = f"function outside 0..{len(v2p) - 1}"
                elif "P_Key table" in str(exc):
                    where = "a virt2phys_pkey value of 160..255 reads past the P_Key table"
                else:
                    where = "block past the table"
                out.append(Finding(self.name, "refused", SEVERITY_KERNEL, int(cases.index[k]),
                                   f"virtual_pkey_getresp: {where}: refused",
                                   str(exc),
                                   data={"slave": slave, "port_num": port, "block": block}))
                continue
            except Exception as exc:
                out.append(Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[k]),
                                   f"virtual_pkey_getresp {type(exc).__name__} at {where_raised(exc)}",
                                   f"virtual_pkey_getresp(function {slave}, port {port}, block {block}) raised "
                                   f"{exc_text(exc)} at {where_raised(exc)}"))
                continue
            if finding:
                self.stats["getresp spill"] += 1
                what = "block past the row" if block >= 4 else "a virt2phys_pkey value of 128..159"
                out.append(Finding(self.name, "spill", SEVERITY_KERNEL, int(cases.index[k]),
                                   f"virtual_pkey_getresp: {what} reads outside the function's row",
                                   f"virtual_pkey_getresp(function {slave}, port {port}, block {block}): {what}",
                                   data={"slave": slave, "port_num": port, "block": block}))
        return out
