#!/usr/bin/env python3
"""A/B of registered (fixed) file descriptors for io_uring connections (--uring-fixed-files).

On: the worker's multishot accept puts each connection straight into the ring's fixed file
table (a direct descriptor, no regular fd) and every receive, send, shutdown and close names
the table slot, so the kernel skips the descriptor lookup and reference count per request.
Off: regular descriptors. Needs Linux 5.19 (probed at start: a kernel without it runs with
it off and says so once).

Both rows are `ringpoll serve --backend uring --workers 1` pinned to CPU 0 with --uring-fixed-files off
and on, in one `ringpoll compare` run (paired, interleaved rounds; ratio with its 95% interval
from compare's statistics); load on CPU 1. See bench-scripts/uring_ab.py for the options.

    cargo build --release
    python3 bench-scripts/uring-fixed-files-ab.py                     # closed loop, 5 rounds of 3 s
    python3 bench-scripts/uring-fixed-files-ab.py --rate 30000        # open loop at 30k req/s
    python3 bench-scripts/uring-fixed-files-ab.py --quick             # checks the pipeline only
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

if __name__ == "__main__":
    technique_main("fixed-files", "--uring-fixed-files", __doc__, None)
