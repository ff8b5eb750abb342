"""Kafka client settings: security options from flags or a config file.

The settings that every Kafka client of a pipeline shares (brokers, TLS, SASL)
are collected in one immutable `KafkaClientConfig`, built from an optional
properties/JSON file overlaid with explicit values, validated once, and turned
into kafka-python keyword arguments by `client_kwargs()`. Its repr and
`redacted()` never show a password, so it is safe to log.

Sample command line (any pipeline whose options include `beam_ml.options.KafkaOptions`)::

    python -m pipelines.stream_predict --bootstrap_servers=broker:9093 \\
        --kafka_config=client.properties --input_topic=transactions ...

where ``client.properties`` is the file Confluent Cloud or a Kafka admin hands
out, e.g.::

    bootstrap.servers=broker:9093
    security.protocol=SASL_SSL
    sasl.mechanism=SCRAM-SHA-512
    sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \\
        required username="svc" password="...";
    ssl.ca.location=/etc/kafka/ca.pem

TLS files are read by the clients where they run: on Dataflow the paths must
exist on the workers too (e.g. baked into a custom container).

Passwords can also come from a file or an environment variable
(``sasl.password.file`` / ``sasl.password.env`` in the file, ``--sasl_password_file``
/ ``--sasl_password_env`` as flags). A ``--sasl_password`` given as a flag is taken
out of the options Beam displays (see beam_ml.options), but a command line is still
visible to other local users: prefer the file or the variable.

JKS trust and key stores (``ssl.truststore.location``, ``ssl.keystore.location``,
what Java clients and Google's Dataflow templates take) are converted to PEM in
process with ``pyjks`` (`beam_ml.io.kafka.stores`).

`check_connection` is the pre-flight a pipeline runs before Beam starts: one real
connection (TLS handshake, SASL login, a Metadata request) with a short timeout,
whose failure becomes one line naming the setting and the broker's reason.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import ssl
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

from kafka import errors as kafka_errors
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.protocol.metadata.metadata import MetadataRequest

from beam_ml.errors import UserError
from beam_ml.io.kafka import stores

__all__ = [
    "KafkaClientConfig",
    "KafkaConnectionRefused",
    "check_connection",
    "read_secret",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "check_client_overrides",
    "resolve_client_config",
]

_LOGGER = logging.getLogger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_REDACTED = "***"
# Every password a KafkaClientConfig of this process holds: log records showing one are blanked.
_KNOWN_SECRETS: set = set()
_SECRET_FIELDS = frozenset({"sasl_plain_password", "ssl_password"})

# Config-file keys (after lower-casing and turning '.' and '-' into '_') that
# name a KafkaClientConfig field. Java client names, librdkafka names and
# kafka-python names are all accepted because users copy these files from
# whichever client their platform documents.
_FILE_KEY_ALIASES = {
    "bootstrap_servers": "bootstrap_servers",
    "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_mechanisms": "sasl_mechanism",  # librdkafka
    "sasl_username": "sasl_plain_username",
    "sasl_plain_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password",
    "sasl_plain_password": "sasl_plain_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_ca_location": "ssl_cafile",  # librdkafka
    "ssl_certfile": "ssl_certfile",
    "ssl_certificate_location": "ssl_certfile",  # librdkafka
    "ssl_keyfile": "ssl_keyfile",
    "ssl_key_location": "ssl_keyfile",  # librdkafka
    "ssl_password": "ssl_password",
    "ssl_key_password": "ssl_password",
    "client_id": "client_id",
}

# Keys whose value says where a secret is, not the secret: field -> (file key, env key).
_SECRET_SOURCES = {
    "sasl_plain_password": ("sasl_password_file", "sasl_password_env"),
    "ssl_password": ("ssl_password_file", "ssl_password_env"),
}
# Java keystore keys, converted to PEM files by beam_ml.io.kafka.stores.
_STORE_KEYS = ("ssl_truststore_location", "ssl_truststore_password", "ssl_keystore_location",
               "ssl_keystore_password", "ssl_truststore_type", "ssl_keystore_type")


def read_secret(label: str, *, file: Optional[str] = None, env: Optional[str] = None) -> Optional[str]:
    """A secret from a file (its first line, stripped) or an environment variable.

    Raises:
      ValueError: naming `label` (never the value) when the file or variable is missing or empty.
    """
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.readline().rstrip("\r\n")
        except OSError as e:
            raise ValueError(f"{label}: cannot read the password file {file}: {e.strerror}") from None
        if not value:
            raise ValueError(f"{label}: the password file {file} is empty")
        return value
    if env:
        value = os.environ.get(env)
        if not value:
            raise ValueError(f"{label}: the environment variable {env} is not set (or empty)")
        return value
    return None

_JAAS_FIELD = r'{name}\s*=\s*(?:"([^"]*)"|\'([^\']*)\')'


def _jaas_value(jaas: str, name: str) -> Optional[str]:
    match = re.search(_JAAS_FIELD.format(name=name), jaas)
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)


def _parse_properties(text: str, path: str) -> dict[str, str]:
    """Parses the subset of Java .properties syntax Kafka client files use."""
    props: dict[str, str] = {}
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            # A trailing backslash continues the value on the next line.
            pending = line[:-1]
            continue
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if not match:
            raise ValueError(
                f"{path}: line {number}: expected 'key=value', got a bare key")
        props[match.group(1)] = match.group(2)
    return props


def _normalise_key(key: str) -> str:
    return key.strip().lower().replace(".", "_").replace("-", "_")


@dataclasses.dataclass(frozen=True, repr=False)
class KafkaClientConfig:
    """Connection and security settings shared by all Kafka clients of a job.

    Field names follow kafka-python so `client_kwargs()` is a plain mapping.
    Build one with `KafkaClientConfig.load(path, **explicit)` or directly.

    Attributes:
        bootstrap_servers: Comma-separated ``host:port`` list.
        security_protocol: One of `SECURITY_PROTOCOLS`.
        sasl_mechanism: One of `SASL_MECHANISMS`, for the SASL_* protocols.
        sasl_plain_username: SASL user (PLAIN and SCRAM both use it).
        sasl_plain_password: SASL password. Never shown by repr/`redacted()`.
        ssl_cafile: PEM file of the CA that signed the brokers' certificates.
        ssl_certfile: PEM client certificate, for mutual TLS.
        ssl_keyfile: PEM client private key, for mutual TLS.
        ssl_password: Password of `ssl_keyfile`. Never shown.
        client_id: Name the brokers log and quota this client by.
    """
    bootstrap_servers: Optional[str] = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: Optional[str] = None
    sasl_plain_username: Optional[str] = None
    sasl_plain_password: Optional[str] = None
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    ssl_password: Optional[str] = None
    client_id: Optional[str] = None
    # How the user set each field (a flag, a file key), for error messages; not a setting.
    labels: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @classmethod
    def from_file(cls, path: str) -> "KafkaClientConfig":
        """Reads a Java-style ``.properties`` file or a ``.json`` object.

        Keys may be written the Java way (``security.protocol``), the librdkafka
        way (``ssl.ca.location``) or the kafka-python way (``ssl_cafile``).
        ``sasl.jaas.config`` is mined for ``username``/``password``. Other client
        tuning keys (``session.timeout.ms``, ...) are ignored with a warning that
        names the key (never the value).

        Args:
            path: File to read.

        Returns:
            The settings in the file, not yet validated.

        Raises:
            ValueError: The file cannot be parsed or uses an unsupported key.
        """
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"cannot read Kafka config file {path}: {e}") from e
        if path.endswith(".json"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON: {e}") from e
            if not isinstance(raw, dict):
                raise ValueError(f"{path}: expected a JSON object of client settings")
            items = {k: v for k, v in raw.items()}
        else:
            items = _parse_properties(text, path)

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        store: dict[str, str] = {}
        for key, value in items.items():
            norm = _normalise_key(key)
            if norm in _STORE_KEYS:
                store[norm] = str(value).strip()
                continue
            if any(norm in pair for pair in _SECRET_SOURCES.values()):
                sources[norm] = str(value).strip()
                continue
            if norm == "sasl_jaas_config":
                for name, field in (("username", "sasl_plain_username"),
                                    ("password", "sasl_plain_password")):
                    found = _jaas_value(str(value), name)
                    if found is not None:
                        values.setdefault(field, found)
                continue
            if norm == "ssl_endpoint_identification_algorithm":
                # kafka-python always checks hostnames unless given an ssl_context;
                # turning that off is not offered here on purpose.
                if str(value).strip():
                    continue
                raise ValueError(
                    f"{path}: {key}: disabling TLS hostname verification is not "
                    "supported")
            field = _FILE_KEY_ALIASES.get(norm)
            if field is None:
                _LOGGER.warning("%s: ignoring unsupported Kafka client key %r",
                                path, key)
                continue
            values[field] = None if value is None else str(value).strip()
        for field, (file_key, env_key) in _SECRET_SOURCES.items():
            secret = read_secret(f"{path}: {file_key if file_key in sources else env_key}",
                                 file=sources.get(file_key), env=sources.get(env_key))
            if secret is not None:
                values.setdefault(field, secret)
        if store:
            if values.get("ssl_password"):
                store["ssl_key_password"] = values["ssl_password"]
            values.update({k: v for k, v in stores.pem_files_from_java_stores(
                store, label=lambda key: f"{path}: {key.replace('_', '.')}").items() if k not in values})
        return cls(**values)

    @classmethod
    def load(cls, path: Optional[str] = None, **explicit: Any
                      ) -> "KafkaClientConfig":
        """Reads `path` (if given) and overlays the explicit, non-None values.

        Args:
            path: Optional properties/JSON file, see `from_file`.
            **explicit: Field values that win over the file (None means unset).

        Returns:
            The merged settings, not yet validated.
        """
        base = cls.from_file(path) if path else cls()
        return base.with_overrides(**explicit)

    def __post_init__(self) -> None:
        for field in _SECRET_FIELDS:
            value = getattr(self, field)
            if value:
                _KNOWN_SECRETS.add(value)

    def __setstate__(self, state: dict) -> None:
        # Unpickled on a worker: the passwords become known there too.
        for key, value in state.items():
            object.__setattr__(self, key, value)
        self.__post_init__()

    def with_overrides(self, **overrides: Any) -> "KafkaClientConfig":
        """Returns a copy with the non-None `overrides` applied."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)} - {"labels"}
        if unknown:
            raise TypeError(f"unknown KafkaClientConfig fields: {sorted(unknown)}")
        return dataclasses.replace(
            self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self,
                              label: Optional[Callable[[str], str]] = None,
                              require_bootstrap: bool = True) -> "KafkaClientConfig":
        """Checks the settings, raising an error that names the bad setting.

        Args:
            label: Maps a field name to how the user set it (e.g. its flag), so the
                error points at the right place. Defaults to the field name.
            require_bootstrap: Whether `bootstrap_servers` must be set.

        Returns:
            self, for chaining.

        Raises:
            ValueError: A setting is missing, unknown or inconsistent.
        """
        name = label or self.label
        if require_bootstrap and not self.bootstrap_servers:
            raise ValueError(
                f"{name('bootstrap_servers')} is required (host:port[,host:port])")
        if self.bootstrap_servers:
            for server in self.bootstrap_servers.split(","):
                host, _, port = server.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(
                        f"{name('bootstrap_servers')}: expected host:port, got "
                        f"{server.strip()!r}")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"{name('security_protocol')}: expected one of "
                f"{', '.join(SECURITY_PROTOCOLS)}, got {self.security_protocol!r}")
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(
                    f"{name('sasl_mechanism')}: {self.security_protocol} needs one of "
                    f"{', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}")
            if not self.sasl_plain_username:
                raise ValueError(
                    f"{name('sasl_plain_username')} is required with "
                    f"{self.sasl_mechanism}")
            if not self.sasl_plain_password:
                raise ValueError(
                    f"{name('sasl_plain_password')} is required with "
                    f"{self.sasl_mechanism}")
        else:
            for field in ("sasl_mechanism", "sasl_plain_username",
                          "sasl_plain_password"):
                if getattr(self, field):
                    raise ValueError(
                        f"{name(field)} is set but {name('security_protocol')} is "
                        f"{self.security_protocol}; use SASL_SSL or SASL_PLAINTEXT")
        for field in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, field)
            if path and not os.path.isfile(path):
                raise ValueError(f"{name(field)}: file not found: {path}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError(
                f"{name('ssl_certfile')} and {name('ssl_keyfile')} must be given "
                "together (mutual TLS)")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Returns keyword arguments for kafka-python's clients.

        Only fields that are set are included, so kafka-python defaults apply to
        the rest. The result holds secrets: pass it on, never log it.
        """
        kwargs: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or field.name == "labels":
                continue
            if field.name == "bootstrap_servers":
                value = [s.strip() for s in value.split(",") if s.strip()]
            kwargs[field.name] = value
        return kwargs

    def redacted(self) -> dict[str, Any]:
        """Returns the set fields with every secret replaced by ``'***'``."""
        return {
            field.name: (_REDACTED if field.name in _SECRET_FIELDS else value)
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)] if value is not None and field.name != "labels"
        }

    def with_labels(self, label: Callable[[str], str]) -> "KafkaClientConfig":
        """A copy that names each field as `label` does in errors (e.g. the flag that sets it)."""
        return dataclasses.replace(self, labels=tuple(
            (f.name, label(f.name)) for f in dataclasses.fields(self) if f.name != "labels"))

    def label(self, field: str) -> str:
        """How the user set `field` (its flag or file key), else the field name."""
        return dict(self.labels).get(field, field)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"KafkaClientConfig({fields})"

    __str__ = __repr__


def check_client_overrides(name: str, config: Optional[Mapping[str, Any]],
                            allowed: Iterable[str],
                            managed: Iterable[str]) -> dict[str, Any]:
    """Checks extra kafka-python settings a transform passes through to its client.

    Raises:
      ValueError: a setting kafka-python does not know, or one the transform manages itself.
    """
    config = dict(config or {})
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown kafka-python settings {unknown}")
    reserved = sorted(set(config) & set(managed))
    if reserved:
        raise ValueError(f"{name}: {reserved} are set by the transform; use "
                         "its arguments or client_config instead")
    return config


def resolve_client_config(bootstrap_servers: Optional[str],
                   client_config: Optional[KafkaClientConfig]
                   ) -> KafkaClientConfig:
    """`client_config` (or an empty one) with `bootstrap_servers` applied, validated."""
    config = (client_config or KafkaClientConfig()).with_overrides(
        bootstrap_servers=bootstrap_servers)
    return config.validate()


class KafkaConnectionRefused(UserError):
    """The brokers refused this client's connection (TLS or SASL): one line naming the setting."""


