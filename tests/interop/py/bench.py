#!/usr/bin/python3
"""oslo.messaging RPC call benchmark client (Python side of bench.sh).

Calls echo(value=<payload of --size bytes>) --calls times in total from
--concurrency threads sharing one RPC client (one transport, as a service
would), against a server started separately (py/server.py). Prints one JSON
line with the same fields as `go run ./tests/cmd/oslo-bench`:
  {"impl": "python", "calls": N, "concurrency": C, "size": S,
   "seconds": ..., "calls_per_sec": ..., "p50_ms": ..., "p99_ms": ...}
"""
import argparse
import math
import sys
import threading
import time

import oslo_messaging as om

import interop_common as common


def percentile(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    # nearest rank, as the Go bench computes it
    i = max(0, math.ceil(q * len(sorted_vals)) - 1)
    return sorted_vals[i]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_transport_args(p)
    p.add_argument('--topic', required=True)
    p.add_argument('--calls', type=int, default=5000)
    p.add_argument('--concurrency', type=int, default=8)
    p.add_argument('--size', type=int, default=64, help='payload bytes')
    p.add_argument('--warmup', type=int, default=100)
    p.add_argument('--timeout', type=float, default=60)
    args = p.parse_args()

    transport = common.rpc_transport(args)
    client = om.get_rpc_client(transport, om.Target(topic=args.topic),
                               timeout=args.timeout)
    payload = 'x' * args.size
    ctxt = {'request_id': 'req-bench'}
    for _ in range(args.warmup):
        client.call(ctxt, 'echo', value=payload)

    per = [args.calls // args.concurrency + (1 if i < args.calls % args.concurrency else 0)
           for i in range(args.concurrency)]
    lat = [[] for _ in per]
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(args.concurrency + 1)

    def worker(i):
        out = lat[i]
        start.wait()
        for _ in range(per[i]):
            t0 = time.perf_counter()
            try:
                r = client.call(ctxt, 'echo', value=payload)
                if r != payload:
                    raise ValueError('echo mismatch')
            except Exception:  # noqa: counted, the run goes on
                with lock:
                    errors[0] += 1
                continue
            out.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = sorted(x for l in lat for x in l)
    transport.cleanup()
    common.emit({
        'impl': 'python', 'calls': args.calls, 'concurrency': args.concurrency,
        'size': args.size, 'errors': errors[0], 'seconds': round(elapsed, 3),
        'calls_per_sec': round(len(all_lat) / elapsed, 1) if elapsed else 0,
        'p50_ms': round(percentile(all_lat, 0.50) * 1000, 3),
        'p99_ms': round(percentile(all_lat, 0.99) * 1000, 3),
    })
    return 1 if errors[0] else 0


if __name__ == '__main__':
    sys.exit(main())
