"""TrustedFilter in Nova's own filter handler (HostManager with the stock
filters) against a real trustpool-filter-shim process, fed signed verdicts
over a real RabbitMQ by Python oslo.messaging (feeder.py).

Run through `go test ./nova-filter-shim/python/` (python_test.go), which
builds the shim and gives this module a RabbitMQ vhost of its own.
"""
import datetime
import time
import unittest
import unittest.mock

import harness
import novaobjects as no

from trustpool_filter import client

BULK = 1000

_feeder = None
_shim = None


def setUpModule():
    global _feeder, _shim
    url = harness.env('TRUSTPOOL_TRANSPORT_URL')
    binary = harness.env('TRUSTPOOL_SHIM_BIN')
    past = (datetime.datetime.now(datetime.timezone.utc)
            - datetime.timedelta(hours=2))
    snapshot = [
        harness.signed('h-trusted', 'trusted', profiles=['baseline', 'gpu']),
        harness.signed('h-untrusted', 'untrusted'),
        harness.signed('h-unknown', 'unknown'),
        harness.signed('h-expired', 'trusted', profiles=['baseline'],
                       verified=past, validity=3600),
        harness.forged('h-forged', 'untrusted', 'trusted'),
        harness.unsigned('h-unsigned', 'trusted', profiles=['baseline']),
        harness.signed('h-otherkey', 'trusted', key=harness.OTHER,
                       profiles=['baseline']),
    ]
    for i in range(BULK):
        if i % 2 == 0:
            snapshot.append(harness.signed('bulk-%04d' % i, 'trusted',
                                           profiles=['baseline']))
        else:
            snapshot.append(harness.signed('bulk-%04d' % i, 'untrusted'))
    _feeder = harness.Feeder(url)
    _feeder.snapshot(snapshot)
    _shim = harness.Shim(binary, url, name='scheduler-1')
    _shim.wait_healthy()


def tearDownModule():
    if _shim:
        _shim.close()
    if _feeder:
        _feeder.close()


SCENARIO = ['h-trusted', 'h-untrusted', 'h-unknown', 'h-absent', 'h-expired',
            'h-forged', 'h-unsigned', 'h-otherkey']


