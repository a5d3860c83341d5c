"""End to end through Nova's real control plane, in-process (nova-api via
wsgi-intercept, conductor, scheduler, fake-virt computes, real Placement,
sqlite; Nova's own functional-test base, environment-recipes.md 4b), with
TrustedFilter enabled among the default filters and asking a real
trustpool-filter-shim process fed signed verdicts over a real RabbitMQ.

Here the verdicts come from the test feeder (feeder.py, Python
oslo.messaging, signed with the golden test key), so every verdict shape
(forged, unsigned, expired, ...) can be injected. The same Nova setup fed by
the real attestation service attesting swtpm-backed compute agents is
test_e2e_attested.py, driven by TestNovaE2E in tests/integration.

Run through `go test -run TestNovaFunctional ./nova-filter-shim/python/`.
"""
import json
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nova.tests.functional import integrated_helpers  # noqa: E402

import harness  # noqa: E402
import trustpool_filter  # noqa: E402,F401  registers [trustpool]

_feeder = None
_shim = None


def setUpModule():
    global _feeder, _shim
    url = harness.env('TRUSTPOOL_TRANSPORT_URL')
    _feeder = harness.Feeder(url)
    _feeder.snapshot([
        harness.signed('host1', 'trusted', seq=1, profiles=['baseline']),
        harness.signed('host2', 'untrusted', seq=1),
        # host3 has no verdict at all: unknown.
    ])
    _shim = harness.Shim(harness.env('TRUSTPOOL_SHIM_BIN'), url,
                         name='functional-scheduler')
    _shim.wait_healthy()


def tearDownModule():
    if _shim:
        _shim.close()
    if _feeder:
        _feeder.close()


def shim_passes(hosts, profile):
    status, body = _shim.request('POST', '/v1/filter', json.dumps(
        {'hosts': hosts, 'trusted_host': None, 'profile': profile}))
    assert status == 200, body
    return json.loads(body)['passes']


class TrustedBootTest(harness.PatientWaits,
                      integrated_helpers._IntegratedTestBase):
    ADMIN_API = True
    microversion = 'latest'

    def setUp(self):
        # Nova's test logging enables DEBUG everywhere, which makes the
        # filter ask for the reasons; a scheduler logs at INFO, where the
        # filter takes the mask answer: test that path.
        log = logging.getLogger('trustpool_filter.filter')
        self.addCleanup(log.setLevel, log.level)
        log.setLevel(logging.INFO)
        super().setUp()
        self.assertFalse(log.isEnabledFor(logging.DEBUG))

    def _setup_services(self):
        self.flags(api_paste_config=os.path.join(HERE, 'api-paste.ini'),
                   group='wsgi')
        self.flags(available_filters=['nova.scheduler.filters.all_filters',
                                      'trustpool_filter.TrustedFilter'],
                   group='filter_scheduler')
        self.flags(enabled_filters=[
            'ComputeFilter', 'ComputeCapabilitiesFilter',
            'ImagePropertiesFilter', 'ServerGroupAntiAffinityFilter',
            'ServerGroupAffinityFilter', 'TrustedFilter'],
            group='filter_scheduler')
        # The snapshot file of a shim started here (harness.Shim); the
        # socket of one started by the Go test (test_e2e_attested).
        snapshot_file = getattr(_shim, 'snapshot_file', None)
        self.flags(shim_socket=_shim.socket, shim_timeout=2.0,
                   verdict_source='snapshot' if snapshot_file else 'socket',
                   group='trustpool')
        if snapshot_file:
            self.flags(snapshot_file=snapshot_file, group='trustpool')
        super()._setup_services()

    def _setup_compute_service(self):
        for h in ('host1', 'host2', 'host3'):
            self._start_compute(h)

    def _boot(self, flavor_id, expected_state='ACTIVE'):
        return self._create_server(flavor_id=flavor_id, networks='none',
                                   expected_state=expected_state)

    def test_profile_flavor_lands_on_attested_host_then_avoids_revoked(self):
        flavor = self._create_flavor(
            extra_spec={'trust:profile': 'baseline'})
        for _ in range(2):
            self.assertEqual('host1',
                             self._boot(flavor)['OS-EXT-SRV-ATTR:host'])
        # The service revokes host1 and admits host3 (fanout).
        _feeder.cast([harness.signed('host1', 'untrusted', seq=2),
                      harness.signed('host3', 'trusted', seq=1,
                                     profiles=['baseline'])])
        _shim.wait_for('revocation', lambda: shim_passes(
            ['host1', 'host2', 'host3'], 'baseline') == ['host3'])
        for _ in range(2):
            self.assertEqual('host3',
                             self._boot(flavor)['OS-EXT-SRV-ATTR:host'])
        # Restore for the other tests (shared shim).
        _feeder.cast([harness.signed('host1', 'trusted', seq=3,
                                     profiles=['baseline']),
                      harness.signed('host3', 'unknown', seq=2)])
        _shim.wait_for('restore', lambda: shim_passes(
            ['host1', 'host2', 'host3'], 'baseline') == ['host1'])

    def test_legacy_trusted_host_spec(self):
        flavor = self._create_flavor(
            extra_spec={'trust:trusted_host': 'untrusted'})
        self.assertEqual('host2', self._boot(flavor)['OS-EXT-SRV-ATTR:host'])

    def test_no_trusted_host_is_no_valid_host(self):
        flavor = self._create_flavor(extra_spec={'trust:profile': 'gpu'})
        server = self._boot(flavor, expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])

    def test_untagged_flavor_goes_anywhere_without_a_call(self):
        before = _shim.filter_requests()
        flavor = self._create_flavor()
        server = self._boot(flavor)
        self.assertIn(server['OS-EXT-SRV-ATTR:host'],
                      ('host1', 'host2', 'host3'))
        self.assertEqual(_shim.filter_requests(), before)

    def test_invalid_trust_spec_rejected_by_api(self):
        # nova-api validates extra specs with our registered validators
        # (needs the package installed: the entry point).
        flavor = self._create_flavor()
        from nova.tests.functional.api import client
        exc = self.assertRaises(
            client.OpenStackApiException,
            self.admin_api.post_extra_spec, flavor,
            {'extra_specs': {'trust:profile': 'not a profile'}})
        self.assertEqual(400, exc.response.status_code)
        self.assertIn('is not of the format', str(exc))
        # A misspelt key in our namespace is rejected too.
        exc = self.assertRaises(
            client.OpenStackApiException,
            self.admin_api.post_extra_spec, flavor,
            {'extra_specs': {'trust:trusted_hosts': 'trusted'}})
        self.assertIn('does not appear to be a valid extra spec', str(exc))
        # Valid values are accepted.
        self.admin_api.post_extra_spec(
            flavor, {'extra_specs': {'trust:profile': 'baseline',
                                     'trust:trusted_host': 'trusted'}})
