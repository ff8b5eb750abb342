"""Where BigQuery is when it is not Google's (an emulator or a private endpoint), and Beam's clients for it.

    endpoint = BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")   # --bigquery_endpoint(s)
    client = endpoint_client(endpoint.rest, project)       # google-cloud-bigquery client at the endpoint
    use_endpoint(endpoint)                                  # a job asks: Beam's read clients go there
    clear_endpoint()                                        # Beam's own clients again

Writes get a client for the endpoint through `WriteToBigQuery`'s `test_client`
hook (pickled to every worker). Reads, which Beam gives no hook, need Beam's two
client factories redirected: `use_endpoint`, called by a job that was given
--bigquery_endpoint (never by importing a module), does it in this process and
puts the endpoint in an environment variable; worker subprocesses
(DirectRunner multi_processing) apply it when they import
`beam_ml.io.bigquery.endpoint_plugin`, which the job names in --beam_plugins.
That redirect is for emulators and local runs: it does not reach Dataflow workers.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import time
from typing import Optional

from apache_beam.io.gcp.internal.clients.bigquery import BigqueryV2
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_ml.errors import UserError

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BigQueryEndpoint:
    """Where BigQuery is, when it is not Google's: an emulator or a private endpoint.

    Attributes:
      rest: ``http(s)://HOST:PORT`` of the REST API (tables, jobs, insertAll).
      storage: ``HOST:PORT`` of the Storage Read API (plain gRPC), for reads; None
        when only writing.
    """

    rest: str
    storage: Optional[str] = None

    _REST_RE = re.compile(r"^https?://[^/\s:]+(:\d+)?/?$")
    _GRPC_RE = re.compile(r"^[^/\s:]+:\d+$")

    def __post_init__(self):
        if not self._REST_RE.match(self.rest or ""):
            raise UserError(f"--bigquery_endpoint: expected http://HOST:PORT, got {self.rest!r}")
        if self.storage is not None and not self._GRPC_RE.match(self.storage):
            raise UserError(f"--bigquery_storage_endpoint: expected HOST:PORT, got {self.storage!r}")
        object.__setattr__(self, "rest", self.rest.rstrip("/"))

    def check(self, timeout: float = 3.0) -> "BigQueryEndpoint":
        """Fails fast when nothing listens at the endpoint (clients would retry for minutes).

        Raises:
          UserError: naming the flag whose HOST:PORT refused or timed out.
        """
        host_port = self.rest.split("://", 1)[1]
        checks = [("--bigquery_endpoint", host_port)]
        if self.storage:
            checks.append(("--bigquery_storage_endpoint", self.storage))
        for name, hp in checks:
            host, _, port = hp.rpartition(":")
            if not host:
                host, port = hp, ("443" if self.rest.startswith("https") else "80")
            try:
                socket.create_connection((host, int(port)), timeout=timeout).close()
            except OSError as e:
                raise UserError(f"{name}: nothing answers at {hp} ({e.strerror or e})") from None
        return self

    def announce(self, what: str) -> None:
        """Checks the endpoint and logs, once per process, that BigQuery `what` go there."""
        key = (self, what)
        if key not in _ANNOUNCED:
            self.check()
            _ANNOUNCED.add(key)
            _LOGGER.warning("BigQuery %s use the endpoint %s%s (--bigquery_endpoint), not Google's BigQuery",
                            what, self.rest, f" and Storage API {self.storage}" if self.storage else "")


_ANNOUNCED: set = set()


# -------------------------------------------------------------------- endpoint clients
def endpoint_client(endpoint: str, project: str):
    """A google-cloud-bigquery Client for an emulator or private endpoint (no credentials)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint))


class _EndpointBigqueryV2(BigqueryV2):
    """Beam's apitools BigQuery client at an endpoint, usable as WriteToBigQuery's test_client.

    Beam calls `insert_rows_json` on its client for streaming inserts (its
    production client is google-cloud-bigquery's), so this adds it, delegating
    to a google-cloud-bigquery Client at the same endpoint. It pickles as
    (endpoint, project), so every worker builds its own connections.
    """

    def __init__(self, endpoint: str, project: str):
        super().__init__(url=endpoint.rstrip("/") + "/bigquery/v2/", credentials=None,
                         get_credentials=False, response_encoding="utf8")
        self._beam_ml_endpoint = (endpoint, project)
        self._gcp_client = None
        # Beam's FILE_LOADS auto-sharding reads its clock from a test client.
        self.test_clock = time.time

    def __reduce__(self):
        return _EndpointBigqueryV2, self._beam_ml_endpoint

    def insert_rows_json(self, table, json_rows, **kwargs):
        if self._gcp_client is None:
            self._gcp_client = endpoint_client(*self._beam_ml_endpoint)
        return self._gcp_client.insert_rows_json(table, json_rows, **kwargs)


