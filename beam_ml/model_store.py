"""Where exported models live: version directories under a model root, and their metadata.

    root = model_root_of("out/fraud")              # "out/fraud/model": the versions' parent
    list_versions(root)                            # [1, 2, 3]: complete versions only
    version_dir = resolve_version_dir("out/fraud") # "out/fraud/model/3": what is served
    version_dir, meta, spec = load_model_metadata("out/fraud")   # no TensorFlow needed

A `--model_dir` may name a model root (its latest version is served and new
versions are picked up), a train output dir (its `model/` root), or one version
directory (pinned). Every pipeline and the hot-reload watcher resolve it here.
Every path may be local or gs:// (`beam_ml.fs`). A version counts once both
its `saved_model.pb` and its metadata file exist: `beam_ml.export` writes the
metadata last (a directory rename is not atomic on object stores), so a
half-written version is never listed, by a new run or by a hot-reload watcher.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.spec import DatasetSpec

__all__ = ["MODEL_METADATA", "list_versions", "latest_version_dir", "model_root_of", "resolve_version_dir",
           "load_model_metadata", "read_model_metadata"]

# Per-version facts (spec, threshold, task, metrics), beside the SavedModel.
MODEL_METADATA = os.path.join("assets.extra", "beam_ml.json")


def _is_version_dir(path: str) -> bool:
    return fs.is_file(fs.join(path, "saved_model.pb")) and fs.is_file(fs.join(path, MODEL_METADATA))


def list_versions(model_root: str) -> list[int]:
    """The complete integer versions under `model_root`, ascending ([] if none or no such dir)."""
    return sorted(int(d) for d in fs.list_dir(model_root)
                  if d.isdigit() and _is_version_dir(fs.join(model_root, d)))


def latest_version_dir(model_root: str) -> Optional[str]:
    """The newest complete version directory under `model_root`, or None."""
    versions = list_versions(model_root)
    return fs.join(model_root, str(versions[-1])) if versions else None


def model_root_of(model_dir: str) -> Optional[str]:
    """The directory whose integer subdirectories are versions, or None when `model_dir` pins one version."""
    if _is_version_dir(model_dir):
        return None
    if fs.is_dir(fs.join(model_dir, "model")) and not list_versions(model_dir):
        return fs.join(model_dir, "model")  # an output_dir of pipelines.train
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
    path = fs.join(version_dir, MODEL_METADATA)
    if not fs.is_file(path):
        raise UserError(f"--model_dir: {version_dir} has no {MODEL_METADATA}; not a beam_ml export")
    return fs.read_json(path)


def load_model_metadata(model_dir: str) -> tuple[str, dict[str, Any], DatasetSpec]:
    """(version dir, beam_ml.json contents, dataset spec) of the version `model_dir` serves."""
    version_dir = resolve_version_dir(model_dir)
    meta = read_model_metadata(version_dir)
    return version_dir, meta, DatasetSpec.from_dict(meta["spec"], source=fs.join(version_dir, MODEL_METADATA))
