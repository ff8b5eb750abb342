"""Where exported models live: version directories under a model root, and their metadata.

    root = model_root_of("out/fraud")              # "out/fraud/model": the versions' parent
    list_versions(root)                            # [1, 2, 3]: complete versions only
    version_dir = resolve_version_dir("out/fraud") # "out/fraud/model/3": what is served
    version_dir, meta, spec = load_model_metadata("out/fraud")   # no TensorFlow needed

A `--model_dir` may name a model root (its latest version is served and new
versions are picked up), a train output dir (its `model/` root), or one version
directory (pinned). Every pipeline and the hot-reload watcher resolve it here.
A version counts once its `saved_model.pb` exists: `beam_ml.export` writes a
version to a temporary directory and renames it, so a half-written one is
never listed.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from beam_ml.errors import UserError
from beam_ml.spec import DatasetSpec

__all__ = ["MODEL_METADATA", "list_versions", "latest_version_dir", "model_root_of", "resolve_version_dir",
           "load_model_metadata", "read_model_metadata"]

# Per-version facts (spec, threshold, task, metrics), beside the SavedModel.
MODEL_METADATA = os.path.join("assets.extra", "beam_ml.json")


def _is_version_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def list_versions(model_root: str) -> list[int]:
    """The complete integer versions under `model_root`, ascending ([] if none or no such dir)."""
    if not os.path.isdir(model_root):
        return []
    return sorted(int(d) for d in os.listdir(model_root)
                  if d.isdigit() and _is_version_dir(os.path.join(model_root, d)))


def latest_version_dir(model_root: str) -> Optional[str]:
    """The newest complete version directory under `model_root`, or None."""
    versions = list_versions(model_root)
    return os.path.join(model_root, str(versions[-1])) if versions else None


def model_root_of(model_dir: str) -> Optional[str]:
    """The directory whose integer subdirectories are versions, or None when `model_dir` pins one version."""
    if _is_version_dir(model_dir):
        return None
    if os.path.isdir(os.path.join(model_dir, "model")) and not list_versions(model_dir):
        return os.path.join(model_dir, "model")  # an output_dir of pipelines.train
    return model_dir


def resolve_version_dir(model_dir: str) -> str:
    """The version directory `model_dir` serves: itself if it is one, else its root's latest version.

    Raises:
      UserError: naming --model_dir when there is no complete version there.
    """
    root = model_root_of(model_dir)
    if root is None:
        return model_dir
    latest = latest_version_dir(root)
    if latest is None:
        raise UserError(f"--model_dir: no exported model version under {model_dir}")
    return latest


def read_model_metadata(version_dir: str) -> dict[str, Any]:
    """The beam_ml.json of one version directory.

    Raises:
      UserError: naming --model_dir when the directory is not a beam_ml export.
    """
    path = os.path.join(version_dir, MODEL_METADATA)
    if not os.path.isfile(path):
        raise UserError(f"--model_dir: {version_dir} has no {MODEL_METADATA}; not a beam_ml export")
    with open(path) as f:
        return json.load(f)


def load_model_metadata(model_dir: str) -> tuple[str, dict[str, Any], DatasetSpec]:
    """(version dir, beam_ml.json contents, dataset spec) of the version `model_dir` serves."""
    version_dir = resolve_version_dir(model_dir)
    meta = read_model_metadata(version_dir)
    return version_dir, meta, DatasetSpec.from_dict(meta["spec"], source=os.path.join(version_dir, MODEL_METADATA))