class NovaWithShimTest(unittest.TestCase):
    """The truth table asking the shim over its socket."""

    source = 'socket'
    #: Filter requests the shim answers per scheduling pass.
    calls_per_pass = 1

    def setUp(self):
        self.hm = no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                                       shim_socket=_shim.socket,
                                       shim_timeout=2.0,
                                       verdict_source=self.source,
                                       snapshot_file=_shim.snapshot_file,
                                       snapshot_max_age=10.0)
        self.hosts = [no.make_host(n, i + 1) for i, n in enumerate(SCENARIO)]

    def passed(self, extra, hosts=None):
        spec = no.make_spec(extra)
        return [h.host for h in self.hm.get_filtered_hosts(
            hosts or self.hosts, spec)]

    def test_trusted(self):
        self.assertEqual(self.passed({'trust:trusted_host': 'trusted'}),
                         ['h-trusted'])

    def test_untrusted(self):
        self.assertEqual(self.passed({'trust:trusted_host': 'untrusted'}),
                         ['h-untrusted'])

    def test_unknown_expired_forged_unsigned_count_as_unknown(self):
        self.assertEqual(self.passed({'trust:trusted_host': 'unknown'}),
                         ['h-unknown', 'h-absent', 'h-expired', 'h-forged',
                          'h-unsigned', 'h-otherkey'])

    def test_profile(self):
        self.assertEqual(self.passed({'trust:profile': 'baseline'}),
                         ['h-trusted'])
        self.assertEqual(self.passed({'trust:profile': 'gpu',
                                      'trust:trusted_host': 'trusted'}),
                         ['h-trusted'])
        self.assertEqual(self.passed({'trust:profile': 'other'}), [])

    def test_drops_counted(self):
        m = _shim.metrics()
        p = 'trustpool_filter_shim_verdicts_dropped_total{reason="%s"}'
        self.assertGreaterEqual(m[p % 'bad_signature'], 1)
        self.assertGreaterEqual(m[p % 'unsigned'], 1)
        self.assertGreaterEqual(m[p % 'unknown_kid'], 1)

    def test_without_trust_specs_no_call(self):
        before = _shim.filter_requests()
        with unittest.mock.patch.object(
                client.UnixConnection, 'exchange',
                side_effect=AssertionError('socket used')) as connect:
            for extra in ({}, {'hw:cpu_policy': 'dedicated'}):
                self.assertEqual(self.passed(extra), SCENARIO)
        connect.assert_not_called()
        self.assertEqual(_shim.filter_requests(), before)

    def test_one_call_per_pass_over_1000_hosts(self):
        hosts = [no.make_host('bulk-%04d' % i, i + 1) for i in range(BULK)]
        before = _shim.filter_requests()
        got = self.passed({'trust:profile': 'baseline'}, hosts=hosts)
        self.assertEqual(got, ['bulk-%04d' % i for i in range(0, BULK, 2)])
        self.assertEqual(_shim.filter_requests(),
                         before + self.calls_per_pass)

    def test_fanout_revokes_and_admits(self):
        # Host names of this class's own: the shim keeps the seqs of the
        # other class's run.
        f1, f2 = 'fan-1-' + self.source, 'fan-2-' + self.source
        hosts = [no.make_host(f1, 1), no.make_host(f2, 2)]
        _feeder.cast([harness.signed(f1, 'trusted', seq=1),
                      harness.signed(f2, 'untrusted', seq=1)])
        _shim.wait_for('fanout', lambda: self.passed(
            {'trust:trusted_host': 'trusted'}, hosts) == [f1])
        # Revoke f1, admit f2; a forged "trusted" for f1 with a higher seq
        # and a replay of its old verdict are dropped.
        _feeder.cast([harness.signed(f1, 'untrusted', seq=2),
                      harness.signed(f2, 'trusted', seq=2),
                      harness.forged(f1, 'untrusted', 'trusted', seq=3),
                      harness.signed(f1, 'trusted', seq=1)])
        _shim.wait_for('revocation', lambda: self.passed(
            {'trust:trusted_host': 'trusted'}, hosts) == [f2])


    def test_verdict_formats(self):
        # Verdicts signed here, in Python, in both formats: format 1 and
        # format 2 (profile versions) are accepted; an unknown format and
        # format 2 missing a satisfied profile's version are dropped as
        # malformed, so those hosts count as unknown.
        names = ['fmt-%s-%s' % (n, self.source)
                 for n in ('v1', 'v2', 'v3', 'noversion')]
        hosts = [no.make_host(n, i + 1) for i, n in enumerate(names)]
        p = 'trustpool_filter_shim_verdicts_dropped_total{reason="malformed"}'
        before = _shim.metrics().get(p, 0)
        _feeder.cast([
            harness.signed(names[0], 'trusted', profiles=['baseline']),
            harness.signed(names[1], 'trusted', profiles=['baseline', 'gpu'],
                           versions={'baseline': 3, 'gpu': 1}),
            harness.signed(names[2], 'trusted', profiles=['baseline'],
                           versions={'baseline': 3}, fmt=3),
            harness.signed(names[3], 'trusted', profiles=['baseline', 'gpu'],
                           versions={'baseline': 3}),
        ])
        _shim.wait_for('formats', lambda: self.passed(
            {'trust:profile': 'baseline'}, hosts) == names[:2])
        _shim.wait_for('malformed drops', lambda: _shim.metrics().get(
            p, 0) >= before + 2)
        self.assertEqual(self.passed({'trust:profile': 'gpu'}, hosts),
                         names[1:2])
        self.assertEqual(self.passed({'trust:trusted_host': 'unknown'},
                                     hosts), names[2:])


