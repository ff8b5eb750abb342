"""A small, real Confluent Schema Registry for tests: HTTP on 127.0.0.1, the REST subset clients use.

    with SchemaRegistryServer(users={"alice": "s3cret"}, tls=(cert, key)) as registry:
        registry.url                     # https://127.0.0.1:PORT
        SchemaRegistryClient({"url": registry.url, "basic.auth.user.info": "alice:s3cret",
                              "ssl.ca.location": ca})

No registry server installs here (karapace is not on PyPI; Confluent's and
Apicurio's are Java from Maven/Docker), so the tests run against this one and
check it with confluent-kafka's own `SchemaRegistryClient`, `AvroSerializer`
and `AvroDeserializer`. It serves:

    POST /subjects/{s}/versions            register -> {"id": N} (the same schema keeps its id)
    POST /subjects/{s}                     look a schema up under a subject -> {subject, version, id, schema}
    GET  /schemas/ids/{id}                 -> {"schema": "..."}
    GET  /schemas/ids/{id}/versions        -> [{subject, version}]
    GET  /subjects                         -> [names]
    GET  /subjects/{s}/versions            -> [1, 2, ...]
    GET  /subjects/{s}/versions/{v|latest} -> {subject, version, id, schema}

with HTTP Basic auth (401 without it) and optional TLS. No compatibility
checks, no deletes, no references: a fixture, not a registry to run.
`fail_next(n)` answers the next n requests with 503 (a registry restarting).
"""
from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

__all__ = ["SchemaRegistryServer"]

_VERSION = re.compile(r"^/subjects/([^/]+)/versions/([^/]+)$")
_VERSIONS = re.compile(r"^/subjects/([^/]+)/versions$")
_SUBJECT = re.compile(r"^/subjects/([^/]+)$")
_BY_ID = re.compile(r"^/schemas/ids/(\d+)(/versions)?$")


def _canonical(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.schemas: list[str] = []                 # id - 1 -> schema text
        self.ids: dict[str, int] = {}                # canonical text -> id
        self.subjects: dict[str, list[int]] = {}     # subject -> ids by version - 1
        self.requests: list[tuple[str, str]] = []    # (method, path), for tests counting fetches
        self.failures = 0


class _Handler(BaseHTTPRequestHandler):
    server_version = "beam-ml-test-registry/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: tests read their own output
        pass

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    def _send(self, code: int, body) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, http: int, code: int, message: str) -> None:
        self._send(http, {"error_code": code, "message": message})

    def _authorized(self) -> bool:
        users = self.server.users  # type: ignore[attr-defined]
        if not users:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            except ValueError:
                return False
            return users.get(user) == password
        return False

    def _begin(self) -> Optional[str]:
        path = urllib.parse.urlsplit(self.path).path
        with self.state.lock:
            self.state.requests.append((self.command, path))
            failing = self.state.failures > 0
            if failing:
                self.state.failures -= 1
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        if failing:
            self._error(503, 50301, "registry unavailable (test)")
            return None
        if not self._authorized():
            self._error(401, 40101, "Unauthorized")
            return None
        return path

    def _registered(self, subject: str, version: int) -> dict:
        schema_id = self.state.subjects[subject][version - 1]
        return {"subject": subject, "version": version, "id": schema_id,
                "schema": self.state.schemas[schema_id - 1]}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self._begin()
        if path is None:
            return
        st = self.state
        with st.lock:
            if path == "/subjects":
                return self._send(200, sorted(st.subjects))
            m = _BY_ID.match(path)
            if m:
                schema_id = int(m.group(1))
                if not 1 <= schema_id <= len(st.schemas):
                    return self._error(404, 40403, f"Schema {schema_id} not found")
                if m.group(2):
                    return self._send(200, [{"subject": s, "version": i + 1} for s, ids in st.subjects.items()
                                            for i, sid in enumerate(ids) if sid == schema_id])
                return self._send(200, {"schema": st.schemas[schema_id - 1]})
            m = _VERSIONS.match(path)
            if m:
                subject = urllib.parse.unquote(m.group(1))
                if subject not in st.subjects:
                    return self._error(404, 40401, f"Subject '{subject}' not found.")
                return self._send(200, list(range(1, len(st.subjects[subject]) + 1)))
            m = _VERSION.match(path)
            if m:
                subject, version = urllib.parse.unquote(m.group(1)), m.group(2)
                if subject not in st.subjects:
                    return self._error(404, 40401, f"Subject '{subject}' not found.")
                count = len(st.subjects[subject])
                number = count if version in ("latest", "-1") else int(version) if version.isdigit() else 0
                if not 1 <= number <= count:
                    return self._error(404, 40402, f"Version {version} not found.")
                return self._send(200, self._registered(subject, number))
        self._error(404, 404, f"not served by the test registry: GET {path}")

    def do_POST(self):  # noqa: N802
        path = self._begin()
        if path is None:
            return
        try:
            body = json.loads(self._body or b"{}")
            text = body["schema"]
        except (ValueError, KeyError, TypeError):
            return self._error(422, 42201, "Invalid schema: expected a JSON body with 'schema'")
        if body.get("schemaType", "AVRO") != "AVRO":
            return self._error(422, 42201, "the test registry serves Avro schemas only")
        canonical = _canonical(text)
        st = self.state
        with st.lock:
            m = _VERSIONS.match(path)
            if m:
                subject = urllib.parse.unquote(m.group(1))
                schema_id = st.ids.get(canonical)
                if schema_id is None:
                    st.schemas.append(text)
                    schema_id = st.ids[canonical] = len(st.schemas)
                ids = st.subjects.setdefault(subject, [])
                if schema_id not in ids:
                    ids.append(schema_id)
                return self._send(200, {"id": schema_id})
            m = _SUBJECT.match(path)
            if m:
                subject = urllib.parse.unquote(m.group(1))
                if subject not in st.subjects:
                    return self._error(404, 40401, f"Subject '{subject}' not found.")
                schema_id = st.ids.get(canonical)
                if schema_id not in st.subjects[subject]:
                    return self._error(404, 40403, "Schema not found")
                return self._send(200, self._registered(subject, st.subjects[subject].index(schema_id) + 1))
        self._error(404, 404, f"not served by the test registry: POST {path}")


class SchemaRegistryServer:
    """The registry on 127.0.0.1 (an ephemeral port unless given), in a daemon thread; a context manager.

    Args:
      users: user -> password for HTTP Basic auth (None: no auth).
      tls: (certificate PEM path, key PEM path) to serve HTTPS.
      port: the port (0: any free one).
    """

    def __init__(self, users: Optional[dict] = None, tls: Optional[tuple[str, str]] = None, port: int = 0):
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._server.state = _State()  # type: ignore[attr-defined]
        self._server.users = dict(users or {})  # type: ignore[attr-defined]
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls[0], tls[1])
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread: Optional[threading.Thread] = None

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served so far."""
        with self._server.state.lock:  # type: ignore[attr-defined]
            return list(self._server.state.requests)  # type: ignore[attr-defined]

    def fail_next(self, count: int) -> None:
        """Answers the next `count` requests with 503."""
        with self._server.state.lock:  # type: ignore[attr-defined]
            self._server.state.failures = count  # type: ignore[attr-defined]

    def start(self) -> "SchemaRegistryServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="test-schema-registry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SchemaRegistryServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
