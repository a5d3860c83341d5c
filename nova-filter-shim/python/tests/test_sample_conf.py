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
