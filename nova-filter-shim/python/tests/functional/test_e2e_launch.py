"""Trusted launch end to end through Nova's real control plane: Nova's own
functional-test base in-process (API, conductor, scheduler, fake-virt
computes host1-host3, Placement) as in test_e2e_attested, with
TrustedFilter asking the real trustpool-filter-shim, and three changes that
let the real Trustpool services see this Nova:

  - Nova's versioned notifier is a real oslo.messaging Notifier
    (messagingv2, topic versioned_notifications, exchange nova) on the real
    RabbitMQ: instance.create.end goes onto the bus exactly as nova-compute
    sends it ([notifications] notification_format = versioned);
  - the API is not stubbed (STUB_KEYSTONE = False): keystonemiddleware's
    auth_token validates every request against the real Keystone (its
    options are in the api-paste.ini this test writes) and Nova builds its
    request context from it; the test's own API clients send real tokens;
  - the same API application also listens on a real 127.0.0.1 port, so the
    attestation service (with its Nova account) and the trustpool CLI (with
    the tenant's) reach it through the Keystone catalog or
    endpoint_override.

The fake virt driver's spawn also creates <root>/<host>/<instance uuid>,
which is what the agent of that host (directory injector) sees as the
instance running there, and <root>/<host>/<instance uuid>.owner with the
instance's project, as libvirt's Nova metadata records it.

The Go test tests/integration/nova_launch_test.go (TestNovaLaunch) starts
everything else and drives this module: it runs test_launch_servers, which
boots the servers it is told to (as the tenant, on a trust:profile flavor),
reports each one as a JSON line in TRUSTPOOL_E2E_EVENTS, and keeps Nova up
until the Go test creates the file TRUSTPOOL_E2E_DONE.

Environment:
  TRUSTPOOL_SHIM_SOCKET, TRUSTPOOL_SHIM_LOG, TRUSTPOOL_E2E_HOSTS  as in
                             test_e2e_attested
  TRUSTPOOL_TRANSPORT_URL    the RabbitMQ Nova notifies on
  TRUSTPOOL_INSTANCES_ROOT   <root>/<host>/ are the hosts' instance dirs
  TRUSTPOOL_NOVA_API_PORT    the real port to serve Nova's API on
  TRUSTPOOL_KEYSTONE_URL     Keystone (v3)
  TRUSTPOOL_NOVA_USER, TRUSTPOOL_NOVA_PASSWORD  Nova's service user
  TRUSTPOOL_ADMIN_TOKEN      a token with the admin role (flavors)
  TRUSTPOOL_TENANT_TOKEN, TRUSTPOOL_TENANT_PROJECT  the tenant
  TRUSTPOOL_E2E_SERVERS      JSON list of {"name", "launch_id"?, "as"?} to
                             boot, as the tenant or ("as": "admin") the admin
  TRUSTPOOL_E2E_EVENTS, TRUSTPOOL_E2E_DONE  the files shared with Go
"""
import json
import os
import tempfile
import time
import unittest

import eventlet
import eventlet.wsgi
import fixtures
import oslo_messaging
from oslo_config import cfg

from nova import rpc
from nova.tests.functional import integrated_helpers
from nova.tests.functional.api import client
from nova.virt import fake

from functional import test_e2e_attested
from functional import test_functional

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = 'baseline'


def _paste_ini():
    """Nova's api-paste.ini with auth_token's options filled in."""
    with open(os.path.join(HERE, 'api-paste.ini')) as f:
        text = f.read()
    ks = harness.env('TRUSTPOOL_KEYSTONE_URL')
    opts = {
        'www_authenticate_uri': ks, 'auth_url': ks, 'auth_type': 'password',
        'username': harness.env('TRUSTPOOL_NOVA_USER'),
        'password': harness.env('TRUSTPOOL_NOVA_PASSWORD'),
        'user_domain_name': 'Default', 'project_name': 'service',
        'project_domain_name': 'Default', 'service_token_roles_required': 'true',
    }
    section = '[filter:authtoken]\npaste.filter_factory = keystonemiddleware.auth_token:filter_factory\n'
    assert section in text, 'api-paste.ini has no authtoken filter'
    text = text.replace(section, section + ''.join(
        '%s = %s\n' % kv for kv in sorted(opts.items())))
    f = tempfile.NamedTemporaryFile('w', suffix='-api-paste.ini', delete=False)
    f.write(text)
    f.close()
    return f.name


