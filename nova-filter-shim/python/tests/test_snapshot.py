"""TrustedFilter on the verdict snapshot file ([trustpool] verdict_source =
snapshot): the parser against the Go shim's golden file and every kind of
malformed file, a mutation fuzz, and the filter inside Nova's real
HostManager failing closed on each rule. The real shim writing the file is
test_nova_shim.SnapshotTruthTableTest."""
import os
import random
import shutil
import tempfile
import threading
import time
import unittest
from unittest import mock

import fakeshim
import novaobjects as no
import snapshotwriter as sw

from trustpool_filter import filter as tfilter
from trustpool_filter import snapshot

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      'internal', 'snapshotfile', 'testdata',
                      'snapshot-v1.golden')
#: written_at of the golden file (Go's TestGolden, t0).
GOLDEN_MS = 1796526000123


def golden():
    with open(GOLDEN, 'rb') as f:
        return f.read()


class GoldenTest(unittest.TestCase):
    """The Go shim's encoder output (snapshotfile.TestGolden) parses to
    what it holds, and the truth table over it is the shim's."""

    def test_parse(self):
        snap = snapshot.parse(golden())
        self.assertEqual((snap.written_at_ms, snap.interval_ms, snap.health,
                          snap.detail), (GOLDEN_MS, 2000, 'ok', []))
        v = snap.verdicts
        self.assertEqual(v.names, ['compute-1', 'compute-2', 'compute-3',
                                   'compute-4', 'h"\u00e9\\x'])
        self.assertEqual(v.statuses, ['trusted', 'untrusted', 'unknown',
                                      'trusted', 'trusted'])
        self.assertEqual(v.profiles, {
            'baseline': frozenset({'compute-1', 'compute-4', 'h"\u00e9\\x'}),
            'gpu': frozenset({'compute-1'})})

    def test_truth_table(self):
        v = snapshot.parse(golden()).verdicts
        hosts = v.names + ['absent']
        # compute-4 is trusted with baseline but expired: unknown.
        want = {
            ('trusted', None): ['compute-1', 'h"\u00e9\\x'],
            ('untrusted', None): ['compute-2'],
            ('unknown', None): ['compute-3', 'compute-4', 'absent'],
            (None, 'baseline'): ['compute-1', 'h"\u00e9\\x'],
            (None, 'gpu'): ['compute-1'],
            (None, 'other'): [],
            ('trusted', 'gpu'): ['compute-1'],
            ('untrusted', 'baseline'): [],
            ('unknown', 'baseline'): [],
        }
        for (level, profile), passing in want.items():
            names, negate = v.answer(level, profile, GOLDEN_MS)
            got = [h for h in hosts if (h in names) is not negate]
            self.assertEqual(got, passing, (level, profile))


def _spoil(data, old, new):
    assert old in data, old
    return data.replace(old, new, 1)


