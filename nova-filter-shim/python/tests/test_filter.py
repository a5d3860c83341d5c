"""TrustedFilter inside Nova's real filter handler, against a fake shim:
request shape, pass-through, rebuilds, multi-instance requests, failure
modes and thread safety. No broker needed."""
import socket
import threading
import time
import unittest
from unittest import mock

import fakeshim
import novaobjects as no

from trustpool_filter import client
from trustpool_filter import filter as tfilter
from trustpool_filter import specs


class FilterTest(unittest.TestCase):
    def setUp(self):
        self.shim = fakeshim.FakeShim(trusted={'h1', 'h3'})
        self.addCleanup(self.shim.close)
        self.hm = no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                                       shim_socket=self.shim.socket,
                                       shim_timeout=0.5)
        self.hosts = [no.make_host('h%d' % i, i + 1) for i in range(4)]

    def passed(self, spec, index=0, hosts=None):
        return [h.host for h in self.hm.get_filtered_hosts(
            hosts or self.hosts, spec, index)]

    def test_loaded_among_stock_filters(self):
        names = [f.__class__.__name__ for f in self.hm.enabled_filters]
        self.assertEqual(names, no.STOCK_FILTERS + ['TrustedFilter'])

    def test_one_request_with_all_hosts(self):
        self.assertEqual(self.passed(no.make_spec(
            {'trust:trusted_host': 'trusted'})), ['h1', 'h3'])
        self.assertEqual(self.shim.requests, [(
            '/v1/filter', {'hosts': ['h0', 'h1', 'h2', 'h3'],
                           'trusted_host': 'trusted', 'profile': None,
                           'answer': 'mask'})])

    def test_profile_and_both(self):
        self.passed(no.make_spec({'trust:profile': 'gpu-2026'}))
        self.passed(no.make_spec({'trust:profile': 'baseline',
                                  'trust:trusted_host': 'trusted'}))
        self.assertEqual([r[1] for r in self.shim.requests], [
            {'hosts': ['h0', 'h1', 'h2', 'h3'], 'trusted_host': None,
             'profile': 'gpu-2026', 'answer': 'mask'},
            {'hosts': ['h0', 'h1', 'h2', 'h3'], 'trusted_host': 'trusted',
             'profile': 'baseline', 'answer': 'mask'}])

    def test_no_trust_specs_no_call(self):
        for extra in ({}, {'hw:cpu_policy': 'dedicated'},
                      {'trust:other': 'x'}):
            self.assertEqual(self.passed(no.make_spec(extra)),
                             ['h0', 'h1', 'h2', 'h3'])
        self.assertEqual(self.shim.requests, [])

    def test_rebuild_not_filtered(self):
        spec = no.make_spec({'trust:trusted_host': 'trusted'},
                            hints={'_nova_check_type': ['rebuild']})
        self.assertEqual(self.passed(spec), ['h0', 'h1', 'h2', 'h3'])
        self.assertEqual(self.shim.requests, [])

    def test_once_per_request(self):
        spec = no.make_spec({'trust:trusted_host': 'trusted'},
                            num_instances=3)
        self.assertEqual(self.passed(spec, index=0), ['h1', 'h3'])
        self.passed(spec, index=1, hosts=self.hosts)
        self.passed(spec, index=2, hosts=self.hosts)
        self.assertEqual(len(self.shim.requests), 1)

    def test_duplicate_host_names_sent_once(self):
        hosts = self.hosts + [no.make_host('h1', 99)]
        hosts[-1].nodename = 'h1-node2'
        self.assertEqual(self.passed(no.make_spec(
            {'trust:trusted_host': 'trusted'}), hosts=hosts),
            ['h1', 'h3', 'h1'])
        self.assertEqual(self.shim.requests[0][1]['hosts'],
                         ['h0', 'h1', 'h2', 'h3'])

    def test_invalid_spec_value_fails_closed(self):
        for extra in ({'trust:trusted_host': 'required'},
                      {'trust:trusted_host': 'Trusted'},
                      {'trust:profile': 'bad profile'}):
            self.assertEqual(self.passed(no.make_spec(extra)), [], extra)
        self.assertEqual(self.shim.requests, [])

    def test_shim_failures_fail_closed(self):
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        for mode in ('error', 'garbage', 'nolist', 'badmask', 'close',
                     'slow'):
            self.shim.mode = mode
            self.shim.delay = 1.0
            t = time.monotonic()
            with self.assertLogs('trustpool_filter.filter', 'ERROR') as logs:
                self.assertEqual(self.passed(spec), [], mode)
            self.assertIn('no host passes', logs.output[0])
            if mode == 'slow':
                # bounded by shim_timeout (0.5 s), not the 1 s delay
                self.assertLess(time.monotonic() - t, 0.95)

    def test_reasons_only_for_the_debug_log(self):
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        with self.assertLogs('trustpool_filter.filter', 'DEBUG') as logs:
            self.assertEqual(self.passed(spec), ['h1', 'h3'])
        self.assertNotIn('answer', self.shim.requests[-1][1])
        self.assertIn('host h0 rejected: not trusted', '\n'.join(logs.output))

    def test_shim_not_running(self):
        self.shim.close()
        spec = no.make_spec({'trust:profile': 'baseline'})
        with self.assertLogs('trustpool_filter.filter', 'ERROR'):
            self.assertEqual(self.passed(spec), [])
        # A path where nothing was ever created.
        no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                             shim_socket='/nonexistent/trustpool.sock')
        with self.assertLogs('trustpool_filter.filter', 'ERROR'):
            self.assertEqual(self.passed(spec), [])

    def test_answer_for_unknown_host_ignored(self):
        # The shim names a host that was not asked about (full answer, for
        # the debug log): it must not appear (the filter only keeps
        # candidates).
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        with mock.patch.object(client.ShimClient, 'filter',
                               return_value=(['h1', 'intruder'], {})):
            with self.assertLogs('trustpool_filter.filter', 'DEBUG'):
                self.assertEqual(self.passed(spec), ['h1'])

    def test_mask_of_the_wrong_length_fails_closed(self):
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        for bits in (b'\x01' * 3, b'\x01' * 5, b''):
            with mock.patch.object(client.ShimClient, 'mask',
                                   return_value=bits):
                with self.assertLogs('trustpool_filter.filter', 'ERROR'):
                    self.assertEqual(self.passed(spec), [], bits)

    def test_thread_safe(self):
        self.shim.trusted = {'h%d' % i for i in range(0, 200, 3)}
        hosts = [no.make_host('h%d' % i, i + 1) for i in range(200)]
        f = tfilter.TrustedFilter()
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        errors = []

        def worker(k):
            mine = hosts[k::8]
            want = [h.host for h in mine if h.host in self.shim.trusted]
            for _ in range(10):
                got = [h.host for h in f.filter_all(mine, spec)]
                if got != want:
                    errors.append((k, got, want))
        threads = [threading.Thread(target=worker, args=(k,))
                   for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(self.shim.requests), 80)


