#!/usr/bin/env bash
# Regenerate docs/BENCHMARKS.md and README's headline: the main comparison with reference
# servers (paired rounds until every interval is within ±5%), the idle-connection
# experiment, a rate sweep with knees, and (as root) loopback beside a veth pair. Server
# pinned to CPU 0 with one worker, load on CPU 1. Run it on quiet CPUs.
#
#   bash bench-scripts/regen-docs.sh            # full runs (about 2 hours on 2 cores)
#   QUICK=1 bash bench-scripts/regen-docs.sh    # short runs, to check the pipeline
#   MAX_TIME=20m bash bench-scripts/regen-docs.sh   # bound the main run differently
#   (also MAIN_DURATION, MAIN_WARMUP, MAIN_ROUNDS, TARGET_CI; DURATION, WARMUP, ROUNDS for the
#   idle suite, sweep and veth runs)
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
    # Many short rounds (compare's own default for the main matrix): see host-regimes.py.
    main_timing=(--duration "${MAIN_DURATION:-1s}" --warmup "${MAIN_WARMUP:-500ms}" --rounds "${MAIN_ROUNDS:-10}"
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

# How reproducible the verdicts are: the host's throughput regimes over time, and the same
# comparison run twice back to back (issue 13's acceptance command).
agree_flags=(--workloads echo-64B-c512,http-c64 --target-ci "${TARGET_CI:-5%}")
[ "${QUICK:-0}" = 1 ] && agree_flags=(--workloads echo-64B-c512,http-c64 --quick)
{
    python3 bench-scripts/host-regimes.py "${REGIME_RUNS:-45}"
    echo
    python3 bench-scripts/host-timescales.py "${TIMESCALE_SECONDS:-120}"
    echo
    python3 bench-scripts/verdict-agreement.py --run bench-out/agree-a bench-out/agree-b -- "${agree_flags[@]}"
} > docs/bench/stability.md

# Every io_uring technique, off against on (paired rounds of the uring backend); each ab.md is
# kept in docs/bench/ab/ (the raw results stay in bench-out/).
ab_timing=(--duration "${AB_DURATION:-2s}" --warmup "${AB_WARMUP:-500ms}" --rounds "${AB_ROUNDS:-5}")
[ "${QUICK:-0}" = 1 ] && ab_timing=(--quick)
mkdir -p docs/bench/ab
ab=()
for t in fixed-files bundle echo-zero-copy buf-inc sqpoll reg-wait huge-pages; do
    if python3 "bench-scripts/uring-$t-ab.py" "${ab_timing[@]}" --out "bench-out/ab-$t" >/dev/null; then
        cp "bench-out/ab-$t/ab.md" "docs/bench/ab/$t.md"
        ab+=("docs/bench/ab/$t.md")
    else
        echo "the $t A/B failed; its section is left out" >&2
    fi
done

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

# Committed beside the docs: per-run histograms dropped, floats rounded (slim-results.py).
python3 bench-scripts/slim-results.py docs/bench/*/results.json

python3 bench-scripts/assemble.py --main docs/bench/main --idle docs/bench/idle --sweep docs/bench/sweep \
    "${veth[@]}" "${extras[@]}" --stability docs/bench/stability.md --ab "${ab[@]}" > docs/BENCHMARKS.md
python3 bench-scripts/assemble.py --readme README.md --main docs/bench/main
echo "wrote docs/BENCHMARKS.md and the headline in README.md"