class ParserNegativeTest(unittest.TestCase):
    """Each malformed file is refused, for the reason named."""

    def setUp(self):
        self.good = sw.encode([('h1', 'trusted', 9 * 10**12, ['baseline']),
                               ('h2', 'untrusted', 9 * 10**12, [])],
                              written_at_ms=1000)
        snapshot.parse(self.good)  # the base is well formed

    def refused(self, data, reason):
        with self.assertRaises(snapshot.SnapshotError) as cm:
            snapshot.parse(data)
        self.assertIn(reason, str(cm.exception))

    def body_variant(self, new_body):
        hdr = sw.header(2, len(new_body), written_at_ms=1000)
        return sw.MAGIC + hdr + b'\n' + new_body

    def test_magic_and_version(self):
        self.refused(b'', 'not a trustpool-filter snapshot')
        self.refused(b'{"hosts":[]}\n', 'not a trustpool-filter snapshot')
        self.refused(self.good.replace(b'snapshot 1\n', b'snapshot 2\n', 1),
                     "format version b'2")
        self.refused(sw.MAGIC + b'{"written_at_ms":1', 'no header line')

    def test_header(self):
        g = self.good
        self.refused(_spoil(g, b'{"written_at_ms"', b'["written_at_ms"'),
                     'the header is not valid JSON')
        self.refused(_spoil(g, b'"interval_ms":2000,', b''), 'header keys')
        self.refused(_spoil(g, b'"interval_ms":2000,',
                            b'"interval_ms":2000,"extra":1,'), 'header keys')
        self.refused(_spoil(g, b'"interval_ms":2000,',
                            b'"interval_ms":2000,"interval_ms":2000,'),
                     'repeated')
        for key, bad in ((b'written_at_ms', b'"1000"'),
                         (b'written_at_ms', b'1000.5'),
                         (b'written_at_ms', b'true'),
                         (b'written_at_ms', b'-1'),
                         (b'written_at_ms', b'NaN'),
                         (b'interval_ms', b'null')):
            data = _spoil(g, b'"%s":' % key + (b'1000' if key == b'written_at_ms' else b'2000'),
                          b'"%s":%s' % (key, bad))
            with self.assertRaises(snapshot.SnapshotError, msg=(key, bad)):
                snapshot.parse(data)
        self.refused(_spoil(g, b'"interval_ms":2000', b'"interval_ms":0'),
                     'interval_ms is 0')
        self.refused(_spoil(g, b'"health":"ok"', b'"health":1'),
                     'health is not a string')
        self.refused(_spoil(g, b'"detail":[]', b'"detail":[1]'),
                     'detail is not a list of strings')
        self.refused(_spoil(g, b'"hosts":2', b'"hosts":3'),
                     '3 hosts the header says')

    def test_body_length(self):
        self.refused(self.good[:-1], 'the header says')
        self.refused(self.good + b'\n', 'the header says')
        self.refused(self.good[:-1] + b' ', 'does not end with a newline')

    def test_body(self):
        for new_body, reason in (
            (b'[1,2]\n', 'not an object with keys'),
            (b'{"hosts":["h1","h2"]}\n', 'not an object with keys'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{},"x":1}\n',
             'not an object with keys'),
            (b'{"hosts":["h1","h2"],"hosts":["h1","h2"],"status":["trusted",'
             b'"untrusted"],"expires_at_ms":[1,1],"profiles":{}}\n', 'repeated'),
            (b'{"hosts":["h1"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'hosts is not a list'),
            (b'{"hosts":"h1h2","status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'hosts is not a list'),
            (b'{"hosts":["h1","h2"],"status":["trusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'status is not a list'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1],"profiles":{}}\n',
             'expires_at_ms is not a list'),
            (b'{"hosts":["h1",2],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'a host name'),
            (b'{"hosts":["h1",""],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'a host name'),
            (b'{"hosts":["h1","h2"],"status":["trusted","Trusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'a status'),
            (b'{"hosts":["h1","h2"],"status":["trusted",["trusted"]],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'a status'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1.5],"profiles":{}}\n', 'an expires_at_ms'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,true],"profiles":{}}\n', 'an expires_at_ms'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,Infinity],"profiles":{}}\n',
             'not valid JSON'),
            (b'{"hosts":["h1","h1"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{}}\n', 'listed twice'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":[]}\n', 'profiles is not'),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{"p":[2]}}\n', "profile 'p'"),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{"p":[-1]}}\n', "profile 'p'"),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{"p":[0,0]}}\n', "profile 'p'"),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{"p":[]}}\n', "profile 'p'"),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{"p":["0"]}}\n',
             "profile 'p'"),
            (b'{"hosts":["h1","h2"],"status":["trusted","untrusted"],'
             b'"expires_at_ms":[1,1],"profiles":{"p":0}}\n', "profile 'p'"),
            (b'\xff\xfe{}\n', 'not valid JSON'),
        ):
            self.refused(self.body_variant(new_body), reason)

    def test_too_large(self):
        with mock.patch.object(snapshot, 'MAX_BYTES', len(self.good) - 1):
            self.refused(self.good, 'larger than')


class FuzzTest(unittest.TestCase):
    """Random corruptions of well-formed files (the Go golden one and a
    1,000-host one): each parses or raises SnapshotError, nothing else,
    and what parses is consistent."""

    def test_mutations(self):
        rng = random.Random(20261206)
        seeds = [golden(), sw.encode(
            [('compute-%04d' % i, ('trusted', 'untrusted', 'unknown')[i % 3],
              sw.now_ms() + i, ['baseline'] if i % 3 == 0 else [])
             for i in range(1000)])]
        accepted = 0
        for i in range(3000):
            seed = seeds[i % 2]
            # Every other one spoils the host list only and gives the
            # header its new length, to get past the length check.
            body_only = i % 4 >= 2
            cut = seed.index(b'\n', len(sw.MAGIC)) + 1
            data = bytearray(seed[cut:] if body_only else seed)
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(4)
                pos = rng.randrange(len(data) + 1)
                if op == 0 and pos < len(data):
                    data[pos] = rng.randrange(256)
                elif op == 1:
                    del data[pos:pos + rng.randint(1, 8)]
                elif op == 2:
                    data[pos:pos] = bytes(rng.choice(b'[]{}",:0123456789\n'
                                                     b'ab-.e ')
                                          for _ in range(rng.randint(1, 4)))
                else:
                    data = data[:pos]
            if body_only:
                n = snapshot.parse(seed).verdicts.names
                data = (sw.MAGIC + sw.header(len(n), len(data))
                        + b'\n' + bytes(data))
            try:
                snap = snapshot.parse(bytes(data))
            except snapshot.SnapshotError:
                continue
            accepted += 1
            v = snap.verdicts
            self.assertEqual(len(v.names), len(set(v.names)))
            self.assertEqual(len(v.names), len(v.statuses))
            self.assertEqual(len(v.names), len(v.expires))
            self.assertTrue(set(v.statuses) <= {'trusted', 'untrusted',
                                                 'unknown'})
            for level, profile in (('trusted', None), ('unknown', None),
                                   (None, 'baseline')):
                v.answer(level, profile, GOLDEN_MS)
        # Some corruptions stay well formed (a changed digit of a time).
        self.assertGreater(accepted, 10)


class SnapshotFilterTest(unittest.TestCase):
    """TrustedFilter in Nova's HostManager with verdict_source = snapshot:
    each fail-closed rule makes no host pass."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='tp-snap-')
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.path = os.path.join(self.dir, 'verdicts.snapshot')
        self.addCleanup(snapshot._cache.clear)
        self.t = sw.now_ms()
        self.verdicts = [
            ('h-trusted', 'trusted', self.t + 3600000, ['baseline']),
            ('h-soon', 'trusted', self.t + 60000, ['baseline']),
            ('h-untrusted', 'untrusted', self.t + 3600000, []),
        ]
        sw.replace(self.path, sw.encode(self.verdicts))
        # A socket that would pass every host: asking it instead of failing
        # closed would show.
        self.shim = fakeshim.FakeShim(trusted={
            'h-trusted', 'h-soon', 'h-untrusted', 'h-absent'})
        self.addCleanup(self.shim.close)
        self.hm = no.host_manager_with(
            no.STOCK_FILTERS + ['TrustedFilter'],
            shim_socket=self.shim.socket, shim_timeout=0.5,
            verdict_source='snapshot', snapshot_file=self.path,
            snapshot_max_age=10.0)
        self.hosts = [no.make_host(n, i + 1) for i, n in enumerate(
            ['h-trusted', 'h-soon', 'h-untrusted', 'h-absent'])]

    def passed(self, extra=None):
        spec = no.make_spec(extra or {'trust:trusted_host': 'trusted'})
        return [h.host for h in self.hm.get_filtered_hosts(self.hosts, spec)]

    def refused(self, why):
        with self.assertLogs('trustpool_filter.filter', 'ERROR') as logs:
            self.assertEqual(self.passed(), [])
        self.assertIn(why, '\n'.join(logs.output))
        self.assertEqual(self.shim.requests, [])

    def test_truth_table(self):
        self.assertEqual(self.passed(), ['h-trusted', 'h-soon'])
        self.assertEqual(self.shim.requests, [])
        self.assertEqual(self.passed({'trust:trusted_host': 'untrusted'}),
                         ['h-untrusted'])
        self.assertEqual(self.passed({'trust:trusted_host': 'unknown'}),
                         ['h-absent'])
        self.assertEqual(self.passed({'trust:profile': 'baseline'}),
                         ['h-trusted', 'h-soon'])
        self.assertEqual(self.passed({'trust:profile': 'baseline',
                                      'trust:trusted_host': 'untrusted'}),
                         [])
        self.assertEqual(self.passed({'trust:profile': 'gpu'}), [])

    def test_expiry_by_the_filters_clock(self):
        self.assertEqual(self.passed(), ['h-trusted', 'h-soon'])
        # The file does not change; 61 s later h-soon's verdict has
        # expired (the snapshot is kept fresh by a heartbeat rewrite).
        later = (self.t + 61000) / 1000.0
        sw.replace(self.path, sw.encode(self.verdicts,
                                        written_at_ms=self.t + 60500))
        with mock.patch.object(snapshot, 'now', return_value=later):
            self.assertEqual(self.passed(), ['h-trusted'])
            self.assertEqual(self.passed({'trust:trusted_host': 'unknown'}),
                             ['h-soon', 'h-absent'])
            self.assertEqual(self.passed({'trust:profile': 'baseline'}),
                             ['h-trusted'])

    def test_stale(self):
        with mock.patch.object(snapshot, 'now',
                               return_value=(self.t + 10500) / 1000.0):
            self.refused('more than [trustpool] snapshot_max_age')

    def test_written_in_the_future(self):
        with mock.patch.object(snapshot, 'now',
                               return_value=(self.t - 10500) / 1000.0):
            self.refused('in the future')

    def test_degraded_or_stopped(self):
        for health in ('degraded', 'stopped', 'OK', ''):
            sw.replace(self.path, sw.encode(self.verdicts, health=health,
                                            detail=['test: %s' % health]))
            self.refused('the shim is %s' % health)

    def test_malformed(self):
        sw.replace(self.path, sw.encode(self.verdicts)[:-2] + b'\n')
        self.refused('the header says')

    def test_unreadable(self):
        os.remove(self.path)
        os.mkdir(self.path)
        self.refused('not a regular file')
        os.rmdir(self.path)
        sw.replace(self.path, sw.encode(self.verdicts))
        snapshot._cache.clear()
        with mock.patch('builtins.open',
                        side_effect=PermissionError(13, 'Permission denied')):
            self.refused('Permission denied')

    def test_writable_by_others(self):
        for mode in (0o660, 0o642, 0o646):
            sw.replace(self.path, sw.encode(self.verdicts), mode=mode)
            self.refused('writable by group or others')

    def test_too_large(self):
        with mock.patch.object(snapshot, 'MAX_BYTES', 100):
            self.refused('larger than 100 bytes')

    def test_unexpected_error_fails_closed(self):
        with mock.patch.object(snapshot.Verdicts, 'answer',
                               side_effect=RuntimeError('bug')):
            self.refused('reading the verdict snapshot failed')

    def test_missing_asks_the_socket(self):
        os.remove(self.path)
        # A shim that writes no snapshot answers over its socket.
        self.shim.trusted = {'h-untrusted'}
        with self.assertLogs('trustpool_filter.filter', 'WARNING') as logs:
            self.assertEqual(self.passed(), ['h-untrusted'])
        self.assertIn('does not exist', '\n'.join(logs.output))
        self.assertEqual(len(self.shim.requests), 1)
        # Nothing listens either: no host passes.
        self.shim.close()
        with self.assertLogs('trustpool_filter.filter', 'ERROR'):
            self.assertEqual(self.passed(), [])

    def test_changes_read_once(self):
        with mock.patch.object(snapshot, 'parse',
                               wraps=snapshot.parse) as parse:
            for _ in range(3):
                self.assertEqual(self.passed(), ['h-trusted', 'h-soon'])
            self.assertEqual(parse.call_count, 1)
            before = snapshot._cache[self.path].verdicts
            # A heartbeat: a new header, the same hosts, kept as parsed.
            sw.replace(self.path, sw.encode(self.verdicts,
                                            written_at_ms=self.t + 1))
            self.assertEqual(self.passed(), ['h-trusted', 'h-soon'])
            self.assertEqual(parse.call_count, 2)
            self.assertIs(snapshot._cache[self.path].verdicts, before)
            # A revocation.
            sw.replace(self.path, sw.encode(
                [('h-trusted', 'untrusted', self.t + 3600000, [])]
                + self.verdicts[1:]))
            self.assertEqual(self.passed(), ['h-soon'])
            self.assertIsNot(snapshot._cache[self.path].verdicts, before)

    def test_threads_see_whole_snapshots(self):
        hosts = [no.make_host('h%03d' % i, i + 1) for i in range(300)]
        a = sw.encode([('h%03d' % i, 'trusted', self.t + 3600000, [])
                       for i in range(0, 300, 2)])
        b = sw.encode([('h%03d' % i, 'trusted', self.t + 3600000, [])
                       for i in range(1, 300, 3)])
        want = ({'h%03d' % i for i in range(0, 300, 2)},
                {'h%03d' % i for i in range(1, 300, 3)})
        sw.replace(self.path, a)
        f = tfilter.TrustedFilter()
        spec = no.make_spec({'trust:trusted_host': 'trusted'})
        stop = threading.Event()
        errors = []

        def writer():
            k = 0
            while not stop.is_set():
                k += 1
                sw.replace(self.path, (a, b)[k % 2])
                time.sleep(0.001)

        def reader():
            for _ in range(100):
                got = {h.host for h in f.filter_all(hosts, spec)}
                if got not in want:
                    errors.append(sorted(got)[:5])
        w = threading.Thread(target=writer)
        w.start()
        readers = [threading.Thread(target=reader) for _ in range(6)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        stop.set()
        w.join()
        self.assertEqual(errors, [])


if __name__ == '__main__':
    unittest.main()
