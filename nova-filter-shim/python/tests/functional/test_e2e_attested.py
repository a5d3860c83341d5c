"""End to end with everything real: Nova's control plane in-process
(Nova's own functional-test base, as in test_functional) with TrustedFilter
asking a real trustpool-filter-shim that follows the real attestation
service, which attests real compute agents on swtpm (one per fake compute
host) over a real RabbitMQ.

The Go test tests/integration/nova_e2e_test.go (TestNovaE2E) starts all of
that, then runs this module once per phase, selecting the phase's tests with
`-k test_phaseN_`; between phases it extends PCRs on the hosts' TPMs and waits
until the shim has the new verdicts. Nova is booted anew for every test.

  phase 1: host1-3 boot the approved firmware (profile "baseline" learned
           from host1), host4 an unapproved build: trust:profile boots land
           only on host1-3; an untagged flavor goes anywhere, host4 included.
  phase 2: host2's PCR 7 was extended: new trust:profile boots avoid it.
  phase 3: every host is untrusted: a trust:profile boot ends in
           "No valid host"; an untagged flavor still boots.

Environment (set by the Go test):
  TRUSTPOOL_SHIM_SOCKET  the shim's unix socket
  TRUSTPOOL_SHIM_LOG     the shim's log file (shown on failures)
  TRUSTPOOL_E2E_HOSTS    the compute host names, comma separated
"""
import unittest

from functional import test_functional

import harness

PROFILE = 'baseline'
BOOTS = 4


class _RunningShim(harness.Shim):
    """The shim process the Go test started (not ours to stop)."""

    def __init__(self, socket_path, log_path):  # noqa: super not called
        self.socket = socket_path
        self.log_path = log_path
        self.proc = None

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        pass


def setUpModule():
    # TrustedBootTest._setup_services reads test_functional._shim.socket.
    test_functional._shim = _RunningShim(
        harness.env('TRUSTPOOL_SHIM_SOCKET'), harness.env('TRUSTPOOL_SHIM_LOG'))


def tearDownModule():
    test_functional._shim = None


def _hosts():
    return harness.env('TRUSTPOOL_E2E_HOSTS').split(',')


class AttestedBootTest(test_functional.TrustedBootTest):
    """TrustedBootTest's Nova setup, with the real attested hosts."""

    def _setup_compute_service(self):
        for h in _hosts():
            self._start_compute(h)

    def _boot(self, flavor_id, expected_state='ACTIVE', host=None):
        return self._create_server(flavor_id=flavor_id, networks='none',
                                   host=host, expected_state=expected_state)

    def _profile_flavor(self):
        return self._create_flavor(extra_spec={'trust:profile': PROFILE})

    def _assert_profile_boots_land_on(self, allowed):
        flavor = self._profile_flavor()
        before = test_functional._shim.filter_requests()
        for _ in range(BOOTS):
            server = self._boot(flavor)
            self.assertIn(server['OS-EXT-SRV-ATTR:host'], allowed)
        # Every scheduling pass asked the shim (once per pass).
        self.assertGreaterEqual(test_functional._shim.filter_requests(),
                                before + BOOTS)

    def _assert_profile_boot_rejected_on(self, host):
        # A requested destination (microversion 2.74) still goes through
        # the scheduler's filters.
        server = self._boot(self._profile_flavor(), expected_state='ERROR',
                            host=host)
        self.assertIn('No valid host', server['fault']['message'])

    def _assert_untagged_goes_to(self, host):
        before = test_functional._shim.filter_requests()
        server = self._boot(self._create_flavor(), host=host)
        self.assertEqual(host, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(before, test_functional._shim.filter_requests())

    # Phase 1: host1-3 trusted under "baseline", host4 untrusted.

    def test_phase1_profile_flavor_lands_only_on_attested_hosts(self):
        self._assert_profile_boots_land_on(('host1', 'host2', 'host3'))
        self._assert_profile_boot_rejected_on('host4')

    def test_phase1_untagged_flavor_goes_anywhere(self):
        for h in _hosts():
            self._assert_untagged_goes_to(h)

    # Phase 2: host2's PCR 7 extended after boot.

    def test_phase2_new_boots_avoid_revoked_host(self):
        self._assert_profile_boots_land_on(('host1', 'host3'))
        self._assert_profile_boot_rejected_on('host2')

    def test_phase2_untagged_flavor_still_goes_to_revoked_host(self):
        self._assert_untagged_goes_to('host2')

    # Phase 3: no trusted host left.

    def test_phase3_no_trusted_host_is_no_valid_host(self):
        server = self._boot(self._profile_flavor(), expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])

    def test_phase3_untagged_flavor_still_boots(self):
        server = self._boot(self._create_flavor())
        self.assertIn(server['OS-EXT-SRV-ATTR:host'], _hosts())


# The feeder-driven tests of TrustedBootTest are not inherited.
for _name in unittest.TestLoader().getTestCaseNames(
        test_functional.TrustedBootTest):
    setattr(AttestedBootTest, _name, None)
del _name


if __name__ == '__main__':
    unittest.main()
