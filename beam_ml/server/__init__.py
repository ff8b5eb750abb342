"""The online model server: TF Serving's REST API and Vertex AI's container contract over an exported model.

    python -m pipelines.serve --model_dir=out/fraud --port=8501
    curl -s -H 'Content-Type: application/json' -d '{"instances": [{"V1": -1.2, "Amount": 12.5}]}' \\
        http://127.0.0.1:8501/v1/models/model:predict

Modules: `requests` (body parsing and error texts: pure), `models` (loaded
versions, hot reload, instance checks and the stored cleaning statement),
`batching` (merging concurrent requests into one model call in one scoring
thread), `metrics` (Prometheus), `app` (aiohttp routes, lifecycle, SIGTERM drain).
See docs/SERVING.md.
"""
import asyncio

from beam_ml.server.app import ModelServer, ServerConfig
from beam_ml.server.batching import Batcher, BatchListener
from beam_ml.server.models import LoadedModel, ModelRegistry
from beam_ml.server.requests import PredictRequest, RequestError, parse_predict_body

__all__ = ["ModelServer", "ServerConfig", "Batcher", "BatchListener", "LoadedModel", "ModelRegistry", "PredictRequest",
           "RequestError", "parse_predict_body", "serve"]


def serve(config: ServerConfig, cleaning_for=None, ready=None, batch_listeners=(), features_for=None) -> int:
    """Runs a ModelServer until SIGTERM/SIGINT; returns the exit status (0 after a drain).

    Args:
      config: what to serve and how.
      cleaning_for: spec -> the Cleaning applied to instances, or None (see ModelServer).
      features_for: spec -> the window state of the model's --features_sql, or None (see ModelServer).
      ready: called with the bound port once listening.
      batch_listeners: each called as `fn(version, instances, results)` after every scored batch, in
        the scoring thread (the hook prediction monitoring uses; see Batcher.add_listener).

    Raises:
      UserError: no model version under config.model_dir, or a cleaning statement that does not fit,
        before anything listens.
    """
    server = ModelServer(config, cleaning_for, features_for)
    for listener in batch_listeners:
        server.batcher.add_listener(listener)
    server.check_model()
    return asyncio.run(server.serve(ready))
