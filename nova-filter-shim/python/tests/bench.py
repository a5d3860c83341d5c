#!/usr/bin/python3
"""Added scheduling time of TrustedFilter over 1,000 candidate hosts.

Nova's real HostManager.get_filtered_hosts with the stock (Zed default)
filters, against the same plus TrustedFilter asking a real
trustpool-filter-shim (fed 1,000 signed verdicts over RabbitMQ), in the same
run, interleaved request by request. Reports p50/p99 of each, of the paired
difference (the added time) and the ratio, plus an untagged flavor through
the TrustedFilter chain (no shim call).

Run: make bench-filter, or
  TRUSTPOOL_FILTER_BENCH=1 go test -run TestBenchmark -v ./nova-filter-shim/python/
(needs TRUSTPOOL_SHIM_BIN and TRUSTPOOL_TRANSPORT_URL, which that test sets).
Optional: BENCH_HOSTS (1000), BENCH_ROUNDS (500).
"""
import gc
import json
import os
import statistics
import time

import harness
from trustpool_filter import client
import novaobjects as no


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def ms(x):
    return round(x * 1000.0, 3)


def main():
    n_hosts = int(os.environ.get('BENCH_HOSTS', '1000'))
    rounds = int(os.environ.get('BENCH_ROUNDS', '500'))
    url = harness.env('TRUSTPOOL_TRANSPORT_URL')
    feeder = harness.Feeder(url)
    names = ['compute-%04d' % i for i in range(n_hosts)]
    feeder.snapshot([
        harness.signed(n, 'trusted', profiles=['baseline']) if i % 2 == 0
        else harness.signed(n, 'untrusted') for i, n in enumerate(names)])
    shim = harness.Shim(harness.env('TRUSTPOOL_SHIM_BIN'), url, name='bench')
    try:
        shim.wait_healthy()
        stock = no.host_manager_with(no.STOCK_FILTERS)
        trust = no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                                     shim_socket=shim.socket,
                                     shim_timeout=0.5)
        hosts = [no.make_host(n, i + 1) for i, n in enumerate(names)]
        # Time TrustedFilter.filter_all itself inside the chain: the added
        # time without the noise of differencing two whole runs.
        t_filter = []
        tf = [f for f in trust.enabled_filters
              if type(f).__name__ == 'TrustedFilter'][0]
        inner = tf.filter_all

        def timed(objs, spec):
            t = time.perf_counter()
            try:
                return inner(objs, spec)
            finally:
                t_filter.append(time.perf_counter() - t)
        tf.filter_all = timed
        tagged = no.make_spec({'trust:profile': 'baseline'})
        plain = no.make_spec({})

        def run(hm, spec):
            t = time.perf_counter()
            out = hm.get_filtered_hosts(hosts, spec)
            return time.perf_counter() - t, len(out)

        for _ in range(20):  # warm up both paths
            run(stock, tagged)
            run(trust, tagged)
            run(trust, plain)
        shim_client = client.ShimClient(shim.socket, 0.5)
        t_stock, t_trust, t_plain, added, t_rpc, t_full = [], [], [], [], [], []
        del t_filter[:]
        gc.collect()
        for i in range(rounds):
            # Alternate the order so drift hits both sides alike.
            if i % 2:
                a, na = run(stock, tagged)
                b, nb = run(trust, tagged)
            else:
                b, nb = run(trust, tagged)
                a, na = run(stock, tagged)
            c, nc = run(trust, plain)
            assert na == n_hosts and nb == n_hosts // 2 + n_hosts % 2 \
                and nc == n_hosts, (na, nb, nc)
            t_stock.append(a)
            t_trust.append(b)
            t_plain.append(c)
            added.append(b - a)
            t = time.perf_counter()
            shim_client.mask(names, None, 'baseline')
            t_rpc.append(time.perf_counter() - t)
            # Baseline in the same run: the full answer (names and reasons,
            # the debug-log path and the wire form before the mask).
            t = time.perf_counter()
            shim_client.filter(names, None, 'baseline', reasons=True)
            t_full.append(time.perf_counter() - t)
        m = shim.metrics()
        shim_count = m['trustpool_filter_shim_filter_request_duration_seconds_count']
        shim_sum = m['trustpool_filter_shim_filter_request_duration_seconds_sum']
        result = {
            'hosts': n_hosts, 'rounds': rounds,
            'stock_ms': {'p50': ms(pct(t_stock, 50)), 'p99': ms(pct(t_stock, 99))},
            'with_trustedfilter_ms': {'p50': ms(pct(t_trust, 50)), 'p99': ms(pct(t_trust, 99))},
            'added_ms': {'p50': ms(pct(added, 50)), 'p99': ms(pct(added, 99)),
                         'mean': ms(statistics.mean(added))},
            'ratio_p50': round(pct(t_trust, 50) / pct(t_stock, 50), 3),
            'ratio_p99': round(pct(t_trust, 99) / pct(t_stock, 99), 3),
            'untagged_through_trustedfilter_ms': {'p50': ms(pct(t_plain, 50)),
                                                  'p99': ms(pct(t_plain, 99))},
            'shim_side_mean_ms': ms(shim_sum / shim_count),
            'trustedfilter_tagged_ms': {'p50': ms(pct(t_filter[0::2], 50)), 'p99': ms(pct(t_filter[0::2], 99))},
            'trustedfilter_untagged_ms': {'p50': ms(pct(t_filter[1::2], 50)), 'p99': ms(pct(t_filter[1::2], 99))},
            'client_round_trip_ms': {'p50': ms(pct(t_rpc, 50)), 'p99': ms(pct(t_rpc, 99))},
            'client_full_answer_round_trip_ms': {'p50': ms(pct(t_full, 50)), 'p99': ms(pct(t_full, 99))},
            'target_added_p99_ms': 2.0,
        }
        print('TrustedFilter scheduling benchmark (%d candidate hosts, %d '
              'requests each, interleaved):' % (n_hosts, rounds))
        print('  stock filters              p50 %7.3f ms  p99 %7.3f ms'
              % (result['stock_ms']['p50'], result['stock_ms']['p99']))
        print('  stock + TrustedFilter      p50 %7.3f ms  p99 %7.3f ms'
              % (result['with_trustedfilter_ms']['p50'],
                 result['with_trustedfilter_ms']['p99']))
        print('  added (paired difference)  p50 %7.3f ms  p99 %7.3f ms'
              % (result['added_ms']['p50'], result['added_ms']['p99']))
        print('  ratio                      p50 %7.3f     p99 %7.3f'
              % (result['ratio_p50'], result['ratio_p99']))
        print('  untagged flavor, same chain p50 %6.3f ms  p99 %7.3f ms'
              % (result['untagged_through_trustedfilter_ms']['p50'],
                 result['untagged_through_trustedfilter_ms']['p99']))
        print('  shim time per request (mean, its own metric) %.3f ms'
              % result['shim_side_mean_ms'])
        print('  TrustedFilter.filter_all itself, tagged    p50 %7.3f ms  p99 %7.3f ms'
              % (result['trustedfilter_tagged_ms']['p50'], result['trustedfilter_tagged_ms']['p99']))
        print('  TrustedFilter.filter_all itself, untagged  p50 %7.3f ms  p99 %7.3f ms'
              % (result['trustedfilter_untagged_ms']['p50'], result['trustedfilter_untagged_ms']['p99']))
        print('  of which one shim round trip (client.mask) p50 %.3f ms  p99 %.3f ms'
              % (result['client_round_trip_ms']['p50'], result['client_round_trip_ms']['p99']))
        print('  baseline: full answer round trip (reasons) p50 %.3f ms  p99 %.3f ms'
              % (result['client_full_answer_round_trip_ms']['p50'], result['client_full_answer_round_trip_ms']['p99']))
        print('BENCH_JSON ' + json.dumps(result, sort_keys=True))
    finally:
        shim.close()
        feeder.close()


if __name__ == '__main__':
    main()
