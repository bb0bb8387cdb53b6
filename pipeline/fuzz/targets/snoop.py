"""The ``snoop`` fuzz target: each case's MAD through the numba ``smp_snoop`` kernel and the pure-Python reference.

In case order from the batch's starting state, every output and the final state must agree bit
for bit. The kernel's out-of-range conditions (a P_KeyTable block that spills into the next
port's row or would leave the table, GUIDInfo past its 16 records, a port out of range) are
findings of severity ``kernel``. The batch's capture also goes through ``fabric.snoop_capture``
(both rules): requests and responses are paired there, so responses without requests reach it.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.pipeline.fuzz.findings import SEVERITY_BUG, SEVERITY_KERNEL, Finding, exc_text, where_raised
from madpipe.pipeline.fuzz.mutate.cases import Cases

SNOOP_OUTPUTS = ("pkey_change_bitmap", "master_event", "slave_events", "finding", "lid_change", "client_rereg",
                 "gid_change", "snooped")


def snoop_inputs(cases: Cases) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the cases whose seed carries a MAD, uint8[M, 256] those MADs from the frames)."""
    rows = np.flatnonzero(cases.mad_off >= 0)
    idx = cases.mad_off[rows][:, None] + np.arange(madc.MAD_SIZE)[None, :]
    return rows, np.ascontiguousarray(cases.frames[rows[:, None], idx])


def snoop_state(cfg):
    """The batch's starting state: init_pkeys, VF rows set as an operator would, maybe a random cache."""
    from madpipe.pipeline.mlx4 import snoop

    cache, v2p = snoop.init_pkeys(cfg.num_vfs, 2, cfg.pkey_table_len, cfg.snoop_master, profile=cfg.snoop_profile)
    rng = cfg.rng("snoop state")
    for slave in range(cfg.num_vfs + 1):
        if slave == cfg.snoop_master:
            continue
        for port in range(2):
            k = int(rng.integers(0, 6))
            idx = rng.integers(0, cfg.pkey_table_len, size=k)
            v2p[slave, port, idx] = rng.integers(0, cfg.pkey_table_len, size=k)
    if cfg.random_cache:
        keep = rng.random(cache.shape) < 0.7
        cache[:] = np.where(keep, cache, rng.integers(0, 1 << 16, size=cache.shape)).astype(np.uint16)
    lids = rng.integers(0, 1 << 16, size=(3, 2))
    return (cache, v2p, lids[0].astype(np.uint16), lids[1].astype(np.uint16),
            (lids[2] & 0xF).astype(np.uint8))


def snoop_finding_key(mad: np.ndarray, port: int, code: int) -> tuple[str, str]:
    """(kind, key) of a kernel out-of-range condition, by what the MAD asked for."""
    kind = "spill" if code == 1 else "refused"
    attr_id = (int(mad[16]) << 8) | int(mad[17])
    attr_mod = int.from_bytes(mad[20:24].tobytes(), "big")
    if not 1 <= port <= 2:
        return kind, "port_num outside 1..num_ports: refused"
    if attr_id == smpc.IB_SMP_ATTR_PKEY_TABLE:
        bn = attr_mod & 0xFFFF
        if code == 1:
            return kind, "P_KeyTable block 4..7 on port 1 spills into port 2's row of phys_pkey_cache"
        if port == 2 and 4 <= bn <= 7:
            return kind, "P_KeyTable block 4..7 on port 2 would write past phys_pkey_cache: refused"
        return kind, "P_KeyTable block past phys_pkey_cache: refused"
    if attr_id == smpc.IB_SMP_ATTR_GUID_INFO:
        return kind, "GUIDInfo block (attr_mod) >= 16 indexes past all_rec_per_port: refused"
    return kind, f"attribute 0x{attr_id:04x}: {kind}"


