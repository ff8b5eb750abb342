"""Export: a SavedModel that takes RAW features and applies the transform graph inside.

    path = export_model(model_root, tft_output, keras_model, spec, threshold)  # model_root/<version>/

Signatures (load with `tf.saved_model.load`, no Keras needed to serve):
  serving_default(examples: string [batch])   serialized raw tf.Example
  serve_dict(<column>: [batch] ...)           one tensor per raw feature column:
                                              numeric float32 (NaN = missing),
                                              categorical string ("" = missing)
Both return: score float32 [batch] (binary: P(positive); multiclass: the top
probability; anomaly: reconstruction error), class_id int64 [batch], class
string [batch], and for multiclass probabilities float32 [batch, C].

Unseen categories map to the OOV bucket and missing values to the spec default
or train mean, inside the graph, so raw input never errors for those reasons.
Versions are integer directories (model/1, model/2, ...) published so that a
serving process polling the root only ever sees complete versions: locally a
temp dir renamed into place; on gs:// (no renames there) the SavedModel is
written locally, its files copied up and `saved_model.pb`, which marks a
version complete, copied last. `assets.extra/beam_ml.json` records the spec,
threshold, task, parameters, cross-validation and test metrics of each version
(`update_model_metadata` adds the test metrics once they exist).
"""
from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
import time
from typing import Optional

import tensorflow as tf

from beam_ml import fs
from beam_ml.model_store import MODEL_METADATA, list_versions
from beam_ml.spec import DatasetSpec
from beam_ml.training.data import stack_features
from transforms.preprocessing import raw_feature_spec, transform_inputs, transformed_feature_names

__all__ = ["export_model", "signature_arg_name", "existing_versions", "update_model_metadata", "json_safe"]


def signature_arg_name(column: str) -> str:
    """The serve_dict keyword for a column (signature names must be identifiers)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", column)
    name = name if re.match(r"[A-Za-z]", name) else f"f_{name}"
    # A keyword ("class", "from") cannot be a parameter of the traced function.
    return f"{name}_" if keyword.iskeyword(name) else name


class _ServingModule(tf.Module):
    def __init__(self, tft_output, model, spec: DatasetSpec, threshold: float):
        super().__init__()
        self.tft_layer = tft_output.transform_features_layer()
        self.model = model
        self._spec = spec
        self._task = spec.task
        self._names = transformed_feature_names(spec)
        self._raw_spec = raw_feature_spec(spec, with_label=False)
        self.threshold = tf.Variable(float(threshold), trainable=False, dtype=tf.float32, name="threshold")
        self.classes = tf.Variable(list(spec.label_classes), trainable=False, dtype=tf.string, name="classes")

    def _predict(self, raw: dict) -> dict:
        transformed = self.tft_layer(transform_inputs(raw, self._spec))
        x = stack_features(transformed, self._names)
        out = self.model(x, training=False)
        if self._task == "binary":
            score = tf.reshape(out, [-1])
            class_id = tf.cast(score >= self.threshold, tf.int64)
            result = {"score": score}
        elif self._task == "multiclass":
            class_id = tf.argmax(out, axis=1, output_type=tf.int64)
            result = {"score": tf.reduce_max(out, axis=1), "probabilities": out}
        else:  # anomaly: reconstruction error
            score = tf.reduce_mean(tf.square(out - x), axis=1)
            class_id = tf.cast(score >= self.threshold, tf.int64)
            result = {"score": score}
        result["class_id"] = class_id
        result["class"] = tf.gather(self.classes, class_id)
        return result


def _dict_signature(module: _ServingModule):
    """A serve_dict concrete function whose keyword names are signature-safe column names."""
    columns = list(module._raw_spec)
    arg_names = [signature_arg_name(c) for c in columns]
    specs = [tf.TensorSpec([None], module._raw_spec[c].dtype, name=a) for c, a in zip(columns, arg_names)]

    @tf.function(input_signature=specs)
    def serve_dict(*tensors):
        return module._predict(dict(zip(columns, tensors)))

    return serve_dict


def existing_versions(model_root: str) -> list[int]:
    """The complete versions under a model root, local or gs:// (a version is complete once saved_model.pb exists)."""
    if fs.is_local(model_root):
        return list_versions(model_root)
    return sorted(int(d) for d in fs.list_dir(model_root)
                  if d.isdigit() and fs.is_file(fs.join(model_root, d, "saved_model.pb")))


def update_model_metadata(version_dir: str, extra: dict) -> dict:
    """Adds `extra` to a version's beam_ml.json (e.g. test metrics known after export); returns the whole."""
    path = fs.join(version_dir, *MODEL_METADATA.split("/"))
    meta = fs.read_json(path)
    meta.update(extra)
    fs.write_json(path, meta)
    return meta


def export_model(model_root: str, tft_output, model, spec: DatasetSpec, threshold: float,
                 metadata: Optional[dict] = None, version: Optional[int] = None) -> str:
    """Exports model_root/<version>/ (next integer by default) and returns its path.

    Args:
      model_root: the directory holding versions (local or gs://).
      tft_output: a tft.TFTransformOutput for the transform graph.
      model: the trained tf_keras model over stacked transformed features.
      spec: the dataset spec (defines raw inputs and classes).
      threshold: the decision threshold (binary/anomaly).
      metadata: extra facts recorded in assets.extra/beam_ml.json (metrics, ...).
      version: force a version number.
    """
    fs.makedirs(model_root)
    if version is None:
        existing = existing_versions(model_root)
        version = (existing[-1] + 1) if existing else 1
    final = fs.join(model_root, str(version))
    if fs.exists(fs.join(final, "saved_model.pb")):
        raise FileExistsError(f"model version already exists: {final}")
    local = fs.is_local(model_root)
    tmp = os.path.join(model_root, f".tmp-{version}-{os.getpid()}") if local else tempfile.mkdtemp(prefix="export-")
    shutil.rmtree(tmp, ignore_errors=True)

    module = _ServingModule(tft_output, model, spec, threshold)
    raw_spec = module._raw_spec

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return module._predict(tf.io.parse_example(examples, raw_spec))

    serve_dict = _dict_signature(module)
    module.serve_examples = serve_examples
    module.serve_dict = serve_dict
    tf.saved_model.save(module, tmp, signatures={
        "serving_default": serve_examples.get_concrete_function(),
        "serve_dict": serve_dict.get_concrete_function(),
    })
    meta = {
        "version": int(version),
        "created": time.time(),
        "task": spec.task,
        "threshold": float(threshold),
        "label_classes": list(spec.label_classes),
        "raw_inputs": {c: signature_arg_name(c) for c in raw_spec},
        "spec": spec.to_dict(),
    }
    meta.update(metadata or {})
    fs.write_json(os.path.join(tmp, MODEL_METADATA), json_safe(meta))
    if local:
        os.replace(tmp, final)
        return final
    try:
        files = [f for f in fs.list_files(tmp) if os.path.basename(f) != "saved_model.pb"]
        for f in files + [os.path.join(tmp, "saved_model.pb")]:  # the completeness marker last
            fs.copy(f, fs.join(final, *os.path.relpath(f, tmp).split(os.sep)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def json_safe(value):
    """`value` made JSON-safe: numpy scalars become Python numbers, NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None  # NaN is not JSON
    return value
