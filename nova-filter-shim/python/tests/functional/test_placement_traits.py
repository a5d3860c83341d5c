"""Placement traits and revocation actions in Nova's real control plane.

Nova's own functional-test base runs in this process (nova-api, conductor,
scheduler, fake-virt computes host1-host4, real Placement from
python3-placement, sqlite). The real trustpool attestation service, its
agents on swtpm, RabbitMQ and Keystone belong to the Go test that runs this
module (tests/integration/placement_e2e_test.go, TestPlacementE2E); it
answers a small control API (TRUSTPOOL_CONTROL_URL) to (re)start the service
against this process's Placement and Nova API, to extend a PCR on a host's
TPM, to restore a host, and to report the notifications it received.

The service reaches Placement and the Nova API over real sockets: both apps
(the very ones Nova's fixtures run in-process) are served on 127.0.0.1
behind keystonemiddleware, which validates the service user's real Keystone
tokens. Nova's own calls keep going through wsgi-intercept.

host1-host3 boot the approved build (trusted under profile "baseline"),
host4 another (untrusted). host3's nova-compute manages two nodes,
host3-node-a and host3-node-b, as an Ironic-like driver would.

Environment (set by the Go test):
  TRUSTPOOL_CONTROL_URL   the Go test's control API
  TRUSTPOOL_KEYSTONE_URL, TRUSTPOOL_KEYSTONE_USER, TRUSTPOOL_KEYSTONE_PASSWORD,
  TRUSTPOOL_KEYSTONE_PROJECT   credentials keystonemiddleware validates with
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nova.tests.functional import integrated_helpers  # noqa: E402

import eventlet  # noqa: E402
import eventlet.wsgi  # noqa: E402
from keystonemiddleware import auth_token  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova.scheduler.client import report  # noqa: E402
from oslo_config import cfg  # noqa: E402
from placement import deploy as placement_deploy  # noqa: E402

import harness  # noqa: E402

TRUSTED = 'CUSTOM_TRUSTPOOL_TRUSTED'
BASELINE = 'CUSTOM_TRUSTPOOL_PROFILE_BASELINE'
OURS = {TRUSTED, BASELINE}
HOSTS = ('host1', 'host2', 'host3', 'host4')
NODES = {'host1': ['host1'], 'host2': ['host2'],
         'host3': ['host3-node-a', 'host3-node-b'], 'host4': ['host4']}
TRUSTED_HOSTS = ('host1', 'host2', 'host3')
STOCK_FILTERS = ['ComputeFilter', 'ComputeCapabilitiesFilter',
                 'ImagePropertiesFilter', 'ServerGroupAntiAffinityFilter',
                 'ServerGroupAffinityFilter']
# A bound against a hang (see harness.WAIT_SLACK), never a pass criterion.
WAIT = 180


def control(method, path, body=None, timeout=300):
    """Calls the Go test's control API; returns the decoded answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(harness.env('TRUSTPOOL_CONTROL_URL') + path,
                                 data=data, method=method,
                                 headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise AssertionError('control %s %s: %s %s'
                             % (method, path, e.code, e.read()[:2000]))
    return json.loads(raw) if raw else None


def wait_until(what, cond, timeout=WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        ok, last = cond()
        if ok:
            return last
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s; last: %r'
                                 % (timeout, what, last))
        time.sleep(0.1)


class KeystoneOnly(object):
    """Validates X-Auth-Token with real keystonemiddleware, then hands the
    identity to the in-process app in the form its test fixture reads."""

    def __init__(self, app, convert):
        self.convert = convert
        conf = {
            'www_authenticate_uri': harness.env('TRUSTPOOL_KEYSTONE_URL'),
            'auth_url': harness.env('TRUSTPOOL_KEYSTONE_URL'),
            'auth_type': 'password',
            'username': harness.env('TRUSTPOOL_KEYSTONE_USER'),
            'password': harness.env('TRUSTPOOL_KEYSTONE_PASSWORD'),
            'project_name': harness.env('TRUSTPOOL_KEYSTONE_PROJECT'),
            'user_domain_name': 'Default',
            'project_domain_name': 'Default',
            'delay_auth_decision': False,
            'include_service_catalog': False,
            'token_cache_time': 300,
            # Its own options object: registering the password plugin's
            # options (auth_url required) in Nova's global CONF would break
            # the next test's configuration fixture.
            'oslo_config_config': cfg.ConfigOpts(),
        }
        self.auth = auth_token.AuthProtocol(self._inner(app), conf)

    def _inner(self, app):
        def inner(environ, start_response):
            self.convert(environ)
            return app(environ, start_response)
        return inner

    def __call__(self, environ, start_response):
        # Never trust identity headers from the client.
        for k in ('HTTP_X_AUTH_USER', 'HTTP_X_AUTH_PROJECT_ID'):
            environ.pop(k, None)
        return self.auth(environ, start_response)


