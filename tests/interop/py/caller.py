#!/usr/bin/python3
"""Long-running oslo.messaging RPC caller driven through stdin.

Reads one JSON command per line:
  {"method": "echo", "args": {"value": 1}, "timeout": 30,
   "server": null, "fanout": false, "cast": false}
and answers each with one JSON line {"ok": true, "result": ...} or
{"ok": false, "error": {...exception description...}}. One transport for the
whole run, so the test can restart the broker under a process that stays up.
Prints "ready" at start; exits 0 at end of input or on SIGTERM.
"""
import argparse
import json
import signal
import sys

import oslo_messaging as om

import interop_common as common


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_transport_args(p)
    p.add_argument('--topic', required=True)
    args = p.parse_args()

    def on_signal(signum, frame):
        # Reading stdin is restarted after a signal handler returns, so
        # leave the loop by raising.
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    transport = common.rpc_transport(args)
    client = om.get_rpc_client(transport, om.Target(topic=args.topic), timeout=60)
    print('ready', flush=True)
    try:
        serve(client)
    except SystemExit:
        pass
    transport.cleanup()
    return 0


def serve(client):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        c = client.prepare(server=cmd.get('server'), fanout=cmd.get('fanout', False),
                           timeout=cmd.get('timeout', 60))
        try:
            if cmd.get('cast'):
                c.cast({}, cmd['method'], **cmd.get('args', {}))
                res = None
            else:
                res = c.call({}, cmd['method'], **cmd.get('args', {}))
        except Exception as e:  # noqa: reported to the test
            common.emit({'ok': False, 'error': common.describe_exception(e)})
            continue
        common.emit({'ok': True, 'result': res})


if __name__ == '__main__':
    sys.exit(main())
