"""A throwaway BigQuery API emulator (bqemulator, in memory) for tests and demos.

`BigQueryEmulator` starts the ``bqemulator`` server from its own virtualenv
(``make bqemulator`` creates ``.venv-bqemulator``: it pins duckdb 1.5.5, which
the emulator needs and this package does not use) on free ports of 127.0.0.1,
with a scratch HOME holding DuckDB's extensions (the published wheel would
download them at start, which fails offline), waits until both its REST and
its gRPC (Storage Read/Write API) ports answer, and stops it on exit. Nothing
survives a stop.

    make bqemulator
    python -m beam_ml.testing.bigquery      # prints {"endpoint": ..., "grpc": ..., "project": "test"}

    with BigQueryEmulator() as emulator:    # in tests (tests/bq_fixtures.py)
        client = emulator.client()          # google-cloud-bigquery, anonymous
        endpoint = BigQueryEndpoint(emulator.endpoint, emulator.grpc_endpoint)   # beam_ml.io.bigquery

Known limits of the emulator (bqemulator 1.4.0): no query jobs with a
destination table (so no query reads through Beam's own path), no EXPORT
reads, no ``load_table_from_json``; a streaming insert of an out-of-range
INT64 answers 500; REQUIRED is not enforced and unknown fields are ignored
on insert; a JSON load keeps a BYTES value's base64 text undecoded.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from typing import Optional

from beam_ml.io.bigquery import endpoint_client
from beam_ml.testing.process import ThrowawayServer, find_free_port

__all__ = ["BigQueryEmulator", "emulator_venv", "EMULATOR_VENV_ENV", "MAKE_TARGET"]

_LOGGER = logging.getLogger(__name__)
_HOST = "127.0.0.1"

# The virtualenv is found here when set, else at <repository>/.venv-bqemulator.
EMULATOR_VENV_ENV = "BEAM_ML_BQEMULATOR_VENV"
MAKE_TARGET = "make bqemulator"
# DuckDB looks for extensions under $HOME/.duckdb/extensions/<version>/<platform>/.
_EXTENSIONS_DIR = os.path.join(".duckdb", "extensions")


def emulator_venv() -> str:
    """The emulator's virtualenv directory (it may not exist yet)."""
    env = os.environ.get(EMULATOR_VENV_ENV)
    if env:
        return os.path.abspath(env)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(repo, ".venv-bqemulator")


def _emulator_binary(venv: str) -> str:
    binary = os.path.join(venv, "bin", "bqemulator")
    home_extensions = os.path.join(venv, "home", _EXTENSIONS_DIR)
    if not (os.access(binary, os.X_OK) and glob.glob(os.path.join(home_extensions, "*", "*", "*.duckdb_extension"))):
        raise FileNotFoundError(
            f"no BigQuery emulator in {venv}: run `{MAKE_TARGET}` (it creates that virtualenv with "
            f"bqemulator, duckdb 1.5.5 and its extensions), or set {EMULATOR_VENV_ENV} to one")
    return binary


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _grpc_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    import grpc  # pylint: disable=import-outside-toplevel

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


class BigQueryEmulator(ThrowawayServer):
    """Runs an in-memory bqemulator as a subprocess for the `with` block.

    Args:
      project: the default project id of requests that omit one.
      host: interface to listen on; keep the default so nothing is exposed.
      venv: the emulator's virtualenv; `emulator_venv()` when None.
      startup_timeout: seconds to wait for both ports to answer.
      log_level: the emulator's log level (its log is shown when it fails).

    Attributes:
      endpoint: ``http://127.0.0.1:PORT``, the REST endpoint, for
        ``--bigquery_endpoint`` and google-cloud-bigquery's ``api_endpoint``.
      grpc_endpoint: ``127.0.0.1:PORT`` of the Storage Read/Write API.
    """

    def __init__(self, project: str = "test", host: str = _HOST, venv: Optional[str] = None,
                 startup_timeout: float = 60.0, log_level: str = "warning") -> None:
        super().__init__("BigQuery emulator", startup_timeout, attempts=3, poll_seconds=0.1)
        self.project = project
        self.host = host
        self._venv = venv or emulator_venv()
        self._log_level = log_level
        self.rest_port: Optional[int] = None
        self.grpc_port: Optional[int] = None
        self._home: Optional[str] = None

    @property
    def endpoint(self) -> str:
        if self.rest_port is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_endpoint(self) -> str:
        if self.grpc_port is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"{self.host}:{self.grpc_port}"

    @property
    def home(self) -> Optional[str]:
        """The scratch HOME the server runs with (removed on stop)."""
        return self._home

    def _make_home(self) -> str:
        """A scratch HOME whose .duckdb/extensions links to the venv's extension files."""
        home = tempfile.mkdtemp(prefix="bqemulator-home-")
        src_root = os.path.join(self._venv, "home", _EXTENSIONS_DIR)
        for src in glob.glob(os.path.join(src_root, "*", "*", "*.duckdb_extension")):
            rel = os.path.relpath(src, src_root)
            dst = os.path.join(home, _EXTENSIONS_DIR, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(os.path.realpath(src), dst)
        return home

    def _launch(self):
        binary = _emulator_binary(self._venv)
        self.rest_port = find_free_port(self.host)
        self.grpc_port = find_free_port(self.host)
        while self.grpc_port == self.rest_port:
            self.grpc_port = find_free_port(self.host)
        self._home = self._make_home()
        env = dict(os.environ, HOME=self._home)
        # The emulator's own interpreter, not ours: drop our package paths.
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        return ([binary, "start", "--rest-host", self.host, "--rest-port", str(self.rest_port),
                 "--grpc-host", self.host, "--grpc-port", str(self.grpc_port),
                 "--project", self.project, "--ephemeral", "--log-level", self._log_level,
                 "--log-format", "console"], {"env": env, "cwd": self._home})

    def _ready(self) -> bool:
        return _http_ok(f"{self.endpoint}/readyz") and _grpc_ready(self.host, self.grpc_port)

    def _where(self) -> str:
        return f"127.0.0.1 ports {self.rest_port}/{self.grpc_port}"

    def _worth_retrying(self, log: str, timed_out: bool) -> bool:
        # Only a port taken between picking and binding is worth new ports.
        return not timed_out and "address already in use" in log.lower()

    def _stopped(self) -> None:
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        self.rest_port = self.grpc_port = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the emulator: SIGTERM, then SIGKILL after `timeout` seconds."""
        super().stop(timeout)

    def client(self):
        """A google-cloud-bigquery Client for this emulator (anonymous credentials)."""
        return endpoint_client(self.endpoint, self.project)

    def __enter__(self) -> "BigQueryEmulator":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.endpoint if self.rest_port else "stopped"
        return f"BigQueryEmulator({state}, pid={self.pid})"


if __name__ == "__main__":
    # `python -m beam_ml.testing.bigquery`: an emulator for manual experiments.
    logging.basicConfig(level=logging.INFO)
    with BigQueryEmulator() as emu:
        print(json.dumps({"endpoint": emu.endpoint, "grpc": emu.grpc_endpoint, "project": emu.project}),
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
