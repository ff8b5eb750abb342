"""Model locations: roots, train output dirs, pinned versions, incomplete versions."""
import json
import os

import pytest

from beam_ml.errors import UserError
from beam_ml.model_store import (MODEL_METADATA, latest_version_dir, list_versions, load_model_metadata,
                                 model_root_of, resolve_version_dir)

SPEC = {"version": 1, "task": "binary", "label": "y", "label_classes": ["0", "1"],
        "columns": [{"name": "x", "role": "numeric"}, {"name": "y", "role": "label"}]}


def _version(root, n, complete=True):
    d = os.path.join(root, str(n))
    os.makedirs(os.path.join(d, "assets.extra"))
    if complete:
        open(os.path.join(d, "saved_model.pb"), "wb").close()
    with open(os.path.join(d, MODEL_METADATA), "w") as f:
        json.dump({"version": n, "spec": SPEC}, f)
    return d


def test_versions_are_complete_integer_dirs_in_numeric_order(tmp_path):
    root = str(tmp_path / "model")
    for n in (1, 2, 10):
        _version(root, n)
    _version(root, 11, complete=False)           # being written: not a version yet
    os.makedirs(os.path.join(root, ".tmp-12-99"))  # an export's temp dir
    assert list_versions(root) == [1, 2, 10]
    assert latest_version_dir(root) == os.path.join(root, "10")
    assert list_versions(str(tmp_path / "missing")) == [] and latest_version_dir(str(tmp_path / "x")) is None


def test_a_model_dir_may_be_a_root_a_train_output_dir_or_a_pinned_version(tmp_path):
    out = str(tmp_path / "out")
    root = os.path.join(out, "model")
    _version(root, 1)
    v2 = _version(root, 2)
    assert model_root_of(root) == root and resolve_version_dir(root) == v2
    assert model_root_of(out) == root and resolve_version_dir(out) == v2
    assert model_root_of(os.path.join(root, "1")) is None
    assert resolve_version_dir(os.path.join(root, "1")) == os.path.join(root, "1")
    version_dir, meta, spec = load_model_metadata(out)
    assert version_dir == v2 and meta["version"] == 2 and spec.label == "y"


def test_no_version_or_no_metadata_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--model_dir: no exported model version under"):
        resolve_version_dir(str(tmp_path))
    # A SavedModel without beam_ml's metadata (still being exported, or not ours) is not a version.
    d = tmp_path / "model" / "1"
    d.mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(b"")
    assert list_versions(str(tmp_path / "model")) == []
    with pytest.raises(UserError, match="--model_dir: no exported model version under"):
        load_model_metadata(str(tmp_path / "model"))