# Configs that passed the pre-flight in this process (a pipeline checks once, whoever asks).
_CHECKED: set = set()
_CHECKED_LOCK = threading.Lock()
_QUIET_THREADS: set = set()


class _QuietThisThread(logging.Filter):
    """Drops kafka-python's records emitted by the pre-flight's own thread (others pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread not in _QUIET_THREADS


class _RedactSecrets(logging.Filter):
    """Blanks kafka-python records that would print a known password.

    At DEBUG level kafka-python logs every request it sends, and a SASL/PLAIN
    SaslAuthenticate request holds the password in clear. Every password a
    `KafkaClientConfig` holds is known here (in this process's memory only).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _KNOWN_SECRETS:
            try:
                text = record.getMessage()
            except Exception:  # pylint: disable=broad-except
                return True
            if any(secret in text for secret in list(_KNOWN_SECRETS)):
                record.msg, record.args = "(a kafka-python message holding a password, not shown)", ()
        return True


_QUIET = _QuietThisThread()
_REDACT = _RedactSecrets()
_KAFKA_LOGGERS = ("kafka.net.manager", "kafka.net.connection", "kafka.net.transport", "kafka.net.selector",
                  "kafka.net.inet", "kafka.cluster", "kafka.net.sasl.plain", "kafka.net.sasl.scram",
                  "kafka.protocol.parser", "kafka.conn", "kafka.client_async")
for _name in _KAFKA_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET)
    logging.getLogger(_name).addFilter(_REDACT)


