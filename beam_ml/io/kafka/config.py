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

Prefer the file to ``--sasl_password``: Beam prints all pipeline options in
some places (``str(options)``, the Dataflow job page), this module cannot stop
that, and a command line is visible to other local users.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable, Iterable, Mapping, Optional

__all__ = [
    "KafkaClientConfig",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "check_client_overrides",
    "resolve_client_config",
]

_LOGGER = logging.getLogger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_REDACTED = "***"
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

# Java-only keys that would silently weaken or break security if ignored.
_UNSUPPORTED_FILE_KEYS = {
    "ssl_truststore_location": (
        "JKS/PKCS12 truststores are not supported by kafka-python; export "
        "the CA certificate as PEM and set ssl.cafile"),
    "ssl_keystore_location": (
        "JKS/PKCS12 keystores are not supported by kafka-python; export the "
        "client certificate and key as PEM and set ssl.certfile/ssl.keyfile"),
}

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
        for key, value in items.items():
            norm = _normalise_key(key)
            if norm in _UNSUPPORTED_FILE_KEYS:
                raise ValueError(f"{path}: {key}: {_UNSUPPORTED_FILE_KEYS[norm]}")
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

    def with_overrides(self, **overrides: Any) -> "KafkaClientConfig":
        """Returns a copy with the non-None `overrides` applied."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
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
        name = label or (lambda field: field)
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
            if value is None:
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
            for value in [getattr(self, field.name)] if value is not None
        }

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
