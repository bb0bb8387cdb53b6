"""A batch of mutated cases (:class:`Cases`) and the settings of a batch of the stateful targets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import qpc
from madpipe.pipeline.fuzz.mutate.corpus import MBOX_SIZE, WIDTH, Corpus, make_mailbox
from madpipe.pipeline.fuzz.mutate.fields import frame_fields, mad_offset
from madpipe.pipeline.fuzz.mutate.rng import CaseRng, stream_id

#: Cases per batch: stateful targets (snoop) start from a fresh state at each multiple of it.
BATCH = 4096
#: Mutations per case at most (the first always applies, each next one half as often).
SLOTS = 4


@dataclass
class BatchConfig:
    """What the stateful targets use for one batch (a hash of seed and batch number)."""

    batch_no: int
    snoop_profile: str
    num_vfs: int
    snoop_master: int
    pkey_table_len: int
    port_mgmt_change_events: bool
    random_cache: bool
    paravirt_profile: str
    paravirt_master: int
    base_proxy_sqpn: int
    fw_reserved_qps: int
    rng_key: tuple

    def rng(self, what: str) -> np.random.Generator:
        """A numpy Generator for this batch's larger random state (tables), by purpose."""
        return np.random.default_rng([*self.rng_key, stream_id(what) & 0xFFFFFFFF])


