#!/usr/bin/python3
"""Send oslo.messaging notifications (driver messagingv2) and exit.

--notifications is a JSON list of objects (or "-": read it from stdin)
  {"priority": "info", "event_type": "x.y", "payload": <any JSON>}
sent in order with one Notifier (publisher_id from --publisher-id) to every
--topic. Prints {"sent": N} when done.
"""
import argparse
import json
import sys

import oslo_messaging as om

import interop_common as common


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_transport_args(p)
    p.add_argument('--topic', action='append', required=True,
                   help='notification topic (repeatable)')
    p.add_argument('--publisher-id', required=True)
    p.add_argument('--context', default='{}', help='request context, JSON object')
    p.add_argument('--notifications', required=True, help='JSON list, see above')
    args = p.parse_args()

    ctxt = json.loads(args.context)
    if args.notifications == '-':
        items = json.load(sys.stdin)
    else:
        items = json.loads(args.notifications)
    transport = common.notification_transport(args)
    notifier = om.Notifier(transport, publisher_id=args.publisher_id,
                           driver='messagingv2', topics=args.topic)
    for n in items:
        # Notifier.info/.error/... are thin wrappers over _notify with the
        # upper-cased priority; call them by name as a service would.
        getattr(notifier, n['priority'].lower())(ctxt, n['event_type'], n['payload'])
    transport.cleanup()
    common.emit({'sent': len(items)})
    return 0


if __name__ == '__main__':
    sys.exit(main())
