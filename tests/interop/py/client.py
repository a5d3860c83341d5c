#!/usr/bin/python3
"""Run a matrix of oslo.messaging calls, casts and fanout casts against an
interop server (py/server.py or `oslo-peer serve`) and print one JSON
document: {"cases": {name: {"ok": bool, "result": ..., "error": {...}}}}.

Each case checks its own expectation (exact value and JSON type for echo,
exception class for failures) and reports "ok"; the Go test compares the
whole document with what it expects, so a failure shows every difference.
"""
import argparse
import json
import sys
import time

import oslo_messaging as om

import interop_common as common

MIB = 1024 * 1024

# Values sent through echo(value); each must come back identical, type
# included (True is not 1, 2.0 is not 2).
VALUES = {
    'str_ascii': 'hello',
    'str_empty': '',
    'str_non_ascii': 'Grüße, Σωκράτης, 世界, emoji 🌍🚀, quote " backslash \\ nul-free',
    'str_control': 'tab\tnewline\nreturn\r',
    'int_zero': 0,
    'int_negative': -42,
    'int_2_53_plus_1': 2 ** 53 + 1,
    'int_max_int64': 2 ** 63 - 1,
    'int_min_int64': -2 ** 63,
    'int_huge': 123456789012345678901234567890,
    'float_pi': 3.141592653589793,
    'float_integral': 2.0,
    'float_tiny': 1.5e-300,
    'float_big': 1.7976931348623157e308,
    'float_negative': -0.5,
    'bool_true': True,
    'bool_false': False,
    'null': None,
    'list_empty': [],
    'dict_empty': {},
    'list_mixed': [1, 2.5, 'x', None, True, False, [], {}],
    'dict_nested': {'a': {'b': {'c': [1, [2, [3, {'d': 'ü'}]]]}},
                    'ключ': 'значение', 'n': None, 'f': 0.25},
    'payload_1mib': 'x' * MIB,
}


