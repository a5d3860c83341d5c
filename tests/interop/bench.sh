#!/usr/bin/env bash
# RPC call benchmark, Go<->Go against Python<->Python oslo.messaging, on one
# private RabbitMQ node in one run (make bench-oslo). Not a test: it prints
# numbers and exits non-zero only when something failed to run.
#
# Each side is a client process calling echo(value=<SIZE bytes>) CALLS times
# from CONCURRENCY threads/goroutines sharing one transport, against a server
# process of the same language on the same broker:
#   Go:     go run ./tests/cmd/oslo-bench  ->  oslo-peer serve
#   Python: tests/interop/py/bench.py      ->  tests/interop/py/server.py (executor=threading)
# ROUNDS rounds alternate Go and Python; the table shows every round and the
# median, then the Go/Python ratio of the medians.
#
# Environment: CALLS (10000) CONCURRENCY (8) SIZE (64) ROUNDS (3) WARMUP (200)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CALLS=${CALLS:-10000}
CONCURRENCY=${CONCURRENCY:-8}
SIZE=${SIZE:-64}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-200}
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
EXCHANGE=bench

WORK=$(mktemp -d -t trustpool-bench.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/rabbitmq.sh stop "$WORK/rabbitmq" || true
  if [[ $rc -ne 0 ]]; then
    echo "bench failed; logs in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# wait_ready FILE PID: wait until FILE has a line "ready".
wait_ready() {
  for _ in $(seq 600); do
    grep -qx ready "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited; see $1 and ${1%.out}.err" >&2; return 1; }
    sleep 0.1
  done
  echo "server not ready: $1" >&2
  return 1
}

echo "starting a private RabbitMQ node..." >&2
eval "$(scripts/rabbitmq.sh start "$WORK/rabbitmq")"
echo "building..." >&2
go build -o "$WORK/oslo-peer" ./tests/cmd/oslo-peer
go build -o "$WORK/oslo-bench" ./tests/cmd/oslo-bench

"$WORK/oslo-peer" serve --transport-url "$TRANSPORT_URL" --exchange "$EXCHANGE" \
  --topic bench_go --server b1 >"$WORK/go-server.out" 2>"$WORK/go-server.err" &
PIDS+=($!)
wait_ready "$WORK/go-server.out" $!
$PY tests/interop/py/server.py --transport-url "$TRANSPORT_URL" --exchange "$EXCHANGE" \
  --topic bench_py --server b1 >"$WORK/py-server.out" 2>"$WORK/py-server.err" &
PIDS+=($!)
wait_ready "$WORK/py-server.out" $!

args=(--transport-url "$TRANSPORT_URL" --exchange "$EXCHANGE" --calls "$CALLS"
  --concurrency "$CONCURRENCY" --size "$SIZE" --warmup "$WARMUP")
: >"$WORK/results.jsonl"
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS: go..." >&2
  "$WORK/oslo-bench" "${args[@]}" --topic bench_go | tee -a "$WORK/results.jsonl" >&2
  echo "round $r/$ROUNDS: python..." >&2
  $PY tests/interop/py/bench.py "${args[@]}" --topic bench_py | tee -a "$WORK/results.jsonl" >&2
done

$PY - "$WORK/results.jsonl" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {'go': [r for r in rows if r['impl'] == 'go'], 'python': [r for r in rows if r['impl'] == 'python']}
r0 = rows[0]
print('oslo RPC call benchmark: echo(%d-byte string), %d calls x %d rounds, concurrency %d, one broker'
      % (r0['size'], r0['calls'], len(by['go']), r0['concurrency']))
print('%-8s %-7s %12s %10s %10s %7s' % ('impl', 'round', 'calls/s', 'p50 ms', 'p99 ms', 'errors'))
for impl in ('go', 'python'):
    for i, r in enumerate(by[impl], 1):
        print('%-8s %-7s %12.1f %10.3f %10.3f %7d' % (impl, i, r['calls_per_sec'], r['p50_ms'], r['p99_ms'], r['errors']))
med = {impl: {k: statistics.median(r[k] for r in by[impl]) for k in ('calls_per_sec', 'p50_ms', 'p99_ms')}
       for impl in by}
for impl in ('go', 'python'):
    m = med[impl]
    print('%-8s %-7s %12.1f %10.3f %10.3f' % (impl, 'median', m['calls_per_sec'], m['p50_ms'], m['p99_ms']))
ratio = med['go']['calls_per_sec'] / med['python']['calls_per_sec']
print('go/python throughput ratio (medians): %.2fx  (target >= 2x: %s)' % (ratio, 'met' if ratio >= 2 else 'NOT met'))
print('python/go p50 latency ratio: %.2fx, p99: %.2fx' % (med['python']['p50_ms'] / med['go']['p50_ms'],
                                                          med['python']['p99_ms'] / med['go']['p99_ms']))
if any(r['errors'] for r in rows):
    sys.exit('some calls failed')
PYEOF