class KeepAliveTest(unittest.TestCase):
    """The per-thread persistent connection: reused after a good answer,
    never after a bad one, and a connection the shim dropped is retried
    once on a fresh one."""

    def setUp(self):
        self.shim = fakeshim.FakeShim(trusted={'h1', 'h3'}, keepalive=True)
        self.addCleanup(self.shim.close)
        self.addCleanup(client.close_connections)
        self.client = client.ShimClient(self.shim.socket, 0.5)
        self.hosts = ['h%d' % i for i in range(4)]

    def ask(self):
        return self.client.filter(self.hosts, 'trusted', None)[0]

    def test_reused(self):
        for _ in range(5):
            self.assertEqual(self.ask(), ['h1', 'h3'])
        self.assertEqual(self.shim.connections, 1)
        self.assertEqual(len(self.shim.requests), 5)

    def test_dropped_connection_retried_once(self):
        self.assertEqual(self.ask(), ['h1', 'h3'])
        self.shim.mode = 'close_once'
        self.assertEqual(self.ask(), ['h1', 'h3'])
        self.assertEqual(self.shim.connections, 2)
        # Dropped again on the fresh connection too: fail, no third try.
        self.shim.mode = 'close'
        with self.assertRaises(client.ShimError):
            self.ask()
        self.assertEqual(self.shim.connections, 3)

    def test_not_reused_after_bad_answer(self):
        for mode, n in (('error', 2), ('garbage', 3), ('nolist', 4)):
            self.shim.mode = 'ok'
            self.ask()
            self.shim.mode = mode
            with self.assertRaises(client.ShimError):
                self.ask()
            self.assertEqual(self.shim.connections, n - 1, mode)
        self.shim.mode = 'ok'
        self.assertEqual(self.ask(), ['h1', 'h3'])
        self.assertEqual(self.shim.connections, 4)

    def test_bad_mask_refused(self):
        for mode in ('badmask', 'oddmask'):
            self.shim.mode = mode
            with self.assertRaises(client.ShimError, msg=mode):
                self.client.mask(self.hosts, 'trusted')

    def test_slow_bounded_and_not_reused(self):
        self.ask()
        self.shim.mode, self.shim.delay = 'slow', 1.0
        t = time.monotonic()
        with self.assertRaises(client.ShimError):
            self.ask()
        self.assertLess(time.monotonic() - t, 0.95)
        self.shim.mode = 'ok'
        self.assertEqual(self.ask(), ['h1', 'h3'])
        self.assertEqual(self.shim.connections, 2)

    def test_idle_connection_closed_by_shim(self):
        self.ask()
        # The shim goes away and comes back on the same path: the kept
        # connection is dead and must not fail the next request.
        path = self.shim.socket
        self.shim.server.shutdown()
        self.shim.server.server_close()
        with client._local.pool[path][0].sock.dup() as s:
            s.shutdown(socket.SHUT_RDWR)
        again = fakeshim.FakeShim(trusted={'h1'}, keepalive=True)
        self.addCleanup(again.close)
        client._local.pool[again.socket] = client._local.pool.pop(path)
        self.client = client.ShimClient(again.socket, 0.5)
        self.assertEqual(self.ask(), ['h1'])
        self.assertEqual(again.connections, 1)

    def test_one_connection_per_thread(self):
        errors = []

        def worker():
            try:
                c = client.ShimClient(self.shim.socket, 0.5)
                for _ in range(10):
                    if c.filter(self.hosts, 'trusted')[0] != ['h1', 'h3']:
                        errors.append('wrong answer')
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                client.close_connections()
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(self.shim.requests), 80)
        self.assertEqual(self.shim.connections, 8)


