#!/usr/bin/env bash
# The issue's 2x target, measured: alternating rounds on one guest crate (the 200-test one
# bench/guest_tests.sh generates, built there first), each round timing, in this order,
# `cargo test` with `viceroy run -C fastly.toml --` as the runner (the baseline: every test in
# one instance), `cargo nextest run` with a runner that runs nothing (nextest's own floor),
# and `cargo nextest run` with each runner given. Prints each round, then the medians and
# each runner's median ratio to the baseline (the ratio within each round, then its median).
#
#   bench/guest_tests_rounds.sh ROUNDS CRATE_DIR RUNNER...
#
# For example, the installed runner against an older build copied aside (a thin runner
# needs its `-host` binary beside it):
#   bench/guest_tests_rounds.sh 9 <target>/edge-test-bench-guest-tests/suite-200 \
#     ~/.cargo/bin/edge-test-runner /tmp/before/edge-test-runner
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="$1" dir="$2"
shift 2
target="${CARGO_TARGET_DIR:-$root/target}"
guest_target="$target/edge-test/guest-tests"
viceroy="${VICEROY:-$(command -v viceroy || true)}"
[ -n "$viceroy" ] || { echo "needs the viceroy CLI 0.22 (VICEROY=path)" >&2; exit 1; }
tests=$(grep -c '^    fn ' "$dir/src/main.rs")

noop="$(mktemp -d)/noop-runner"
cat > "$noop" <<SH
#!/bin/sh
# Runs nothing: lists the crate's $tests tests (none ignored), passes every one.
case " \$* " in
  *" --ignored "*) ;;
  *" --list "*) i=1; while [ \$i -le $tests ]; do echo "tests::reads_and_writes_\$i: test"; i=\$((i+1)); done ;;
esac
exit 0
SH
chmod +x "$noop"

# seconds RUNNER CMD...: wall time of CMD in the crate with RUNNER as cargo's target runner.
seconds() {
  local runner="$1"; shift
  local start end
  start=$(date +%s%N)
  (cd "$dir" && CARGO_TARGET_WASM32_WASIP1_RUNNER="$runner" CARGO_TARGET_DIR="$guest_target" \
    "$@" >/dev/null 2>&1) || { echo "failed: $runner $*" >&2; exit 1; }
  end=$(date +%s%N)
  echo "scale=3; ($end - $start) / 1000000000" | bc
}

baseline="$viceroy run -C $dir/fastly.toml --"
# No host or runner server left from before: a host is shared by every binary built from the
# same edge-test sources, so one a debug test binary started would run a release runner's
# tests (edge-test's own code unoptimized). Each runner's first run below starts its own.
pkill -x "edge-test host" || true
pkill -x "edge-test runs" || true
# Once each first: the module compiled by each runner's host, cargo's fingerprints fresh.
for runner in "$@"; do seconds "$runner" cargo nextest run --target wasm32-wasip1 >/dev/null; done
results="$(mktemp)"
for round in $(seq 1 "$rounds"); do
  line="$(seconds "$baseline" cargo test -q --target wasm32-wasip1)"
  line="$line $(seconds "$noop" cargo nextest run --target wasm32-wasip1)"
  for runner in "$@"; do
    line="$line $(seconds "$runner" cargo nextest run --target wasm32-wasip1)"
  done
  echo "round $round: $line"
  echo "$line" >> "$results"
done
python3 - "$results" "$@" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
names = ["cargo test, viceroy run", "nextest, no-op runner"] + sys.argv[2:]
for i, name in enumerate(names):
    column = [r[i] for r in rows]
    line = f"{name}: median {statistics.median(column):.2f} s (fastest {min(column):.2f} s)"
    if i > 0:
        ratios = [r[i] / r[0] for r in rows]
        line += f", ratio to the baseline: median {statistics.median(ratios):.2f}x"
        line += f" ({min(ratios):.2f}-{max(ratios):.2f}x)"
    print(line)
PY
