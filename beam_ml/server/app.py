"""The model server's HTTP side (aiohttp): TF Serving's REST API, Vertex AI's routes, /metrics, SIGTERM drain.

    server = ModelServer(ServerConfig(model_dir="out/fraud"), cleaning_for=None)
    server.batcher.add_listener(fn)      # fn(version, instances, results) per scored batch (monitoring)
    asyncio.run(server.serve())          # until SIGTERM/SIGINT: drains requests in flight, returns 0

The flags become a ServerConfig in `beam_ml.jobs.serve` (the library reads no options).

Routes (NAME is --model_name):
  GET  /v1/models/NAME[/versions/V]            status (TF Serving's model_version_status)
  GET  /v1/models/NAME[/versions/V]/metadata   signatures + the dataset spec
  POST /v1/models/NAME[/versions/V]:predict    {"instances": [...]} or {"inputs": {...}}
  GET  $AIP_HEALTH_ROUTE, POST $AIP_PREDICT_ROUTE  (Vertex AI, when the variables are set)
  GET  /metrics                                Prometheus text format

Every error is `{"error": "<one line>"}` with its 4xx/5xx status; a failure
inside the server is logged with its traceback and answered with a 500
that carries none.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from typing import Any, Callable, Optional

from aiohttp import web

from beam_ml.inference.handler import settle_heap
from beam_ml.model_store import load_model_metadata
from beam_ml.server.batching import Batcher
from beam_ml.server.metrics import ServerMetrics
from beam_ml.server.models import LoadedModel, ModelRegistry, NotFound, spec_description
from beam_ml.server.requests import DEFAULT_SIGNATURE, RequestError, columnar_outputs, error_text, json_bytes, \
    parse_predict_body

__all__ = ["ModelServer", "ServerConfig"]

_LOGGER = logging.getLogger(__name__)
_JSON = "application/json"
_NAME = r"{name:[^/:]+}"
_VERSION = r"{version:[^/:]+}"


def _json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=json_bytes(doc), status=status, content_type=_JSON)


def _error(status: int, message: str, headers: Optional[dict] = None) -> web.Response:
    return web.Response(body=json_bytes({"error": error_text(message)}), status=status, content_type=_JSON,
                        headers=headers)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """What a ModelServer serves and how (the flags of `python -m pipelines.serve`).

    Attributes:
      model_dir: a model root (newest version served, newer ones picked up), a train output dir, or one
        version dir (pinned); local or gs://.
      model_name: the NAME in /v1/models/NAME.
      host, port: where to listen (port 0: any free port).
      max_batch_size: the most instances merged into one model call.
      batch_timeout: seconds to wait for a batch to fill after a busy spell (0: never).
      max_request_bytes: larger bodies get a 413.
      reload_interval: seconds between checks for a newer version.
      drain_timeout: on SIGTERM, seconds to wait for requests in flight.
      health_route, predict_route: Vertex AI's AIP_HEALTH_ROUTE / AIP_PREDICT_ROUTE (None: not served).
    """

    model_dir: str
    model_name: str = "model"
    host: str = "127.0.0.1"
    port: int = 8501
    max_batch_size: int = 256
    batch_timeout: float = 0.0
    max_request_bytes: int = 8 * 1024 * 1024
    reload_interval: float = 10.0
    drain_timeout: float = 30.0
    health_route: Optional[str] = None
    predict_route: Optional[str] = None


class ModelServer:
    """One model root served over HTTP: the registry of versions, the batcher, the routes, the metrics."""

    def __init__(self, config: ServerConfig, cleaning_for: Optional[Callable[[Any], Any]] = None,
                 features_for: Optional[Callable[[Any], Any]] = None):
        """Args:
          config: what to serve and how.
          cleaning_for: spec -> the `beam_ml.clean.Cleaning` applied to instances (the model's stored
            statement with its lookups, as stream_predict applies it), or None; None: no cleaning.
          features_for: spec -> the window state (`beam_ml.features.LiveFeatures`) whose point-in-time
            aggregates each instance gets (the model's stored --features_sql), or None; None: no features.
        """
        self.config = config
        self.name = config.model_name
        self.metrics = ServerMetrics(self.name)
        self.registry = ModelRegistry(config.model_dir, self._load, config.reload_interval)
        self.registry.on_swap(lambda loaded: self.metrics.served_version(loaded.version))
        self.batcher = Batcher(self.registry, config.max_batch_size, config.batch_timeout,
                               on_batch_size=self.metrics.batch_size.observe)
        self.port: Optional[int] = None  # the bound port, once listening
        self._stopping = False
        self._cleaning_for = cleaning_for
        self._features_for = features_for

    # ------------------------------------------------------------------ models
    def _load(self, version_dir: str) -> LoadedModel:
        loaded = LoadedModel.open(version_dir, self._cleaning_for, self._features_for)
        # TensorFlow and the model are millions of objects: frozen out of the cyclic collector, whose
        # full passes would otherwise stop every request now and then (as in stream_predict).
        settle_heap()
        return loaded

    def check_model(self) -> None:
        """Fails fast, before listening, on what needs no TensorFlow: no version, a statement that no longer fits.

        Raises:
          UserError: naming --model_dir, --sql or --lookup.
        """
        _, _, spec = load_model_metadata(self.config.model_dir)
        if self._cleaning_for is not None:
            self._cleaning_for(spec)
        if self._features_for is not None:
            self._features_for(spec)

    # ------------------------------------------------------------------ app
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_bytes, middlewares=[self._middleware])
        base = f"/v1/models/{_NAME}"
        pinned = f"{base}/versions/{_VERSION}"
        for prefix in (base, pinned):
            app.router.add_get(prefix, self._status)
            app.router.add_get(f"{prefix}/metadata", self._metadata)
            app.router.add_post(prefix + ":predict", self._predict)
        app.router.add_get("/metrics", self._metrics)
        if self.config.health_route:
            app.router.add_get(self.config.health_route, self._health)
        if self.config.predict_route:
            app.router.add_post(self.config.predict_route, self._vertex_predict)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except RequestError as e:
            response = _error(e.status, e.message)
        except web.HTTPException as e:  # the router's 404/405, aiohttp's 413: as JSON, one line
            headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            if e.status == 413:
                message = f"request body larger than {self.config.max_request_bytes} bytes"
            elif e.status == 405:
                message = f"method {request.method} not allowed on {request.path}; allowed: {e.headers.get('Allow')}"
            elif e.status == 404:
                message = f"no route {request.path}"
            else:
                message = e.reason
            response = _error(e.status, message, headers)
        except asyncio.CancelledError:
            raise
        except Exception:  # pylint: disable=broad-except  # logged here, never sent to the client
            _LOGGER.exception("internal error on %s %s", request.method, request.path)
            response = _error(500, "internal server error")
        self.metrics.observe(route, request.method, response.status, time.perf_counter() - started)
        return response

    def _check_name(self, request: web.Request) -> Optional[int]:
        """The pinned version of the URL (None: the newest); 404 for another model name."""
        name = request.match_info["name"]
        version = request.match_info.get("version")
        if name != self.name:
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        if version is None:
            return None
        if not version.isdigit() or len(version) > 18:
            raise RequestError(404, f"Servable not found for request: Specific({name}, {version}): "
                                    "a version is a positive integer")
        return int(version)

    async def _loaded(self, version: Optional[int]) -> LoadedModel:
        if self.registry.latest is None:
            raise RequestError(503, "the model is still loading")
        try:
            return await self.registry.get(version)
        except NotFound as e:
            raise RequestError(404, f"Servable not found for request: Specific({self.name}, {version}): {e}")

    async def _status(self, request: web.Request) -> web.Response:
        version = self._check_name(request)
        if self.registry.latest is None:
            return _json_response({"model_version_status": [
                {"version": "", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}}]})
        loaded = self.registry.loaded_versions()
        if version is not None:
            match = [m for m in loaded if m.version == version]
            if not match:
                raise RequestError(404, f"Servable not found for request: Specific({self.name}, {version})")
            loaded = match
        return _json_response({"model_version_status": [
            {"version": str(m.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for m in loaded]})

    async def _metadata(self, request: web.Request) -> web.Response:
        loaded = await self._loaded(self._check_name(request))
        try:
            return _json_response({
                "model_spec": {"name": self.name, "signature_name": "", "version": str(loaded.version)},
                "metadata": {"signature_def": {"signature_def": loaded.signature_defs()},
                             "dataset_spec": spec_description(loaded)}})
        finally:
            self.registry.release(loaded)

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.config.max_request_bytes:
            raise RequestError(413, f"request body larger than {self.config.max_request_bytes} bytes")
        return await request.read()

    async def _score(self, request: web.Request, version: Optional[int]) -> tuple[Any, int, list]:
        """Parses and scores a :predict body; returns (the parsed request, the version, results)."""
        parsed = parse_predict_body(await self._read_body(request), request.headers.get("Content-Type"))
        if parsed.signature_name != DEFAULT_SIGNATURE:
            raise RequestError(400, f"signature_name {parsed.signature_name!r} is not served; "
                                    f"this server serves {DEFAULT_SIGNATURE!r}")
        if version is None:  # the newest version when its batch starts
            if self.registry.latest is None:
                raise RequestError(503, "the model is still loading")
            scored_by, results = await self.batcher.score(parsed.instances)
        else:  # acquired here, released by the batcher once its batch is scored
            scored_by, results = await self.batcher.score(parsed.instances, await self._loaded(version))
        for i, r in enumerate(results):
            if "error" in r:
                raise RequestError(400, f"instance {i}: {r['error']}")
        self.metrics.instances.inc(len(results))
        return parsed, scored_by, results

    async def _predict(self, request: web.Request) -> web.Response:
        parsed, _, results = await self._score(request, self._check_name(request))
        if parsed.columnar:
            return _json_response({"outputs": columnar_outputs(results)})
        return _json_response({"predictions": results})

    async def _vertex_predict(self, request: web.Request) -> web.Response:
        _, _, results = await self._score(request, None)
        return _json_response({"predictions": results})

    async def _health(self, request: web.Request) -> web.Response:
        if self.registry.latest is None or self._stopping:
            return _error(503, "the model is still loading" if not self._stopping else "shutting down")
        return _json_response({"status": "ok", "model_version": self.registry.latest.version})

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    # ------------------------------------------------------------------ lifecycle
    async def serve(self, ready=None) -> int:
        """Listens, loads the model, serves until SIGTERM/SIGINT, drains; returns the exit status.

        Args:
          ready: called with the bound port once listening (tests, --port=0).
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(self.make_app(), handle_signals=False, access_log=None,
                               shutdown_timeout=self.config.drain_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        _LOGGER.warning("model server listening on http://%s:%d/v1/models/%s", self.config.host, self.port, self.name)
        if ready is not None:
            ready(self.port)
        batcher_task = asyncio.ensure_future(self.batcher.run())
        status = 0
        load = asyncio.ensure_future(self.registry.start())
        done, _ = await asyncio.wait([load, asyncio.ensure_future(stop.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        watch = None
        if load in done and load.exception() is not None:
            _LOGGER.error("cannot load the model under %s: %s", self.config.model_dir, load.exception())
            status = 1
        elif load in done:
            watch = asyncio.ensure_future(self.registry.watch())
            await stop.wait()
        self._stopping = True
        _LOGGER.warning("shutting down: draining requests in flight (at most %.0f s)", self.config.drain_timeout)
        await runner.cleanup()  # stops listening, waits for the handlers in flight
        for task in (watch, load):
            if task is not None and not task.done():
                task.cancel()
        self.batcher.close()
        await batcher_task
        self.batcher.shutdown()
        self.registry.close()
        return status
