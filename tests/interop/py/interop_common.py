"""Shared helpers for the oslo.messaging interop scripts.

Run every script with the Debian interpreter, /usr/bin/python3 (Zed
python3-oslo.messaging). Pitfalls handled here (see
environment-recipes.md section 3):

* the global cfg.CONF must be used: some options (oslo_messaging_metrics)
  are registered only on it;
* metrics_thread_stop_timeout must be 0, or every process hangs about 10 s
  at exit waiting for a non-daemon metrics thread;
* SIGTERM must stop servers and listeners cleanly (SIGINT does not reliably).
"""
import json
import signal
import sys
import threading

from oslo_config import cfg
import oslo_messaging as om


def add_transport_args(parser):
    parser.add_argument('--transport-url', required=True,
                        help='oslo transport_url, e.g. rabbit://guest:guest@127.0.0.1:5672/')
    parser.add_argument('--exchange', default='openstack',
                        help='control_exchange (default openstack)')


def setup_conf(args):
    """Initialise the global CONF and the transport defaults."""
    conf = cfg.CONF
    conf([], project='trustpool-interop')
    conf.set_override('metrics_thread_stop_timeout', 0,
                      group='oslo_messaging_metrics')
    om.set_transport_defaults(control_exchange=args.exchange)
    return conf


def rpc_transport(args, **kwargs):
    return om.get_rpc_transport(setup_conf(args), url=args.transport_url,
                                **kwargs)


def notification_transport(args):
    return om.get_notification_transport(setup_conf(args),
                                         url=args.transport_url)


def stop_event():
    """An Event set by SIGTERM or SIGINT."""
    ev = threading.Event()

    def handler(signum, frame):
        ev.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return ev


def emit(obj):
    """Print one JSON document on its own line and flush."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, sort_keys=True) + '\n')
    sys.stdout.flush()


def describe_exception(exc):
    """A JSON-friendly description of an exception raised by a call."""
    d = {
        'class': type(exc).__name__,
        'module': type(exc).__module__,
        'str': str(exc),
        'first_line': str(exc).split('\n', 1)[0],
        'is_value_error': isinstance(exc, ValueError),
        'is_remote_error': isinstance(exc, om.RemoteError),
        'is_timeout': isinstance(exc, om.MessagingTimeout),
    }
    if isinstance(exc, om.RemoteError):
        d['exc_type'] = exc.exc_type
        d['value'] = exc.value
    return d