# Failures that mean "nobody answered" rather than "refused this client".
_UNREACHABLE = ("Connection refused", "ECONNREFUSED", "DNS Resolution failure", "Name or service not known",
                "nodename nor servname", "Timed out", "No route to host", "Network is unreachable")


def _classify(config: KafkaClientConfig, server: str, error: BaseException) -> Optional[str]:
    """One line naming the setting at fault and the broker's reason; None: not a refusal (unreachable)."""
    text = str(error)
    for prefix in ("KafkaConnectionError: ", "Handshake failed: ", "[Error 58] SaslAuthenticationFailedError: ",
                   "SaslAuthenticationFailedError: "):
        while text.startswith(prefix):
            text = text[len(prefix):]
    label = config.label
    protocol = config.security_protocol
    tls = protocol in ("SSL", "SASL_SSL")
    if isinstance(error, kafka_errors.SaslAuthenticationFailedError):
        return (f"SASL authentication failed for user '{config.sasl_plain_username}' ({config.sasl_mechanism}) "
                f"at {server}: {text} (check {label('sasl_plain_username')} and {label('sasl_plain_password')})")
    if isinstance(error, kafka_errors.UnsupportedSaslMechanismError):
        return f"{label('sasl_mechanism')}: {text}"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        what = ("the broker's certificate does not name this host" if "Hostname mismatch" in text or
                "IP address mismatch" in text else "the broker's certificate is not signed by this CA")
        return f"{label('ssl_cafile')}: TLS to {server} refused: {what} ({text})"
    if "CERTIFICATE_REQUIRED" in text or "ALERT_UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text:
        given = "it refused this one" if config.ssl_certfile else "none was given"
        return (f"{label('ssl_certfile')}: the broker at {server} requires mutual TLS (a client certificate "
                f"its CA signed), and {given} ({text})")
    if isinstance(error, ssl.SSLError) or "PEM lib" in text or "bad decrypt" in text:
        return (f"{label('ssl_keyfile')}: cannot load the client certificate/key {config.ssl_keyfile} "
                f"(wrong {label('ssl_password')}, or not PEM): {text}")
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or (tls and "Timed out" in text):
        return (f"{label('security_protocol')}={protocol}: {server} does not answer TLS; is it a plaintext "
                f"listener? ({text})")
    if tls and not config.ssl_certfile and ("EOF occurred" in text or "socket disconnected" in text):
        # TLS 1.3: the server's "certificate required" alert may arrive only after the
        # client's handshake has completed, as a closed connection.
        return (f"{label('ssl_certfile')}: {server} closed the TLS connection right after the handshake: it "
                f"probably requires mutual TLS (a client certificate), and none was given ({text})")
    if any(m in text for m in _UNREACHABLE):
        return None  # unreachable: the pipeline's own connection handling reports it
    if isinstance(error, kafka_errors.KafkaError) or isinstance(error, OSError):
        hint = ("it probably expects TLS (security.protocol=SSL or SASL_SSL)" if not tls else
                f"it may require a client certificate ({label('ssl_certfile')}, mutual TLS) or SASL "
                "(security.protocol=SASL_SSL)" if protocol == "SSL" else
                "the listener may expect another protocol")
        if protocol == "PLAINTEXT":
            hint = "it probably expects TLS or SASL (security.protocol=SSL, SASL_SSL or SASL_PLAINTEXT)"
        return (f"{label('security_protocol')}={protocol}: {server} closed the connection before answering; "
                f"{hint} ({text or type(error).__name__})")
    return None


