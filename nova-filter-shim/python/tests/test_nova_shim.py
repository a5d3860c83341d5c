"""TrustedFilter in Nova's own filter handler (HostManager with the stock
filters) against a real trustpool-filter-shim process, fed signed verdicts
over a real RabbitMQ by Python oslo.messaging (feeder.py).

Run through `go test ./nova-filter-shim/python/` (python_test.go), which
builds the shim and gives this module a RabbitMQ vhost of its own.
"""
import datetime
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
    def setUp(self):
        self.hm = no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                                       shim_socket=_shim.socket,
                                       shim_timeout=2.0)
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
        self.assertEqual(_shim.filter_requests(), before + 1)

    def test_fanout_revokes_and_admits(self):
        hosts = [no.make_host('fan-1', 1), no.make_host('fan-2', 2)]
        _feeder.cast([harness.signed('fan-1', 'trusted', seq=1),
                      harness.signed('fan-2', 'untrusted', seq=1)])
        _shim.wait_for('fanout', lambda: self.passed(
            {'trust:trusted_host': 'trusted'}, hosts) == ['fan-1'])
        # Revoke fan-1, admit fan-2; a forged "trusted" for fan-1 with a
        # higher seq and a replay of its old verdict are dropped.
        _feeder.cast([harness.signed('fan-1', 'untrusted', seq=2),
                      harness.signed('fan-2', 'trusted', seq=2),
                      harness.forged('fan-1', 'untrusted', 'trusted', seq=3),
                      harness.signed('fan-1', 'trusted', seq=1)])
        _shim.wait_for('revocation', lambda: self.passed(
            {'trust:trusted_host': 'trusted'}, hosts) == ['fan-2'])


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
