#!/usr/bin/env bash
# Regenerate docs/BENCHMARKS.md: the full comparison with reference servers, then the
# idle-connection experiment. Server pinned to CPU 0 with one worker, load on CPU 1.
#
#   bash bench-scripts/regen-docs.sh            # full runs (about 35 minutes on 2 cores)
#   QUICK=1 bash bench-scripts/regen-docs.sh    # short runs, to check the pipeline
set -euo pipefail
cd "$(dirname "$0")/.."

bash bench-scripts/install-references.sh || echo "reference tools not installed: those rows will be skipped"
bash bench-scripts/build-peers.sh
cargo build --release
bin=target/release/ringpoll

# Per-cell timing: DURATION (measured), WARMUP, REPEAT (median of N); QUICK=1 for a smoke run.
timing=(--duration "${DURATION:-5s}" --warmup "${WARMUP:-1s}" --repeat "${REPEAT:-3}")
[ "${QUICK:-0}" = 1 ] && timing=(--quick)

main_cmd=("$bin" compare "${timing[@]}" --with-peers --out docs/bench/main)
idle_cmd=("$bin" compare "${timing[@]}" --suite idle --out docs/bench/idle)
"${main_cmd[@]}"
"${idle_cmd[@]}"

# Where the time goes: system calls and allocations per request, and a sampled CPU profile
# (both need root and perf; skipped without them).
if command -v perf >/dev/null && [ "$(id -u)" = 0 ]; then
    secs=5
    [ "${QUICK:-0}" = 1 ] && secs=2
    python3 bench-scripts/per-request-costs.py "$secs" --out docs/bench/costs.md
    python3 bench-scripts/cpu-profile.py "$secs" > docs/bench/profile.md
fi

python3 bench-scripts/assemble.py docs/bench/main docs/bench/idle docs/bench/costs.md docs/bench/profile.md \
    > docs/BENCHMARKS.md
python3 bench-scripts/assemble.py --readme README.md docs/bench/main
echo "wrote docs/BENCHMARKS.md and the headline table in README.md"