def strict_equal(a, b):
    """Deep equality that also requires the same JSON types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def summarize(v):
    """Keep the JSON output small: long strings are replaced by a summary."""
    if isinstance(v, str) and len(v) > 1024:
        return {'_long_string': len(v), 'prefix': v[:16]}
    return v


def run(name, fn, check):
    """Run fn(); check(result or exception) -> (ok, detail)."""
    try:
        res = fn()
    except Exception as e:  # noqa: any exception is a result here
        err = common.describe_exception(e)
        return {'ok': bool(check(None, e)), 'error': err}
    return {'ok': bool(check(res, None)), 'result': summarize(res)}


def expect_value(v):
    return lambda res, exc: exc is None and strict_equal(res, v)


def expect_exc(pred):
    return lambda res, exc: exc is not None and pred(exc)


def remote(exc_type):
    return expect_exc(lambda e: isinstance(e, om.RemoteError) and e.exc_type == exc_type)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_transport_args(p)
    p.add_argument('--topic', required=True)
    p.add_argument('--server', required=True, help="the server's name, for directed calls")
    p.add_argument('--version', default='1.0', help='client target version')
    p.add_argument('--namespace', default=None)
    p.add_argument('--timeout', type=float, default=30, help='call timeout, seconds')
    p.add_argument('--groups', default='values,failures,casts,timeouts',
                   help='comma list of case groups to run')
    p.add_argument('--tag', default='py', help='marks recorded values of this run')
    args = p.parse_args()
    groups = set(args.groups.split(','))

    transport = common.rpc_transport(args)
    target = om.Target(topic=args.topic, version=args.version, namespace=args.namespace)
    client = om.get_rpc_client(transport, target, timeout=args.timeout)
    direct = client.prepare(server=args.server)
    ctxt = {'user_id': 'interop-user', 'project_id': 'interop-project',
            'request_id': 'req-00000000-0000-4000-8000-000000000001',
            'auth_token': 'gAAAA-token-ü', 'roles': ['member', 'reader'],
            'is_admin': False, 'quota': {'cores': 2 ** 70}}
    cases = {}

    if 'values' in groups:
        for name, v in VALUES.items():
            cases['call_' + name] = run(name, lambda v=v: client.call(ctxt, 'echo', value=v),
                                        expect_value(v))
        # One value through the directed (topic.server) queue.
        cases['call_direct_str_non_ascii'] = run(
            'direct', lambda: direct.call(ctxt, 'echo', value=VALUES['str_non_ascii']),
            expect_value(VALUES['str_non_ascii']))
        # The request context travels as _context_* keys and comes back whole.
        cases['call_context'] = run('context', lambda: client.call(ctxt, 'context'),
                                    expect_value(ctxt))
        cases['call_direct_dict_nested'] = run(
            'direct', lambda: direct.call(ctxt, 'echo', value=VALUES['dict_nested']),
            expect_value(VALUES['dict_nested']))

    if 'failures' in groups:
        msg = 'bad value: ünïcode ✗'
        cases['fail_value'] = run(
            'fail_value', lambda: client.call(ctxt, 'fail', kind='value', message=msg),
            expect_exc(lambda e: type(e) is ValueError and str(e).split('\n', 1)[0] == msg))
        cases['fail_custom'] = run(
            'fail_custom', lambda: client.call(ctxt, 'fail', kind='custom', message=msg),
            expect_exc(lambda e: isinstance(e, om.RemoteError) and
                       e.exc_type == 'InteropError' and e.value == msg))
        cases['fail_plain'] = run(
            'fail_plain', lambda: client.call(ctxt, 'fail', kind='plain', message=msg),
            expect_exc(lambda e: isinstance(e, om.RemoteError) and
                       e.exc_type == 'TrustpoolError' and e.value == msg))
        cases['no_such_method'] = run(
            'nsm', lambda: client.call(ctxt, 'no_such_method', value=1),
            remote('NoSuchMethod'))
        cases['private_method'] = run(
            'private', lambda: client.call(ctxt, '_private', value=1),
            remote('NoSuchMethod'))
        major = int(args.version.split('.')[0])
        cases['unsupported_major'] = run(
            'umaj', lambda: client.prepare(version='%d.0' % (major + 1)).call(ctxt, 'echo', value=1),
            remote('UnsupportedVersion'))
        cases['unsupported_minor'] = run(
            'umin', lambda: client.prepare(version='%d.99' % major).call(ctxt, 'echo', value=1),
            remote('UnsupportedVersion'))
        cases['wrong_namespace'] = run(
            'ns', lambda: client.prepare(namespace='no-such-namespace').call(ctxt, 'echo', value=1),
            remote('UnsupportedVersion'))
        cases['bad_args'] = run(
            'badargs', lambda: client.call(ctxt, 'echo', valeur=1),
            expect_exc(lambda e: True))

    if 'casts' in groups:
        sent = []
        for name in VALUES:
            if name == 'payload_1mib':
                continue  # sent once, below
            for via, c in (('cast', client), ('fanout', client.prepare(fanout=True)),
                           ('cast_direct', direct)):
                rec = {'tag': args.tag, 'via': via, 'name': name, 'value': VALUES[name]}
                c.cast(ctxt, 'record', value=rec)
                sent.append(rec)
        big = {'tag': args.tag, 'via': 'fanout', 'name': 'payload_1mib', 'value': VALUES['payload_1mib']}
        client.prepare(fanout=True).cast(ctxt, 'record', value=big)
        sent.append(big)

        # Casts are asynchronous: poll recorded() until every cast arrived.
        deadline = time.time() + args.timeout
        got = []
        while True:
            got = [r for r in direct.call(ctxt, 'recorded')
                   if isinstance(r, dict) and r.get('tag') == args.tag]
            if len(got) >= len(sent) or time.time() > deadline:
                break
            time.sleep(0.1)
        key = lambda r: json.dumps(r, sort_keys=True)
        want = sorted(sent, key=key)
        have = sorted(got, key=key)
        ok = len(want) == len(have) and all(strict_equal(a, b) for a, b in zip(want, have))
        missing = [ {k: summarize(v) for k, v in r.items()} for r in want if r not in have]
        cases['casts_recorded'] = {'ok': ok, 'result': {
            'sent': len(sent), 'received': len(got), 'missing': missing}}

    if 'timeouts' in groups:
        # The server sleeps longer than the call timeout: MessagingTimeout.
        cases['timeout'] = run(
            'timeout', lambda: client.prepare(timeout=1).call(ctxt, 'sleep', seconds=3),
            expect_exc(lambda e: isinstance(e, om.MessagingTimeout)))
        # Call monitoring: the server must send keep-alives every 2 s, or the
        # 4 s monitor fires before the 5 s sleep ends.
        cases['call_monitor'] = run(
            'monitor', lambda: client.prepare(timeout=60, call_monitor_timeout=4).call(
                ctxt, 'sleep', seconds=5),
            expect_value(5))

    transport.cleanup()
    common.emit({'cases': cases})
    return 0


if __name__ == '__main__':
    sys.exit(main())