class SnoopTarget:
    name = "snoop"

    def __init__(self, fabric: bool = True):
        self.fabric = fabric
        self.stats = Counter()

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        from madpipe.pipeline.mlx4 import snoop

        rows, mads = snoop_inputs(cases)
        if not len(rows):
            return []
        port = np.ascontiguousarray(cases.port_num[rows])
        status = np.ascontiguousarray(cases.status[rows])
        state = snoop_state(cfg)
        kw = dict(num_vfs=cfg.num_vfs, master=cfg.snoop_master, profile=cfg.snoop_profile,
                  pkey_table_len=cfg.pkey_table_len, port_mgmt_change_events=cfg.port_mgmt_change_events)
        out = []
        results = []
        for run in (snoop.smp_snoop, snoop.smp_snoop_reference):
            cache, v2p, lid, sm_lid, sm_sl = (a.copy() for a in state)
            try:
                res = run(cache, v2p, mads, port, status, port_lid=lid, sm_lid=sm_lid, sm_sl=sm_sl, **kw)
            except Exception as exc:
                return [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[rows[0]]),
                                f"{run.__name__} {type(exc).__name__} at {where_raised(exc)}",
                                f"{run.__name__} raised {exc_text(exc)} at {where_raised(exc)} on the batch "
                                f"from case {int(cases.index[0])}")]
            results.append((res, cache))
        (k, kcache), (r, rcache) = results
        self.stats["MADs"] += len(rows)
        self.stats["snooped"] += int(k.snooped.sum())
        self.stats["master events"] += int(k.master_event.sum())
        differs = np.zeros(len(rows), dtype=bool)
        which = {}
        for name in SNOOP_OUTPUTS:
            try:
                a, b = getattr(k, name), getattr(r, name)
            except Exception as exc:  # a result that cannot even be read is a bug of its own
                return out + [Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[rows[0]]),
                                      f"SnoopResult.{name} {type(exc).__name__} at {where_raised(exc)}",
                                      f"reading SnoopResult.{name} raised {exc_text(exc)} at {where_raised(exc)} "
                                      f"on the batch from case {int(cases.index[0])}")]
            if name == "slave_events":  # compact: compare MAD by MAD as the dense matrix
                a, b = a.dense(), b.dense()
            d = (a != b) if a.ndim == 1 else (a != b).any(axis=1)
            if d.any():
                which[name] = d
                differs |= d
        if differs.any():
            first = int(np.flatnonzero(differs)[0])
            names = [n for n, d in which.items() if d[first]]
            out.append(Finding(self.name, "mismatch", SEVERITY_BUG, int(cases.index[rows[first]]),
                               f"{', '.join(names)} ({cfg.snoop_profile})",
                               f"smp_snoop kernel and reference disagree on {', '.join(names)} "
                               f"(profile {cfg.snoop_profile}; the first of {int(differs.sum())} MADs of the batch)",
                               data={"profile": cfg.snoop_profile, "port_num": int(port[first]),
                                     "status": int(status[first])}))
        elif not (np.array_equal(kcache, rcache) and np.array_equal(k.port_lid, r.port_lid)
                  and np.array_equal(k.sm_lid, r.sm_lid) and np.array_equal(k.sm_sl, r.sm_sl)):
            out.append(Finding(self.name, "mismatch", SEVERITY_BUG, int(cases.index[rows[-1]]), "final state",
                               "smp_snoop kernel and reference end the batch with different state"))
        for j in np.flatnonzero(k.finding != 0):
            kind, key = snoop_finding_key(mads[j], int(port[j]), int(k.finding[j]))
            self.stats[kind] += 1
            out.append(Finding(self.name, kind, SEVERITY_KERNEL, int(cases.index[rows[j]]), key,
                               f"{key} (attr_mod 0x{int.from_bytes(mads[j, 20:24].tobytes(), 'big'):08x}, "
                               f"port_num {int(port[j])})",
                               data={"code": int(k.finding[j]), "port_num": int(port[j]),
                                     "profile": cfg.snoop_profile}))
        if self.fabric:
            out += self._fabric(cases, cfg, ctx)
        return out

    def _fabric(self, cases, cfg, ctx) -> list[Finding]:
        from madpipe.pipeline.fabric.model import FROM_RULES
        from madpipe.pipeline.fabric.snoop import snoop_capture

        out = []
        for rule in FROM_RULES:
            try:
                res = snoop_capture(ctx.capture(), rule, cfg.snoop_profile)
            except Exception as exc:
                out.append(Finding(self.name, "crash", SEVERITY_BUG, int(cases.index[0]),
                                   f"snoop_capture --from {rule} {type(exc).__name__} at {where_raised(exc)}",
                                   f"fabric.snoop_capture(rule={rule!r}) raised {exc_text(exc)} at {where_raised(exc)} "
                                   f"on the batch from case {int(cases.index[0])} (pairing of requests and "
                                   "responses across the batch)"))
                continue
            self.stats[f"fabric {rule} events"] += len(res.events)
            if res.file_error:
                out.append(Finding(self.name, "fabric", SEVERITY_BUG, int(cases.index[0]), "file error",
                                   f"snoop_capture reports {res.file_error!r} on a well-formed capture"))
        return out
