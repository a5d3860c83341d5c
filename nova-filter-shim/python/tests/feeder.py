#!/usr/bin/python3
"""Plays the attestation service on the bus for the filter tests.

Python oslo.messaging (Zed) with the threading executor, so it runs in its
own process, away from anything eventlet may patch:

* an RPC server on topic trustpool-attestation answering get_verdicts()
  with {"verdicts": <the current snapshot>};
* a fanout RPC client casting verdicts_changed(verdicts=[...]) on topic
  trustpool-verdicts.

Usage: feeder.py --transport-url URL. Prints {"ready": true} once consuming,
then reads one JSON command per line on stdin and answers one JSON line:
  {"op": "snapshot", "verdicts": [...]}   set get_verdicts' answer
  {"op": "cast", "verdicts": [...]}       fanout cast verdicts_changed
  {"op": "calls"}                         how many get_verdicts were answered
EOF of stdin stops it.
"""
import argparse
import json
import sys
import threading

from oslo_config import cfg
import oslo_messaging as om


class Endpoint(object):
    target = om.Target(version='1.0')

    def __init__(self):
        self.lock = threading.Lock()
        self.snapshot = []
        self.calls = 0

    def get_verdicts(self, ctxt):
        with self.lock:
            self.calls += 1
            return {'verdicts': list(self.snapshot)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--transport-url', required=True)
    p.add_argument('--exchange', default='trustpool')
    args = p.parse_args()
    conf = cfg.CONF
    conf([], project='trustpool-filter-test-feeder')
    conf.set_override('metrics_thread_stop_timeout', 0,
                      group='oslo_messaging_metrics')
    om.set_transport_defaults(control_exchange=args.exchange)
    transport = om.get_rpc_transport(conf, url=args.transport_url)
    ep = Endpoint()
    server = om.get_rpc_server(
        transport, om.Target(topic='trustpool-attestation', server='feeder'),
        [ep], executor='threading')
    server.start()
    fanout = om.get_rpc_client(
        transport, om.Target(topic='trustpool-verdicts', version='1.0',
                             fanout=True))

    def out(obj):
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()

    out({'ready': True})
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.get('op')
            if op == 'snapshot':
                with ep.lock:
                    ep.snapshot = cmd['verdicts']
                out({'ok': True})
            elif op == 'cast':
                fanout.cast({}, 'verdicts_changed', verdicts=cmd['verdicts'])
                out({'ok': True})
            elif op == 'calls':
                with ep.lock:
                    out({'ok': True, 'calls': ep.calls})
            else:
                out({'ok': False, 'error': 'unknown op %r' % op})
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


if __name__ == '__main__':
    main()
