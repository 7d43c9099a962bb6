#!/usr/bin/env python3
"""A/B of registered wait regions (--uring-reg-wait).

On: the arguments of every waiting io_uring_enter (timeout, minimum wait) live in a memory
region registered with the ring once (IORING_REGISTER_MEM_REGION, Linux 6.13) and each
enter passes an offset, instead of the kernel copying them in per wait. Off: the usual
extended argument. A small saving per wake-up at most: measure at low load (1 connection)
as well as the usual workloads.

Both rows are `ringpoll serve --backend uring --workers 1` pinned to CPU 0 with --uring-reg-wait off
and on, in one `ringpoll compare` run (paired, interleaved rounds; ratio with its 95% interval
from compare's statistics); load on CPU 1. See bench-scripts/uring_ab.py for the options.

    cargo build --release
    python3 bench-scripts/uring-reg-wait-ab.py                     # closed loop, 5 rounds of 3 s
    python3 bench-scripts/uring-reg-wait-ab.py --rate 30000        # open loop at 30k req/s
    python3 bench-scripts/uring-reg-wait-ab.py --quick             # checks the pipeline only
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

if __name__ == "__main__":
    technique_main("reg-wait", "--uring-reg-wait", __doc__, None)
