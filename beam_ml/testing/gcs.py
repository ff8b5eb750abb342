"""A real Google Cloud Storage API on 127.0.0.1 for tests and demos, reachable by Beam and TensorFlow.

    from beam_ml.testing.gcs import LocalGcs
    with LocalGcs() as gcs:                 # emulator + TLS proxy, in subprocesses
        with gcs.environ_applied():         # os.environ for this process and its children
            beam_ml.fs.write_text(f"gs://{gcs.bucket}/a.txt", "hello")
            tf.io.gfile.exists(f"gs://{gcs.bucket}/a.txt")   # True, through the proxy

    python -m beam_ml.testing.gcs           # prints `export ...` lines for a shell, Enter stops

Three parts, usable alone:

- `GcsEmulator`: `gcp-storage-emulator` (pure Python, in memory, a default
  bucket) in a subprocess on a free port, so Beam's worker processes and TF
  reach the same server. Its one bug that matters here is patched: an empty
  ``uploadType=media`` upload (TF sends those for `makedirs` and empty files)
  crashed it.
- `GcsTlsProxy`: TensorFlow's GCS filesystem has its endpoints
  (``https://www.googleapis.com``, ``https://storage.googleapis.com``) compiled
  in and ignores ``STORAGE_EMULATOR_HOST``, but its libcurl honours
  ``https_proxy`` and ``CURL_CA_BUNDLE``. This proxy answers CONNECT for those
  two hosts only, terminates TLS with a certificate from a throwaway CA, and
  forwards each HTTP request to the emulator. It de-chunks request bodies (TF
  sends ``Transfer-Encoding: chunked`` together with ``Content-Length``) and
  answers ``Expect: 100-continue`` itself (else every write stalls a second).
- `gcs_environ`: the environment variables a process (and its children) needs
  to use them: Beam and google-cloud-storage go straight to the emulator, TF
  through the proxy; nothing probes the cloud metadata server or waits for
  credentials.

Test-only: no authentication, everything in memory, nothing survives a stop.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http
import http.client
import json
import logging
import os
import socketserver
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from typing import Iterator, Mapping, Optional, Sequence

from beam_ml.testing.process import ThrowawayServer, accepts_connections, find_free_port

__all__ = ["GcsEmulator", "GcsTlsProxy", "LocalGcs", "TlsFiles", "STATIC_ENVIRON", "gcs_environ", "applied_environ",
           "make_test_ca", "write_fake_credentials", "GCS_HOSTS", "DEFAULT_BUCKET"]

_LOGGER = logging.getLogger(__name__)
_HOST = "127.0.0.1"

DEFAULT_BUCKET = "beam-ml-test"
# The hosts TensorFlow's GCS filesystem talks to (JSON API, and object reads).
GCS_HOSTS = ("www.googleapis.com", "storage.googleapis.com")

# Variables that must be set before anything imports google.auth (it reads the
# metadata host at import): no probe of the GCE metadata server, ever.
STATIC_ENVIRON = {
    "NO_GCE_CHECK": "true",  # google-auth compares the lower-case value
    "GCE_METADATA_HOST": "127.0.0.1:9",  # discard port: a probe fails at once
    "GCE_METADATA_IP": "127.0.0.1:9",
}

# An authorized-user credential with a token that never expires: google-auth
# never refreshes it, and without any credentials Beam retries the default
# lookup for ~24 s in every process.
_FAKE_CREDENTIALS = {"type": "authorized_user", "client_id": "x", "client_secret": "x", "refresh_token": "x",
                     "token": "fake", "expiry": "2099-01-01T00:00:00Z"}


def write_fake_credentials(path: str) -> str:
    """Writes a fake authorized-user credentials file (for GOOGLE_APPLICATION_CREDENTIALS); returns `path`."""
    with open(path, "w") as f:
        json.dump(_FAKE_CREDENTIALS, f)
    return path


def gcs_environ(emulator_endpoint: str,
                credentials_file: str,
                proxy_url: Optional[str] = None,
                ca_file: Optional[str] = None) -> dict[str, str]:
    """The environment a process (and its children) needs to use the local GCS.

    Args:
      emulator_endpoint: ``http://127.0.0.1:PORT`` of a `GcsEmulator`.
      credentials_file: a file from `write_fake_credentials`.
      proxy_url: ``http://127.0.0.1:PORT`` of a `GcsTlsProxy`, for TensorFlow's gs://.
      ca_file: the proxy's CA certificate (PEM), trusted by TensorFlow's libcurl.

    Returns:
      Variables to merge into os.environ (or a subprocess's env).
    """
    env = dict(STATIC_ENVIRON)
    env.update({
        # Beam's GcsIO builds a google-cloud-storage Client, which follows this.
        "STORAGE_EMULATOR_HOST": emulator_endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": credentials_file,
        # The fake credentials name no project; google-cloud-storage warns without one.
        "GOOGLE_CLOUD_PROJECT": "test-proj",
        # Python clients talk to 127.0.0.1 directly, never through the proxy.
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
        # TF's GCS filesystem: no auth round trip, and no caches (TF read stale
        # bytes after Beam rewrote an object with the default cache ages).
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake",
        "GCS_STAT_CACHE_MAX_AGE": "0",
        "GCS_MATCHING_PATHS_CACHE_MAX_AGE": "0",
        "GCS_READ_CACHE_MAX_SIZE_MB": "0",
    })
    if proxy_url:
        env["https_proxy"] = env["HTTPS_PROXY"] = proxy_url
    if ca_file:
        env["CURL_CA_BUNDLE"] = ca_file
    return env


# --------------------------------------------------------------------------------------------
# Subprocess plumbing shared by the emulator and the proxy.


class _EmulatorProcess(ThrowawayServer):
    """A `python -m beam_ml.testing.gcs <role> ...` subprocess listening on a free port."""

    role = ""

    def __init__(self, host: str, port: Optional[int], startup_timeout: float) -> None:
        super().__init__(f"GCS {self.role}", startup_timeout, attempts=1 if port else 3)
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None

    def _args(self, port: int) -> list[str]:
        raise NotImplementedError

    def _launch(self):
        # The package's parent directory first, so the subprocess imports this
        # very module even when the package is not installed.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.port = self._requested_port or find_free_port(self.host)
        return ([sys.executable, "-m", "beam_ml.testing.gcs", self.role, "--host", self.host,
                 "--port", str(self.port)] + self._args(self.port), {"env": env})

    def _ready(self) -> bool:
        return accepts_connections(self.host, self.port)

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _stopped(self) -> None:
        self.port = None


# --------------------------------------------------------------------------------------------
# The emulator.


class GcsEmulator(_EmulatorProcess):
    """gcp-storage-emulator, in memory, with a default bucket, in a subprocess.

    Args:
      bucket: the bucket that exists from the start.
      host: interface to listen on; keep the default so nothing is exposed.
      port: TCP port; a free one is picked when None.
      startup_timeout: seconds to wait for it to answer.
    """

    role = "emulator"

    def __init__(self, bucket: str = DEFAULT_BUCKET, host: str = _HOST, port: Optional[int] = None,
                 startup_timeout: float = 20.0) -> None:
        super().__init__(host, port, startup_timeout)
        self.bucket = bucket

    def _args(self, port: int) -> list[str]:
        return ["--bucket", self.bucket]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the value for STORAGE_EMULATOR_HOST."""
        if self.port is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def create_bucket(self, name: str) -> str:
        """Creates a bucket (JSON API ``buckets.insert``); returns its name."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test-proj", data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"creating bucket {name}: HTTP {r.status}")
        return name

    def __repr__(self) -> str:
        state = self.endpoint if self.port else "stopped"
        return f"GcsEmulator({state}, bucket={self.bucket!r}, pid={self.pid})"


def _serve_emulator(host: str, port: int, bucket: str) -> None:
    """Runs the emulator in this process until it is killed."""
    from gcp_storage_emulator import server  # pylint: disable=import-outside-toplevel

    read_data = server._read_data  # pylint: disable=protected-access

    def read_data_or_empty(request_handler, query):
        data = read_data(request_handler, query)
        # An empty media upload has no body: the emulator then takes len(None).
        if data is None and query.get("uploadType") == ["media"]:
            return b""
        return data

    server._read_data = read_data_or_empty  # pylint: disable=protected-access
    # Its object routes require a name not ending in "/", but TensorFlow's makedirs
    # writes "dir/" marker objects and renames a directory object by object
    # (rewriteTo), markers included: without this, e.g. tf.Transform's
    # WriteTransformFn (a directory rename) failed with 404 on the emulator.
    server.HANDLERS = tuple(
        (regex.replace("(?P<object_id>.*[^/]+)", "(?P<object_id>.+)")
         .replace("(?P<dest_object_id>.*[^/]+)", "(?P<dest_object_id>.+)"), handlers)
        for regex, handlers in server.HANDLERS)

    def storage_layout(request, response, storage, *args, **kwargs):
        name = request.params.get("bucket_name")
        if not storage.buckets.get(name):
            response.status = http.HTTPStatus.NOT_FOUND
            return
        response.json({"kind": "storage#storageLayout", "bucket": name, "location": "US",
                       "locationType": "multi-region", "hierarchicalNamespace": {"enabled": False}})

    # TensorFlow asks for a bucket's storage layout (hierarchical namespace or
    # not) before renaming a directory; the emulator did not know the call (404).
    server.HANDLERS = ((rf"^{server.settings.API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/storageLayout$",
                        {server.GET: storage_layout}),) + server.HANDLERS
    # It writes a response's headers and body in two sends: with Nagle's
    # algorithm and delayed ACKs each request then took ~40 ms more.
    server.RequestHandler.disable_nagle_algorithm = True
    server.create_server(host, port, in_memory=True, default_bucket=bucket).run()


# --------------------------------------------------------------------------------------------
# The TLS proxy for TensorFlow.


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and of a server certificate it signed."""

    ca_cert: str
    cert: str
    key: str


def make_test_ca(directory: str, hosts: Sequence[str] = GCS_HOSTS) -> TlsFiles:
    """Writes a throwaway CA and a certificate for `hosts` (signed by it) into `directory`.

    Args:
      directory: an existing directory (e.g. a temporary one).
      hosts: DNS names the server certificate is valid for.

    Returns:
      The paths of the CA certificate, the server certificate and its key.
    """
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # pylint: disable=import-outside-toplevel

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "beam_ml test CA (throwaway)")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(os.path.join(directory, "ca.pem"), os.path.join(directory, "server.pem"),
                     os.path.join(directory, "server-key.pem"))
    with open(files.ca_cert, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(files.cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(files.key, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return files


class GcsTlsProxy(_EmulatorProcess):
    """An HTTPS CONNECT proxy that serves the GCS hosts from a `GcsEmulator`, in a subprocess.

    Only CONNECT to `GCS_HOSTS` port 443 is accepted; every other request is
    refused with 403, so nothing leaves the machine through it.

    Args:
      upstream_port: the emulator's port on 127.0.0.1.
      tls: the certificate and key to present (from `make_test_ca`).
      host: interface to listen on.
      port: TCP port; a free one is picked when None.
      startup_timeout: seconds to wait for it to listen.
    """

    role = "proxy"

    def __init__(self, upstream_port: int, tls: TlsFiles, host: str = _HOST, port: Optional[int] = None,
                 startup_timeout: float = 20.0) -> None:
        super().__init__(host, port, startup_timeout)
        self.upstream_port = upstream_port
        self.tls = tls

    def _args(self, port: int) -> list[str]:
        return ["--upstream-port", str(self.upstream_port), "--cert", self.tls.cert, "--key", self.tls.key]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the value for https_proxy."""
        if self.port is None:
            raise RuntimeError("the proxy is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = self.url if self.port else "stopped"
        return f"GcsTlsProxy({state}, upstream=127.0.0.1:{self.upstream_port}, pid={self.pid})"


# Hop-by-hop headers, and the ones the proxy recomputes for the upstream request.
_DROP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding", "te",
                 "trailer", "upgrade", "expect", "content-length"}
_MAX_LINE = 65536


class _BadRequest(Exception):
    pass


def _read_headers(rfile) -> list[tuple[str, str]]:
    headers = []
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest("header line too long")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))


def _header(headers: Sequence[tuple[str, str]], name: str) -> Optional[str]:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _read_body(rfile, headers: Sequence[tuple[str, str]]) -> bytes:
    # Chunked wins over Content-Length (RFC 9112 6.3): TF sends both.
    if "chunked" in (_header(headers, "Transfer-Encoding") or "").lower():
        body = bytearray()
        while True:
            size_line = rfile.readline(_MAX_LINE + 1).split(b";", 1)[0].strip()
            size = int(size_line or b"0", 16)
            if size == 0:
                _read_headers(rfile)  # trailers, up to the blank line
                return bytes(body)
            body += rfile.read(size)
            rfile.readline()
    length = int(_header(headers, "Content-Length") or 0)
    return rfile.read(length) if length else b""


def _write_response(wfile, status: int, reason: str, headers: Sequence[tuple[str, str]], body: bytes) -> None:
    out = [f"HTTP/1.1 {status} {reason}\r\n"]
    out += [f"{k}: {v}\r\n" for k, v in headers]
    out.append(f"Content-Length: {len(body)}\r\n\r\n")
    wfile.write("".join(out).encode("latin-1") + body)
    wfile.flush()


class _ProxyHandler(socketserver.StreamRequestHandler):
    """One client connection: a CONNECT, then HTTP/1.1 requests inside TLS until it closes."""

    server: "_ProxyServer"
    timeout = 120  # an idle tunnel is closed; TF reconnects
    disable_nagle_algorithm = True  # small request/response exchanges: no 40 ms delayed-ACK stalls

    def handle(self) -> None:
        try:
            line = self.rfile.readline(_MAX_LINE + 1).decode("latin-1").strip()
            if not line:
                return
            headers = _read_headers(self.rfile)
            method, target, _ = (line.split(" ", 2) + ["", ""])[:3]
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or host not in GCS_HOSTS or port != "443":
                _LOGGER.warning("refused: %s", line)
                _write_response(self.wfile, 403, "Forbidden", [("Connection", "close")],
                                f"this test proxy only serves CONNECT to {', '.join(GCS_HOSTS)}:443\n".encode())
                return
            del headers
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            tls = self.server.tls_context.wrap_socket(self.connection, server_side=True)
            with tls, tls.makefile("rb") as rfile, tls.makefile("wb") as wfile:
                while self._forward_one(rfile, wfile, host):
                    pass
        except (OSError, ssl.SSLError, _BadRequest, ValueError) as e:
            _LOGGER.info("connection closed: %s", e)

    def _forward_one(self, rfile, wfile, host: str) -> bool:
        line = rfile.readline(_MAX_LINE + 1).decode("latin-1").strip()
        if not line:
            return False
        method, path, version = line.split(" ", 2)
        headers = _read_headers(rfile)
        if (_header(headers, "Expect") or "").lower() == "100-continue":
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wfile.flush()
        body = _read_body(rfile, headers)
        # The emulator builds the URLs it returns (mediaLink, upload Location)
        # from the Host header: the upstream address keeps them usable by the
        # Python clients, which go to the emulator directly.
        upstream_host = f"{_HOST}:{self.server.upstream_port}"
        forward = [(k, v) for k, v in headers if k.lower() not in _DROP_HEADERS and k.lower() != "host"]
        upstream = http.client.HTTPConnection(_HOST, self.server.upstream_port, timeout=120)
        try:
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            upstream.putheader("Host", upstream_host)
            for k, v in forward:
                upstream.putheader(k, v)
            if body or method in ("POST", "PUT", "PATCH"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            # The emulator drops the connection when a handler raises: say so
            # at once (TF retries a 502) instead of leaving the client waiting.
            _LOGGER.warning("upstream failed for %s %s: %r", method, path, e)
            _write_response(wfile, 502, "Bad Gateway", [("Connection", "close")], f"emulator: {e!r}\n".encode())
            return False
        finally:
            upstream.close()
        out_headers = []
        for k, v in response.getheaders():
            if k.lower() in _DROP_HEADERS:
                continue
            if k.lower() == "location":
                # A resumable upload's session URL: TF must come back through this tunnel.
                v = v.replace(f"http://{upstream_host}/", f"https://{host}/")
            out_headers.append((k, v))
        _write_response(wfile, response.status, response.reason, out_headers, data)
        keep_alive = version.upper() == "HTTP/1.1" and (_header(headers, "Connection") or "").lower() != "close"
        return keep_alive


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, upstream_port: int, cert: str, key: str) -> None:
        self.upstream_port = upstream_port
        self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls_context.load_cert_chain(cert, key)
        super().__init__(address, _ProxyHandler)


def _serve_proxy(host: str, port: int, upstream_port: int, cert: str, key: str) -> None:
    """Runs the proxy in this process until it is killed."""
    with _ProxyServer((host, port), upstream_port, cert, key) as server:
        server.serve_forever()


# --------------------------------------------------------------------------------------------
# All of it together.


class LocalGcs:
    """The emulator, the TLS proxy, a CA and a fake credentials file, for a `with` block.

    Args:
      bucket: the default bucket.
      workdir: where the CA and credentials files go; a temporary directory
        (removed on stop) when None.
      tls_proxy: start the proxy for TensorFlow's gs:// (False: Beam and Python clients only).
    """

    def __init__(self, bucket: str = DEFAULT_BUCKET, workdir: Optional[str] = None, tls_proxy: bool = True) -> None:
        self.bucket = bucket
        self._workdir = workdir
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._tls_proxy = tls_proxy
        self.emulator: Optional[GcsEmulator] = None
        self.proxy: Optional[GcsTlsProxy] = None
        self.environ: dict[str, str] = {}

    def start(self) -> "LocalGcs":
        """Starts the emulator (and proxy) and fills `environ`."""
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="beam_ml_gcs_")
            workdir = self._tmp.name
        else:
            workdir = self._workdir
            os.makedirs(workdir, exist_ok=True)
        try:
            self.emulator = GcsEmulator(self.bucket).start()
            credentials = write_fake_credentials(os.path.join(workdir, "fake_credentials.json"))
            proxy_url = ca = None
            if self._tls_proxy:
                tls = make_test_ca(workdir)
                self.proxy = GcsTlsProxy(self.emulator.port, tls).start()
                proxy_url, ca = self.proxy.url, tls.ca_cert
            self.environ = gcs_environ(self.emulator.endpoint, credentials, proxy_url, ca)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the servers and removes the temporary files."""
        for server in (self.proxy, self.emulator):
            if server is not None:
                server.stop()
        self.proxy = self.emulator = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def new_bucket(self, prefix: str = "t") -> str:
        """Creates a uniquely named bucket; returns its name."""
        return self.emulator.create_bucket(f"{prefix}-{uuid.uuid4().hex[:12]}")

    @contextlib.contextmanager
    def environ_applied(self) -> Iterator[Mapping[str, str]]:
        """Sets `environ` in os.environ for the block (child processes inherit it), then restores it."""
        with applied_environ(self.environ) as env:
            yield env

    def __enter__(self) -> "LocalGcs":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def applied_environ(env: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """Sets `env` in os.environ for the block, then restores the previous values."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m beam_ml.testing.gcs", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role")
    emulator = sub.add_parser("emulator", help="run the emulator in the foreground")
    proxy = sub.add_parser("proxy", help="run the TLS proxy in the foreground")
    for p in (emulator, proxy):
        p.add_argument("--host", default=_HOST)
        p.add_argument("--port", type=int, required=True)
    emulator.add_argument("--bucket", default=DEFAULT_BUCKET)
    proxy.add_argument("--upstream-port", type=int, required=True)
    proxy.add_argument("--cert", required=True)
    proxy.add_argument("--key", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.role == "emulator":
        _serve_emulator(args.host, args.port, args.bucket)
    elif args.role == "proxy":
        _serve_proxy(args.host, args.port, args.upstream_port, args.cert, args.key)
    else:
        # Interactive: both servers, and the variables to paste into a shell.
        with LocalGcs() as gcs:
            for k, v in sorted(gcs.environ.items()):
                print(f"export {k}={v}")
            print(f"# bucket: gs://{gcs.bucket}", flush=True)
            try:
                input("# Enter stops the servers\n")
            except (EOFError, KeyboardInterrupt):
                pass


if __name__ == "__main__":
    _main()
