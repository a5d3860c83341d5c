"""The verdict snapshot file of trustpool-filter-shim (standard library only).

The shim writes what its trust cache holds to a file (``[filter_shim]
snapshot_file``, default ``/run/trustpool/verdicts.snapshot``, group nova,
mode 0640, in a directory only the shim's user can write), replacing it
atomically on every change and at least every ``snapshot_file_interval``.
Reading it costs a scheduling pass one ``stat`` and set lookups, instead of
a round trip to another process that a loaded machine may not schedule in
time. Format (version 1; times in Unix milliseconds; the Go side is package
``nova-filter-shim/internal/snapshotfile``)::

    trustpool-filter-snapshot 1
    {"written_at_ms":N,"interval_ms":N,"health":"ok","detail":[],"hosts":N,"body_bytes":N}
    {"hosts":["<host>",...],"status":["trusted"|...,...],"expires_at_ms":[N,...],
     "profiles":{"<profile>":[<index into hosts>,...],...}}

The file is parsed again only when its ``stat`` changes, and the host
list only when it is not byte for byte the one parsed before (the shim's
heartbeat rewrites only the header). What passes for a request is worked
out once and kept until the next verdict in the file expires.

Fail closed: :func:`usable` raises :class:`SnapshotError` (the filter then
passes no host) when the file cannot be read, is not a regular file, is
writable by group or others, is larger than :data:`MAX_BYTES`, is malformed
in any way (magic line, version, header keys and types, body length, host
count, column lengths and types, statuses, repeated hosts, profile
indexes, non-integer times, NaN, repeated keys), was
written longer than ``max_age`` seconds ago (or that far in the future: the
clock went back), or says the shim is not healthy. A host whose verdict is
past its ``expires_at`` by this process's clock is unknown.
:class:`SnapshotMissing` (a subclass) means the file does not exist.

Thread safety: parsed snapshots are immutable; the caches are dicts whose
single reads and writes are atomic, and two threads parsing the same file
at once only duplicate work. Nothing blocks but the read of a local file,
so it works alike with native threads and under eventlet.
"""

import json
import math
import os
import stat
import time

#: The first line of a version 1 snapshot.
MAGIC = b'trustpool-filter-snapshot 1\n'
_MAGIC_NAME = b'trustpool-filter-snapshot '

#: Largest snapshot file read.
MAX_BYTES = 64 * 1024 * 1024

#: The only health in which hosts may pass.
HEALTHY = 'ok'

_STATUSES = frozenset(('trusted', 'untrusted', 'unknown'))
_STR, _INT = {str}, {int}
_BODY_KEYS = frozenset(('hosts', 'status', 'expires_at_ms', 'profiles'))
_NOTHING = frozenset()
_HEADER_KEYS = frozenset(('written_at_ms', 'interval_ms', 'health', 'detail',
                          'hosts', 'body_bytes'))

#: Different requests (level, profile) whose answers one snapshot keeps.
_MAX_ANSWERS = 64

#: The clock expiry and age are judged by (tests replace it).
now = time.time

#: path -> the Snapshot last parsed from it.
_cache = {}


class SnapshotError(Exception):
    """The snapshot cannot be used: no host passes."""


class SnapshotMissing(SnapshotError):
    """The snapshot file does not exist."""


def _no_constant(name):
    raise ValueError('%s is not a JSON number' % name)


