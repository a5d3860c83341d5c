"""Scheduling time of a trust flavor at 1,000 and 5,000 hosts, through
Nova's real scheduler: TrustedFilter alone against Placement's trait
prefilter plus TrustedFilter, in the same run.

A measurement, not a test: the one "test" below always passes when it ran
(it fails only when scheduling itself fails) and prints the numbers.

Set-up (Nova's own functional-test fixtures, in-process): the cell and API
databases, real Placement (python3-placement), the scheduler service with
Nova's default filters plus TrustedFilter, and a real trustpool-filter-shim
process fed signed verdicts over RabbitMQ for every host (half trusted
under profile "baseline"). Each compute node is a Service, a ComputeNode
and a HostMapping row plus a resource provider with inventory (1,000 VCPU,
800 GB RAM, 600 TB disk, as the fake driver reports) and, for the trusted
half, the traits trustpool's trait mirror writes. No compute service runs:
nothing but the scheduler is measured.

Each request is SchedulerManager.select_destinations for a new instance
(the whole scheduler path: request filters, GET /allocation_candidates,
host states, filters, weighers, the allocation claim), alternating:

  (a) flavor trust:profile=baseline                      (TrustedFilter)
  (b) the same + trait:CUSTOM_TRUSTPOOL_PROFILE_BASELINE=required
                                                         (Placement + filter)

Placement answers at most [scheduler] max_placement_results candidates
(Nova's default 1,000). Reported per size and variant: p50/p99 of the whole
select_destinations, of the Placement query, of reading the candidates'
compute node and service rows, of building their host states and filtering
them (all filters, TrustedFilter included), of the weighers, of the
allocation claim, how many candidates reached the filters and how many
passed. The scheduler logs at INFO (the filter asks for reasons only when
debug logging is on) and the host manager has every host's instance list
from its compute (track_instance_changes), as in a running cloud.

Run: make bench-placement (BENCH_SIZES, default "1000 5000";
BENCH_REQUESTS per variant and size, default 50: p99 is then the
largest).
Needs TRUSTPOOL_SHIM_BIN and TRUSTPOOL_TRANSPORT_URL (the Go test sets them).
"""
import json
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nova import context as nova_context  # noqa: E402
from nova import objects  # noqa: E402
from nova import test  # noqa: E402
from nova.scheduler import utils as scheduler_utils  # noqa: E402
from nova.tests import fixtures as nova_fixtures  # noqa: E402
from nova.tests.functional import fixtures as func_fixtures  # noqa: E402
from oslo_utils import uuidutils  # noqa: E402

import harness  # noqa: E402
import trustpool_filter  # noqa: E402,F401  registers [trustpool]

TRUSTED = 'CUSTOM_TRUSTPOOL_TRUSTED'
BASELINE = 'CUSTOM_TRUSTPOOL_PROFILE_BASELINE'
STOCK_FILTERS = ['ComputeFilter', 'ComputeCapabilitiesFilter',
                 'ImagePropertiesFilter', 'ServerGroupAntiAffinityFilter',
                 'ServerGroupAffinityFilter']

_feeder = None
_shim = None


def sizes():
    return [int(x) for x in os.environ.get('BENCH_SIZES', '1000 5000').split()]


def name(i):
    return 'compute-%05d' % i


def setUpModule():
    global _feeder, _shim
    url = harness.env('TRUSTPOOL_TRANSPORT_URL')
    _feeder = harness.Feeder(url)
    n = max(sizes())
    _feeder.snapshot([
        harness.signed(name(i), 'trusted', profiles=['baseline'])
        if i % 2 == 0 else harness.signed(name(i), 'untrusted')
        for i in range(n)])
    _shim = harness.Shim(harness.env('TRUSTPOOL_SHIM_BIN'), url,
                         name='bench-placement')
    _shim.wait_healthy()


def tearDownModule():
    if _shim:
        _shim.close()
    if _feeder:
        _feeder.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))]


class Timed(object):
    """Wraps a callable and records how long each call took."""

    def __init__(self, fn):
        self.fn = fn
        self.times, self.counts = [], []

    def __call__(self, *a, **kw):
        t = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.times.append(time.perf_counter() - t)

    def reset(self):
        self.times, self.counts = [], []


