"""HTTP over a unix socket to trustpool-filter-shim (standard library only).

The exchange is the filter's hot path (one per scheduling pass, over every
candidate host), so it is kept lean:

- the answer asked for is the mask: one character per requested host, in
  request order, "1" for a host that passes (``"answer": "mask"``; about 1
  byte per host instead of about 50 for names and reasons); the full answer,
  with a reason per rejected host, only when asked (debug logging);
- the HTTP/1.1 exchange is written and read here: the request head is a
  constant, the answer's head is read in one or two ``recv`` calls and only
  its status line, Content-Length and Connection are looked at.

Each thread (greenthread under eventlet) keeps one keep-alive connection per
shim socket, in thread-local storage, so a connection is only ever used by
one request at a time. A connection is put back for the next request only
after a complete, well-formed 200 answer; any error, timeout, malformed or
oversized answer closes it. A kept connection that the shim closed meanwhile
(idle timeout, restart) is noticed before use or by the failed exchange, and
the request is then retried once on a fresh connection within the same
shim_timeout budget (the filter request is read-only, so a retry is
harmless). A shim that predates the mask answer refuses it (400, unknown
field "answer"); the client then asks for the full answer, and keeps doing
so for that socket for a while (a rolling upgrade). ShimClient objects hold
no state.

Fail closed: every problem raises ShimError, and the filter then passes no
host. A mask of the wrong length or with any character but "0" and "1" is
such a problem.
"""

import itertools
import json
import os
import select
import socket
import threading
import time

#: Largest response accepted from the shim.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

#: Largest response head (status line and headers) accepted.
MAX_HEAD_BYTES = 16 * 1024

#: A kept connection idle for longer is closed rather than reused (the shim
#: closes idle connections after 30 s).
MAX_IDLE_SECONDS = 10.0

#: How long a shim that refused the mask answer is asked for the full one
#: before the mask is tried again (it may have been upgraded).
LEGACY_SECONDS = 300.0

_local = threading.local()

#: socket path -> monotonic time the shim refused the mask answer.
_legacy = {}

_HEAD = (b'POST /v1/filter HTTP/1.1\r\nHost: localhost\r\n'
         b'Content-Type: application/json\r\nAccept: application/json\r\n'
         b'Content-Length: ')

#: "0"/"1" of a mask to the bytes 0/1 itertools.compress reads.
_MASK_BITS = bytes.maketrans(b'01', b'\x00\x01')


def _pool():
    """This thread's {socket path: (connection, last use)}."""
    pool = getattr(_local, 'pool', None)
    if pool is None or _local.pid != os.getpid():
        # After a fork the parent's connections are not ours to use.
        pool = _local.pool = {}
        _local.pid = os.getpid()
    return pool


def close_connections():
    """Close the connections this thread keeps (e.g. before it ends)."""
    pool = _pool()
    while pool:
        pool.popitem()[1][0].close()


def _usable(conn, last_used):
    """A kept connection is reused only while young and silent: readable
    while idle means the shim closed it (or sent something unasked)."""
    sock = conn.sock
    if sock is None or time.monotonic() - last_used > MAX_IDLE_SECONDS:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class ShimError(Exception):
    """The shim could not answer: unreachable, slow, error or bad reply."""


class _Stale(Exception):
    """The connection was closed before any byte of the answer arrived."""


class _Response(object):
    __slots__ = ('status', 'body', 'keep_alive')

    def __init__(self, status, body, keep_alive):
        self.status = status
        self.body = body
        self.keep_alive = keep_alive