def _object(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError('key %r repeated' % key)
        obj[key] = value
    return obj


def _json(data, what):
    try:
        return json.loads(data.decode('utf-8'), parse_constant=_no_constant,
                          object_pairs_hook=_object)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise SnapshotError('%s is not valid JSON: %s' % (what, e)) from e


def _is_int(v):
    return type(v) is int  # not bool, not float


class Verdicts(object):
    """The host list of a snapshot, in columns: names, statuses and expiry
    times in host order, and profile -> the names of the hosts listing it.
    """

    __slots__ = ('body', 'names', 'statuses', 'expires', 'profiles',
                 '_answers')

    def __init__(self, body, names, statuses, expires, profiles):
        self.body = body
        self.names = names
        self.statuses = statuses
        self.expires = expires
        self.profiles = profiles
        self._answers = {}

    def answer(self, level, profile, now_ms):
        """(names, negate): a host passes when (its name in names) is not
        negate. Kept until the next verdict in the snapshot expires (or the
        clock goes back)."""
        key = (level, profile)
        kept = self._answers.get(key)
        if kept is not None and kept[0] <= now_ms < kept[1]:
            return kept[2], kept[3]
        names, negate = self._decide(level, profile, now_ms)
        until = min(filter(now_ms.__lt__, self.expires), default=math.inf)
        if len(self._answers) >= _MAX_ANSWERS:
            self._answers.clear()
        self._answers[key] = (now_ms, until, names, negate)
        return names, negate

    def _decide(self, level, profile, now_ms):
        """The truth table (the Go shim's trustcache.Cache.Filter): a
        host's status is its verdict's while unexpired, else unknown (so is
        a host without a verdict); trust:trusted_host=V passes status V;
        trust:profile=P passes a trusted status listing P; both: both."""
        rows = zip(self.names, self.statuses, self.expires)
        if profile is not None:
            if level not in (None, 'trusted'):
                return _NOTHING, False
            listed = self.profiles.get(profile, _NOTHING)
            return frozenset(
                n for n, st, exp in rows
                if st == 'trusted' and now_ms < exp and n in listed), False
        if level == 'unknown':
            # Hosts without a verdict pass too: keep the ones that fail.
            return frozenset(n for n, st, exp in rows
                             if st != 'unknown' and now_ms < exp), True
        return frozenset(n for n, st, exp in rows
                         if st == level and now_ms < exp), False

    def reason(self, name, now_ms):
        """What the snapshot says about a host, for the debug log."""
        try:
            i = self.names.index(name)
        except ValueError:
            return 'no verdict'
        if now_ms >= self.expires[i]:
            return 'verdict expired at %d ms' % self.expires[i]
        return 'status %s, profiles [%s]' % (self.statuses[i], ', '.join(
            sorted(p for p, hosts in self.profiles.items() if name in hosts)))


class Snapshot(object):
    """One parsed snapshot file."""

    __slots__ = ('key', 'written_at_ms', 'interval_ms', 'health', 'detail',
                 'verdicts')

    def __init__(self, key, header, verdicts):
        self.key = key
        self.written_at_ms = header['written_at_ms']
        self.interval_ms = header['interval_ms']
        self.health = header['health']
        self.detail = header['detail']
        self.verdicts = verdicts


def parse(data, key=None, previous=None):
    """Parse a whole snapshot file's bytes; previous (a Snapshot) lends its
    parsed host list when the new one is the same bytes.

    :raises SnapshotError: anything malformed
    """
    if len(data) > MAX_BYTES:
        raise SnapshotError('larger than %d bytes' % MAX_BYTES)
    if not data.startswith(MAGIC):
        if data.startswith(_MAGIC_NAME):
            raise SnapshotError('format version %r is not supported (1 is)'
                                % data[len(_MAGIC_NAME):][:16])
        raise SnapshotError('not a trustpool-filter snapshot')
    end = data.find(b'\n', len(MAGIC))
    if end < 0:
        raise SnapshotError('no header line')
    header = _header(_json(data[len(MAGIC):end], 'the header'))
    body = data[end + 1:]
    if len(body) != header['body_bytes']:
        raise SnapshotError('host list is %d bytes, the header says %d'
                            % (len(body), header['body_bytes']))
    if previous is not None and previous.verdicts.body == body:
        verdicts = previous.verdicts
    else:
        verdicts = _hosts(body, header['hosts'])
    return Snapshot(key, header, verdicts)


def _header(h):
    if not isinstance(h, dict):
        raise SnapshotError('the header is not a JSON object')
    if set(h) != _HEADER_KEYS:
        raise SnapshotError('header keys %s, want %s'
                            % (sorted(h), sorted(_HEADER_KEYS)))
    for k in ('written_at_ms', 'interval_ms', 'hosts', 'body_bytes'):
        if not _is_int(h[k]) or h[k] < 0:
            raise SnapshotError('header %s is not a non-negative integer' % k)
    if h['interval_ms'] == 0:
        raise SnapshotError('header interval_ms is 0')
    if not isinstance(h['health'], str):
        raise SnapshotError('header health is not a string')
    detail = h['detail']
    if (not isinstance(detail, list)
            or not all(isinstance(d, str) for d in detail)):
        raise SnapshotError('header detail is not a list of strings')
    return h


def _hosts(body, count):
    if not body.endswith(b'\n'):
        raise SnapshotError('host list does not end with a newline')
    doc = _json(body, 'the host list')
    if not isinstance(doc, dict) or set(doc) != _BODY_KEYS:
        raise SnapshotError('host list is not an object with keys %s'
                            % ', '.join(sorted(_BODY_KEYS)))
    names, statuses = doc['hosts'], doc['status']
    expires, profiles = doc['expires_at_ms'], doc['profiles']
    # Checked column by column with loops in C: a Python loop over every
    # host would cost several times the JSON decoding.
    if type(names) is not list or len(names) != count:
        raise SnapshotError('hosts is not a list of the %d hosts the header '
                            'says' % count)
    if type(statuses) is not list or len(statuses) != count:
        raise SnapshotError('status is not a list of %d statuses' % count)
    if type(expires) is not list or len(expires) != count:
        raise SnapshotError('expires_at_ms is not a list of %d times'
                            % count)
    if count and (set(map(type, names)) != _STR or '' in names):
        raise SnapshotError('a host name is not a non-empty string')
    if count and (set(map(type, statuses)) != _STR
                  or not set(statuses) <= _STATUSES):
        raise SnapshotError('a status is not trusted, untrusted or unknown')
    if count and set(map(type, expires)) != _INT:
        raise SnapshotError('an expires_at_ms is not an integer')
    if len(set(names)) != count:
        raise SnapshotError('a host is listed twice')
    if type(profiles) is not dict:
        raise SnapshotError('profiles is not an object')
    by_profile = {}
    for profile, index in profiles.items():
        if (type(index) is not list or not index
                or set(map(type, index)) != _INT
                or min(index) < 0 or max(index) >= count
                or len(set(index)) != len(index)):
            raise SnapshotError('profile %r: not a list of distinct host '
                                'indexes below %d' % (profile, count))
        by_profile[profile] = frozenset(map(names.__getitem__, index))
    return Verdicts(body, names, statuses, expires, by_profile)


def load(path):
    """The snapshot at path, parsed again only when the file changed.

    :raises SnapshotMissing: no file at path
    :raises SnapshotError: unreadable, not a regular file, writable by group
        or others, or malformed
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise SnapshotMissing('%s does not exist' % path) from e
    except OSError as e:
        raise SnapshotError('%s: %s' % (path, e)) from e
    _check_stat(path, st)
    previous = _cache.get(path)
    if previous is not None and previous.key == _key(st):
        return previous
    try:
        with open(path, 'rb') as f:
            # The file read is the one whose stat is kept: a replacement
            # between the stat above and the open is caught next time.
            st = os.fstat(f.fileno())
            _check_stat(path, st)
            if st.st_size > MAX_BYTES:
                raise SnapshotError('%s is larger than %d bytes'
                                    % (path, MAX_BYTES))
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as e:
        raise SnapshotMissing('%s does not exist' % path) from e
    except OSError as e:
        raise SnapshotError('%s: %s' % (path, e)) from e
    try:
        snap = parse(data, _key(st), previous)
    except SnapshotError as e:
        raise SnapshotError('%s: %s' % (path, e)) from e
    _cache[path] = snap
    return snap


def _key(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_stat(path, st):
    if not stat.S_ISREG(st.st_mode):
        raise SnapshotError('%s is not a regular file' % path)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SnapshotError('%s is writable by group or others (mode %04o): '
                            'refused' % (path, stat.S_IMODE(st.st_mode)))


def usable(path, max_age):
    """The snapshot at path with its clock reading (Snapshot, now_ms), if
    it is fresh and the shim healthy.

    :raises SnapshotError: see load; older than max_age seconds (or written
        that far in the future), or the shim not healthy
    """
    snap = load(path)
    now_ms = now() * 1000.0
    age_ms = now_ms - snap.written_at_ms
    if age_ms > max_age * 1000.0:
        raise SnapshotError(
            '%s was written %.1f s ago, more than [trustpool] '
            'snapshot_max_age %.1f s (the shim rewrites it every %.1f s; is '
            'trustpool-filter-shim running?)'
            % (path, age_ms / 1000.0, max_age, snap.interval_ms / 1000.0))
    if -age_ms > max_age * 1000.0:
        raise SnapshotError('%s was written %.1f s in the future (the clock '
                            'went back)' % (path, -age_ms / 1000.0))
    if snap.health != HEALTHY:
        raise SnapshotError('the shim is %s: %s' % (
            snap.health, '; '.join(snap.detail) or 'no detail'))
    return snap, now_ms
