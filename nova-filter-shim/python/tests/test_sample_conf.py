"""etc/nova.conf.d/trustpool-filter.conf.sample, loaded by oslo.config as
nova-scheduler would load it, gives a HostManager with Nova's default
filters plus TrustedFilter, and the [trustpool] options."""
import os
import unittest
from unittest import mock

import nova.conf
from nova import objects
from nova.scheduler import host_manager

import trustpool_filter  # noqa: F401  registers [trustpool]
from trustpool_filter import opts

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      '..', 'etc', 'nova.conf.d',
                      'trustpool-filter.conf.sample')
CONF = nova.conf.CONF


class SampleConfTest(unittest.TestCase):
    def test_sample(self):
        CONF([], project='nova', default_config_files=[SAMPLE])
        objects.register_all()
        self.assertEqual(CONF.filter_scheduler.available_filters,
                         ['nova.scheduler.filters.all_filters',
                          'trustpool_filter.TrustedFilter'])
        self.assertEqual(CONF.trustpool.shim_socket,
                         '/run/trustpool/filter-shim.sock')
        self.assertEqual(CONF.trustpool.shim_timeout, 0.5)
        # The sample states the defaults of the snapshot options.
        self.assertEqual(CONF.trustpool.verdict_source, 'snapshot')
        self.assertEqual(CONF.trustpool.snapshot_file,
                         '/run/trustpool/verdicts.snapshot')
        self.assertEqual(CONF.trustpool.snapshot_max_age, 10.0)
        defaults = {o.name: o.default for o in opts.OPTS}
        for opt in ('verdict_source', 'snapshot_file', 'snapshot_max_age'):
            self.assertEqual(CONF.trustpool[opt], defaults[opt], opt)
        CONF.set_override('track_instance_changes', False, 'filter_scheduler')
        with mock.patch.object(host_manager.HostManager,
                               'refresh_cells_caches'), \
                mock.patch.object(host_manager.HostManager,
                                  '_init_aggregates'):
            hm = host_manager.HostManager()
        defaults = [o for o in nova.conf.scheduler.filter_scheduler_opts
                    if o.name == 'enabled_filters'][0].default
        self.assertEqual([type(f).__name__ for f in hm.enabled_filters],
                         list(defaults) + ['TrustedFilter'])


if __name__ == '__main__':
    unittest.main()