def batch_config(seed: int, batch_no: int) -> BatchConfig:
    r = CaseRng(seed ^ 0x5EED_BA7C, np.array([batch_no]))
    snoop_profile = "new" if batch_no % 2 == 0 else "3.7"
    num_vfs = int(r.pick("num_vfs", [1, 2, 3, 4, 8, 16, 63, 78, 79])[0])
    if snoop_profile == "3.7":
        num_vfs = min(num_vfs, 64)                      # MLX4_MAX_NUM_VF at 3.7
    elif r.chance("past 80 functions", 0.3)[0]:
        num_vfs = int(r.pick("many vfs", [80, 100, 125, 126])[0])   # mainline's 128-function tables
    master = 0 if r.chance("master?", 0.85)[0] else int(r.below("master", num_vfs + 1)[0])
    p = 8 * (1 + int(r.below("P", (1 << 21) - 2 * 128 - 2)[0]))
    if r.chance("P small", 0.5)[0]:
        p = int(r.pick("P choice", [8, 16, 64, 128, 0x40, 0x1000])[0])
    return BatchConfig(
        batch_no=batch_no,
        snoop_profile=snoop_profile,
        num_vfs=num_vfs,
        snoop_master=master,
        pkey_table_len=int(r.pick("table_len", [128, 128, 128, 128, 64, 127, 1])[0]),
        port_mgmt_change_events=bool(r.chance("pmce", 0.1)[0]),
        random_cache=bool(r.chance("random cache", 0.5)[0]),
        paravirt_profile="3.7" if (batch_no // 2) % 2 == 0 else "new",
        paravirt_master=0 if r.chance("pv master?", 0.8)[0] else int(r.below("pv master", 64)[0]),
        base_proxy_sqpn=p,
        fw_reserved_qps=int(r.pick("fw reserved", [0, 0, 0, 64, 0x10000])[0]),
        rng_key=(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, batch_no & 0xFFFFFFFF),
    )


@dataclass
class Cases:
    """A batch of cases (frames, mailboxes and the targets' per-case inputs); see the module doc."""

    index: np.ndarray          # int64[B] case numbers
    frames: np.ndarray         # uint8[B, WIDTH], zero past length
    length: np.ndarray         # int64[B]
    seed_id: np.ndarray        # int64[B] index into corpus.frames
    mad_off: np.ndarray        # int64[B] the seed's MAD offset (-1: the seed carries none)
    ops: np.ndarray            # int8[B, SLOTS] index into OPS, -1 = none
    mailboxes: np.ndarray      # uint8[B, 256]
    mbox_seed: np.ndarray      # int64[B]
    mb_ops: np.ndarray         # int8[B, SLOTS] index into MB_OPS
    transition: np.ndarray     # uint8[B] QP command opcode
    slave: np.ndarray          # int64[B] issuing function
    qpn: np.ndarray            # uint32[B] input modifier
    port_num: np.ndarray       # uint8[B] snoop port (1-based)
    status: np.ndarray         # uint16[B] firmware's status for the snooped MAD
    corpus: Corpus
    notes: list | None = None  # per case: what each mutation did (``Mutator.case``)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def from_frames(cls, frames, *, mailboxes=None, transition=qpc.MLX4_CMD_INIT2RTR_QP, slave=1, qpn=0,
                    port_num=1, status=0, start: int = 0) -> "Cases":
        """Cases of your own, unmutated: ``frames`` (bytes from the LRH) numbered from ``start``,
        with per-case (or one) mailbox, transition opcode, slave, qpn, port and status, for
        running a target on chosen inputs (``fuzz.SnoopTarget().check(cases, cfg, ctx)``)."""
        frames = [bytes(f) for f in frames]
        n = len(frames)
        if any(len(f) > WIDTH for f in frames):
            raise ValueError(f"a frame is at most {WIDTH} bytes here")
        rows = np.zeros((n, WIDTH), dtype=np.uint8)
        for k, f in enumerate(frames):
            rows[k, :len(f)] = np.frombuffer(f, dtype=np.uint8)
        if mailboxes is None:
            mailboxes = [make_mailbox(qpc.MLX4_QP_ST_UD, 0)] * n
        mb = np.frombuffer(b"".join(bytes(m) for m in mailboxes), dtype=np.uint8).reshape(-1, MBOX_SIZE).copy()
        if len(mb) != n:
            raise ValueError(f"{len(mb)} mailboxes for {n} frames")

        def per_case(value, dtype):
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()

        corpus = Corpus(frames, [f"given#{k}" for k in range(n)], [bytes(m) for m in mb],
                        [f"given#{k}" for k in range(n)], source="given")
        return cls(index=np.arange(start, start + n, dtype=np.int64), frames=rows,
                   length=np.array([len(f) for f in frames], dtype=np.int64), seed_id=np.arange(n, dtype=np.int64),
                   mad_off=np.array([mad_offset(f) for f in frames], dtype=np.int64),
                   ops=np.full((n, SLOTS), -1, dtype=np.int8), mailboxes=mb, mbox_seed=np.arange(n, dtype=np.int64),
                   mb_ops=np.full((n, SLOTS), -1, dtype=np.int8), transition=per_case(transition, np.uint8),
                   slave=per_case(slave, np.int64), qpn=per_case(qpn, np.uint32),
                   port_num=per_case(port_num, np.uint8), status=per_case(status, np.uint16), corpus=corpus)

    def frame(self, k: int) -> bytes:
        return self.frames[k, :self.length[k]].tobytes()

    def mad(self, k: int) -> bytes | None:
        m = int(self.mad_off[k])
        return None if m < 0 else self.frames[k, m:m + madc.MAD_SIZE].tobytes()

    def seed_frame(self, k: int) -> bytes:
        return self.corpus.frames[int(self.seed_id[k])]

    def changed_fields(self, k: int, limit: int = 16) -> list[dict]:
        """The seed's fields whose value differs in case ``k`` (named as in its seed's layout)."""
        seed = self.seed_frame(k)
        now = self.frame(k)
        out = []
        a = int.from_bytes(seed, "big")
        b = int.from_bytes(now, "big")
        for f in frame_fields(seed):
            if f.bit + f.width > 8 * min(len(seed), len(now)):
                continue
            va = (a >> (8 * len(seed) - f.bit - f.width)) & ((1 << f.width) - 1)
            vb = (b >> (8 * len(now) - f.bit - f.width)) & ((1 << f.width) - 1)
            if va != vb:
                out.append({"field": f.name, "old": va, "new": vb})
                if len(out) >= limit:
                    break
        if len(now) != len(seed):
            out.append({"field": "frame.length", "old": len(seed), "new": len(now)})
        return out

    def mailbox_changes(self, k: int, limit: int = 16) -> list[dict]:
        seed = self.corpus.mailboxes[int(self.mbox_seed[k])]
        diff = qpc.describe_diff(seed, self.mailboxes[k].tobytes())
        return [{"field": n, "old": a, "new": b} for n, a, b in diff[:limit]]
