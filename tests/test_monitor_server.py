"""The model server's monitor across a hot reload (a real server process over real sockets, Tansu on 127.0.0.1).

Version 2 of the model is version 1 with training statistics in which `average_montly_hours` is 3 times larger.
Events with that feature ×3 alert under version 1 and not under version 2: the windows after the reload are
compared with version 2's statistics, and each record names the version it was compared with.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from beam_ml.model_store import read_model_metadata, resolve_version_dir
from beam_ml.monitoring import SCORE_FEATURE, read_training_statistics, write_training_statistics
from beam_ml.server.process import ServerProcess
from beam_ml.testing import read_topic
from pipelines import stream_predict
from tests.model_fixture import export_copy
from tests.test_monitor_stream import REPO, _rows, _send, trained_monitor_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURE = "average_montly_hours"


def _version_two(root: str) -> None:
    """<root>/2 (exported as a copy of version 1, atomically), its FEATURE statistics then scaled by 3."""
    threshold = read_model_metadata(resolve_version_dir(root))["threshold"]
    two = export_copy(root, threshold)
    stats = read_training_statistics(two)
    f = stats.features[FEATURE]
    f.edges = [e * 3 for e in f.edges]
    f.min, f.max = f.min * 3, f.max * 3
    write_training_statistics(two, stats)


def _version_one_root(tmp_path_factory, tmp_path) -> tuple[str, list]:
    """(a model root holding only version 1 of the cached retention model, the training rows as events)."""
    trained_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    root = str(tmp_path / "model")
    shutil.copytree(resolve_version_dir(trained_root), os.path.join(root, "1"))
    return root, _rows(csv_path, "left")[0]


def _check_switch(kafka_broker, mon: str) -> None:
    """Windows 0 and 1 (the second closed early by version 2's first prediction) compared with version 1's
    statistics, where FEATURE ×3 is drift; window 2 with version 2's, which expect it."""
    got = read_topic(kafka_broker, mon, 3, timeout=60, decode=lambda r: json.loads(r.value))
    records = {r["window"]["id"]: r for r in got if r["type"] == "monitoring"}
    alerts = [r for r in got if r["type"] == "alert"]
    assert sorted(records) == [0, 1, 2]
    assert [records[w]["events"]["predictions"] for w in (0, 1, 2)] == [100, 50, 100]
    assert [records[w]["model_version"] for w in (0, 1, 2)] == [1, 1, 2]
    by_window = {w: {a["feature"] for a in alerts if a["window"]["id"] == w} - {SCORE_FEATURE} for w in records}
    assert by_window[0] == {FEATURE} and by_window[1] == {FEATURE}
    assert by_window[2] == set(), alerts
    assert records[2]["features"][FEATURE]["js"] < 0.1 < records[0]["features"][FEATURE]["js"]


def _served_version(server: ServerProcess) -> str:
    status, body = server.get("/v1/models/model")
    return body["model_version_status"][0]["version"] if status == 200 else ""


def test_the_server_monitor_switches_to_the_new_versions_statistics(kafka_broker, new_topic, tmp_path_factory,
                                                                    tmp_path):
    root, rows = _version_one_root(tmp_path_factory, tmp_path)
    rng = np.random.default_rng(9)

    def shifted(n):
        return [dict(rows[j], **{FEATURE: rows[j][FEATURE] * 3}) for j in rng.integers(0, len(rows), n)]

    mon = new_topic(prefix="mon")
    with ServerProcess(["-m", "pipelines.serve", f"--model_dir={root}", "--reload_interval=0.3", "--monitor",
                        "--monitor_window=100", f"--monitor_topic={mon}", f"--bootstrap_servers={kafka_broker}"],
                       env={"PYTHONPATH": REPO}, cwd=REPO) as server:
        server.wait_ready()
        for batch in (shifted(100), shifted(50)):  # window 0 (v1), then half of window 1
            status, body = server.predict(batch)
            assert status == 200 and {p["model_version"] for p in body["predictions"]} == {1}
        _version_two(root)
        deadline = time.monotonic() + 120
        while _served_version(server) != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _served_version(server) == "2"
        status, body = server.predict(shifted(100))  # closes window 1 early (v1), fills window 2 (v2)
        assert status == 200 and {p["model_version"] for p in body["predictions"]} == {2}
        assert server.stop() == 0
    _check_switch(kafka_broker, mon)


def test_the_server_monitor_joins_delayed_labels_by_event_id(kafka_broker, new_topic, tmp_path_factory):
    """--label_topic on the server: instances carry `event_id` (as stream_predict's events do); each window
    reports precision, recall and ROC-AUC over the labels joined in it, and they add up to the responses."""
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    rows, labels = _rows(csv_path, "left")
    pick = np.random.default_rng(13).integers(0, len(rows), 300)
    instances = [dict(rows[j], event_id=f"e{i}") for i, j in enumerate(pick)]
    mon, label_topic = new_topic(prefix="mon"), new_topic(prefix="labels")
    # Labels of the first 200 events (the last 100 stay unlabelled), some before their prediction, plus junk.
    _send(kafka_broker, label_topic, [{"event_id": f"e{i}", "label": labels[j]} for i, j in enumerate(pick[:200])]
          + [b"not json", {"no": "event id"}])
    responses = []
    with ServerProcess(["-m", "pipelines.serve", f"--model_dir={model_root}", "--monitor", "--monitor_window=100",
                        f"--monitor_topic={mon}", f"--label_topic={label_topic}",
                        f"--bootstrap_servers={kafka_broker}"], env={"PYTHONPATH": REPO}, cwd=REPO) as server:
        server.wait_ready()
        for k in range(0, 300, 50):
            status, body = server.predict(instances[k:k + 50])
            assert status == 200, body
            responses += body["predictions"]
            time.sleep(0.5)
        assert server.stop() == 0
    got = read_topic(kafka_broker, mon, 3, timeout=60, decode=lambda r: json.loads(r.value))
    records = {r["window"]["id"]: r for r in got if r["type"] == "monitoring"}
    assert sorted(records) == [0, 1, 2]
    quality = [records[w]["labels"] for w in (0, 1, 2) if records[w]["labels"]]
    assert sum(q["labelled"] for q in quality) == 200
    positive = {"1", "yes", "true"}
    truth = [labels[j] in positive for j in pick[:200]]
    predicted = [p["score"] >= p["threshold"] for p in responses[:200]]
    tp = sum(t and p for t, p in zip(truth, predicted))
    fp = sum(p and not t for t, p in zip(truth, predicted))
    fn = sum(t and not p for t, p in zip(truth, predicted))
    assert (sum(q["tp"] for q in quality), sum(q["fp"] for q in quality), sum(q["fn"] for q in quality)) == (tp, fp, fn)
    assert all(q["roc_auc"] is None or 0.5 < q["roc_auc"] <= 1 for q in quality)
    assert records[0]["labels"]["precision"] is not None and records[0]["labels"]["recall"] is not None


def test_stream_predict_monitor_switches_to_the_new_versions_statistics(kafka_broker, new_topic, tmp_path_factory,
                                                                        tmp_path):
    """The same reload in stream_predict: version 2 appears mid-stream; its windows use its own statistics."""
    root, rows = _version_one_root(tmp_path_factory, tmp_path)
    pick = np.random.default_rng(11).integers(0, len(rows), 300)
    events = [dict(rows[j], event_id=f"e{i}", **{FEATURE: rows[j][FEATURE] * 3}) for i, j in enumerate(pick)]
    source, out, dlq, mon = (new_topic(prefix=p) for p in ("in", "out", "dlq", "mon"))
    argv = [f"--model_dir={root}", f"--input_topic={source}", f"--output_topic={out}", f"--dead_letter_topic={dlq}",
            f"--bootstrap_servers={kafka_broker}", "--runner=DirectRunner", "--streaming", "--group_id=reload",
            "--reload_interval=0.3", "--max_records=300", "--max_read_time=200", "--monitor",
            "--monitor_window=100", f"--monitor_topic={mon}"]
    results = {}

    def run():
        try:
            results["run"] = stream_predict.run(argv)
        except BaseException as e:  # pylint: disable=broad-except  # reported below, not lost in the thread
            results["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _send(kafka_broker, source, events[:150])  # window 0 and half of window 1, scored by version 1
        first = read_topic(kafka_broker, out, 150, timeout=120, decode=lambda r: json.loads(r.value))
        assert "error" not in results, results.get("error")
        assert len(first) == 150 and {p["model_version"] for p in first} == {1}
        _version_two(root)
        time.sleep(2)  # > --reload_interval: the next batch is scored by version 2
        _send(kafka_broker, source, events[150:])
    finally:
        thread.join(240)
    assert "error" not in results, results.get("error")
    assert not thread.is_alive() and results["run"].counts["model_reloads"] >= 1
    _check_switch(kafka_broker, mon)
