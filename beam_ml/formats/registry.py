"""A Confluent Schema Registry client: the REST subset Avro readers and writers need.

    registry = SchemaRegistry(RegistryConfig("https://registry:8081", user_info="key:secret", ca_file="ca.pem"))
    registry.check()                               # UserError in one line when unreachable / refused
    schema = registry.schema_by_id(7)              # parsed, fetched once per id and cached
    latest_id, schema = registry.latest("transactions-value")
    schema_id = registry.register("predictions-value", schema)

Standard library HTTP (urllib) with HTTP Basic auth and TLS verified against a
CA file. Credentials never appear in a message, a repr or a pickled log line.
A registry that cannot be reached while a pipeline runs is retried (with
backoff, up to `retry_seconds`), then `RegistryUnavailable` is raised: the
bundle fails and the runner retries it, so no record is dropped for it.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

import fastavro

from beam_ml.errors import UserError
from beam_ml.formats.avro import parse_record_schema

__all__ = ["RegistryConfig", "SchemaRegistry", "RegistryUnavailable", "UnknownSchema", "USER_INFO_ENV",
           "read_user_info"]

# The environment variable a registry's USER:PASSWORD can come from (as Confluent's tools call it).
USER_INFO_ENV = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"


class RegistryUnavailable(RuntimeError):
    """The registry could not be reached (or answered 5xx) for longer than the retry budget."""


class UnknownSchema(LookupError):
    """The registry does not know the schema id / subject asked for (HTTP 404)."""


def read_user_info(value: Optional[str] = None, path: Optional[str] = None,
                   flag: str = "--schema_registry_user_info") -> Optional[str]:
    """USER:PASSWORD from the flag's value, else a file holding it, else $SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO.

    Raises:
      UserError: the file is missing, or the value has no ':' (the message never shows the value).
    """
    if not value and path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().strip()
        except OSError as e:
            raise UserError(f"{flag}_file: cannot read {path}: {e.strerror}") from None
    value = value or os.environ.get(USER_INFO_ENV) or None
    if value is not None and ":" not in value:
        raise UserError(f"{flag}: expected USER:PASSWORD (the value is not shown)")
    return value


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    """Where the registry is and how to reach it.

    Attributes:
      url: http(s)://host:port of the registry.
      user_info: USER:PASSWORD for HTTP Basic auth, or None (never shown by repr).
      ca_file: PEM CA bundle the registry's TLS certificate is checked against (default: the system's).
      timeout: seconds per HTTP request.
      retry_seconds: how long a registry that cannot be reached is retried while running.
    """

    url: str
    user_info: Optional[str] = dataclasses.field(default=None, repr=False)
    ca_file: Optional[str] = None
    timeout: float = 10.0
    retry_seconds: float = 120.0

    def validated(self, flag: str = "--schema_registry_url") -> "RegistryConfig":
        parts = urllib.parse.urlsplit(self.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"{flag}: expected http(s)://host:port, got {self.url!r}")
        if parts.username or parts.password:
            raise UserError(f"{flag}: give the credentials with --schema_registry_user_info(_file) or "
                            f"${USER_INFO_ENV}, not in the URL")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise UserError(f"--schema_registry_ca_file: file not found: {self.ca_file}")
        return self


class SchemaRegistry:
    """A registry client with a cache of schemas by id (a schema under an id never changes)."""

    def __init__(self, config: RegistryConfig):
        self.config = config
        self._by_id: dict[int, dict] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._ssl: Optional[ssl.SSLContext] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_ssl"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SchemaRegistry({self.config.url})"

    # ------------------------------------------------------------------ HTTP
    def _context(self) -> Optional[ssl.SSLContext]:
        if not self.config.url.startswith("https:"):
            return None
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.config.ca_file)
        return self._ssl

    def _request(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        """One request; JSON answer. Raises UnknownSchema (404), UserError (401/403, 4xx), OSError (unreachable)."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.config.url.rstrip("/") + path, data=data, method=method)
        request.add_header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
        if data is not None:
            request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        if self.config.user_info:
            token = base64.b64encode(self.config.user_info.encode("utf-8")).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout, context=self._context()) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read() or b"{}").get("message", "")
            except ValueError:
                message = ""
            if e.code == 404:
                raise UnknownSchema(message or f"not found: {path}") from None
            if e.code in (401, 403):
                raise UserError(f"--schema_registry_user_info: the schema registry at {self.config.url} refused "
                                f"the credentials (HTTP {e.code}{': ' + message if message else ''})") from None
            if e.code >= 500:
                raise ConnectionError(f"HTTP {e.code} {message}".strip()) from None
            raise UserError(f"schema registry {self.config.url}: {method} {path}: HTTP {e.code} {message}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise UserError(f"--schema_registry_ca_file: the schema registry's TLS certificate at "
                                f"{self.config.url} is not trusted: {reason.verify_message}") from None
            raise ConnectionError(str(reason)) from None

    def _retrying(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        """_request, retried with backoff while the registry cannot be reached (up to retry_seconds)."""
        deadline = time.monotonic() + self.config.retry_seconds
        delay = 0.2
        while True:
            try:
                return self._request(method, path, body)
            except (ConnectionError, TimeoutError, OSError) as e:
                if time.monotonic() + delay > deadline:
                    raise RegistryUnavailable(f"schema registry {self.config.url} unreachable for "
                                              f"{self.config.retry_seconds:g} s: {e}") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ API
    def check(self, flag: str = "--schema_registry_url") -> "SchemaRegistry":
        """Fails fast, in one line, when the registry cannot be reached or refuses the credentials."""
        try:
            self._request("GET", "/subjects")
        except (ConnectionError, TimeoutError, OSError) as e:
            raise UserError(f"{flag}: cannot reach the schema registry at {self.config.url}: {e}") from None
        return self

    def schema_by_id(self, schema_id: int) -> dict:
        """The parsed schema registered under `schema_id` (fetched once, then cached).

        Raises:
          UnknownSchema: the registry does not know the id.
          RegistryUnavailable: the registry stayed unreachable for the retry budget.
        """
        schema = self._by_id.get(schema_id)
        if schema is None:
            answer = self._retrying("GET", f"/schemas/ids/{int(schema_id)}")
            schema_type = answer.get("schemaType", "AVRO")
            if schema_type != "AVRO":
                raise UnknownSchema(f"schema id {schema_id} is a {schema_type} schema, not Avro")
            try:
                schema = parse_record_schema(answer["schema"], f"schema id {schema_id}", "--schema_registry_url")
            except UserError as e:
                raise UnknownSchema(str(e)) from None
            with self._lock:
                self._by_id[schema_id] = schema
        return schema

    def latest(self, subject: str) -> tuple[int, dict]:
        """(id, parsed schema) of the subject's latest version.

        Raises:
          UnknownSchema: no such subject.
        """
        answer = self._retrying("GET", f"/subjects/{urllib.parse.quote(subject, safe='')}/versions/latest")
        schema_id = int(answer["id"])
        schema = parse_record_schema(answer["schema"], f"subject {subject}", "--schema_registry_url")
        with self._lock:
            self._by_id.setdefault(schema_id, schema)
        return schema_id, self._by_id[schema_id]

    def register(self, subject: str, schema: dict) -> int:
        """Registers `schema` (raw or parsed) under `subject`; the registry returns the existing id when it
        knows the schema. Cached per (subject, schema)."""
        text = json.dumps({k: v for k, v in schema.items() if not k.startswith("__")}, sort_keys=True)
        key = (subject, text)
        schema_id = self._ids.get(key)
        if schema_id is None:
            answer = self._retrying("POST", f"/subjects/{urllib.parse.quote(subject, safe='')}/versions",
                                    {"schema": text, "schemaType": "AVRO"})
            schema_id = int(answer["id"])
            with self._lock:
                self._ids[key] = schema_id
                self._by_id.setdefault(schema_id, fastavro.parse_schema(json.loads(text)))
        return schema_id