def nova_identity(environ):
    # OSAPIFixture's stubbed NovaKeystoneContext reads these.
    environ['HTTP_X_AUTH_USER'] = environ['HTTP_X_USER_ID']
    environ['HTTP_X_AUTH_PROJECT_ID'] = environ['HTTP_X_PROJECT_ID']


def placement_identity(environ):
    # Placement's noauth2 middleware reads user:project from the token and
    # keeps the roles keystonemiddleware set.
    environ['HTTP_X_AUTH_TOKEN'] = '%s:%s' % (environ['HTTP_X_USER_ID'],
                                              environ['HTTP_X_PROJECT_ID'])


class TraitWriteHook(object):
    """Runs a function just before the first PUT of a provider's traits that
    arrives over the socket (the service's)."""

    def __init__(self, app):
        self.app = app
        self.armed = {}  # provider uuid -> function
        self.fired = []

    def __call__(self, environ, start_response):
        path = environ.get('PATH_INFO', '')
        parts = path.strip('/').split('/')
        if (environ['REQUEST_METHOD'] == 'PUT' and len(parts) == 3
                and parts[0] == 'resource_providers' and parts[2] == 'traits'):
            fn = self.armed.pop(parts[1], None)
            if fn is not None:
                fn()
                self.fired.append(parts[1])
        return self.app(environ, start_response)


class Served(object):
    """A WSGI app on a real socket, in a greenthread."""

    def __init__(self, app):
        sock = eventlet.listen(('127.0.0.1', 0))
        self.url = 'http://127.0.0.1:%d' % sock.getsockname()[1]
        self.thread = eventlet.spawn(
            eventlet.wsgi.server, sock, app, log_output=False,
            max_size=64)

    def stop(self):
        self.thread.kill()