class UnixConnection(object):
    """One HTTP/1.1 connection to the shim's unix socket."""

    def __init__(self, path, timeout):
        self.sock = None
        # A unix socket whose listen backlog is full refuses at once with
        # EAGAIN even when a timeout is set; retry that until the timeout.
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.connect(path)
            except BlockingIOError:
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)
                continue
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, body, deadline):
        """POST body to /v1/filter; each socket operation is bounded by the
        time left until deadline."""
        sock = self.sock
        sock.settimeout(_left(deadline))
        try:
            sock.sendall(_HEAD + str(len(body)).encode('ascii') + b'\r\n\r\n'
                         + body)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _Stale(e) from e
        buf = bytearray()
        end = -1
        while end < 0:
            sock.settimeout(_left(deadline))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError as e:
                if not buf:
                    raise _Stale(e) from e
                raise
            if not chunk:
                if not buf:
                    raise _Stale('connection closed before the answer')
                raise ShimError('shim closed the connection mid-answer')
            buf += chunk
            end = buf.find(b'\r\n\r\n', max(0, len(buf) - len(chunk) - 3))
            if end < 0 and len(buf) > MAX_HEAD_BYTES:
                raise ShimError('shim answer head larger than %d bytes'
                                % MAX_HEAD_BYTES)
        status, length, keep_alive = _parse_head(bytes(buf[:end]))
        body_start = end + 4
        if length is None:
            if status == 200:
                raise ShimError('shim answer without Content-Length')
            return _Response(status, bytes(buf[body_start:]), False)
        if length > MAX_RESPONSE_BYTES:
            raise ShimError('shim response larger than %d bytes'
                            % MAX_RESPONSE_BYTES)
        want = body_start + length
        while len(buf) < want:
            sock.settimeout(_left(deadline))
            chunk = sock.recv(min(want - len(buf), 1 << 20))
            if not chunk:
                raise ShimError('shim closed the connection mid-answer')
            buf += chunk
        if len(buf) > want:
            # Bytes after the answer: nothing was asked for them.
            raise ShimError('shim sent more than its Content-Length')
        return _Response(status, bytes(buf[body_start:want]), keep_alive)


def _left(deadline):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout('shim_timeout exhausted')
    return remaining


def _parse_head(head):
    """(status, Content-Length or None, keep-alive) of a response head."""
    lines = head.split(b'\r\n')
    parts = lines[0].split(b' ', 2)
    if (len(parts) < 2 or not parts[0].startswith(b'HTTP/1.')
            or not parts[1].isdigit() or len(parts[1]) != 3):
        raise ShimError('shim answer is not HTTP: %r' % lines[0][:80])
    status = int(parts[1])
    keep_alive = parts[0] == b'HTTP/1.1'
    length = None
    for line in lines[1:]:
        name, sep, value = line.partition(b':')
        if not sep:
            raise ShimError('malformed header in the shim answer')
        name = name.strip().lower()
        value = value.strip()
        if name == b'content-length':
            if not value.isdigit() or length is not None:
                raise ShimError('bad Content-Length in the shim answer')
            length = int(value)
        elif name == b'transfer-encoding':
            raise ShimError('unexpected Transfer-Encoding in the shim answer')
        elif name == b'connection' and value.lower() == b'close':
            keep_alive = False
    return status, length, keep_alive


