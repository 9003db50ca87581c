#!/usr/bin/env bash
# CPU of one guest unit test as nextest runs it (`<runner> <module> <test> --exact
# --nocapture`), called N times in a row: the runner's own (its processes' rusage), the
# runner server's, if the runner is the thin one (its /proc stat), and the host's with the
# workers it forked and reaped (its /proc stat, children included). Each runner gets a host
# (and server) of its own, started fresh, so that it holds only this module's template.
# Alternates the runners given, ROUNDS times; the figures are per call, in ms.
#
#   bench/guest_test_cpu.sh ROUNDS N MODULE CRATE_DIR TEST RUNNER...
#
# For example, with the 200-test module bench/guest_tests.sh builds:
#   bench/guest_test_cpu.sh 8 200 <target>/edge-test/guest-tests/wasm32-wasip1/debug/deps/bench_unit_tests_200-*.wasm \
#     <target>/edge-test-bench-guest-tests/suite-200 tests::reads_and_writes_1 /tmp/runner-a /tmp/runner-b
# Copy each runner binary somewhere first (a thin runner with its `-host` binary beside it):
# a host runs from the binary that started it.
set -euo pipefail
rounds="$1" n="$2" module="$3" crate_dir="$4" test="$5"
shift 5
export CARGO_MANIFEST_DIR="$crate_dir"

host_pid() {
  ps -eo pid=,stat=,comm= | awk '$2 !~ /Z/ && $3 == "edge-test" && $4 == "host" { print $1 }' | head -1
}
server_pid() {
  ps -eo pid=,stat=,comm= | awk '$2 !~ /Z/ && $3 == "edge-test" && $4 == "runs" { print $1 }' | head -1
}
# utime + stime + cutime + cstime of the host, in clock ticks (after the `(comm)` field).
host_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 + $14 + $15 }'; }

for round in $(seq 1 "$rounds"); do
  for runner in "$@"; do
    pkill -x "edge-test host" || true
    pkill -x "edge-test runs" || true
    sleep 0.5
    "$runner" "$module" "$test" --exact --nocapture >/dev/null 2>&1
    host="$(host_pid)" server="$(server_pid)"
    before="$(host_ticks "$host")"
    server_before="$( [ -n "$server" ] && host_ticks "$server" || echo 0)"
    runner_ms="$(python3 - "$runner" "$module" "$test" "$n" <<'PY'
import resource, subprocess, sys
runner, module, test, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for _ in range(n):
    subprocess.run([runner, module, test, "--exact", "--nocapture"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{1000 * (used.ru_utime + used.ru_stime) / n:.2f}")
PY
)"
    # The last workers are reaped within the reaper's 50 ms poll.
    sleep 0.3
    after="$(host_ticks "$host")"
    server_after="$( [ -n "$server" ] && host_ticks "$server" || echo 0)"
    ticks="$(getconf CLK_TCK)"
    host_ms="$(echo "scale=2; ($after - $before) * 1000 / $ticks / $n" | bc)"
    server_ms="$(echo "scale=2; ($server_after - $server_before) * 1000 / $ticks / $n" | bc)"
    echo "round $round $(basename "$(dirname "$runner")")/$(basename "$runner"): runner $runner_ms ms, server $server_ms ms, host and workers $host_ms ms"
  done
done
