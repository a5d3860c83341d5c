"""The ``[trustpool]`` options the filter reads from nova.conf."""

from oslo_config import cfg

GROUP = 'trustpool'

OPTS = [
    cfg.StrOpt(
        'verdict_source',
        default='snapshot',
        choices=[
            ('snapshot', 'Read the verdict snapshot file the shim keeps '
                         '(snapshot_file): no round trip to the shim in a '
                         'scheduling pass. If the file does not exist (a '
                         'shim that writes none), ask over shim_socket.'),
            ('socket', 'Ask the shim over shim_socket in every scheduling '
                       'pass.'),
        ],
        help='Where TrustedFilter gets the verdicts from. Both fail closed: '
             'a missing, unreadable, malformed or stale snapshot, a '
             'snapshot saying the shim is degraded, or an unreachable, slow '
             'or failing shim means no host passes for a flavor that asks '
             'for trust.'),
    cfg.StrOpt(
        'snapshot_file',
        default='/run/trustpool/verdicts.snapshot',
        help='The verdict snapshot file of the local trustpool-filter-shim '
             '([filter_shim] snapshot_file of filter-shim.toml). '
             'nova-scheduler must be able to read it (group nova).'),
    cfg.FloatOpt(
        'snapshot_max_age',
        default=10.0,
        min=0.5,
        help='Seconds after which a snapshot the shim has not rewritten is '
             'stale and no host passes: the shim stopped or hangs, and '
             'revocations would go unseen. The shim rewrites it at least '
             'every [filter_shim] snapshot_file_interval (2 s by default); '
             'keep this several times that.'),
    cfg.StrOpt(
        'shim_socket',
        default='/run/trustpool/filter-shim.sock',
        help='Unix socket of the local trustpool-filter-shim '
             '([filter_shim] socket_path of filter-shim.toml).'),
    cfg.FloatOpt(
        'shim_timeout',
        default=0.5,
        min=0.001,
        help='Seconds to wait for the shim over shim_socket, for '
             'connecting and for each read. An unreachable, slow or '
             'failing shim means no host passes for a flavor that asks for '
             'trust.'),
]


def register_opts(conf):
    """Register the options on conf (idempotent)."""
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    """For oslo-config-generator (entry point oslo.config.opts)."""
    return [(GROUP, OPTS)]
