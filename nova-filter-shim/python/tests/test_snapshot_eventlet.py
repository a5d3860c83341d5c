"""TrustedFilter on the verdict snapshot under eventlet, as nova-scheduler
(Zed) runs it: the process is monkey-patched before anything else is
imported, greenthreads filter concurrently while another replaces the file,
and each sees one whole snapshot. Its own process (python_test.go):
monkey-patching must not meet the threaded tests."""
import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import unittest  # noqa: E402

import novaobjects as no  # noqa: E402
import snapshotwriter as sw  # noqa: E402

from trustpool_filter import filter as tfilter  # noqa: E402
from trustpool_filter import snapshot  # noqa: E402


class EventletSnapshotTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='tp-snap-ev-')
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.addCleanup(snapshot._cache.clear)
        self.path = os.path.join(self.dir, 'verdicts.snapshot')

    def test_greenthreads(self):
        self.assertTrue(eventlet.patcher.is_monkey_patched('thread'))
        t = sw.now_ms() + 3600000
        a = sw.encode([('h%03d' % i, 'trusted', t, ['baseline'])
                       for i in range(0, 300, 2)])
        b = sw.encode([('h%03d' % i, 'trusted', t, ['baseline'])
                       for i in range(1, 300, 3)])
        want = ({'h%03d' % i for i in range(0, 300, 2)},
                {'h%03d' % i for i in range(1, 300, 3)})
        sw.replace(self.path, a)
        no.host_manager_with(no.STOCK_FILTERS + ['TrustedFilter'],
                             shim_socket=os.path.join(self.dir, 'no.sock'),
                             verdict_source='snapshot',
                             snapshot_file=self.path)
        hosts = [no.make_host('h%03d' % i, i + 1) for i in range(300)]
        f = tfilter.TrustedFilter()
        spec = no.make_spec({'trust:profile': 'baseline'})
        results = []
        done = []

        def writer():
            k = 0
            while len(done) < 10:
                k += 1
                sw.replace(self.path, (a, b)[k % 2])
                eventlet.sleep(0.001)
            return k

        def reader():
            for _ in range(50):
                results.append({h.host for h in f.filter_all(hosts, spec)})
                eventlet.sleep(0)
            done.append(1)
        w = eventlet.spawn(writer)
        pool = [eventlet.spawn(reader) for _ in range(10)]
        for g in pool:
            g.wait()
        writes = w.wait()
        self.assertEqual(len(results), 500)
        self.assertEqual([r for r in results if r not in want], [])
        # Both snapshots were seen: the readers followed the writer.
        self.assertEqual({frozenset(r) for r in results},
                         {frozenset(x) for x in want})
        self.assertGreater(writes, 2)


if __name__ == '__main__':
    unittest.main()