def _probe(config: KafkaClientConfig, server: str, timeout: float) -> Optional[BaseException]:
    """Connects to one server (TLS, SASL, ApiVersions) and asks for metadata; returns the failure."""
    # kafka-python's connection manager is the one its clients use, so the probe
    # fails exactly as they would.
    kwargs = config.client_kwargs()
    kwargs["bootstrap_servers"] = [server]
    timeout_ms = int(timeout * 1000)
    try:
        net = NetworkSelector()
        manager = KafkaConnectionManager(net, **kwargs, socket_connection_setup_timeout_ms=timeout_ms,
                                         request_timeout_ms=timeout_ms)
    except Exception as e:  # pylint: disable=broad-except
        return e
    node = manager.cluster.bootstrap_brokers()[0]

    async def attempt():
        conn = manager.get_connection(node.node_id, timeout_ms=timeout_ms, pop_on_close=False,
                                      refresh_metadata_on_err=False)
        await manager.wait_for(conn.init_future, timeout_ms)
        request = MetadataRequest(topics=[], allow_auto_topic_creation=False,
                                  include_cluster_authorized_operations=False,
                                  include_topic_authorized_operations=False)
        await manager.wait_for(conn.send_request(request, request_timeout_ms=timeout_ms), timeout_ms)

    try:
        net.run(attempt)
        return None
    except Exception as e:  # pylint: disable=broad-except
        return e
    finally:
        manager.close()
        net.close()


