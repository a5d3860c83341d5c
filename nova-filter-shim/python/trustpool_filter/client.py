"""HTTP over a unix socket to trustpool-filter-shim (standard library only).

One request per call, on a fresh connection: the client keeps no state
between calls, so it is safe to use from any number of threads or
greenthreads at once.
"""

import http.client
import json
import socket
import time

#: Largest response accepted from the shim.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


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
        conn = self.connection_class(self.path, self.timeout)
        try:
            conn.request('POST', '/v1/filter', body,
                         {'Content-Type': 'application/json',
                          'Accept': 'application/json'})
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as e:
            raise ShimError('shim at %s: %s: %s'
                            % (self.path, type(e).__name__, e)) from e
        finally:
            conn.close()
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
        return _parse(data)


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
