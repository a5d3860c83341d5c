#!/usr/bin/python3
"""oslo.messaging RPC server with the interop method set.

Methods (same set as `go run ./tests/cmd/oslo-peer serve`):
  echo(value)          returns value unchanged
  fail(kind, message)  kind "value": raises ValueError(message);
                       kind "plain": raises TrustpoolError(message);
                       any other kind: raises InteropError(message);
                       both custom classes live in module trustpool.exception,
                       so Python callers get oslo_messaging.RemoteError with
                       exc_type set to the class name
  sleep(seconds)       sleeps, returns seconds
  record(value)        appends value to a list (cast target)
  recorded()           returns the list of recorded values
  context()            returns the request context the server received
                       (oslo's added client_timeout key removed)

Prints "ready" on stdout once the server is consuming; exits 0 on SIGTERM.
"""
import argparse
import sys
import threading
import time

import oslo_messaging as om

import interop_common as common


class TrustpoolError(Exception):
    pass


class InteropError(Exception):
    pass


# Same class/module as the Go peer's errors, so a caller sees the same
# failure whichever server answers.
TrustpoolError.__module__ = 'trustpool.exception'
InteropError.__module__ = 'trustpool.exception'


class Endpoint(object):
    def __init__(self, version, namespace):
        self.target = om.Target(version=version, namespace=namespace)
        self._lock = threading.Lock()
        self._recorded = []

    def echo(self, ctxt, value):
        return value

    def fail(self, ctxt, kind, message):
        if kind == 'value':
            raise ValueError(message)
        if kind == 'plain':
            raise TrustpoolError(message)
        raise InteropError(message)

    def sleep(self, ctxt, seconds):
        time.sleep(seconds)
        return seconds

    def record(self, ctxt, value):
        with self._lock:
            self._recorded.append(value)

    def recorded(self, ctxt):
        with self._lock:
            return list(self._recorded)

    def context(self, ctxt):
        return {k: v for k, v in ctxt.items() if k != 'client_timeout'}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_transport_args(p)
    p.add_argument('--topic', required=True)
    p.add_argument('--server', required=True)
    p.add_argument('--version', default='1.0', help='endpoint version')
    p.add_argument('--namespace', default=None, help='endpoint namespace')
    args = p.parse_args()

    stop = common.stop_event()
    transport = common.rpc_transport(args)
    target = om.Target(topic=args.topic, server=args.server)
    server = om.get_rpc_server(transport, target,
                               [Endpoint(args.version, args.namespace)],
                               executor='threading',
                               access_policy=om.DefaultRPCAccessPolicy)
    server.start()
    print('ready', flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    server.wait()
    transport.cleanup()
    print('stopped', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
