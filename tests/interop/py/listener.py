#!/usr/bin/python3
"""oslo.messaging notification listener on its own pool queue.

Binds queue --pool to <exchange> with routing keys <topic>.<priority> (all
priorities) and prints each notification as one JSON line:
  {"priority": ..., "publisher_id": ..., "event_type": ..., "payload": ...,
   "metadata": {"message_id": ..., "timestamp": ...}, "ctxt": {...}}
Prints "ready" once bound; exits 0 after --count notifications (0: run until
SIGTERM).
"""
import argparse
import sys
import threading

import oslo_messaging as om

import interop_common as common

PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical', 'sample')


class Endpoint(object):
    def __init__(self, count, done):
        self._lock = threading.Lock()
        self._seen = 0
        self._count = count
        self._done = done

    def _handle(self, priority, ctxt, publisher_id, event_type, payload, metadata):
        with self._lock:
            common.emit({'priority': priority, 'publisher_id': publisher_id,
                         'event_type': event_type, 'payload': payload,
                         'metadata': metadata, 'ctxt': ctxt})
            self._seen += 1
            if self._count and self._seen >= self._count:
                self._done.set()
        return om.NotificationResult.HANDLED


def _make(priority):
    def method(self, ctxt, publisher_id, event_type, payload, metadata):
        return self._handle(priority, ctxt, publisher_id, event_type, payload, metadata)
    method.__name__ = priority
    return method


for _p in PRIORITIES:
    setattr(Endpoint, _p, _make(_p))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_transport_args(p)
    p.add_argument('--topic', action='append', required=True,
                   help='notification topic (repeatable)')
    p.add_argument('--pool', required=True, help='pool = private queue name')
    p.add_argument('--count', type=int, default=0)
    args = p.parse_args()

    done = common.stop_event()
    transport = common.notification_transport(args)
    targets = [om.Target(topic=t, exchange=args.exchange) for t in args.topic]
    listener = om.get_notification_listener(
        transport, targets, [Endpoint(args.count, done)], executor='threading',
        pool=args.pool)
    listener.start()
    print('ready', flush=True)
    while not done.wait(0.5):
        pass
    listener.stop()
    listener.wait()
    transport.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
