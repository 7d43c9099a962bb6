#!/usr/bin/env python3
"""A/B of a submission-queue polling thread (--uring-sqpoll).

On: IORING_SETUP_SQPOLL, a kernel thread that picks up submissions without io_uring_enter
(the worker enters only to wait; SQPOLL excludes DEFER_TASKRUN). The thread belongs to the
server process, so its CPU time is in the process CPU figures; it is not pinned, so on this
2-core machine it competes with the load generator on CPU 1: read the core-busy ratio and
req/s with that in mind. Off: the usual DEFER_TASKRUN ring.

Both rows are `ringpoll serve --backend uring --workers 1` pinned to CPU 0 with --uring-sqpoll off
and on, in one `ringpoll compare` run (paired, interleaved rounds; ratio with its 95% interval
from compare's statistics); load on CPU 1. See bench-scripts/uring_ab.py for the options.

    cargo build --release
    python3 bench-scripts/uring-sqpoll-ab.py                     # closed loop, 5 rounds of 3 s
    python3 bench-scripts/uring-sqpoll-ab.py --rate 30000        # open loop at 30k req/s
    python3 bench-scripts/uring-sqpoll-ab.py --quick             # checks the pipeline only
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

if __name__ == "__main__":
    technique_main("sqpoll", "--uring-sqpoll", __doc__, None)