class SchedulingBenchmark(test.TestCase):
    USES_DB_SELF = False

    def setUp(self):
        super().setUp()
        self.flags(available_filters=['nova.scheduler.filters.all_filters',
                                      'trustpool_filter.TrustedFilter'],
                   group='filter_scheduler')
        self.flags(enabled_filters=STOCK_FILTERS + ['TrustedFilter'],
                   group='filter_scheduler')
        self.flags(shim_socket=_shim.socket, shim_timeout=2.0,
                   group='trustpool')
        # The computes are rows, not running services: keep them "up".
        self.flags(service_down_time=10 ** 7)
        self.placement = self.useFixture(func_fixtures.PlacementFixture()).api
        self.useFixture(nova_fixtures.AllServicesCurrent())
        self.ctx = nova_context.get_admin_context()
        self.scheduler = self.start_service('scheduler')
        self.cell = self.cell_mappings['cell1']
        self.made = 0
        for t in (TRUSTED, BASELINE):
            self.placement.put('/traits/' + t, None, version='1.6')

    def add_hosts(self, n):
        """Computes made[..n) as database rows and resource providers."""
        t = time.monotonic()
        with nova_context.target_cell(self.ctx, self.cell) as cctx:
            for i in range(self.made, n):
                h = name(i)
                svc = objects.Service(cctx, host=h, binary='nova-compute',
                                      topic='compute', report_count=0)
                svc.create()
                uuid = uuidutils.generate_uuid()
                objects.ComputeNode(
                    cctx, uuid=uuid, host=h, hypervisor_hostname=h,
                    service_id=svc.id, vcpus=1000, memory_mb=800000,
                    local_gb=600000, vcpus_used=0, memory_mb_used=0,
                    local_gb_used=0, free_ram_mb=800000, free_disk_gb=600000,
                    hypervisor_type='fake', hypervisor_version=1000,
                    cpu_info='{}', disk_available_least=600000,
                    host_ip='127.0.0.1', running_vms=0, current_workload=0,
                    supported_hv_specs=[], stats={}, numa_topology=None,
                    cpu_allocation_ratio=16.0, ram_allocation_ratio=1.5,
                    disk_allocation_ratio=1.0).create()
                objects.HostMapping(self.ctx, host=h,
                                    cell_mapping=self.cell).create()
                self.provider(uuid, h, trusted=(i % 2 == 0))
                # nova-compute reports its instances to the scheduler
                # (track_instance_changes): the host manager then reads no
                # instance list per host per request. The first report of
                # an unknown host only creates its entry.
                for _ in range(2):
                    self.scheduler.manager.host_manager.update_instance_info(
                        self.ctx, h, objects.InstanceList(objects=[]))
        self.made = n
        print('  %d hosts ready (%.0f s to create)'
              % (n, time.monotonic() - t), flush=True)

    def provider(self, uuid, h, trusted):
        r = self.placement.post('/resource_providers',
                                {'uuid': uuid, 'name': h}, version='1.20')
        self.assertEqual(200, r.status, r.body)
        r = self.placement.put('/resource_providers/%s/inventories' % uuid, {
            'resource_provider_generation': 0,
            'inventories': {
                'VCPU': {'total': 1000, 'allocation_ratio': 16.0},
                'MEMORY_MB': {'total': 800000, 'allocation_ratio': 1.5},
                'DISK_GB': {'total': 600000, 'allocation_ratio': 1.0}}},
            version='1.26')
        self.assertEqual(200, r.status, r.body)
        traits = ['COMPUTE_NODE'] + ([TRUSTED, BASELINE] if trusted else [])
        r = self.placement.put('/resource_providers/%s/traits' % uuid, {
            'resource_provider_generation': 1, 'traits': traits},
            version='1.6')
        self.assertEqual(200, r.status, r.body)

    def spec(self, extra_specs):
        flavor = objects.Flavor(id=1, flavorid='f1', name='m1.trusted',
                                vcpus=1, memory_mb=512, root_gb=1,
                                ephemeral_gb=0, swap=0, disabled=False,
                                is_public=True, rxtx_factor=1.0,
                                vcpu_weight=0, description=None,
                                extra_specs=extra_specs)
        return objects.RequestSpec(
            flavor=flavor, project_id='p1', user_id='u1',
            instance_uuid=uuidutils.generate_uuid(), num_instances=1,
            image=objects.ImageMeta.from_dict({'properties': {}}),
            ignore_hosts=None, force_hosts=None, force_nodes=None,
            scheduler_hints={}, requested_destination=None,
            availability_zone=None, instance_group=None, is_bfv=False,
            pci_requests=objects.InstancePCIRequests(requests=[]),
            numa_topology=None, retry=None,
            requested_resources=[],
            request_level_params=objects.RequestLevelParams(),
            security_groups=objects.SecurityGroupList(objects=[]),
            network_metadata=objects.NetworkMetadata(physnets=set(),
                                                     tunneled=False))

    def test_benchmark(self):
        # As a scheduler runs: INFO (Nova's test logging formats every DEBUG
        # message, and the filter would ask for the reasons of its debug
        # log).
        root = logging.getLogger()
        self.addCleanup(root.setLevel, root.level)
        root.setLevel(logging.INFO)
        mgr = self.scheduler.manager
        placement_q = Timed(mgr.placement_client.get_allocation_candidates)
        mgr.placement_client.get_allocation_candidates = placement_q
        hm = mgr.host_manager
        real_filtered = hm.get_filtered_hosts

        def filtered(host_states, spec_obj, index=0):
            # The host states come as an iterator: the time of reading them
            # from the database goes into the filters' time here.
            host_states = list(host_states)
            out = list(real_filtered(host_states, spec_obj, index))
            filtering.counts.append((len(host_states), len(out)))
            return out
        filtering = Timed(filtered)
        hm.get_filtered_hosts = filtering
        claim = Timed(scheduler_utils.claim_resources)
        self.stub_out('nova.scheduler.utils.claim_resources', claim)
        states = Timed(hm.get_host_states_by_uuids)
        hm.get_host_states_by_uuids = states
        weighing = Timed(hm.get_weighed_hosts)
        hm.get_weighed_hosts = weighing
        timers = (placement_q, filtering, claim, states, weighing)
        requests = int(os.environ.get('BENCH_REQUESTS', '50'))
        variants = [
            ('a', 'TrustedFilter only', {'trust:profile': 'baseline'}),
            ('b', 'trait prefilter + TrustedFilter',
             {'trust:profile': 'baseline', 'trait:' + BASELINE: 'required'}),
        ]
        results = {}
        print('\nScheduling benchmark: select_destinations for one '
              'instance, %d requests per variant and size, alternating'
              % requests, flush=True)
        for n in sizes():
            self.add_hosts(n)
            stats = {v[0]: {'total': [], 'placement': [], 'filters': [],
                            'claim': [], 'states': [], 'weighing': [],
                            'candidates': [], 'passed': []}
                     for v in variants}
            for i in range(requests + 5):
                order = variants if i % 2 == 0 else variants[::-1]
                for key, _, extra in order:
                    for tm in timers:
                        tm.reset()
                    spec = self.spec(extra)
                    t = time.perf_counter()
                    sel = mgr.select_destinations(
                        self.ctx, spec_obj=spec,
                        instance_uuids=[spec.instance_uuid],
                        return_objects=True, return_alternates=False)
                    total = time.perf_counter() - t
                    host = sel[0][0].service_host
                    self.assertEqual(0, int(host.rsplit('-', 1)[1]) % 2,
                                     'untrusted host %s chosen' % host)
                    if i < 5:
                        continue  # warm-up
                    s = stats[key]
                    s['total'].append(total)
                    s['placement'].append(sum(placement_q.times))
                    s['filters'].append(sum(filtering.times))
                    s['claim'].append(sum(claim.times))
                    s['states'].append(sum(states.times))
                    s['weighing'].append(sum(weighing.times))
                    s['candidates'].append(filtering.counts[0][0])
                    s['passed'].append(filtering.counts[0][1])
            for key, label, _ in variants:
                s = stats[key]
                r = {k: {'p50': round(pct(s[k], 50) * 1000, 3),
                         'p99': round(pct(s[k], 99) * 1000, 3)}
                     for k in ('total', 'placement', 'states', 'filters',
                               'weighing', 'claim')}
                r['candidates'] = pct(s['candidates'], 50)
                r['passed'] = pct(s['passed'], 50)
                results['%d/%s' % (n, key)] = r
                print('  %5d hosts (%s) %-31s candidates %4d, passing %4d'
                      % (n, key, label, r['candidates'], r['passed']))
                print('      ms p50/p99: select_destinations %.1f/%.1f | '
                      'placement query %.1f/%.1f | compute node rows '
                      '%.1f/%.1f | host states + filters %.1f/%.1f | '
                      'weighers %.1f/%.1f | claim %.1f/%.1f' % tuple(
                          r[k][p] for k in ('total', 'placement', 'states',
                                            'filters', 'weighing', 'claim')
                          for p in ('p50', 'p99')), flush=True)
        print('BENCH_JSON ' + json.dumps(results, sort_keys=True), flush=True)