class LaunchBootTest(test_e2e_attested.AttestedBootTest):
    STUB_KEYSTONE = False
    microversion = 'latest'

    def _setup_services(self):
        # TrustedBootTest._setup_services, with the real-auth paste file.
        self.flags(api_paste_config=_paste_ini(), group='wsgi')
        self.flags(available_filters=['nova.scheduler.filters.all_filters',
                                      'trustpool_filter.TrustedFilter'],
                   group='filter_scheduler')
        self.flags(enabled_filters=[
            'ComputeFilter', 'ComputeCapabilitiesFilter',
            'ImagePropertiesFilter', 'ServerGroupAntiAffinityFilter',
            'ServerGroupAffinityFilter', 'TrustedFilter'],
            group='filter_scheduler')
        self.flags(shim_socket=test_functional._shim.socket,
                   shim_timeout=2.0, group='trustpool')
        integrated_helpers._IntegratedTestBase._setup_services(self)

    def setUp(self):
        super().setUp()
        # The test's API clients send real tokens: the tenant's for the
        # tenant client, the admin's for the fixture's clients.
        tokens = {'admin': harness.env('TRUSTPOOL_ADMIN_TOKEN'),
                  'tenant': harness.env('TRUSTPOOL_TENANT_TOKEN')}
        orig_request = client.TestOpenStackClient.request

        def request(api, url, method='GET', body=None, headers=None):
            headers = dict(headers or {})
            headers['X-Auth-Token'] = tokens[
                'tenant' if api.auth_user == 'tenant' else 'admin']
            return orig_request(api, url, method=method, body=body,
                                headers=headers)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.functional.api.client.TestOpenStackClient.request',
            request))

        # The "hypervisor" of each host records its instances where that
        # host's agent looks for them.
        root = harness.env('TRUSTPOOL_INSTANCES_ROOT')
        orig_spawn = fake.FakeDriver.spawn

        def spawn(driver, context, instance, *args, **kwargs):
            orig_spawn(driver, context, instance, *args, **kwargs)
            host_dir = os.path.join(root, driver._host)
            os.makedirs(os.path.join(host_dir, instance.uuid), mode=0o700)
            # The owner libvirt's Nova metadata would record.
            with open(os.path.join(host_dir, instance.uuid + '.owner'),
                      'w') as f:
                f.write(instance.project_id)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.fake.FakeDriver.spawn', spawn))

        # Nova's versioned notifications onto the real bus.
        self.flags(notification_format='versioned', group='notifications')
        oslo_messaging.set_transport_defaults(control_exchange='nova')
        conf = cfg.ConfigOpts()
        conf([])
        transport = oslo_messaging.get_notification_transport(
            conf, url=harness.env('TRUSTPOOL_TRANSPORT_URL'))
        self.addCleanup(transport.cleanup)
        notifier = oslo_messaging.Notifier(
            transport, publisher_id='nova', driver='messagingv2',
            topics=['versioned_notifications'],
            serializer=rpc.ProfilerRequestContextSerializer(
                rpc.JsonPayloadSerializer()))
        self.stub_out('nova.rpc.NOTIFIER', notifier)

        # The API on a real port.
        sock = eventlet.listen(
            ('127.0.0.1', int(harness.env('TRUSTPOOL_NOVA_API_PORT'))))
        app = self.api_fixture.app()
        server = eventlet.spawn(eventlet.wsgi.server, sock, app,
                                log=open(os.devnull, 'w'))
        self.addCleanup(sock.close)
        self.addCleanup(server.kill)

        self.tenant_api = client.TestOpenStackClient(
            'tenant', self.api_fixture.api.base_url,
            project_id=harness.env('TRUSTPOOL_TENANT_PROJECT'))
        self.tenant_api.microversion = 'latest'

    def _event(self, **kv):
        with open(harness.env('TRUSTPOOL_E2E_EVENTS'), 'a') as f:
            f.write(json.dumps(kv) + '\n')

    def test_launch_servers(self):
        flavor = self._create_flavor(extra_spec={'trust:profile': PROFILE})
        for spec in json.loads(harness.env('TRUSTPOOL_E2E_SERVERS')):
            body = self._build_server(name=spec['name'], flavor_id=flavor,
                                      networks='none')
            if spec.get('launch_id'):
                body['metadata'] = {'trustpool_launch': spec['launch_id']}
            api = self.admin_api if spec.get('as') == 'admin' else self.tenant_api
            created = api.post_server({'server': body})
            server = self._wait_for_state_change(created, 'ACTIVE')
            seen = api.get_server(server['id'])
            self._event(event='booted', name=spec['name'], id=server['id'],
                        host=server['OS-EXT-SRV-ATTR:host'],
                        host_id=seen['hostId'],
                        project=seen['tenant_id'])
        self._event(event='ready')
        done = harness.env('TRUSTPOOL_E2E_DONE')
        deadline = time.time() + 600
        while not os.path.exists(done):
            self.assertLess(time.time(), deadline, 'the Go test never finished')
            eventlet.sleep(0.2)


# Only test_launch_servers runs here.
for _name in unittest.TestLoader().getTestCaseNames(
        test_e2e_attested.AttestedBootTest):
    if _name != 'test_launch_servers':
        setattr(LaunchBootTest, _name, None)
del _name

setUpModule = test_e2e_attested.setUpModule
tearDownModule = test_e2e_attested.tearDownModule


if __name__ == '__main__':
    unittest.main()
