"""Secured Kafka endpoints for tests: TLS (stunnel) and SASL (a small front) in front of Tansu.

Tansu cannot speak TLS or SASL itself (../shared/KAFKA_SECURITY.md), so a secured
listener is built from parts, all on 127.0.0.1:

- TLS: Debian's ``stunnel`` terminates TLS (``verify=2`` + ``CAfile`` for mutual TLS)
  and forwards the plaintext bytes to the next hop.
- SASL: `SaslFront`, a threaded TCP front written for the tests, relays ApiVersions to
  the broker, answers SaslHandshake v0/v1 and SaslAuthenticate v0-v2 itself (PLAIN,
  SCRAM-SHA-256, SCRAM-SHA-512 through ``scramp``), closes any other request sent
  before authentication, then pipes bytes (through a ``socat`` process per
  authenticated connection when socat is installed, else Python threads). A failed login is answered with error 58
  and the connection closed ~100 ms later, as Kafka does.
- Tansu listens on an internal port and advertises the outer port, so clients come
  back through the front after reading metadata.

    certs = make_certificates(tmp_dir, key_password="kp")
    with SecureKafka("SASL_SSL", certs, users={"alice": "s3cret"}) as kafka:
        kafka.create_topic("t")
        consumer = KafkaConsumer(**kafka.client_kwargs(user="alice", mechanism="SCRAM-SHA-512"))

It tests a client against the protocol, not a real broker's SASL implementation.
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

import scramp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from beam_ml.testing.broker import TansuBroker, create_topic
from beam_ml.testing.process import HOST, ThrowawayServer, accepts_connections, find_free_port

__all__ = ["Certificates", "SaslFront", "SecureKafka", "TlsTerminator", "make_certificates", "stunnel_binary",
           "SASL_AUTHENTICATION_FAILED", "PROTOCOLS"]

_LOGGER = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL")
SASL_AUTHENTICATION_FAILED = 58
_ILLEGAL_SASL_STATE = 34
_UNSUPPORTED_SASL_MECHANISM = 33
_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FAILED_AUTH_DELAY = 0.1  # Kafka's connections.failed.authentication.delay.ms, shortened


# ------------------------------------------------------------ certificates
class Certificates(NamedTuple):
    """PEM files of a test PKI (all in one directory)."""
    ca: str                      # the CA that signed the server and client certificates
    server_cert: str             # CN=localhost, subjectAltName IP:127.0.0.1 and DNS:localhost
    server_key: str
    client_cert: str             # CN=beam-ml-client
    client_key: str              # unencrypted
    client_key_encrypted: str    # the same key, encrypted with `key_password`
    key_password: str
    other_ca: str                # a CA that signed nothing here (a "wrong CA")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def _key_pem(key, password: Optional[str] = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _issue(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False,
           san: Optional[list] = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(directory: str, key_password: str = "client-key-pass") -> Certificates:
    """Writes a CA, a server certificate for 127.0.0.1, a client certificate and a second CA.

    Args:
      directory: where the PEM files go (created if needed).
      key_password: password of the encrypted copy of the client key.
    """
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("beam-ml test CA", ca_key, _name("beam-ml test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("localhost", server_key, ca_cert.subject, ca_key,
                         san=[x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue("beam-ml-client", client_key, ca_cert.subject, ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _issue("some other CA", other_key, _name("some other CA"), other_key, ca=True)
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    return Certificates(
        ca=_write(path("ca.pem"), pem(ca_cert)),
        server_cert=_write(path("server.pem"), pem(server_cert)),
        server_key=_write(path("server.key"), _key_pem(server_key)),
        client_cert=_write(path("client.pem"), pem(client_cert)),
        client_key=_write(path("client.key"), _key_pem(client_key)),
        client_key_encrypted=_write(path("client.enc.key"), _key_pem(client_key, key_password)),
        key_password=key_password,
        other_ca=_write(path("other-ca.pem"), pem(other_ca)))


# ------------------------------------------------------------ TLS: stunnel
def stunnel_binary() -> str:
    """The stunnel executable (Debian's stunnel4), or FileNotFoundError saying how to get it."""
    found = shutil.which("stunnel") or shutil.which("stunnel4")
    if not found:
        raise FileNotFoundError("stunnel not found: apt-get install stunnel4 (make sysdeps does)")
    return found


class TlsTerminator(ThrowawayServer):
    """stunnel accepting TLS on `port` (127.0.0.1) and forwarding plaintext to `target_port`.

    Args:
      target_port: the plaintext port behind it.
      certs: the server certificate and key (and the CA for mutual TLS).
      mutual: require a client certificate signed by the CA (``verify=2``).
      port: the TLS port (picked when None).
      workdir: where its configuration file is written.
    """

    def __init__(self, target_port: int, certs: Certificates, workdir: str, mutual: bool = False,
                 port: Optional[int] = None, startup_timeout: float = 10.0) -> None:
        super().__init__("stunnel TLS terminator", startup_timeout, attempts=1 if port else 3)
        self.target_port = target_port
        self.certs = certs
        self.mutual = mutual
        self._workdir = workdir
        self._requested_port = port
        self.port: Optional[int] = None

    def _launch(self):
        self.port = self._requested_port or find_free_port()
        lines = ["foreground = yes", "pid =", "debug = 4", "syslog = no", "[kafka]",
                 f"accept = {HOST}:{self.port}", f"connect = {HOST}:{self.target_port}",
                 f"cert = {self.certs.server_cert}", f"key = {self.certs.server_key}"]
        if self.mutual:
            lines += [f"CAfile = {self.certs.ca}", "verify = 2"]
        conf = os.path.join(self._workdir, f"stunnel-{self.port}.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [stunnel_binary(), conf], {}

    def _ready(self) -> bool:
        return accepts_connections(HOST, self.port)

    def _where(self) -> str:
        return f"tls://{HOST}:{self.port}"

    def _stopped(self) -> None:
        self.port = None


# ------------------------------------------------------------ SASL front
def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


_MAX_FRAME = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes


def _read_frame(sock: socket.socket) -> Optional[bytes]:
    size = _recv_exact(sock, 4)
    if size is None:
        return None
    n = struct.unpack(">i", size)[0]
    if not 0 < n <= _MAX_FRAME:
        return None  # e.g. a TLS ClientHello sent to this plaintext port: Kafka closes, so do we
    return _recv_exact(sock, n)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _skip_tags(data: bytes, pos: int) -> int:
    count, pos = _uvarint(data, pos)
    for _ in range(count):
        _, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


def _kstring(text: Optional[str]) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


class _Login:
    """One connection's SASL exchange: PLAIN in one step, SCRAM in two."""

    def __init__(self, mechanism: str, users: dict[str, str], scram_iterations: int):
        self.mechanism = mechanism
        self._users = users
        self._iterations = scram_iterations
        self._server = None
        self.done = False

    def _auth_info(self, username: str):
        if username not in self._users:
            raise scramp.ScramException("unknown user")
        mech = scramp.ScramMechanism(self.mechanism)
        return mech.make_auth_info(self._users[username], iteration_count=self._iterations)

    def step(self, token: bytes) -> bytes:
        """The server's answer to `token`; raises PermissionError on a failed login."""
        if self.mechanism == "PLAIN":
            parts = token.split(b"\0")
            if len(parts) != 3:
                raise PermissionError("malformed PLAIN token")
            user, password = parts[1].decode(), parts[2].decode()
            if self._users.get(user) != password or user not in self._users:
                raise PermissionError("Invalid username or password")
            self.done = True
            return b""
        try:
            if self._server is None:
                self._server = scramp.ScramMechanism(self.mechanism).make_server(self._auth_info)
                self._server.set_client_first(token.decode())
                return self._server.get_server_first().encode()
            self._server.set_client_final(token.decode())
            self.done = True
            return self._server.get_server_final().encode()
        except scramp.ScramException as e:
            raise PermissionError(f"Authentication failed during authentication due to invalid credentials "
                                  f"with SASL mechanism {self.mechanism}") from e


class SaslFront:
    """A threaded front answering Kafka's SASL requests and piping authenticated bytes upstream.

    Args:
      upstream_port: the plaintext broker port (127.0.0.1).
      users: user name -> password.
      mechanisms: the mechanisms offered.
      port: the port to listen on (picked when None).
    """

    def __init__(self, upstream_port: int, users: dict[str, str], mechanisms=_MECHANISMS,
                 port: Optional[int] = None, scram_iterations: int = 4096) -> None:
        self.upstream_port = upstream_port
        self.users = dict(users)
        self.mechanisms = tuple(mechanisms)
        self._requested_port = port
        self._iterations = scram_iterations
        self.port: Optional[int] = None
        self._listener: Optional[socket.socket] = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._socat = shutil.which("socat")  # None: authenticated bytes are piped by Python threads
        self._pipes: list[subprocess.Popen] = []
        self.failed_logins = 0
        self.logins = 0

    def start(self) -> "SaslFront":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self._requested_port or 0))
        listener.listen(64)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._spawn(self._accept_loop, "sasl-front-accept")
        _LOGGER.info("SASL front listening on %s:%d -> %d", HOST, self.port, self.upstream_port)
        return self

    def _spawn(self, target: Callable, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._serve, "sasl-front-conn", self._track(client))

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            upstream = self._authenticate(client)
            if upstream is not None and self._socat:
                # socat (C) pipes the authenticated connection: Python stays out of the data path.
                self._close(upstream)
                upstream = None
                process = subprocess.Popen(
                    [self._socat, f"FD:{client.fileno()}", f"TCP:{HOST}:{self.upstream_port},nodelay"],
                    pass_fds=(client.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                with self._lock:
                    self._pipes = [p for p in self._pipes if p.poll() is None] + [process]
            elif upstream is not None:
                self._spawn(self._pipe, "sasl-front-pipe", upstream, client)
                self._pipe(client, upstream)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    self._close(s)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _upstream(self) -> socket.socket:
        return self._track(socket.create_connection((HOST, self.upstream_port), timeout=10))

    def _authenticate(self, client: socket.socket) -> Optional[socket.socket]:
        """Runs the pre-authentication exchange; returns the upstream socket once logged in."""
        upstream = None
        login: Optional[_Login] = None
        while True:
            frame = _read_frame(client)
            if frame is None or len(frame) < 8:
                return None
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == _API_VERSIONS:
                upstream = upstream or self._upstream()
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
                answer = _read_frame(upstream)
                if answer is None:
                    return None
                client.sendall(struct.pack(">i", len(answer)) + answer)
                continue
            pos = 8
            client_len = struct.unpack(">h", frame[pos:pos + 2])[0]
            pos += 2 + max(client_len, 0)
            if api_key == _SASL_HANDSHAKE:
                mech_len = struct.unpack(">h", frame[pos:pos + 2])[0]
                mechanism = frame[pos + 2:pos + 2 + mech_len].decode()
                error = 0 if mechanism in self.mechanisms else _UNSUPPORTED_SASL_MECHANISM
                body = struct.pack(">hi", error, len(self.mechanisms)) + b"".join(
                    _kstring(m) for m in self.mechanisms)
                self._reply(client, correlation, body, flexible=False)
                if error:
                    return None
                login = _Login(mechanism, self.users, self._iterations)
                continue
            if api_key == _SASL_AUTHENTICATE and login is not None:
                flexible = version >= 2
                if flexible:
                    pos = _skip_tags(frame, pos)
                    size, pos = _uvarint(frame, pos)
                    token = frame[pos:pos + size - 1]
                else:
                    size = struct.unpack(">i", frame[pos:pos + 4])[0]
                    token = frame[pos + 4:pos + 4 + size]
                try:
                    answer = login.step(token)
                except PermissionError as e:
                    self.failed_logins += 1
                    self._reply(client, correlation, self._auth_body(version, SASL_AUTHENTICATION_FAILED,
                                                                     str(e), b""), flexible)
                    time.sleep(_FAILED_AUTH_DELAY)
                    return None
                self._reply(client, correlation, self._auth_body(version, 0, None, answer), flexible)
                if login.done:
                    self.logins += 1
                    return upstream or self._upstream()
                continue
            # Anything else before authentication: Kafka closes the connection.
            return None

    @staticmethod
    def _auth_body(version: int, error: int, message: Optional[str], token: bytes) -> bytes:
        if version >= 2:
            msg = b"\x00" if message is None else _put_uvarint(len(message.encode()) + 1) + message.encode()
            return (struct.pack(">h", error) + msg + _put_uvarint(len(token) + 1) + token
                    + struct.pack(">q", 0) + b"\x00")
        body = struct.pack(">h", error) + _kstring(message) + struct.pack(">i", len(token)) + token
        return body + (struct.pack(">q", 0) if version >= 1 else b"")

    @staticmethod
    def _reply(client: socket.socket, correlation: int, body: bytes, flexible: bool) -> None:
        header = struct.pack(">i", correlation) + (b"\x00" if flexible else b"")
        payload = header + body
        client.sendall(struct.pack(">i", len(payload)) + payload)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(None)
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Closes the listener and every connection; joins the threads (bounded)."""
        self._closing = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._close(s)
        deadline = time.monotonic() + 5
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            pipes, self._pipes = self._pipes, []
        for process in pipes:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.port = None

    def __enter__(self) -> "SaslFront":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# ------------------------------------------------------------ the composition
class SecureKafka:
    """A Tansu broker reachable only through a secured listener.

    Args:
      protocol: PLAINTEXT, SSL, MTLS (SSL with client certificates required),
        SASL_PLAINTEXT or SASL_SSL.
      certs: the test PKI (`make_certificates`); needed for the TLS protocols.
      users: SASL users and passwords.
      workdir: for stunnel's configuration (default: the certificates' directory).
    """

    def __init__(self, protocol: str, certs: Optional[Certificates] = None,
                 users: Optional[dict[str, str]] = None, workdir: Optional[str] = None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
        if protocol in ("SSL", "MTLS", "SASL_SSL") and certs is None:
            raise ValueError(f"{protocol} needs certificates (make_certificates)")
        self.protocol = protocol
        self.certs = certs
        self.users = dict(users or {})
        self._workdir = workdir or (os.path.dirname(certs.ca) if certs else None)
        self.broker: Optional[TansuBroker] = None
        self.sasl: Optional[SaslFront] = None
        self.tls: Optional[TlsTerminator] = None
        self.port: Optional[int] = None

    @property
    def security_protocol(self) -> str:
        """The client-side security.protocol (MTLS is SSL)."""
        return "SSL" if self.protocol == "MTLS" else self.protocol

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> "SecureKafka":
        try:
            if self.protocol == "PLAINTEXT":
                self.broker = TansuBroker().start()
                self.port = self.broker.port
                return self
            for _ in range(3):
                # Tansu must advertise the outer port before anything listens on it.
                self.port = find_free_port()
                self.broker = TansuBroker(advertised_port=self.port).start()
                inner = self.broker.port
                try:
                    if self.protocol.startswith("SASL_"):
                        sasl_port = self.port if self.protocol == "SASL_PLAINTEXT" else None
                        self.sasl = SaslFront(inner, self.users, port=sasl_port).start()
                        inner = self.sasl.port
                    if self.protocol in ("SSL", "MTLS", "SASL_SSL"):
                        self.tls = TlsTerminator(inner, self.certs, self._workdir, mutual=self.protocol == "MTLS",
                                                 port=self.port).start()
                    return self
                except (OSError, RuntimeError) as e:  # the outer port was taken meanwhile
                    _LOGGER.warning("secured listener on %d failed (%s); retrying", self.port, e)
                    self.stop()
            raise RuntimeError(f"could not start a {self.protocol} listener")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for part in (self.tls, self.sasl, self.broker):
            if part is not None:
                part.stop()
        self.tls = self.sasl = self.broker = None

    def client_kwargs(self, user: Optional[str] = None, mechanism: str = "SCRAM-SHA-512",
                      password: Optional[str] = None, encrypted_key: bool = False) -> dict[str, Any]:
        """kafka-python keyword arguments that log in here (`user`'s password unless `password`)."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers,
                                  "security_protocol": self.security_protocol}
        if self.protocol in ("SSL", "MTLS", "SASL_SSL"):
            kwargs["ssl_cafile"] = self.certs.ca
        if self.protocol == "MTLS":
            kwargs["ssl_certfile"] = self.certs.client_cert
            kwargs["ssl_keyfile"] = self.certs.client_key_encrypted if encrypted_key else self.certs.client_key
            if encrypted_key:
                kwargs["ssl_password"] = self.certs.key_password
        if self.protocol.startswith("SASL_"):
            user = user or next(iter(self.users))
            kwargs.update(sasl_mechanism=mechanism, sasl_plain_username=user,
                          sasl_plain_password=password if password is not None else self.users[user])
        return kwargs

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 10.0) -> None:
        """Creates a topic through the secured listener (the broker advertises only that one)."""
        kwargs = self.client_kwargs() if self.users or self.protocol != "PLAINTEXT" else {}
        kwargs.pop("bootstrap_servers", None)
        create_topic(self.bootstrap_servers, name, partitions, timeout, **kwargs)

    def __enter__(self) -> "SecureKafka":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SecureKafka({self.protocol}, {self.bootstrap_servers if self.port else 'stopped'})"