def check_connection(config: KafkaClientConfig, timeout: float = 8.0) -> None:
    """The pre-flight: a real connection with these settings, before a pipeline starts.

    Each bootstrap server is tried once (TLS handshake, SASL login, ApiVersions, a
    Metadata request), bounded by `timeout` seconds. Succeeds if one server
    answers. A server that refuses this client (a wrong password, an unknown
    user, an untrusted certificate, a missing client certificate, TLS against
    a plaintext port or the reverse) fails it at once with one line naming the
    setting (`config.label`) and the broker's reason. An unreachable server
    (connection refused, unknown host, no answer) is left to the pipeline's
    own connection handling. kafka-python's log lines about the probe are
    kept out of the logs; other threads' are untouched. Passing configs are
    remembered for the process.

    Raises:
      KafkaConnectionRefused: the one line.
    """
    with _CHECKED_LOCK:
        if config in _CHECKED:
            return
    first: Optional[str] = None
    deadline = time.monotonic() + timeout
    servers = [s.strip() for s in (config.bootstrap_servers or "").split(",") if s.strip()]
    _QUIET_THREADS.add(threading.get_ident())
    try:
        for server in servers:
            error = _probe(config, server, max(1.0, deadline - time.monotonic()))
            if error is None:
                with _CHECKED_LOCK:
                    _CHECKED.add(config)
                return
            first = first or _classify(config, server, error)
    finally:
        _QUIET_THREADS.discard(threading.get_ident())
    if first:
        raise KafkaConnectionRefused(first)


