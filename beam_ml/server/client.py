"""A minimal client of the model server (stdlib only: no TensorFlow, no aiohttp), for `pipelines.predict --server`.

    predict_remote("http://127.0.0.1:8501", [{"V1": 0.3}], model_name="model")   # [{"score": ..., ...}]
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Sequence

from beam_ml.errors import UserError

__all__ = ["predict_url", "predict_remote"]


def predict_url(server: str, model_name: str = "model") -> str:
    """The :predict URL of `server`: a base URL (http://host:port) or a full ...:predict URL."""
    server = server.rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise UserError(f"--server: expected an http:// or https:// URL, got {server!r}")
    return server if server.endswith(":predict") else f"{server}/v1/models/{model_name}:predict"


def predict_remote(server: str, records: Sequence[Any], model_name: str = "model",
                   timeout: float = 60.0) -> list[dict]:
    """Scores records on a running server; one prediction per record, in order.

    Raises:
      UserError: the server refused the request (its one-line error, e.g. naming the instance and
        field) or cannot be reached.
    """
    url = predict_url(server, model_name)
    body = json.dumps({"instances": list(records)}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            message = e.reason
        raise UserError(f"--server: {url} answered {e.code}: {message}")
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"--server: cannot reach {url}: {getattr(e, 'reason', e)}")
