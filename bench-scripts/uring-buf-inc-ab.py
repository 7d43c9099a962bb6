#!/usr/bin/env python3
"""A/B of incremental provided-buffer consumption (--uring-buf-inc).

On: the buffer ring is registered with IOU_PBUF_RING_INC, so a receive takes only the bytes
it needs from a buffer and the next receive continues in the same buffer: a 64-byte message
no longer takes a whole 16 KiB buffer out of the ring until it is handled. Off: one buffer
per receive. Needs Linux 6.12 and passes a self-test at start; otherwise off, said once.

Both rows are `ringpoll serve --backend uring --workers 1` pinned to CPU 0 with --uring-buf-inc off
and on, in one `ringpoll compare` run (paired, interleaved rounds; ratio with its 95% interval
from compare's statistics); load on CPU 1. See bench-scripts/uring_ab.py for the options.

    cargo build --release
    python3 bench-scripts/uring-buf-inc-ab.py                     # closed loop, 5 rounds of 3 s
    python3 bench-scripts/uring-buf-inc-ab.py --rate 30000        # open loop at 30k req/s
    python3 bench-scripts/uring-buf-inc-ab.py --quick             # checks the pipeline only
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

if __name__ == "__main__":
    technique_main("buf-inc", "--uring-buf-inc", __doc__, None)