# KafkaClientConfig field -> the flag that sets it, for error messages.
FLAG_FOR_FIELD = {
    "bootstrap_servers": "--bootstrap_servers",
    "security_protocol": "--security_protocol",
    "sasl_mechanism": "--sasl_mechanism",
    "sasl_plain_username": "--sasl_username",
    "sasl_plain_password": "--sasl_password",
    "ssl_cafile": "--ssl_cafile",
    "ssl_certfile": "--ssl_certfile",
    "ssl_keyfile": "--ssl_keyfile",
    "ssl_password": "--ssl_password",
}

# Google's Kafka-to-BigQuery template: kafkaReadAuthenticationMode -> (security.protocol, sasl.mechanism).
TEMPLATE_AUTH_MODES = {
    "NONE": ("PLAINTEXT", None),
    "TLS": ("SSL", None),
    "SASL_PLAIN": ("SASL_SSL", "PLAIN"),
    "SASL_SCRAM_512": ("SASL_SSL", "SCRAM-SHA-512"),
}
# The template's secret-id parameters (snake_case flags; camelCase aliases in beam_ml.options).
TEMPLATE_SECRET_FLAGS = (
    "kafka_read_username_secret_id", "kafka_read_password_secret_id",
    "kafka_read_sasl_scram_username_secret_id", "kafka_read_sasl_scram_password_secret_id",
    "kafka_read_truststore_password_secret_id", "kafka_read_keystore_password_secret_id",
    "kafka_read_key_password_secret_id", "kafka_read_sasl_scram_truststore_password_secret_id")


def read_secret_id(flag: str, secret_id: str) -> str:
    """A template secret id read here: ``env:NAME`` or a local file path.

    Secret Manager is not reachable from this project's machines, so a version
    name (``projects/.../secrets/.../versions/N``) is refused with a line saying
    what to give instead.
    """
    if secret_id.startswith("projects/"):
        raise ValueError(f"--{flag}: Secret Manager versions cannot be read here; give a local file "
                         "holding the secret, or env:NAME for an environment variable")
    if secret_id.startswith("env:"):
        return read_secret(f"--{flag}", env=secret_id[4:])
    return read_secret(f"--{flag}", file=secret_id)


