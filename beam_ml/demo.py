"""What the local demos, the streaming benchmark and the tests share: a fraud model, malformed events.

    model_root = ensure_fraud_model("out/fraud", data_dir="data", rows=50000, epochs=8)
    value = malformed_event(event, "not_a_number")    # bytes a stream must dead-letter
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = ["ensure_fraud_model", "malformed_event", "MALFORMED_KINDS"]

# Kinds of malformed events; each names the stage that must reject it (parse or validate).
MALFORMED_KINDS = ("not_json", "not_object", "missing_field", "not_a_number")


def ensure_fraud_model(model_dir: str, data_dir: str, rows: int, epochs: int, log=print) -> str:
    """The model root to serve from `model_dir`, training the bundled fraud dataset there if it has no version.

    Args:
      model_dir: a model root (integer version subdirectories), a train output
        dir (`<dir>/model/<version>`), or a directory to train into.
      data_dir: where the generated training CSV goes.
      rows: generated rows to train on.
      epochs: training epochs.
      log: where the progress lines go.

    Returns:
      The model root (whose latest version is served).
    """
    from beam_ml.model_store import list_versions, model_root_of

    root = model_root_of(model_dir)
    if root is None:  # a version directory: nothing to train
        return model_dir
    if list_versions(root):
        return root
    from beam_ml.options import KafkaOptions, TrainOptions, parse_pipeline_options
    from beam_ml.train import train

    log(f"no model in {model_dir}: training the fraud dataset ({rows} rows, {epochs} epochs)")
    start = time.monotonic()
    options = parse_pipeline_options(
        ["--dataset=fraud", f"--dataset_rows={rows}", f"--data_dir={data_dir}", f"--output_dir={model_dir}",
         f"--epochs={epochs}", "--runner=DirectRunner", "--verbose=0"], TrainOptions, KafkaOptions)
    train(options, log=lambda msg: None)
    log(f"trained in {time.monotonic() - start:.0f} s")
    return os.path.join(model_dir, "model")


def malformed_event(event: dict[str, Any], kind: str) -> bytes:
    """A malformed variant of `event` (a JSON-able dict) of one of MALFORMED_KINDS, as bytes."""
    if kind == "not_json":
        return f"{event.get('event_id')},this is not JSON".encode()
    if kind == "not_object":
        return json.dumps([event.get("event_id"), event.get("Amount")]).encode()
    bad = dict(event)
    if kind == "missing_field":
        bad.pop("V1", None)
    elif kind == "not_a_number":
        bad["Amount"] = "twelve euros"
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(bad).encode()