class ShimClient(object):
    """Asks the shim which hosts pass (POST /v1/filter)."""

    connection_class = UnixConnection

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout

    def filter(self, hosts, trusted_host=None, profile=None, reasons=False):
        """Return (passes, rejected) for hosts.

        passes is the list of passing host names. rejected maps each other
        host to the shim's reason when reasons is true, and is empty
        otherwise (the lean answer).

        :raises ShimError: on any failure; callers must then pass no host
        """
        hosts = list(hosts)
        if reasons:
            return self._ask(hosts, trusted_host, profile, False)
        return list(itertools.compress(
            hosts, self.mask(hosts, trusted_host, profile))), {}

    def mask(self, hosts, trusted_host=None, profile=None):
        """Return bytes with one byte per host of hosts (a list), 1 when it
        passes and 0 when not: what itertools.compress takes.

        :raises ShimError: on any failure; callers must then pass no host
        """
        return self._ask(hosts, trusted_host, profile, True)

    def _ask(self, hosts, trusted_host, profile, mask):
        """The mask (mask true) or (passes, rejected). The whole exchange
        must finish within the timeout (each socket operation is bounded by
        it, and an answer arriving later is discarded)."""
        start = time.monotonic()
        deadline = start + self.timeout
        want_mask = mask
        if mask and start - _legacy.get(self.path, -LEGACY_SECONDS) \
                < LEGACY_SECONDS:
            mask = False
        status, result = self._post(hosts, trusted_host, profile, mask,
                                    deadline)
        if (mask and status == 400
                and 'unknown field "answer"' in _error_text(result)):
            # A shim from before the mask answer: ask for the full one.
            _legacy[self.path] = time.monotonic()
            mask = False
            status, result = self._post(hosts, trusted_host, profile, mask,
                                        deadline)
        if status != 200:
            raise ShimError('shim answered HTTP %d: %s'
                            % (status, _error_text(result)))
        elapsed = time.monotonic() - start
        if elapsed > self.timeout:
            raise ShimError('shim at %s answered after %.3fs, more than '
                            'shim_timeout %.3fs' % (self.path, elapsed,
                                                     self.timeout))
        if want_mask and not mask:
            ok = set(result[0])
            return bytes(1 if h in ok else 0 for h in hosts)
        return result

    def _post(self, hosts, trusted_host, profile, mask, deadline):
        """One request; returns (200, (passes, rejected)) or (status, body).
        """
        body = _request_body(hosts, trusted_host, profile, mask)
        pool = _pool()
        conn, reused = None, False
        kept = pool.pop(self.path, None)
        if kept is not None:
            if _usable(*kept):
                conn, reused = kept[0], True
            else:
                kept[0].close()
        keep = False
        try:
            while True:
                try:
                    if conn is None:
                        conn = self.connection_class(
                            self.path, max(deadline - time.monotonic(), 0))
                    resp = conn.exchange(body, deadline)
                except _Stale as e:
                    conn.close()
                    conn = None
                    if reused and time.monotonic() < deadline:
                        reused = False
                        continue
                    raise ShimError('shim at %s closed the connection: %s'
                                    % (self.path, e)) from e
                except OSError as e:
                    raise ShimError('shim at %s: %s: %s'
                                    % (self.path, type(e).__name__, e)) from e
                break
            if resp.status != 200:
                return resp.status, resp.body
            if mask:
                result = _parse_mask(resp.body, len(hosts))
            else:
                result = _parse(resp.body)
            # Only a complete, well-formed 200 answer on a connection the
            # shim keeps open leaves it fit for the next request.
            keep = resp.keep_alive
            return 200, result
        finally:
            if conn is not None:
                if keep:
                    old = pool.pop(self.path, None)
                    if old is not None:
                        old[0].close()
                    pool[self.path] = (conn, time.monotonic())
                else:
                    conn.close()


def _request_body(hosts, trusted_host, profile, mask):
    req = {'hosts': hosts, 'trusted_host': trusted_host, 'profile': profile}
    if mask:
        req['answer'] = 'mask'
    return json.dumps(req, separators=(',', ':')).encode('utf-8')


def _error_text(data):
    try:
        return str(json.loads(data.decode('utf-8'))['error'])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return repr(data[:200])


def _load(data):
    try:
        doc = json.loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
        raise ShimError('shim answer is not JSON: %s' % e) from e
    if not isinstance(doc, dict):
        raise ShimError('shim answer is not a JSON object')
    return doc


def _parse_mask(data, n):
    """The mask answer for n hosts as bytes 0/1."""
    mask = _load(data).get('mask')
    if (not isinstance(mask, str) or len(mask) != n
            or not mask.isascii() or mask.strip('01')):
        raise ShimError('shim answer has no mask for the %d hosts asked'
                        % n)
    return mask.encode('ascii').translate(_MASK_BITS)


def _parse(data):
    doc = _load(data)
    passes = doc.get('passes')
    rejected = doc.get('rejected', {})
    if (not isinstance(passes, list)
            or not all(isinstance(h, str) for h in passes)):
        raise ShimError('shim answer has no list of passing hosts')
    if not isinstance(rejected, dict):
        raise ShimError('shim answer has a malformed rejected map')
    return passes, rejected