def _storage_read_client(storage: str):
    """A BigQuery Storage Read client over a plain (insecure) gRPC channel to HOST:PORT."""
    import grpc
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    channel = grpc.insecure_channel(storage, options=[("grpc.max_receive_message_length", -1),
                                                      ("grpc.max_send_message_length", -1)])
    return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))


class _StorageModule:
    """Stands in for Beam's `bq_storage` module: the same types, a read client at the endpoint."""

    def __init__(self, real, storage: str):
        self._real = real
        self._storage = storage

    def __getattr__(self, name):
        return getattr(self._real, name)

    def BigQueryReadClient(self, *unused_args, **unused_kwargs):  # noqa: N802 (Beam's name)
        return _storage_read_client(self._storage)


# The environment variable that carries --bigquery_endpoint to worker subprocesses.
ENDPOINT_ENV = "BEAM_ML_BIGQUERY_ENDPOINT"
_ORIGINALS: dict = {}
# The module worker subprocesses import through --beam_plugins (it calls use_endpoint_from_environment).
ENDPOINT_PLUGIN = "beam_ml.io.bigquery.endpoint_plugin"


def use_endpoint(endpoint: BigQueryEndpoint, project: str = "beam-ml",
                 options: Optional[PipelineOptions] = None) -> None:
    """Redirects Beam's BigQuery read clients in this process, and its worker subprocesses, to `endpoint`.

    Beam's `ReadFromBigQuery` builds its clients itself (an apitools client from
    `BigQueryWrapper._bigquery_client`, a Storage Read client from
    `bq_storage.BigQueryReadClient()`) and takes none from the caller; these two
    factories are replaced, and the endpoint is put in the environment, where
    worker subprocesses started later (they import this module through
    --beam_plugins) find it. `clear_endpoint` undoes it. Only a job given an
    explicit --bigquery_endpoint calls this.

    Args:
      endpoint: where the clients go.
      project: the project the clients bill (the emulator's).
      options: the pipeline's options: their --beam_plugins get `ENDPOINT_PLUGIN`,
        so worker subprocesses redirect their clients too.
    """
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    if not _ORIGINALS:
        _ORIGINALS["client"] = bigquery_tools.BigQueryWrapper.__dict__["_bigquery_client"]
        _ORIGINALS["storage"] = beam_bigquery.bq_storage
    rest = endpoint.rest

    def _bigquery_client(unused_pipeline_options=None):
        return _EndpointBigqueryV2(rest, project)

    bigquery_tools.BigQueryWrapper._bigquery_client = staticmethod(_bigquery_client)
    if endpoint.storage:
        beam_bigquery.bq_storage = _StorageModule(_ORIGINALS["storage"], endpoint.storage)
    os.environ[ENDPOINT_ENV] = json.dumps({"rest": endpoint.rest, "storage": endpoint.storage, "project": project})
    if options is not None:
        setup = options.view_as(SetupOptions)
        setup.beam_plugins = list(dict.fromkeys((setup.beam_plugins or []) + [ENDPOINT_PLUGIN]))


def endpoint_in_use(endpoint: BigQueryEndpoint) -> bool:
    """Whether `use_endpoint(endpoint)` redirected this process's read clients (and not undone)."""
    text = os.environ.get(ENDPOINT_ENV)
    if not _ORIGINALS or not text:
        return False
    d = json.loads(text)
    return d.get("rest") == endpoint.rest and d.get("storage") == endpoint.storage


def clear_endpoint() -> None:
    """Undoes `use_endpoint`: Beam's own BigQuery clients again."""
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    if _ORIGINALS:
        bigquery_tools.BigQueryWrapper._bigquery_client = _ORIGINALS.pop("client")
        beam_bigquery.bq_storage = _ORIGINALS.pop("storage")
    os.environ.pop(ENDPOINT_ENV, None)


def use_endpoint_from_environment() -> None:
    """In a worker subprocess of a pipeline run with --bigquery_endpoint: redirect its clients too."""
    text = os.environ.get(ENDPOINT_ENV)
    if not text:
        return
    try:
        d = json.loads(text)
        use_endpoint(BigQueryEndpoint(d["rest"], d.get("storage")), d.get("project") or "beam-ml")
    except (ValueError, KeyError, TypeError, UserError) as e:
        _LOGGER.error("ignoring malformed %s=%r: %s", ENDPOINT_ENV, text, e)