class LegacyShimTest(unittest.TestCase):
    """A shim from before the mask answer (rolling upgrade): the full
    answer is asked for instead, and remembered for that socket."""

    def test_full_answer_from_an_old_shim(self):
        shim = fakeshim.FakeShim(trusted={'h1'}, keepalive=True, legacy=True)
        self.addCleanup(shim.close)
        self.addCleanup(client.close_connections)
        self.addCleanup(client._legacy.pop, shim.socket, None)
        c = client.ShimClient(shim.socket, 0.5)
        for _ in range(3):
            self.assertEqual(c.filter(['h0', 'h1'], 'trusted')[0], ['h1'])
        self.assertEqual([r[1].get('answer') for r in shim.requests],
                         ['mask', None, None, None])

    def test_other_bad_request_is_not_a_fallback(self):
        shim = fakeshim.FakeShim(trusted={'h1'}, keepalive=True)
        self.addCleanup(shim.close)
        self.addCleanup(client.close_connections)
        shim.mode = 'error'
        with self.assertRaises(client.ShimError):
            client.ShimClient(shim.socket, 0.5).filter(['h1'], 'trusted')
        self.assertEqual(len(shim.requests), 1)
        self.assertNotIn(shim.socket, client._legacy)


class TrustRequestTest(unittest.TestCase):
    def test_truth(self):
        self.assertIsNone(specs.trust_request({}))
        self.assertIsNone(specs.trust_request(None))
        self.assertEqual(specs.trust_request({'trust:trusted_host': 'unknown'}),
                         ('unknown', None))
        self.assertEqual(specs.trust_request({'trust:profile': 'p.1_x-2'}),
                         (None, 'p.1_x-2'))
        for bad in ({'trust:trusted_host': ''}, {'trust:profile': ''},
                    {'trust:profile': 'x' * 65}):
            self.assertRaises(specs.InvalidTrustSpec, specs.trust_request, bad)


if __name__ == '__main__':
    unittest.main()
