#!/usr/bin/env python3
"""A/B of `--uring-huge-pages`: the provided receive buffers mapped for transparent huge pages
(aligned, MADV_HUGEPAGE) against plain 4 KiB pages.

The ring hands out a different buffer for every receive, so with 4 KiB pages a 16 MiB pool
(1024 x 16 KiB) touches a new page, and likely misses the TLB, on nearly every receive; with
huge pages it is eight TLB entries. Where the system refuses transparent huge pages both rows
are the same (the ring's start-up line at RINGPOLL_LOG=debug says how many KiB got huge pages).

    cargo build --release
    python3 bench-scripts/uring-huge-pages-ab.py [--rounds N] [--duration D] [--workloads LIST] [--quick]

Server: one worker pinned to CPU 0; load generator on CPU 1. See uring_ab.py for the output.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uring_ab import technique_main  # noqa: E402

if __name__ == "__main__":
    technique_main("huge-pages", "--uring-huge-pages", __doc__, None)
