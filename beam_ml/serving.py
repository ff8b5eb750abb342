"""Loading an exported model and scoring raw records: shared by predict, batch and stream.

    model = ServingModel.load("out/retention/model")        # the latest version
    outputs = model.predict_columns(records_to_columns(records, model.spec))   # numpy arrays
    predictions = model.predict_records(records)          # one dict per record

Only `tf.saved_model.load` is used, so serving does not depend on a Keras version.
Records are checked with `beam_ml.records.validate_record` first, so every serving
path (CLI, batch, streaming) rejects the same records for the same reasons.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from beam_ml.errors import UserError
from beam_ml.export import MODEL_METADATA, latest_version_dir, list_versions
from beam_ml.records import records_to_columns
from beam_ml.spec import DatasetSpec

__all__ = ["ServingModel", "resolve_version_dir"]


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
