"""HTTP over a unix socket to trustpool-filter-shim (standard library only).

Each thread (greenthread under eventlet) keeps one HTTP/1.1 keep-alive
connection per shim socket, in thread-local storage, so a connection is
only ever used by one request at a time. A connection is put back for the
next request only after a complete, well-formed 200 answer; any error,
timeout, malformed or oversized answer closes it. A kept connection that
the shim closed meanwhile (idle timeout, restart) is noticed before use or
by the failed exchange, and the request is then retried once on a fresh
connection within the same shim_timeout budget (the filter request is
read-only, so a retry is harmless). ShimClient objects hold no state.
"""

import http.client
import json
import os
import select
import socket
import threading
import time

#: Largest response accepted from the shim.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

#: A kept connection idle for longer is closed rather than reused (the shim
#: closes idle connections after 30 s).
MAX_IDLE_SECONDS = 10.0

#: Errors of a kept connection the shim had already closed: worth one retry
#: on a fresh connection.
_STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError,
                 ConnectionResetError, ConnectionAbortedError)

_local = threading.local()


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


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client.HTTPConnection over a unix stream socket."""

    def __init__(self, path, timeout):
        super().__init__('localhost', timeout=timeout)
        self.unix_path = path

    def connect(self):
        # A unix socket whose listen backlog is full refuses at once with
        # EAGAIN even when a timeout is set; retry that until the timeout.
        deadline = time.monotonic() + self.timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.unix_path)
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


class ShimClient(object):
    """Asks the shim which hosts pass (POST /v1/filter)."""

    connection_class = UnixHTTPConnection

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout

    def filter(self, hosts, trusted_host=None, profile=None):
        """Return (passes, rejected) for hosts.

        passes is the list of passing host names, rejected maps each other
        host to the shim's reason. The whole exchange must finish within
        the timeout (each socket operation is bounded by it, and an answer
        arriving later is discarded).

        :raises ShimError: on any failure; callers must then pass no host
        """
        body = json.dumps({'hosts': list(hosts), 'trusted_host': trusted_host,
                           'profile': profile}).encode('utf-8')
        start = time.monotonic()
        deadline = start + self.timeout
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
                if conn is None:
                    conn = self.connection_class(self.path, self.timeout)
                try:
                    resp, data = self._exchange(conn, body, deadline)
                except _STALE_ERRORS as e:
                    conn.close()
                    conn = None
                    if reused and time.monotonic() < deadline:
                        reused = False
                        continue
                    raise ShimError('shim at %s: %s: %s'
                                    % (self.path, type(e).__name__, e)) from e
                except (OSError, http.client.HTTPException) as e:
                    raise ShimError('shim at %s: %s: %s'
                                    % (self.path, type(e).__name__, e)) from e
                break
            elapsed = time.monotonic() - start
            if elapsed > self.timeout:
                raise ShimError('shim at %s answered after %.3fs, more than '
                                'shim_timeout %.3fs' % (self.path, elapsed,
                                                         self.timeout))
            if len(data) > MAX_RESPONSE_BYTES:
                raise ShimError('shim response larger than %d bytes'
                                % MAX_RESPONSE_BYTES)
            if resp.status != 200:
                raise ShimError('shim answered HTTP %d: %s'
                                % (resp.status, _error_text(data)))
            result = _parse(data)
            # Only a fully read, well-formed answer on a connection the
            # shim keeps open leaves it fit for the next request.
            keep = resp.isclosed() and not resp.will_close
            return result
        finally:
            if conn is not None:
                if keep:
                    old = pool.pop(self.path, None)
                    if old is not None:
                        old[0].close()
                    pool[self.path] = (conn, time.monotonic())
                else:
                    conn.close()

    def _exchange(self, conn, body, deadline):
        """One request/response on conn, each socket operation bounded by
        the time left until deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout('shim_timeout exhausted')
        conn.timeout = remaining
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        conn.request('POST', '/v1/filter', body,
                     {'Content-Type': 'application/json',
                      'Accept': 'application/json'})
        resp = conn.getresponse()
        return resp, resp.read(MAX_RESPONSE_BYTES + 1)


def _error_text(data):
    try:
        return str(json.loads(data.decode('utf-8'))['error'])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return repr(data[:200])


def _parse(data):
    try:
        doc = json.loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
        raise ShimError('shim answer is not JSON: %s' % e) from e
    if not isinstance(doc, dict):
        raise ShimError('shim answer is not a JSON object')
    passes = doc.get('passes')
    rejected = doc.get('rejected', {})
    if (not isinstance(passes, list)
            or not all(isinstance(h, str) for h in passes)):
        raise ShimError('shim answer has no list of passing hosts')
    if not isinstance(rejected, dict):
        raise ShimError('shim answer has a malformed rejected map')
    return passes, rejected