class PlacementTraitsTest(harness.PatientWaits,
                          integrated_helpers._IntegratedTestBase):
    ADMIN_API = True
    microversion = 'latest'
    #: Scheduler filters; TrustedFilter is not among them: Placement alone
    #: keeps untrusted hosts out.
    FILTERS = STOCK_FILTERS

    def _setup_services(self):
        self.flags(api_paste_config=os.path.join(HERE, 'api-paste.ini'),
                   group='wsgi')
        self.flags(enabled_filters=self.FILTERS, group='filter_scheduler')
        self.flags(instances=-1, cores=-1, ram=-1, group='quota')
        super()._setup_services()

    def _setup_compute_service(self):
        self.computes_by_host = {}
        for h in HOSTS:
            self.computes_by_host[h] = self._start_compute(h)
        ctx = nova_context.get_admin_context()
        c3 = self.computes_by_host['host3']
        c3.manager.driver._set_nodes(NODES['host3'])
        c3.manager.update_available_resource(ctx)

    def setUp(self):
        super().setUp()
        placement_app = placement_deploy.deploy(
            self.placement.fixture.conf_fixture.conf)
        self.hook = TraitWriteHook(placement_app)
        self.placement_server = Served(
            KeystoneOnly(self.hook, placement_identity))
        self.addCleanup(self.placement_server.stop)
        self.nova_server = Served(
            KeystoneOnly(self.api_fixture.app(), nova_identity))
        self.addCleanup(self.nova_server.stop)
        self.addCleanup(self._restore_hosts)
        self.rp = {}
        for h in HOSTS:
            for n in NODES[h]:
                self.rp[n] = self._get_provider_uuid_by_name(n)
        self.assertNotIn('host3', [p['name'] for p in
                                   self._get_all_providers()])

    def _restore_hosts(self):
        control('POST', '/restore')
        control('DELETE', '/service')

    def start_trustpool(self, **kw):
        """(Re)starts the attestation service against this Nova."""
        body = {'placement_url': self.placement_server.url,
                'compute_url': self.nova_server.url + '/v2.1'}
        body.update(kw)
        return control('POST', '/service', body)

    # Placement views.

    def owned(self, node):
        """The provider's traits the service owns."""
        return sorted(t for t in self._get_provider_traits(self.rp[node])
                      if t.startswith('CUSTOM_TRUSTPOOL_'))

    def wait_owned(self, node, want):
        want = sorted(want)
        return wait_until('%s traits %s' % (node, want),
                          lambda: (self.owned(node) == want,
                                   self._get_provider_traits(self.rp[node])))

    def wait_host(self, host, want):
        for n in NODES[host]:
            self.wait_owned(n, want)

    def service(self, host):
        self.admin_api.microversion = '2.53'
        try:
            svcs = self.admin_api.api_get(
                'os-services?binary=nova-compute&host=%s' % host
            ).body['services']
        finally:
            self.admin_api.microversion = self.microversion
        self.assertEqual(1, len(svcs))
        return svcs[0]

    def wait_service(self, host, status, reason_prefix=None):
        def cond():
            s = self.service(host)
            ok = s['status'] == status and (
                reason_prefix is None
                or (s['disabled_reason'] or '').startswith(reason_prefix))
            return ok, s
        return wait_until('%s %s' % (host, status), cond)

    def boot(self, flavor, expected_state='ACTIVE', host=None):
        return self._create_server(flavor_id=flavor, networks='none',
                                   host=host, expected_state=expected_state)

    def notifications(self, event_type):
        return control('GET', '/notifications?event_type=' + event_type)

    # Scenarios.

    def test_traits_follow_verdicts(self):
        """Traits appear on every node of each trusted host (profile trait
        included), never on the untrusted one, go when a PCR is extended
        and come back when the host is trusted again; nova-compute's own
        traits stay throughout."""
        self.start_trustpool()
        for h in TRUSTED_HOSTS:
            self.wait_host(h, OURS)
        self.wait_host('host4', [])
        nova_traits = set(self._get_provider_traits(self.rp['host2'])) - OURS
        self.assertIn('COMPUTE_NODE', nova_traits)

        control('POST', '/hosts/host2/extend')
        self.wait_host('host2', [])
        self.assertEqual(nova_traits,
                         set(self._get_provider_traits(self.rp['host2'])))
        for h in ('host1', 'host3'):
            self.wait_host(h, OURS)

        control('POST', '/hosts/host2/restore')
        self.wait_host('host2', OURS)
        self.assertEqual(nova_traits | OURS,
                         set(self._get_provider_traits(self.rp['host2'])))

    def test_trait_flavor_lands_only_on_trusted_hosts(self):
        """With TrustedFilter disabled, a flavor requiring
        CUSTOM_TRUSTPOOL_TRUSTED (or the profile trait) lands only on
        trusted hosts: Placement's prefilter does it alone."""
        self.start_trustpool()
        for h in TRUSTED_HOSTS:
            self.wait_host(h, OURS)
        self.assertNotIn('TrustedFilter',
                         self.flags_enabled_filters())
        for spec in ({'trait:' + TRUSTED: 'required'},
                     {'trait:' + BASELINE: 'required'}):
            flavor = self._create_flavor(extra_spec=spec)
            landed = set()
            for _ in range(6):
                server = self.boot(flavor)
                landed.add(server['OS-EXT-SRV-ATTR:host'])
            self.assertTrue(landed <= set(TRUSTED_HOSTS), landed)
            server = self.boot(flavor, expected_state='ERROR', host='host4')
            self.assertIn('No valid host', server['fault']['message'])
        # host4 itself is a working host: an untagged flavor lands there.
        server = self.boot(self._create_flavor(), host='host4')
        self.assertEqual('host4', server['OS-EXT-SRV-ATTR:host'])
        # A revoked host drops out of the candidates.
        control('POST', '/hosts/host1/extend')
        self.wait_host('host1', [])
        flavor = self._create_flavor(extra_spec={'trait:' + TRUSTED:
                                                 'required'})
        server = self.boot(flavor, expected_state='ERROR', host='host1')
        self.assertIn('No valid host', server['fault']['message'])

    def flags_enabled_filters(self):
        from nova import conf
        return list(conf.CONF.filter_scheduler.enabled_filters)

    def test_concurrent_nova_compute_trait_updates(self):
        """nova-compute's own trait sync races the service on host1: it
        writes between the service's read and write (the service gets a
        409 and retries), then writes again with its stale generation (it
        gets a 409, refreshes and retries). Both sides' traits survive."""
        ctx = nova_context.get_admin_context()
        compute = self.computes_by_host['host1']
        driver = compute.manager.driver
        conflicts = []
        real_set = report.SchedulerReportClient.set_traits_for_provider

        def spy(client, context, rp_uuid, traits, *a, **kw):
            try:
                return real_set(client, context, rp_uuid, traits, *a, **kw)
            except Exception as e:
                conflicts.append(type(e).__name__)
                raise
        self.stub_out('nova.scheduler.client.report.SchedulerReportClient.'
                      'set_traits_for_provider', spy)

        def nova_compute_sync():
            # The operator upgraded something: no more multiattach.
            driver.capabilities = dict(driver.capabilities,
                                       supports_multiattach=False)
            compute.manager.update_available_resource(ctx)
        self.hook.armed[self.rp['host1']] = nova_compute_sync
        self.assertIn('COMPUTE_VOLUME_MULTI_ATTACH',
                      self._get_provider_traits(self.rp['host1']))

        api = self.start_trustpool()['api_url']
        self.wait_host('host1', OURS)
        self.assertEqual([self.rp['host1']], self.hook.fired)
        traits = set(self._get_provider_traits(self.rp['host1']))
        self.assertNotIn('COMPUTE_VOLUME_MULTI_ATTACH', traits)
        self.assertIn('COMPUTE_NODE', traits)
        metrics = urllib.request.urlopen(api + '/metrics').read().decode()
        self.assertIn(
            'trustpool_placement_trait_writes_total{result="conflict"} 1',
            metrics)

        # nova-compute's cached generation is stale now: its next write
        # conflicts, it reads the provider again and keeps our traits.
        driver.capabilities = dict(driver.capabilities,
                                   supports_multiattach=True)
        compute.manager.update_available_resource(ctx)
        self.assertIn('ResourceProviderUpdateConflict', conflicts)
        traits = set(self._get_provider_traits(self.rp['host1']))
        self.assertIn('COMPUTE_VOLUME_MULTI_ATTACH', traits)
        self.assertTrue(OURS <= traits, traits)

    def test_extend_disables_service_and_recovery_enables_it(self):
        """A PCR extend on host2: its traits go and its nova-compute service
        is disabled with a trustpool reason; once trusted again, the service
        is enabled again and the traits are back."""
        self.start_trustpool(disable=True)
        self.wait_host('host2', OURS)
        self.assertEqual('enabled', self.service('host2')['status'])
        control('POST', '/hosts/host2/extend')
        self.wait_host('host2', [])
        s = self.wait_service('host2', 'disabled', 'trustpool: untrusted: ')
        self.assertIn('replay_mismatch', s['disabled_reason'])
        # The scheduler keeps away from it for every flavor now.
        server = self.boot(self._create_flavor(), expected_state='ERROR',
                           host='host2')
        self.assertIn('No valid host', server['fault']['message'])
        notes = self.notifications('trustpool.host.compute_disabled')
        self.assertIn('host2', [n['payload']['host'] for n in notes])

        control('POST', '/hosts/host2/restore')
        self.wait_service('host2', 'enabled')
        self.wait_host('host2', OURS)
        # Enabling the service makes nova-compute drop its
        # COMPUTE_STATUS_DISABLED trait; when that write meets ours on the
        # provider it gets a 409 and leaves the trait to its periodic
        # update_available_resource (every minute in a deployment): run it.
        self.computes_by_host['host2'].manager.update_available_resource(
            nova_context.get_admin_context())
        traits = set(self._get_provider_traits(self.rp['host2']))
        self.assertNotIn('COMPUTE_STATUS_DISABLED', traits)
        self.assertTrue(OURS <= traits, traits)
        self.assertEqual('host2', self.boot(self._create_flavor(),
                                            host='host2')
                         ['OS-EXT-SRV-ATTR:host'])

    def test_operator_disable_stays(self):
        """An operator's disable is never overridden nor undone, neither
        when the host turns untrusted nor when it is trusted again; a
        Trustpool disable whose reason the operator replaced stays too."""
        self.start_trustpool(disable=True)
        self.wait_host('host1', OURS)
        self.admin_api.microversion = '2.53'
        try:
            sid1 = self.service('host1')['id']
            self.admin_api.api_put('os-services/%s' % sid1, {
                'status': 'disabled', 'disabled_reason': 'maintenance'})
        finally:
            self.admin_api.microversion = self.microversion
        control('POST', '/hosts/host1/extend')
        self.wait_host('host1', [])
        control('POST', '/hosts/host1/restore')
        self.wait_host('host1', OURS)
        time.sleep(1)  # the service's enable decision has been taken
        s = self.service('host1')
        self.assertEqual(('disabled', 'maintenance'),
                         (s['status'], s['disabled_reason']))

        control('POST', '/hosts/host3/extend')
        self.wait_service('host3', 'disabled', 'trustpool: ')
        self.admin_api.microversion = '2.53'
        try:
            self.admin_api.api_put(
                'os-services/%s' % self.service('host3')['id'],
                {'status': 'disabled', 'disabled_reason': 'investigating'})
        finally:
            self.admin_api.microversion = self.microversion
        control('POST', '/hosts/host3/restore')
        self.wait_host('host3', OURS)
        time.sleep(1)
        s = self.service('host3')
        self.assertEqual(('disabled', 'investigating'),
                         (s['status'], s['disabled_reason']))

    def test_mass_revocation_brake(self):
        """Brake at more than 25 % of the 4 hosts (and at least 2) within
        the window: the first extended host is disabled, the second trips
        the brake: it stays enabled and an ERROR alert names both."""
        control('DELETE', '/notifications')
        self.start_trustpool(disable=True, brake_percent=25, brake_min_hosts=2,
                           brake_window='10m')
        self.wait_host('host1', OURS)
        control('POST', '/hosts/host1/extend')
        self.wait_service('host1', 'disabled', 'trustpool: ')
        control('POST', '/hosts/host2/extend')
        notes = wait_until('brake alert', lambda: (lambda n: (bool(n), n))(
            self.notifications('trustpool.revocation.brake_engaged')))
        self.assertEqual(1, len(notes))
        self.assertEqual('ERROR', notes[0]['priority'])
        self.assertEqual(['host1', 'host2'], notes[0]['payload']['hosts'])
        self.assertEqual(4, notes[0]['payload']['hosts_total'])
        self.wait_host('host2', [])  # traits are not braked
        time.sleep(1)
        self.assertEqual('enabled', self.service('host2')['status'])
        self.assertEqual('disabled', self.service('host1')['status'])

    def test_expired_traits_go_after_downtime(self):
        """The service stops; host1's agent stops too, so its verdict
        expires unrenewed while nobody can update Placement. The restarted
        service removes host1's traits before anything else and keeps the
        others'; a periodic reconcile repairs traits changed by hand."""
        self.start_trustpool(reconcile_interval='2s')
        for h in TRUSTED_HOSTS:
            self.wait_host(h, OURS)
        control('DELETE', '/service')
        expires = control('POST', '/hosts/host1/agent/stop')['expires_at']
        wait_until('host1 verdict expired', lambda: (
            time.time() > expires + 0.5, expires))
        self.assertEqual(sorted(OURS), self.owned('host1'))  # stale
        self.start_trustpool(reconcile_interval='2s')
        self.wait_host('host1', [])
        for h in ('host2', 'host3'):
            self.wait_host(h, OURS)
        # Drift: ours removed from host2 and forged on host4 by hand.
        self._set_provider_traits(self.rp['host2'], ['COMPUTE_NODE'])
        self._set_provider_traits(self.rp['host4'],
                                  ['COMPUTE_NODE', TRUSTED])
        self.wait_host('host2', OURS)
        self.wait_host('host4', [])
        control('POST', '/hosts/host1/agent/start')
        self.wait_host('host1', OURS)
