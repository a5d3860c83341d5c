"""Test harness: signed verdicts, the feeder process, shim processes and
real Nova objects for the TrustedFilter tests.

Environment (set by the Go test that runs these, see python_test.go):
  TRUSTPOOL_SHIM_BIN        the trustpool-filter-shim binary (go build)
  TRUSTPOOL_TRANSPORT_URL   a RabbitMQ vhost of its own (servicetest)
"""
import base64
import datetime
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))

# The golden test key of internal/verdict/testdata/vectors.json.
GOLDEN_SEED = b'trustpool-verdict-golden-vector!'
OTHER_SEED = b'trustpool-test-unpinned-key-0001'


def env(name):
    v = os.environ.get(name)
    if not v:
        raise RuntimeError(
            '%s is not set: run these tests through `go test '
            './nova-filter-shim/python/` (it builds the shim and starts '
            'RabbitMQ)' % name)
    return v


#: How much longer than Nova's own test helpers allow (5 s for a server's
#: state) a wait may run. The bound guards against a hang and never decides
#: a pass; the race-detector builds these tests run beside, on a loaded
#: 2-core CI machine, make everything several times slower.
WAIT_SLACK = 12


class PatientWaits(object):
    """Mixin for Nova's integrated test bases: their waits for a server's
    or a service's state stretched by WAIT_SLACK."""

    def _wait_for_server_parameter(self, server, expected_params,
                                   max_retries=10, api=None):
        return super()._wait_for_server_parameter(
            server, expected_params, max_retries * WAIT_SLACK, api)

    def _wait_for_service_parameter(self, service_hostname, service_binary,
                                    expected_params, max_retries=10,
                                    api=None):
        return super()._wait_for_service_parameter(
            service_hostname, service_binary, expected_params,
            max_retries * WAIT_SLACK, api)


def utc(dt):
    return dt.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


class Key(object):
    def __init__(self, seed=GOLDEN_SEED):
        self.priv = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        raw = self.priv.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = hashlib.sha256(raw).hexdigest()[:16]

    def public_pem(self):
        return self.priv.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign_string(self, s):
        return {'verdict': s, 'kid': self.kid,
                'sig': base64.b64encode(self.priv.sign(s.encode('utf-8'))).decode()}


GOLDEN = Key()
OTHER = Key(OTHER_SEED)


def verdict(host, status, seq=1, profiles=(), verified=None, validity=3600,
            versions=None, fmt=None):
    """The verdict JSON string (the format of Go package internal/verdict):
    format 1, or format 2 when versions (profile -> version matched) is
    given; fmt overrides the format number written."""
    now = verified or datetime.datetime.now(datetime.timezone.utc)
    v = {}
    if versions is not None:
        v['format'] = 2 if fmt is None else fmt
    v.update({'host': host, 'status': status, 'profiles': sorted(profiles)})
    if versions is not None:
        v['profile_versions'] = versions
    v.update({
        'reasons': [] if status == 'trusted' else ['test: %s' % status],
        'verified_at': utc(now),
        'expires_at': utc(now + datetime.timedelta(seconds=validity)),
        'seq': seq, 'evidence_digest': '', 'issuer': 'trustpool-attestation',
    })
    return json.dumps(v, separators=(',', ':'))


def signed(host, status, key=GOLDEN, **kw):
    return key.sign_string(verdict(host, status, **kw))


def forged(host, status, claimed, **kw):
    """Signed as status, then altered to claim `claimed`."""
    s = signed(host, status, **kw)
    s['verdict'] = s['verdict'].replace('"status":"%s"' % status,
                                        '"status":"%s"' % claimed)
    return s


def unsigned(host, status, **kw):
    return {'verdict': verdict(host, status, **kw), 'kid': '', 'sig': ''}


class Feeder(object):
    """feeder.py in a subprocess."""

    def __init__(self, url):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'feeder.py'),
             '--transport-url', url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._read().get('ready') is not True:
            raise RuntimeError('feeder did not start')

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError('feeder exited (%s)' % self.proc.poll())
        return json.loads(line)

    def _do(self, cmd):
        self.proc.stdin.write(json.dumps(cmd) + '\n')
        self.proc.stdin.flush()
        r = self._read()
        if not r.get('ok'):
            raise RuntimeError('feeder: %s' % r)
        return r

    def snapshot(self, verdicts):
        self._do({'op': 'snapshot', 'verdicts': verdicts})

    def cast(self, verdicts):
        self._do({'op': 'cast', 'verdicts': verdicts})

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class Shim(object):
    """A trustpool-filter-shim process with its own socket and config."""

    def __init__(self, binary, url, key_pem=None, name='shim'):
        self.dir = tempfile.mkdtemp(prefix='tp-shim-')
        self.socket = os.path.join(self.dir, 'shim.sock')
        self.snapshot_file = os.path.join(self.dir, 'verdicts.snapshot')
        key_path = os.path.join(self.dir, 'verdict_public_key.pem')
        with open(key_path, 'wb') as f:
            f.write(key_pem or GOLDEN.public_pem())
        self.config = os.path.join(self.dir, 'filter-shim.toml')
        with open(self.config, 'w') as f:
            f.write('[DEFAULT]\ntransport_url = %s\nhost = "%s"\n'
                    '[filter_shim]\nverdict_public_key = "%s"\n'
                    'socket_path = "%s"\nsocket_group = ""\n'
                    'snapshot_retry_max = "1s"\n'
                    'snapshot_file = "%s"\nsnapshot_file_group = ""\n'
                    % (json.dumps(url), name, key_path, self.socket,
                       self.snapshot_file))
        self.binary = binary
        self.log = open(os.path.join(self.dir, 'shim.log'), 'w+')
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, '-config-file', self.config],
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self):
        """Stop the shim and remove its directory."""
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def request(self, method, path, body=None, timeout=10):
        conn = _Unix(self.socket, timeout)
        try:
            conn.request(method, path, body,
                         {'Content-Type': 'application/json'} if body else {})
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def wait_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('shim exited %s:\n%s'
                                   % (self.proc.returncode, self.logs()))
            try:
                status, body = self.request('GET', '/healthz', timeout=2)
                if status == 200:
                    return
                last = body
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError('shim not healthy: %s\n%s' % (last, self.logs()))

    def metrics(self):
        status, body = self.request('GET', '/metrics')
        out = {}
        for line in body.splitlines():
            if line and not line.startswith('#'):
                name, value = line.rsplit(' ', 1)
                out[name] = float(value)
        return out

    def filter_requests(self):
        return sum(v for k, v in self.metrics().items()
                   if k.startswith('trustpool_filter_shim_filter_requests_total'))

    def wait_for(self, what, cond, timeout=30):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError('timed out waiting for %s\n%s'
                                     % (what, self.logs()))
            time.sleep(0.02)


class _Unix(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__('localhost', timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)
