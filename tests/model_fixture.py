"""A small fraud model trained once per test session, shared by the predict tests.

    from tests.model_fixture import trained_fraud_model, export_copy
    model_root, csv_path = trained_fraud_model(str(tmp_path_factory.getbasetemp()))

Training (pipelines.train on 3,000 generated rows, one epoch) takes about a
minute here; `functools.lru_cache` makes every test module share one run.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import shutil
from typing import Any

from beam_ml.model_store import MODEL_METADATA, list_versions

__all__ = ["trained_fraud_model", "export_copy", "feature_rows"]


@functools.lru_cache(maxsize=None)
def trained_fraud_model(base_dir: str) -> tuple[str, str]:
    """(model root, the CSV it was trained on), trained under base_dir on first use.

    Set BEAM_ML_TEST_MODEL_CACHE=<dir> to train there once and reuse it across
    pytest runs while iterating.
    """
    from beam_ml import datasets
    from beam_ml.jobs.demo import ensure_fraud_model

    base_dir = os.environ.get("BEAM_ML_TEST_MODEL_CACHE") or base_dir
    data = os.path.join(base_dir, "fraud_data")
    root = ensure_fraud_model(os.path.join(base_dir, "fraud_model"), data, rows=3000, epochs=1)
    return root, datasets.materialize("fraud", data, rows=3000)


def export_copy(model_root: str, threshold: float) -> str:
    """Exports the next version as a copy of the latest with another threshold; returns its dir.

    Written like `beam_ml.export` does (temp dir, then one rename), so a
    watcher never sees a partial version. Only beam_ml.json changes (version,
    threshold): the graph, hence scores and classes, stay those of the copied
    version, while every prediction names the version and threshold it came
    from, which is what a hot-reload test checks.
    """
    latest = list_versions(model_root)[-1]
    version = latest + 1
    tmp = os.path.join(model_root, f".tmp-{version}-test")
    shutil.copytree(os.path.join(model_root, str(latest)), tmp)
    meta_path = os.path.join(tmp, MODEL_METADATA)
    with open(meta_path) as f:
        meta = json.load(f)
    meta.update(version=version, threshold=float(threshold))
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    final = os.path.join(model_root, str(version))
    os.replace(tmp, final)
    return final


def feature_rows(csv_path: str, n: int, drop=("Class",)) -> list[dict[str, Any]]:
    """The first n data rows of a CSV as dicts of strings, without the label."""
    with open(csv_path, newline="") as f:
        rows = []
        for i, row in enumerate(csv.DictReader(f)):
            if i >= n:
                break
            rows.append({k: v for k, v in row.items() if k not in drop})
    return rows
