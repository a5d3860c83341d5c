"""An in-process stand-in for the shim's socket, for failure modes a real
shim does not produce on demand (slow, garbage, errors, dropped
connections)."""
import http.server
import json
import os
import shutil
import socketserver
import tempfile
import threading
import time


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 4  # small on purpose: the client must cope

    def handle_error(self, request, client_address):
        pass  # clients that time out close early; that is the point


class FakeShim(object):
    """mode: 'ok' (answer from self.trusted), 'slow', 'error', 'garbage',
    'nolist', 'badmask' (a mask one host short), 'oddmask' (a mask with a
    "2"), 'close', 'close_once'
    (close, then 'ok'). keepalive: answer HTTP/1.1 and keep connections
    open; connections counts them. legacy: refuse the mask answer as a shim
    from before it does."""

    def __init__(self, trusted=(), keepalive=False, legacy=False):
        self.dir = tempfile.mkdtemp(prefix='tp-fake-')
        self.socket = os.path.join(self.dir, 'fake.sock')
        self.trusted = set(trusted)
        self.mode = 'ok'
        self.delay = 2.0
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections open, as the real shim does.
            protocol_version = 'HTTP/1.1' if keepalive else 'HTTP/1.0'

            def setup(self):
                super().setup()
                with fake.lock:
                    fake.connections += 1

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                req = json.loads(body)
                with fake.lock:
                    fake.requests.append((self.path, req))
                mode = fake.mode
                if mode == 'close_once':  # drop this connection only
                    fake.mode, mode = 'ok', 'close'
                if mode == 'close':
                    self.close_connection = True
                    self.connection.close()
                    return
                if mode == 'slow':
                    time.sleep(fake.delay)
                if mode == 'error':
                    return self._send(400, b'{"error":"bad filter request: test"}')
                if mode == 'garbage':
                    return self._send(200, b'<html>not json</html>')
                if mode == 'nolist':
                    return self._send(200, b'{"passes": "everything"}')
                if 'answer' in req and legacy:
                    return self._send(400, b'{"error":"bad filter request: '
                                      b'body is not a filter request: invalid '
                                      b'JSON: unknown field \\"answer\\""}')
                if req.get('answer') == 'mask':
                    mask = ''.join('1' if h in fake.trusted else '0'
                                   for h in req['hosts'])
                    if mode == 'badmask':
                        mask = mask[:-1]
                    if mode == 'oddmask':
                        mask = '2' + mask[1:]
                    return self._send(200, json.dumps({'mask': mask}).encode())
                passes = [h for h in req['hosts'] if h in fake.trusted]
                rejected = {h: 'not trusted' for h in req['hosts']
                            if h not in fake.trusted}
                self._send(200, json.dumps({'passes': passes,
                                            'rejected': rejected}).encode())

            def _send(self, code, data):
                self.send_response(code)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

        self.server = _Server(self.socket, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
