"""Loading an exported model and scoring raw records: shared by predict, batch and stream.

    model = ServingModel.load("out/retention/model")        # the latest version
    columns, errors = records_to_columns(records, model.spec)
    outputs = model.predict_columns(columns)               # numpy arrays

Only `tf.saved_model.load` is used, so serving does not depend on a Keras version.
Validation of raw records against the spec lives here too, so every serving path
(CLI, batch, streaming) rejects the same records for the same reasons.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from beam_ml.errors import UserError
from beam_ml.export import MODEL_METADATA, latest_version_dir, list_versions
from beam_ml.spec import DatasetSpec

__all__ = ["ServingModel", "records_to_columns", "validate_record", "resolve_version_dir"]


def resolve_version_dir(model_dir: str) -> str:
    """A version directory: `model_dir` itself if it is one, else its latest version."""
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    if os.path.isdir(os.path.join(model_dir, "model")) and not list_versions(model_dir):
        model_dir = os.path.join(model_dir, "model")  # an output_dir of pipelines.train
    latest = latest_version_dir(model_dir)
    if latest is None:
        raise UserError(f"--model_dir: no exported model version under {model_dir}")
    return latest


_MISSING = object()


def validate_record(record: Mapping[str, Any], spec: DatasetSpec) -> Optional[str]:
    """Why a raw record cannot be scored, or None when it can.

    Every feature column must be present as a key; its value may be null (a
    missing value, imputed by the model). Numeric values must be numbers or
    numeric strings; categorical values strings or numbers.
    """
    if not isinstance(record, Mapping):
        return f"expected a JSON object, got {type(record).__name__}"
    for c in spec.columns:
        role = c.role
        if role != "numeric" and role != "categorical":
            continue
        v = record.get(c.name, _MISSING)
        cls = v.__class__
        # Fast path first: this runs once per field of every streamed event.
        if v is None or cls is float or cls is int or (cls is str and role == "categorical"):
            continue
        if v is _MISSING:
            return f"missing field '{c.name}'"
        if role == "numeric":
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                return f"field '{c.name}': expected a number, got {type(v).__name__}"
            if isinstance(v, str) and v.strip() not in spec.na_values:
                try:
                    float(v)
                except ValueError:
                    return f"field '{c.name}': expected a number, got {v!r}"
        elif not isinstance(v, (str, int, float)) or isinstance(v, bool):
            return f"field '{c.name}': expected a string, got {type(v).__name__}"
    return None


def _numeric(v: Any, na_values: Sequence[str]) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        v = v.strip()
        return math.nan if v in na_values else float(v)
    return float(v)


def _numeric_column(records: Sequence[Mapping[str, Any]], name: str, na_values: Sequence[str]) -> np.ndarray:
    values = [r.get(name) for r in records]
    try:
        # numpy converts numbers and None (→ NaN) in C; NA tokens and padded
        # strings take the per-value path below.
        return np.array(values, dtype=np.float32)
    except (ValueError, TypeError):
        return np.array([_numeric(v, na_values) for v in values], dtype=np.float32)


def records_to_columns(records: Sequence[Mapping[str, Any]], spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Column arrays for serve_dict from records that passed `validate_record`."""
    cols: dict[str, np.ndarray] = {}
    for c in spec.columns:
        if c.role == "numeric":
            cols[c.name] = _numeric_column(records, c.name, spec.na_values)
        elif c.role == "categorical":
            vals = []
            for r in records:
                v = r.get(c.name)
                s = "" if v is None else (str(v).strip())
                vals.append(b"" if s in spec.na_values else s.encode("utf-8"))
            cols[c.name] = np.array(vals, dtype=object)
    return cols


class ServingModel:
    """An exported model version, loaded with tf.saved_model.load.

    Attributes:
      path: the version directory; version: its integer version.
      spec, task, threshold, classes, metadata: from assets.extra/beam_ml.json.
    """

    def __init__(self, version_dir: str):
        import tensorflow as tf  # deferred: importing this module must stay cheap

        self.path = version_dir
        meta_path = os.path.join(version_dir, MODEL_METADATA)
        if not os.path.isfile(meta_path):
            raise UserError(f"--model_dir: {version_dir} has no {MODEL_METADATA}; not a beam_ml export")
        with open(meta_path) as f:
            self.metadata = json.load(f)
        self.version = int(self.metadata["version"])
        self.spec = DatasetSpec.from_dict(self.metadata["spec"], source=meta_path)
        self.task = self.metadata["task"]
        self.threshold = float(self.metadata["threshold"])
        self.classes = list(self.metadata["label_classes"])
        self._arg_names = dict(self.metadata["raw_inputs"])
        self._loaded = tf.saved_model.load(version_dir)
        self._fn = self._loaded.signatures["serve_dict"]
        self._tf = tf

    @classmethod
    def load(cls, model_dir: str) -> "ServingModel":
        """Loads `model_dir` if it is a version directory, else its latest version."""
        return cls(resolve_version_dir(model_dir))

    def predict_columns(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scores raw column arrays; returns numpy score, class_id, class (+ probabilities)."""
        tf = self._tf
        kwargs = {}
        for col, arg in self._arg_names.items():
            arr = columns[col]
            kwargs[arg] = tf.constant(arr, dtype=tf.string if arr.dtype == object else tf.float32)
        out = self._fn(**kwargs)
        return {k: v.numpy() for k, v in out.items()}

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Scores validated records; returns one prediction dict per record."""
        if not records:
            return []
        out = self.predict_columns(records_to_columns(records, self.spec))
        preds = []
        for i in range(len(records)):
            p = {"score": float(out["score"][i]), "class_id": int(out["class_id"][i]),
                 "class": out["class"][i].decode("utf-8")}
            if "probabilities" in out:
                p["probabilities"] = [float(x) for x in out["probabilities"][i]]
            preds.append(p)
        return preds
