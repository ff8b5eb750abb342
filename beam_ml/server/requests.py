"""Request bodies of the model server: TF Serving's :predict (row and columnar) and Vertex AI's predict.

    request = parse_predict_body(b'{"instances": [{"V1": 0.3}]}', "application/json")
    request.instances     # [{"V1": 0.3}]: one dict per instance, columnar inputs turned into rows
    request.columnar      # False: answer {"predictions": [...]}; True: {"outputs": {...}}

Every way a body can be wrong raises `RequestError` with the HTTP status and
a one-line message: nothing a client sends reaches the model unchecked.
Pure functions: no HTTP, no TensorFlow (the property tests feed them junk).
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence

__all__ = ["DEFAULT_SIGNATURE", "RequestError", "PredictRequest", "parse_predict_body", "check_content_type",
           "error_text", "columnar_outputs", "json_bytes"]

DEFAULT_SIGNATURE = "serve_dict"
_MAX_ERROR_CHARS = 500


class RequestError(Exception):
    """A request the server refuses: `status` (4xx) and a one-line `message` for {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = error_text(message)


class PredictRequest(NamedTuple):
    """A parsed :predict body.

    Attributes:
      instances: one dict per instance (columnar `inputs` turned into rows).
      columnar: the body used `inputs` (answer with `outputs`).
      signature_name: the signature asked for.
      parameters: Vertex AI's `parameters` object ({} when absent).
    """

    instances: list
    columnar: bool
    signature_name: str
    parameters: dict


def error_text(message: str) -> str:
    """One line, bounded: what an {"error": ...} may carry."""
    line = " ".join(str(message).split())
    return line if len(line) <= _MAX_ERROR_CHARS else line[:_MAX_ERROR_CHARS - 3] + "..."


def check_content_type(content_type: Optional[str]) -> None:
    """JSON bodies only: application/json, any `+json` type, curl's default form type, or none given.

    Raises:
      RequestError: 415 for any other content type.
    """
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    # curl -d sends application/x-www-form-urlencoded unless told otherwise; TF Serving reads it as JSON too.
    if media in ("application/json", "text/json", "application/x-www-form-urlencoded") or media.endswith("+json"):
        return
    raise RequestError(415, f"unsupported content type {media!r}: send application/json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(body: bytes) -> Any:
    if not body or not body.strip():
        raise RequestError(400, "empty request body: expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, f"request body is not UTF-8 (byte {e.start})")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply")
    except ValueError as e:  # JSONDecodeError is a ValueError; so is a NaN/Infinity constant
        raise RequestError(400, f"malformed JSON: {e}")


def _rows_of_columns(inputs: Any) -> list:
    """Columnar `inputs` ({name: [values]}, or one value per name for a single instance) as rows."""
    if not isinstance(inputs, Mapping):
        raise RequestError(400, "'inputs' must be an object mapping each field to a list of values")
    if not inputs:
        return []
    lengths = {name: len(v) for name, v in inputs.items() if isinstance(v, list)}
    if not lengths:  # every input a scalar: one instance
        return [dict(inputs)]
    if len(lengths) != len(inputs):
        scalar = next(name for name in inputs if name not in lengths)
        raise RequestError(400, f"'inputs': field '{scalar}' is not a list while others are")
    n = next(iter(lengths.values()))
    for name, length in lengths.items():
        if length != n:
            raise RequestError(400, f"'inputs': field '{name}' has {length} values, expected {n} like the others")
    return [{name: values[i] for name, values in inputs.items()} for i in range(n)]


def parse_predict_body(body: bytes, content_type: Optional[str] = None, max_instances: Optional[int] = None,
                       default_signature: str = DEFAULT_SIGNATURE) -> PredictRequest:
    """Parses a :predict body (TF Serving's row or columnar form, or Vertex AI's).

    Args:
      body: the raw request body.
      content_type: the Content-Type header (None: not given).
      max_instances: refuse more instances than this (None: no bound).
      default_signature: used when the body names none.

    Returns:
      The PredictRequest; each instance is a dict (not yet checked against the model).

    Raises:
      RequestError: 415 wrong content type; 400 malformed JSON, wrong shape, an
        instance that is not an object (naming its index); 413 too many instances.
    """
    check_content_type(content_type)
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise RequestError(400, f"expected a JSON object with 'instances' or 'inputs', got {type(doc).__name__}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances == has_inputs:
        raise RequestError(400, "give exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    signature = doc.get("signature_name", default_signature)
    if signature is None or signature == "":
        signature = default_signature
    if not isinstance(signature, str):
        raise RequestError(400, "'signature_name' must be a string")
    parameters = doc.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "'parameters' must be an object")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise RequestError(400, "'instances' must be a list of objects")
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(400, f"instance {i}: expected a JSON object of field values, "
                                        f"got {type(instance).__name__}")
    else:
        instances = _rows_of_columns(doc["inputs"])
    if not instances:
        raise RequestError(400, "no instances to score")
    if max_instances is not None and len(instances) > max_instances:
        raise RequestError(413, f"{len(instances)} instances in one request; at most {max_instances}")
    return PredictRequest(instances, has_inputs, signature, parameters)


def columnar_outputs(predictions: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """TF Serving's columnar answer: each output name -> its values in instance order (None where absent)."""
    names: list[str] = []
    for p in predictions:
        for name in p:
            if name not in names:
                names.append(name)
    return {name: [p.get(name) for p in predictions] for name in names}


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def json_bytes(doc: Any) -> bytes:
    """Strict JSON (a non-finite score becomes null, never NaN) as UTF-8."""
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError:  # a NaN/inf somewhere: the rare path
        return json.dumps(_finite(doc), allow_nan=False, separators=(",", ":")).encode("utf-8")