class SnapshotNovaWithShimTest(NovaWithShimTest):
    """The same truth table on the snapshot file the shim writes: no
    request to the shim at all."""

    source = 'snapshot'
    calls_per_pass = 0

    def test_same_answers_as_the_socket(self):
        """Every request form over every kind of host (the scenario's, the
        fanout's and some bulk ones) gets the same hosts on both paths."""
        names = SCENARIO + ['fan-1-socket', 'fan-2-socket'] + [
            'bulk-%04d' % i for i in range(10)]
        hosts = [no.make_host(n, i + 1) for i, n in enumerate(names)]
        socket_hm = no.host_manager_with(
            no.STOCK_FILTERS + ['TrustedFilter'], shim_socket=_shim.socket,
            shim_timeout=2.0, verdict_source='socket')
        snapshot_hm = no.host_manager_with(
            no.STOCK_FILTERS + ['TrustedFilter'], shim_socket=_shim.socket,
            shim_timeout=2.0, verdict_source='snapshot',
            snapshot_file=_shim.snapshot_file)
        compared = 0
        for level in (None, 'trusted', 'untrusted', 'unknown'):
            for profile in (None, 'baseline', 'gpu', 'other'):
                if level is None and profile is None:
                    continue
                extra = {}
                if level:
                    extra['trust:trusted_host'] = level
                if profile:
                    extra['trust:profile'] = profile
                spec = no.make_spec(extra)
                no.CONF.set_override('verdict_source', 'socket', 'trustpool')
                want = [h.host for h in socket_hm.get_filtered_hosts(
                    hosts, spec)]
                no.CONF.set_override('verdict_source', 'snapshot',
                                     'trustpool')
                before = _shim.filter_requests()
                got = [h.host for h in snapshot_hm.get_filtered_hosts(
                    hosts, spec)]
                self.assertEqual(_shim.filter_requests(), before)
                self.assertEqual(got, want, extra)
                compared += 1
        self.assertEqual(compared, 15)


class ShimDownTest(unittest.TestCase):
    """A shim of its own, stopped and started again."""

    def test_shim_down_then_back(self):
        shim = harness.Shim(harness.env('TRUSTPOOL_SHIM_BIN'),
                            harness.env('TRUSTPOOL_TRANSPORT_URL'),
                            name='scheduler-2')
        self.addCleanup(shim.close)
        shim.wait_healthy()
        hm = no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                                  shim_socket=shim.socket, shim_timeout=2.0)
        hosts = [no.make_host('h-trusted', 1), no.make_host('h-untrusted', 2)]
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        self.assertEqual([h.host for h in hm.get_filtered_hosts(hosts, spec)],
                         ['h-trusted'])
        shim.stop()
        with self.assertLogs('trustpool_filter.filter', 'ERROR'):
            self.assertEqual(list(hm.get_filtered_hosts(hosts, spec)), [])
        # An untagged flavor is still scheduled while the shim is down.
        self.assertEqual(len(list(hm.get_filtered_hosts(
            hosts, no.make_spec({})))), 2)
        shim.start()
        shim.wait_healthy()
        self.assertEqual([h.host for h in hm.get_filtered_hosts(hosts, spec)],
                         ['h-trusted'])


if __name__ == '__main__':
    unittest.main()


class SnapshotShimDownTest(unittest.TestCase):
    """The snapshot of a shim that stops says so at once; the one of a
    shim that dies grows stale; either way no host passes."""

    def test_stopped_then_killed(self):
        shim = harness.Shim(harness.env('TRUSTPOOL_SHIM_BIN'),
                            harness.env('TRUSTPOOL_TRANSPORT_URL'),
                            name='scheduler-3')
        self.addCleanup(shim.close)
        shim.wait_healthy()
        hm = no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                                  shim_socket=shim.socket, shim_timeout=2.0,
                                  verdict_source='snapshot',
                                  snapshot_file=shim.snapshot_file,
                                  snapshot_max_age=1.0)
        hosts = [no.make_host('h-trusted', 1), no.make_host('h-untrusted', 2)]
        spec = no.make_spec({'trust:trusted_host': 'trusted'})

        def passed():
            return [h.host for h in hm.get_filtered_hosts(hosts, spec)]
        shim.wait_for('a healthy snapshot', lambda: passed() == ['h-trusted'])
        shim.stop()
        with self.assertLogs('trustpool_filter.filter', 'ERROR') as logs:
            self.assertEqual(passed(), [])
        self.assertIn('the shim is stopped', '\n'.join(logs.output))
        shim.start()
        shim.wait_healthy()
        shim.wait_for('the snapshot again', lambda: passed() == ['h-trusted'])
        # Killed: the file still says ok, but nobody rewrites it.
        shim.proc.kill()
        shim.proc.wait()
        time.sleep(1.5)
        with self.assertLogs('trustpool_filter.filter', 'ERROR') as logs:
            self.assertEqual(passed(), [])
        self.assertIn('snapshot_max_age', '\n'.join(logs.output))
