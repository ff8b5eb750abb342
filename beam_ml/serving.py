"""Loading an exported model and scoring raw records: shared by predict, batch and stream.

    model = ServingModel.load("out/retention/model")        # the latest version
    outputs = model.predict_columns(records_to_columns(records, model.spec))   # numpy arrays
    predictions = model.predict_records(records)          # one dict per record

Only `tf.saved_model.load` is used, so serving does not depend on a Keras version, and
Keras is not even imported (`import_tensorflow`): scoring one row pays for TensorFlow
alone.
Records are checked with `beam_ml.records.validate_record` first, so every serving
path (CLI, batch, streaming) rejects the same records for the same reasons.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from beam_ml.model_store import MODEL_METADATA, read_model_metadata, resolve_version_dir
from beam_ml.records import records_to_columns, validate_record
from beam_ml.spec import DatasetSpec

__all__ = ["ServingModel", "score_records", "import_tensorflow"]

# What `import tensorflow` imports eagerly from Keras (Keras 3, or tf_keras with TF_USE_LEGACY_KERAS=1).
_EAGER_KERAS = ("keras.src.optimizers", "tf_keras.src.optimizers")


def import_tensorflow():
    """TensorFlow for scoring, without the seconds of Keras its import costs.

    `import tensorflow` eagerly imports Keras' optimizers (so that Keras models
    it later loads find their registrations) and ignores an ImportError there.
    A serving signature loaded by tf.saved_model.load needs no Keras: when
    TensorFlow is not imported yet, that eager import is made to fail, then
    allowed again, so a later `import tf_keras` in the same process still works.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf  # already imported: nothing to save

        return tf
    blocked = [name for name in _EAGER_KERAS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # importing it raises ImportError, which TensorFlow's __init__ catches
    try:
        import tensorflow as tf  # deferred: importing this module must stay cheap
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return tf


class ServingModel:
    """An exported model version, loaded with tf.saved_model.load.

    Attributes:
      path: the version directory; version: its integer version.
      spec, task, threshold, classes, metadata: from assets.extra/beam_ml.json.
    """

    def __init__(self, version_dir: str):
        tf = import_tensorflow()
        self.path = version_dir
        meta_path = os.path.join(version_dir, MODEL_METADATA)
        self.metadata = read_model_metadata(version_dir)
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

    def signature_defs(self) -> dict[str, Any]:
        """The SavedModel's signatures as TF Serving's metadata shows them (inputs, outputs: dtype, shape, name)."""
        from tensorflow.core.framework import types_pb2  # deferred with TensorFlow (see __init__)

        def tensors(specs: Mapping[str, Any]) -> dict[str, Any]:
            return {name: {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum), "name": spec.name or name,
                           "tensor_shape": {"dim": [{"size": str(-1 if d is None else d)}
                                                    for d in (spec.shape if spec.shape.rank is not None else ())],
                                            "unknown_rank": spec.shape.rank is None}}
                    for name, spec in sorted(specs.items())}

        return {key: {"inputs": tensors(fn.structured_input_signature[1]), "outputs": tensors(fn.structured_outputs),
                      "method_name": "tensorflow/serving/predict"}
                for key, fn in self._loaded.signatures.items()}

    def predict_columns(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scores raw column arrays; returns numpy score, class_id, class (+ probabilities)."""
        tf = self._tf
        kwargs = {}
        for col, arg in self._arg_names.items():
            arr = columns[col]
            kwargs[arg] = tf.constant(arr, dtype=tf.string if arr.dtype == object else tf.float32)
        out = self._fn(**kwargs)
        return {k: v.numpy() for k, v in out.items()}

    def predict_records(self, records: Sequence[Mapping[str, Any]],
                        columns: Optional[Mapping[str, np.ndarray]] = None) -> list[dict[str, Any]]:
        """Scores validated records; returns one prediction dict per record.

        `columns`: the records' `records_to_columns(records, self.spec)`, when the caller already has them.
        """
        if not records:
            return []
        out = self.predict_columns(records_to_columns(records, self.spec) if columns is None else columns)
        # tolist() converts a whole column to Python scalars in C (the same
        # values as float()/int() of each element); this runs for every
        # streamed event.
        scores, class_ids = out["score"].tolist(), out["class_id"].tolist()
        classes = [c.decode("utf-8") for c in out["class"].tolist()]
        if "probabilities" in out:
            return [{"score": s, "class_id": i, "class": c, "probabilities": p}
                    for s, i, c, p in zip(scores, class_ids, classes, out["probabilities"].tolist())]
        return [{"score": s, "class_id": i, "class": c} for s, i, c in zip(scores, class_ids, classes)]


def score_records(model: ServingModel, records: Sequence[Any]) -> list[dict[str, Any]]:
    """One result per record, in order: its prediction, or {'record': index, 'error': reason}.

    Each prediction carries the threshold (binary/anomaly), the model version
    and the record's key column when it has one: the single-prediction use case
    (`python -m pipelines.predict`).
    """
    reasons = [validate_record(r, model.spec) for r in records]
    good = [i for i, reason in enumerate(reasons) if reason is None]
    preds = dict(zip(good, model.predict_records([records[i] for i in good])))
    key = model.spec.key_column
    results = []
    for i, r in enumerate(records):
        if reasons[i] is not None:
            results.append({"record": i, "error": reasons[i]})
            continue
        p = dict(preds[i])
        if model.task in ("binary", "anomaly"):
            p["threshold"] = model.threshold
        p["model_version"] = model.version
        if key and key in r:
            p[key] = r[key]
        results.append(p)
    return results
