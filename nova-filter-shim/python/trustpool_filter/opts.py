"""The ``[trustpool]`` options the filter reads from nova.conf."""

from oslo_config import cfg

GROUP = 'trustpool'

OPTS = [
    cfg.StrOpt(
        'shim_socket',
        default='/run/trustpool/filter-shim.sock',
        help='Unix socket of the local trustpool-filter-shim '
             '([filter_shim] socket_path of filter-shim.toml).'),
    cfg.FloatOpt(
        'shim_timeout',
        default=0.5,
        min=0.001,
        help='Seconds to wait for the shim, for connecting and for each '
             'read. An unreachable, slow or failing shim means no host '
             'passes for a flavor that asks for trust.'),
]


def register_opts(conf):
    """Register the options on conf (idempotent)."""
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    """For oslo-config-generator (entry point oslo.config.opts)."""
    return [(GROUP, OPTS)]
