"""Real Nova (Zed) objects and a real HostManager for filter tests
(environment-recipes.md 4a): no database, no RPC."""
from unittest import mock

import nova.conf
import trustpool_filter  # noqa: F401  registers [trustpool] on nova.conf.CONF
from nova import objects
from nova.scheduler import host_manager
from oslo_utils import timeutils
from oslo_utils import uuidutils

CONF = nova.conf.CONF
_initialised = False

#: Nova's default filters (Zed) -- the "stock filters" of the tests/bench.
STOCK_FILTERS = ['ComputeFilter', 'ComputeCapabilitiesFilter',
                 'ImagePropertiesFilter', 'ServerGroupAntiAffinityFilter',
                 'ServerGroupAffinityFilter']


def init():
    global _initialised
    if not _initialised:
        CONF([], project='nova', default_config_files=[])
        objects.register_all()
        _initialised = True


def make_host(name, node_id=1):
    now = timeutils.utcnow()
    cn = objects.ComputeNode(
        id=node_id, uuid=uuidutils.generate_uuid(), host=name,
        hypervisor_hostname=name, vcpus=8, vcpus_used=0, memory_mb=16384,
        memory_mb_used=0, free_ram_mb=16384, local_gb=100, local_gb_used=0,
        free_disk_gb=100, disk_available_least=100, hypervisor_type='QEMU',
        hypervisor_version=6002000, cpu_info='{}', host_ip='127.0.0.1',
        numa_topology=None,
        pci_device_pools=objects.PciDevicePoolList(objects=[]),
        running_vms=0, current_workload=0, stats={}, supported_hv_specs=[],
        metrics='[]', cpu_allocation_ratio=16.0, ram_allocation_ratio=1.5,
        disk_allocation_ratio=1.0, updated_at=now)
    svc = objects.Service(host=name, binary='nova-compute', disabled=False,
                          forced_down=False, updated_at=now, created_at=now,
                          last_seen_up=now)
    hs = host_manager.HostState(name, name, uuidutils.generate_uuid())
    hs.update(compute=cn, service=svc, aggregates=[], inst_dict={})
    return hs


def make_spec(extra_specs, num_instances=1, hints=None):
    flavor = objects.Flavor(id=1, flavorid='f1', name='m1.trusted', vcpus=1,
                            memory_mb=512, root_gb=1, ephemeral_gb=0, swap=0,
                            extra_specs=extra_specs)
    return objects.RequestSpec(
        flavor=flavor, project_id='p1', user_id='u1',
        instance_uuid=uuidutils.generate_uuid(), num_instances=num_instances,
        image=objects.ImageMeta.from_dict({'properties': {}}),
        ignore_hosts=None, force_hosts=None, force_nodes=None,
        scheduler_hints=hints or {}, requested_destination=None,
        availability_zone=None, instance_group=None, is_bfv=False,
        pci_requests=objects.InstancePCIRequests(requests=[]),
        numa_topology=None, retry=None)


def host_manager_with(enabled, shim_socket=None, shim_timeout=None,
                      verdict_source='socket', snapshot_file=None,
                      snapshot_max_age=None):
    """A real HostManager whose enabled filters are `enabled`; TrustedFilter
    asks shim_socket (verdict_source socket) or reads snapshot_file."""
    init()
    CONF.set_override('available_filters',
                      ['nova.scheduler.filters.all_filters',
                       'trustpool_filter.TrustedFilter'], 'filter_scheduler')
    CONF.set_override('enabled_filters', enabled, 'filter_scheduler')
    CONF.set_override('track_instance_changes', False, 'filter_scheduler')
    if shim_socket is not None:
        CONF.set_override('shim_socket', shim_socket, 'trustpool')
    if shim_timeout is not None:
        CONF.set_override('shim_timeout', shim_timeout, 'trustpool')
    CONF.set_override('verdict_source', verdict_source, 'trustpool')
    if snapshot_file is not None:
        CONF.set_override('snapshot_file', snapshot_file, 'trustpool')
    if snapshot_max_age is not None:
        CONF.set_override('snapshot_max_age', snapshot_max_age, 'trustpool')
    # The only DB touch points of HostManager.__init__.
    with mock.patch.object(host_manager.HostManager, 'refresh_cells_caches'), \
            mock.patch.object(host_manager.HostManager, '_init_aggregates'):
        return host_manager.HostManager()
