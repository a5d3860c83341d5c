"""TrustedFilter: place instances only on attested hosts.

The filter reads the flavor's ``trust:trusted_host`` and ``trust:profile``
extra specs (see :mod:`trustpool_filter.specs`). A request without them
passes every host and reads nothing at all. Otherwise ``filter_all`` keeps
the candidate hosts (``host_state.host``) whose verdict satisfies them,
taking the verdicts from (``[trustpool] verdict_source``):

- ``snapshot`` (the default): the file the local trustpool-filter-shim
  keeps up to date (:mod:`trustpool_filter.snapshot`), read again only
  when it changed, each host's expiry checked against this process's
  clock. No round trip to another process. If the file does not exist
  the socket is asked instead (a shim that writes no snapshot);
- ``socket``: one request with all candidates to the shim's unix socket
  (:mod:`trustpool_filter.client`).

Anything else fails closed and no host passes, so the request ends in "No
valid host": a snapshot that is unreadable, malformed, older than
``[trustpool] snapshot_max_age`` or says the shim is degraded; a shim
unreachable, slow (``[trustpool] shim_timeout``) or answering an error; an
invalid trust extra spec value.

The filter holds no per-request state: it is safe under eventlet and with
native threads (Nova 2026.1+); see the modules for their shared caches.
"""

import itertools
import logging as std_logging
import time

from oslo_log import log as logging

import nova.conf
from nova.scheduler import filters
from nova.scheduler import utils

from trustpool_filter import client
from trustpool_filter import opts
from trustpool_filter import snapshot
from trustpool_filter import specs

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
opts.register_opts(CONF)


#: A missing snapshot file is reported at most this often (seconds).
MISSING_WARN_INTERVAL = 60.0
_missing_warned = [-MISSING_WARN_INTERVAL]


def _extra_specs(spec_obj):
    try:
        flavor = spec_obj.flavor
    except (AttributeError, NotImplementedError):
        # An unset field of a Nova object raises NotImplementedError.
        return {}
    if flavor is None or not flavor.obj_attr_is_set('extra_specs'):
        return {}
    return flavor.extra_specs or {}


class TrustedFilter(filters.BaseHostFilter):
    """Pass hosts whose attestation verdict satisfies the flavor's trust specs."""

    # Rebuilds stay on their host; like Nova's old TrustedFilter, do not
    # re-judge it.
    RUN_ON_REBUILD = False
    # The verdicts do not change between the instances of one request.
    run_filter_once_per_request = True

    #: Builds the shim client; tests may replace it.
    client_class = client.ShimClient

    def filter_all(self, filter_obj_list, spec_obj):
        hosts = list(filter_obj_list)
        if not self.RUN_ON_REBUILD and utils.request_is_rebuild(spec_obj):
            return hosts
        try:
            want = specs.trust_request(_extra_specs(spec_obj))
        except specs.InvalidTrustSpec as e:
            LOG.error('TrustedFilter: %s; no host passes', e)
            return []
        if want is None or not hosts:
            return hosts
        trusted_host, profile = want
        conf = CONF.trustpool
        debug = LOG.isEnabledFor(std_logging.DEBUG)
        if conf.verdict_source == 'snapshot':
            try:
                return self._from_snapshot(hosts, conf, trusted_host,
                                           profile, debug)
            except snapshot.SnapshotMissing as e:
                t = time.monotonic()
                if t - _missing_warned[0] >= MISSING_WARN_INTERVAL:
                    _missing_warned[0] = t
                    LOG.warning('TrustedFilter: %s; asking the shim over %s '
                                'instead (set [trustpool] verdict_source = '
                                'socket if it writes no snapshot)',
                                e, conf.shim_socket)
            except snapshot.SnapshotError as e:
                LOG.error('TrustedFilter: verdict snapshot unusable (%s); no '
                          'host passes for %s=%s %s=%s', e,
                          specs.TRUSTED_HOST, trusted_host, specs.PROFILE,
                          profile)
                return []
            except Exception:  # noqa: BLE001 - a trust path fails closed
                LOG.exception('TrustedFilter: reading the verdict snapshot '
                              'failed; no host passes')
                return []
        return self._from_socket(hosts, conf, trusted_host, profile, debug)

    @staticmethod
    def _from_snapshot(hosts, conf, trusted_host, profile, debug):
        snap, now_ms = snapshot.usable(conf.snapshot_file,
                                       conf.snapshot_max_age)
        names, negate = snap.verdicts.answer(trusted_host, profile, now_ms)
        if debug:
            for name in dict.fromkeys(h.host for h in hosts):
                if (name in names) is negate:
                    LOG.debug('TrustedFilter: host %s rejected: %s', name,
                              snap.verdicts.reason(name, now_ms))
        return [h for h in hosts if (h.host in names) is not negate]

    def _from_socket(self, hosts, conf, trusted_host, profile, debug):
        names = [h.host for h in hosts]
        # Several nodes of one host (e.g. Ironic) are one question.
        unique = list(dict.fromkeys(names))
        shim = self.client_class(conf.shim_socket, conf.shim_timeout)
        try:
            if debug:
                # The reasons are only fetched for the debug log.
                passes, rejected = shim.filter(unique, trusted_host, profile,
                                               reasons=True)
                ok = set(passes)
                for name in unique:
                    if name not in ok:
                        LOG.debug('TrustedFilter: host %s rejected: %s', name,
                                  rejected.get(name,
                                               'not in the shim answer'))
                return [h for h in hosts if h.host in ok]
            bits = shim.mask(unique, trusted_host, profile)
        except client.ShimError as e:
            LOG.error('TrustedFilter: trust shim unavailable (%s); no host '
                      'passes for %s=%s %s=%s', e, specs.TRUSTED_HOST,
                      trusted_host, specs.PROFILE, profile)
            return []
        if len(bits) != len(unique):
            LOG.error('TrustedFilter: %d answers for %d hosts; no host passes',
                      len(bits), len(unique))
            return []
        if len(unique) == len(hosts):
            return list(itertools.compress(hosts, bits))
        ok = set(itertools.compress(unique, bits))
        return [h for h in hosts if h.host in ok]

    def host_passes(self, host_state, spec_obj):
        """One host at a time (for callers that do not use filter_all)."""
        return bool(self.filter_all([host_state], spec_obj))
