#!/usr/bin/env python3
"""A/B of io_uring recv bundles (--uring-bundle).

On: multishot receives carry IORING_RECVSEND_BUNDLE, so one completion covers several
provided buffers (in ring order) instead of one completion per buffer: fewer completions
for large messages. Off: one buffer per completion. Needs Linux 6.10 and passes a self-test
at start (bundles have had kernel bugs with buffer ids out of order); otherwise off, said once.

Both rows are `ringpoll serve --backend uring --workers 1` pinned to CPU 0 with --uring-bundle off
and on, in one `ringpoll compare` run (paired, interleaved rounds; ratio with its 95% interval
from compare's statistics); load on CPU 1. See bench-scripts/uring_ab.py for the options.

    cargo build --release
    python3 bench-scripts/uring-bundle-ab.py                     # closed loop, 5 rounds of 3 s
    python3 bench-scripts/uring-bundle-ab.py --rate 30000        # open loop at 30k req/s
    python3 bench-scripts/uring-bundle-ab.py --quick             # checks the pipeline only
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

if __name__ == "__main__":
    technique_main("bundle", "--uring-bundle", __doc__, None)
