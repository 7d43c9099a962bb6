#!/usr/bin/env bash
# Regenerate docs/BENCHMARKS.md and README's headline: the main comparison with reference
# servers (paired rounds until every headline interval is within ±5%), the idle-connection
# experiment, a rate sweep with knees, and (as root) loopback beside a veth pair. Server
# pinned to CPU 0 with one worker, load on CPU 1. Run it on quiet CPUs.
#
#   bash bench-scripts/regen-docs.sh            # full runs (about 90 minutes on 2 cores)
#   QUICK=1 bash bench-scripts/regen-docs.sh    # short runs, to check the pipeline
#   MAX_TIME=20m bash bench-scripts/regen-docs.sh   # bound the main run differently
set -euo pipefail
cd "$(dirname "$0")/.."

bash bench-scripts/install-references.sh || echo "reference tools not installed: those rows will be skipped"
bash bench-scripts/build-peers.sh
cargo build --release
bin=target/release/ringpoll

if [ "${QUICK:-0}" = 1 ]; then
    main_timing=(--quick)
    other_timing=(--quick)
else
    main_timing=(--duration "${DURATION:-3s}" --warmup "${WARMUP:-1s}" --rounds "${ROUNDS:-5}"
                 --target-ci "${TARGET_CI:-5%}" --max-time "${MAX_TIME:-40m}")
    other_timing=(--duration "${DURATION:-3s}" --warmup "${WARMUP:-1s}" --rounds "${ROUNDS:-5}")
fi

"$bin" compare "${main_timing[@]}" --with-peers --out docs/bench/main
"$bin" compare "${other_timing[@]}" --suite idle --out docs/bench/idle
sweep_timing=(--duration "${DURATION:-3s}" --warmup "${WARMUP:-1s}")
[ "${QUICK:-0}" = 1 ] && sweep_timing=(--quick)
"$bin" compare "${sweep_timing[@]}" --sweep rate --workloads echo-64B-c64,http-c64 --backends epoll,uring \
    --with-peers --out docs/bench/sweep
veth=()
if [ "$(id -u)" = 0 ]; then
    "$bin" compare "${other_timing[@]}" --net veth --workloads echo-64B-c64,echo-64B-c512,http-c64 \
        --backends epoll,uring --out docs/bench/veth
    veth=(--veth docs/bench/veth)
fi

# Where the time goes: system calls and allocations per request, and a sampled CPU profile
# (both need root and perf; skipped without them).
extras=()
if command -v perf >/dev/null && [ "$(id -u)" = 0 ]; then
    secs=5
    [ "${QUICK:-0}" = 1 ] && secs=2
    python3 bench-scripts/per-request-costs.py "$secs" --out docs/bench/costs.md
    python3 bench-scripts/cpu-profile.py "$secs" > docs/bench/profile.md
    extras=(--costs docs/bench/costs.md --profile docs/bench/profile.md)
fi

python3 bench-scripts/assemble.py --main docs/bench/main --idle docs/bench/idle --sweep docs/bench/sweep \
    "${veth[@]}" "${extras[@]}" > docs/BENCHMARKS.md
python3 bench-scripts/assemble.py --readme README.md --main docs/bench/main
echo "wrote docs/BENCHMARKS.md and the headline in README.md"
