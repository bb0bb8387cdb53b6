"""What `madpipe bench` checks its figures against: the targets of issues 7 and 14, by the names
the groups (runner, api) give their figures."""

#: The smp_snoop baselines: the cache lines it reads (three a MAD in numpy's arrays, whose rows
#: start 16 bytes into a line), and the two lines that issue 7's and 14's targets first named.
TOUCH = "memory touch (the lines it reads)"
TOUCH_TWO = "memory touch (2 lines/MAD)"

#: The throughput targets (issue 7), checked on the figures of one run: (what, group, figure,
#: compared with, its rate at least this many times the other's). Rates are per item, so a
#: figure measured on --subset items compares with one measured on all of them.
TARGETS = (
    ("snoop kernel, vs touching its memory", "snoop", "numba kernel, profile new", TOUCH, 0.5),
    ("snoop kernel, vs the pure-Python reference", "snoop", "numba kernel, profile new", "pure-Python reference", 50),
    ("paravirt in place, vs copying the mailboxes", "paravirt", "numba in place", "memory copy", 0.5),
    ("snoop end to end, within 3x of ingest", "capture", "madpipe snoop -T text (end to end)",
     "ingest into batches + MADs", 1 / 3),
    ("snoop end to end (start-up apart), vs tshark plain", "capture", "madpipe snoop -T text (end to end)",
     "tshark plain, whole file (a process)", 10),
    ("snoop as a process, vs tshark plain (both start)", "capture", "madpipe snoop, a process (+start-up)",
     "tshark plain, whole file (a process)", 10),
    ("decode -T json, vs tshark -T json", "capture", "madpipe decode -T json", "tshark -T json", 3),
    # The Python API at the CLI's speed (issue 14).
    ("smp_snoop call (new), vs touching its memory", "api", "snoop.smp_snoop, new, SM traffic",
     f"{TOUCH}, SM traffic", 0.5),
    ("smp_snoop call (3.7), vs touching its memory", "api", "snoop.smp_snoop, 3.7, SM traffic",
     f"{TOUCH}, SM traffic", 0.5),
    ("rewrite out of place, vs np.copy", "api", "paravirt.rewrite (new output)", "np.copy (a new array)", 0.5),
    ("snoop -T json of changing Sets, vs tshark plain", "api", "madpipe snoop -T json, a process",
     "tshark plain, every Set changes (a process)", 5),
)
#: Rates of their own: (what, group, figure, at least this many items a second).
RATE_TARGETS = (
    ("event text lines written, bytes/s", "api", "snoop -T text output into a pipe", 500e6),
    ("event JSON Lines written, bytes/s", "api", "snoop -T json output into a pipe", 500e6),
)
#: A small capture through a command, with the kernels built: wall time at most this (seconds).
SMALL_JOB = ("small capture, kernels ahead of time", "startup", "small job, kernels ahead of time", 1.0)
