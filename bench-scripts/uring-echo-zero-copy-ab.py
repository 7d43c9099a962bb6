#!/usr/bin/env python3
"""A/B of echoing straight from the provided receive buffer (--uring-echo-zero-copy).

On: the echo worker sends the received bytes back out of the provided buffer they arrived
in (held out of the buffer ring until the send completes; a bundle goes out as one sendmsg
over its buffers), as the proxy's zero-copy relay does. Off: the bytes are copied into the
connection's output buffer first. Echo workloads only.

Both rows are `ringpoll serve --backend uring --workers 1` pinned to CPU 0 with --uring-echo-zero-copy off
and on, in one `ringpoll compare` run (paired, interleaved rounds; ratio with its 95% interval
from compare's statistics); load on CPU 1. See bench-scripts/uring_ab.py for the options.

    cargo build --release
    python3 bench-scripts/uring-echo-zero-copy-ab.py                     # closed loop, 5 rounds of 3 s
    python3 bench-scripts/uring-echo-zero-copy-ab.py --rate 30000        # open loop at 30k req/s
    python3 bench-scripts/uring-echo-zero-copy-ab.py --quick             # checks the pipeline only
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

WORKLOADS = ['echo-64B-c64', 'echo-64B-c512', 'echo-16KiB-c64']

if __name__ == "__main__":
    technique_main("echo-zero-copy", "--uring-echo-zero-copy", __doc__, WORKLOADS)