def _template_settings(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """KafkaClientConfig values (and their labels) from the template's kafkaRead* parameters."""
    mode = values.get("kafka_read_authentication_mode")
    if not mode:
        return {}, {}
    if mode not in TEMPLATE_AUTH_MODES:
        raise ValueError(f"--kafka_read_authentication_mode: {mode} is not supported here; expected one of "
                         f"{', '.join(TEMPLATE_AUTH_MODES)}")
    protocol, mechanism = TEMPLATE_AUTH_MODES[mode]
    out: dict[str, Any] = {"security_protocol": protocol, "sasl_mechanism": mechanism}
    labels = {"security_protocol": f"--kafka_read_authentication_mode={mode}",
              "sasl_mechanism": f"--kafka_read_authentication_mode={mode}"}

    def secret(flag: str) -> Optional[str]:
        return read_secret_id(flag, values[flag]) if values.get(flag) else None

    if mechanism:
        prefix = "kafka_read_sasl_scram_" if mode == "SASL_SCRAM_512" else "kafka_read_"
        for field, name in (("sasl_plain_username", "username"), ("sasl_plain_password", "password")):
            flag = f"{prefix}{name}_secret_id"
            if not values.get(flag):
                raise ValueError(f"--{flag}: required with --kafka_read_authentication_mode={mode}")
            out[field], labels[field] = secret(flag), f"--{flag}"
    truststore = ("kafka_read_sasl_scram_truststore" if mode == "SASL_SCRAM_512" else "kafka_read_truststore")
    store = {"ssl_truststore_location": values.get(f"{truststore}_location"),
             "ssl_truststore_password": secret(f"{truststore}_password_secret_id")}
    if mode == "TLS":
        for flag in ("kafka_read_truststore_location", "kafka_read_keystore_location"):
            if not values.get(flag):
                raise ValueError(f"--{flag}: required with --kafka_read_authentication_mode=TLS")
        store.update(ssl_keystore_location=values.get("kafka_read_keystore_location"),
                     ssl_keystore_password=secret("kafka_read_keystore_password_secret_id"),
                     ssl_key_password=secret("kafka_read_key_password_secret_id"))
    store_flags = {"ssl_truststore_location": f"--{truststore}_location",
                   "ssl_keystore_location": "--kafka_read_keystore_location"}
    files = stores.pem_files_from_java_stores({k: v for k, v in store.items() if v},
                                              label=lambda key: store_flags.get(key, key))
    out.update(files)
    labels.update(ssl_cafile=store_flags["ssl_truststore_location"],
                  ssl_certfile=store_flags["ssl_keystore_location"],
                  ssl_keyfile=store_flags["ssl_keystore_location"],
                  ssl_password="--kafka_read_key_password_secret_id")
    return out, labels


def config_from_flags(values: Mapping[str, Any], given: Iterable[str], check: Optional[bool] = None,
                      timeout: float = 8.0) -> KafkaClientConfig:
    """The validated client config of a pipeline's Kafka flags, --kafka_config file and template parameters.

    A flag given on the command line wins over the file; ``--bootstrap_servers``'
    default applies only when neither sets it. Passwords may come from
    ``--sasl_password``, ``--sasl_password_file``, ``--sasl_password_env`` or the file.

    Args:
      values: every flag's value (name without dashes -> value), e.g. ``options.get_all_options()``.
      given: the flags the user set explicitly.
      check: run the pre-flight `check_connection`; default: when Kafka settings were given
        (not for the default broker address of a pipeline that may not use Kafka).
      timeout: seconds the pre-flight may take.

    Raises:
      ValueError: naming the flag (or the file key) that is wrong.
      KafkaConnectionRefused: the pre-flight was refused.
    """
    given = set(given)
    path = values.get("kafka_config")
    template, template_labels = _template_settings(values)
    password = values.get("sasl_password") or read_secret(
        "--sasl_password_file" if values.get("sasl_password_file") else "--sasl_password_env",
        file=values.get("sasl_password_file"), env=values.get("sasl_password_env"))
    explicit = dict(
        bootstrap_servers=values.get("bootstrap_servers") if "bootstrap_servers" in given else None,
        security_protocol=values.get("security_protocol"),
        sasl_mechanism=values.get("sasl_mechanism"),
        sasl_plain_username=values.get("sasl_username"),
        sasl_plain_password=password,
        ssl_cafile=values.get("ssl_cafile"),
        ssl_certfile=values.get("ssl_certfile"),
        ssl_keyfile=values.get("ssl_keyfile"),
        ssl_password=values.get("ssl_password"))
    for field, value in template.items():
        if explicit.get(field) is None:
            explicit[field] = value
    config = KafkaClientConfig.load(path, **explicit)
    if not config.bootstrap_servers:
        config = config.with_overrides(bootstrap_servers=values.get("bootstrap_servers"))
    password_flag = ("--sasl_password_file" if values.get("sasl_password_file") else
                     "--sasl_password_env" if values.get("sasl_password_env") else "--sasl_password")

    def label(field: str) -> str:
        name = template_labels.get(field) or (password_flag if field == "sasl_plain_password"
                                              else FLAG_FOR_FIELD.get(field))
        if not path:
            return name or field
        in_file = f"{field} in --kafka_config {path}"
        return f"{name} (or {in_file})" if name else in_file

    config = config.with_labels(label).validate()
    if check is None:
        check = bool(given & {"bootstrap_servers", "kafka_config", "security_protocol",
                              "kafka_read_authentication_mode"})
    if check:
        check_connection(config, timeout)
    return config
