"""Writes verdict snapshot files in the shim's format (package
nova-filter-shim/internal/snapshotfile) for the filter's tests: the
well-formed ones the tests then spoil, and atomic replacement."""
import json
import os
import tempfile
import time

MAGIC = b'trustpool-filter-snapshot 1\n'


def now_ms():
    return int(time.time() * 1000)


def body(hosts):
    """hosts: (name, status, expires_at_ms, profiles) tuples, any order."""
    hosts = sorted(hosts)
    profiles = {}
    for i, (_, _, _, profs) in enumerate(hosts):
        for p in profs:
            profiles.setdefault(p, []).append(i)
    return (json.dumps({
        'hosts': [h[0] for h in hosts], 'status': [h[1] for h in hosts],
        'expires_at_ms': [h[2] for h in hosts], 'profiles': profiles,
    }, separators=(',', ':')) + '\n').encode('utf-8')


def header(n, body_bytes, written_at_ms=None, interval_ms=2000,
           health='ok', detail=()):
    return json.dumps({
        'written_at_ms': now_ms() if written_at_ms is None else written_at_ms,
        'interval_ms': interval_ms, 'health': health, 'detail': list(detail),
        'hosts': n, 'body_bytes': body_bytes}, separators=(',', ':')).encode()


def encode(hosts, **kw):
    b = body(hosts)
    return MAGIC + header(len(hosts), len(b), **kw) + b'\n' + b


def replace(path, data, mode=0o640):
    """Write data to path as the shim does: a temporary file in the same
    directory with its final mode, renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp-')
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)
