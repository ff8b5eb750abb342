"""The monitor's pure core: metrics, statistics, windows, alerts, thresholds, labels, gauges."""
from __future__ import annotations

import json
import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from beam_ml.errors import UserError
from beam_ml.io.batches import as_list_array
from beam_ml.monitoring.beam import TrainingStatisticsTransform, plan_monitor
from beam_ml.monitoring import (SCORE_FEATURE, TrainingStatistics, WindowMonitor, js_divergence, linf_distance,
                                parse_thresholds, parse_window, psi, read_training_statistics,
                                training_statistics_from_columns, write_training_statistics)
from beam_ml.monitoring import drift
from beam_ml.monitoring.drift import WindowAccumulator, binary_label_metrics, percentiles
from beam_ml.monitoring.prom import MonitorGauges
from beam_ml.monitoring.stats import ScoreStats, bin_edges, numeric_counts
from beam_ml.monitoring.window import LabelJoin
from beam_ml.options import MonitorOptions, parse_pipeline_options
from beam_ml.preprocess import SPLIT_COLUMN
from beam_ml.spec import ColumnSpec, DatasetSpec

counts = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30)
junk = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                 st.text(max_size=5), st.booleans(), st.just([1, 2]), st.just({"a": 1}))


def _spec() -> DatasetSpec:
    cols = [ColumnSpec("x", "numeric"), ColumnSpec("y", "numeric"), ColumnSpec("dept", "categorical"),
            ColumnSpec("label", "label")]
    return DatasetSpec(columns=cols, label="label", task="binary", label_classes=["0", "1"])


def _stats(n: int = 5000, seed: int = 0) -> TrainingStatistics:
    rng = np.random.default_rng(seed)
    columns = {"x": rng.normal(size=n).tolist(), "y": rng.uniform(0, 1, n).tolist(),
               "dept": rng.choice(["sales", "it", "hr"], n, p=[.5, .3, .2]).tolist()}
    scores = ScoreStats(counts=np.histogram(rng.beta(1, 4, n), bins=20, range=(0, 1))[0].tolist(),
                        positive_rate=0.1, threshold=0.5, task="binary")
    return training_statistics_from_columns(_spec(), columns, scores)


def _rows(n, seed=1, y_scale=1.0, new_dept=None):
    rng = np.random.default_rng(seed)
    dept = rng.choice(["sales", "it", "hr"], n, p=[.5, .3, .2]).astype(object)
    if new_dept:
        dept[rng.random(n) < 0.7] = new_dept
    rows = [{"x": float(x), "y": float(y) * y_scale, "dept": d}
            for x, y, d in zip(rng.normal(size=n), rng.uniform(0, 1, n), dept)]
    preds = [{"score": float(s), "class_id": int(s >= .5), "model_version": 3} for s in rng.beta(1, 4, n)]
    return rows, preds


@given(counts, counts)
def test_js_is_in_0_1_and_symmetric(p, q):
    if len(p) != len(q):
        q = (q * len(p))[:len(p)]
    d = js_divergence(p, q)
    if sum(p) == 0 or sum(q) == 0:
        assert d is None
    else:
        assert 0.0 <= d <= 1.0 and d == pytest.approx(js_divergence(q, p), abs=1e-9)
        assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-9)


def test_metrics_on_known_values():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert linf_distance({"a": .5, "b": .5}, {"a": .9, "c": .1}) == pytest.approx(.5)
    assert psi([50, 50], [50, 50]) == pytest.approx(0.0)
    assert psi([50, 50], [90, 10]) == pytest.approx((.9 - .5) * math.log(.9 / .5) + (.1 - .5) * math.log(.1 / .5))
    assert js_divergence([math.nan, math.inf, 3], [1, 1, 1]) is not None  # junk counts are zeros, not a crash


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_percentiles_never_raise(xs):
    out = percentiles(xs)
    assert set(out) == {"p50", "p90", "p99", "max"}


def test_bin_edges_and_counts():
    assert bin_edges([0, 1, 1, 2, 3]) == [1.0, 2.0]
    assert bin_edges([0, 5]) == []
    assert numeric_counts(np.array([-5, 1, 1.5, 2, 99, np.nan]), [1.0, 2.0]).tolist() == [1, 2, 2]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(["x", "y", "dept", "other"]), junk, max_size=4),
                          junk), max_size=40))
def test_the_accumulator_counts_any_junk_and_never_raises(rows):
    acc = WindowAccumulator(_stats(500))
    acc.add_rows(rows)
    acc.add_predictions([{"score": v} if not isinstance(v, dict) else v for v in rows])
    fig = acc.figures()
    json.dumps(fig, default=str)
    mappings = [r for r in rows if isinstance(r, dict)]
    assert acc.bad_rows >= len(rows) - len(mappings)
    assert fig["features"]["x"]["rows"] == len(mappings)
    assert acc.missing_features == sum(3 - sum(k in r for k in ("x", "y", "dept")) for r in mappings)


numeric_dirt = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                         st.sampled_from(["1.5", "nan", "-inf", "x", ""]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.fixed_dictionaries({"x": numeric_dirt, "y": numeric_dirt, "dept": junk}),
                          st.dictionaries(st.sampled_from(["x", "y", "dept"]), numeric_dirt, max_size=3)),
                max_size=60),
       st.lists(st.integers(1, 20), min_size=1, max_size=10), st.integers(1, 50))
def test_figures_do_not_depend_on_batches_or_when_values_are_binned(rows, cuts, fold_at):
    """Values wait to be binned (FOLD_AT) and rows arrive in batches: neither changes a figure, nor does a merge."""
    whole = WindowAccumulator(_stats(500))
    whole.add_rows(rows)
    expected = json.dumps(whole.figures(), default=str, sort_keys=True)
    default = drift.FOLD_AT
    drift.FOLD_AT = fold_at
    try:
        parts, i, k = [WindowAccumulator(_stats(500)), WindowAccumulator(_stats(500))], 0, 0
        while i < len(rows):
            n = cuts[k % len(cuts)]
            parts[k % 2].add_rows(rows[i:i + n])
            i, k = i + n, k + 1
        merged = parts[0].merge(parts[1])
    finally:
        drift.FOLD_AT = default
    assert json.dumps(merged.figures(), default=str, sort_keys=True) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "x": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**6, 10**6),
                   st.sampled_from(["1.5", " 2 ", "NA", ""])),
    "y": st.one_of(st.none(), st.floats(-10, 10)),
    "dept": st.one_of(st.none(), st.sampled_from(["sales", "it", "hr", "robotics", ""]), st.integers(0, 3))}),
    max_size=50), st.integers(1, 40))
def test_the_models_columns_give_the_same_figures_as_the_rows(rows, cut):
    """stream_predict's monitor reads the columns the model got (ColumnBatch); for validated rows every figure is
    the one the row dicts give (numbers, numeric text, NA tokens, None; categories as text or numbers)."""
    from beam_ml.monitoring.drift import ColumnBatch
    from beam_ml.records import records_to_columns, validate_record

    spec = _spec()
    rows = [r for r in rows if validate_record(r, spec) is None]
    by_rows, by_columns = WindowAccumulator(_stats(500)), WindowAccumulator(_stats(500))
    by_rows.add_rows(rows)
    batch = ColumnBatch(records_to_columns(rows, spec), len(rows)) if rows else ColumnBatch({}, 0)
    by_columns.add_rows(batch[:cut])
    by_columns.add_rows(batch[cut:])
    assert json.dumps(by_columns.figures(), default=str, sort_keys=True) == \
        json.dumps(by_rows.figures(), default=str, sort_keys=True)


def test_empty_window_gives_a_record_with_no_metrics():
    m = WindowMonitor(_stats(500), parse_window("10"), parse_thresholds(None))
    record, *alerts = m.close()
    assert alerts == [] and record["events"]["in"] == 0 and record["features"]["x"]["js"] is None
    assert m.flush() == []


def test_no_alerts_in_distribution_then_exactly_the_shifted_features():
    stats = _stats()
    m = WindowMonitor(stats, parse_window("1000"), parse_thresholds(None), source="t")
    out = []
    for w in range(10):
        rows, preds = _rows(1000, seed=w + 10)
        out += m.observe(rows, preds)
    assert [r for r in out if r["type"] == "alert"] == []
    assert len([r for r in out if r["type"] == "monitoring"]) == 10
    rows, preds = _rows(1000, seed=99, y_scale=3.0, new_dept="robotics")
    # shifted scores too
    preds = [{**p, "score": min(1.0, p["score"] + .6), "class_id": 1} for p in preds]
    out = m.observe(rows, preds)
    alerts = [r for r in out if r["type"] == "alert"]
    assert {a["feature"] for a in alerts} == {"y", "dept", SCORE_FEATURE}
    record = out[0]
    assert record["features"]["dept"]["unseen_rate"] > .5 and record["features"]["y"]["out_of_range_rate"] > .5
    assert all(a["window"]["id"] == 10 and a["value"] > a["threshold"] for a in alerts)


def test_count_windows_split_a_batch_at_the_boundary():
    m = WindowMonitor(_stats(500), parse_window("300"), parse_thresholds(None))
    rows, preds = _rows(1000)
    records = [r for r in m.observe(rows, preds) if r["type"] == "monitoring"]
    assert [r["events"]["predictions"] for r in records] == [300, 300, 300]
    assert [r["events"]["predictions"] for r in m.flush() if r["type"] == "monitoring"] == [100]


def test_duration_windows_close_on_the_first_batch_after_their_end():
    now = [1000.0]
    m = WindowMonitor(_stats(500), parse_window("30s"), parse_thresholds(None), clock=lambda: now[0])
    rows, preds = _rows(100)
    assert m.observe(rows, preds) == []
    now[0] += 31
    m.dead("parse", 2)
    out = m.observe(rows, preds)
    assert out[0]["events"] == {**out[0]["events"], "predictions": 100, "in": 102, "dead_letters": {"parse": 2}}
    assert out[0]["throughput_eps"] == pytest.approx(102 / 31)


def test_thresholds_parse_flags_and_files(tmp_path):
    t = parse_thresholds("x=0.1,dept:unseen_rate=0.05,psi=0.25,score=0.5")
    assert t.get("x", "numeric", "js") == 0.1 and t.get("y", "numeric", "js") == 0.3
    assert t.get("dept", "categorical", "unseen_rate") == 0.05 and t.get("dept", "categorical", "linf") == 0.3
    assert t.get("y", "numeric", "psi") == 0.25 and t.get(SCORE_FEATURE, "score", "js") == 0.5
    f = tmp_path / "t.yaml"
    f.write_text("numeric: 0.2\nfeatures:\n  dept: {linf: 0.1}\n")
    t = parse_thresholds(str(f))
    assert t.get("x", "numeric", "js") == 0.2 and t.get("dept", "categorical", "linf") == 0.1
    for bad in ("x=abc", "x:nope=1", "x", str(tmp_path / "missing.json")):
        with pytest.raises(UserError, match="--monitor_thresholds"):
            parse_thresholds(bad)
    (tmp_path / "b.json").write_text("{oops")
    with pytest.raises(UserError, match="b.json"):
        parse_thresholds(str(tmp_path / "b.json"))


def test_window_flag():
    assert parse_window("1000").kind == "count" and parse_window("30s").size == 30
    assert parse_window("500ms").size == .5 and parse_window("2m").size == 120
    for bad in ("0", "-3", "30x", "", "1.5"):
        with pytest.raises(UserError, match="--monitor_window"):
            parse_window(bad)


def test_statistics_round_trip_through_json(tmp_path):
    stats = _stats(800)
    (tmp_path / "v").mkdir()
    write_training_statistics(str(tmp_path / "v"), stats)
    back = read_training_statistics(str(tmp_path / "v"))
    assert back.to_dict() == json.loads(json.dumps(stats.to_dict()))
    assert read_training_statistics(str(tmp_path)) is None
    x = back.features["x"]
    assert len(x.counts) == len(x.edges) + 1 and sum(x.counts) == 800
    assert max(x.counts) - min(x.counts) <= 2  # quantile bins: equal mass


def test_label_metrics_and_the_join():
    got = binary_label_metrics([0, 0, 1, 1], [.1, .4, .35, .8], [0, 0, 0, 1])
    assert got["roc_auc"] == pytest.approx(.75) and got["precision"] == 1.0 and got["recall"] == .5
    j = LabelJoin(positive_label="1", max_pending=3)
    j.add_labels([("e0", "1")])  # before its prediction
    j.add_predictions([(f"e{i}", .1 * i, int(i > 4)) for i in range(6)])
    j.add_labels([("e5", 1), ("e4", "0"), ("nope", "garbage")])
    out = j.take()
    assert out["labelled"] == 3 and out["expired"] == 2  # e1, e2 dropped (bounded)
    assert j.take() is None


def test_gauges_expose_a_record():
    m = WindowMonitor(_stats(500), parse_window("100"), parse_thresholds(None))
    rows, preds = _rows(100, y_scale=5)
    record = m.observe(rows, preds)[0]
    text = MonitorGauges(CollectorRegistry()).update(record).exposition()
    assert 'beam_ml_monitor_feature_drift{feature="x",metric="js"}' in text
    assert "beam_ml_monitor_model_version 3.0" in text and "beam_ml_monitor_predictions_total 100.0" in text


def _marked_batches(columns: dict, split: list, chunk: int):
    out = []
    n = len(split)
    for i in range(0, n, chunk):
        arrays, names = [], []
        for name, values in columns.items():
            part = values[i:i + chunk]
            if name == "dept":
                arrays.append(pa.array([[v.encode()] if v is not None else [] for v in part], pa.list_(pa.binary())))
            else:
                arrays.append(pa.array([[v] if v is not None else None for v in part], pa.list_(pa.float32())))
            names.append(name)
        arrays.append(as_list_array(pa.array(split[i:i + chunk], pa.int8())))
        names.append(SPLIT_COLUMN)
        out.append(pa.RecordBatch.from_arrays(arrays, names=names))
    return out


def test_the_beam_statistics_match_the_exact_ones_on_the_train_rows():
    """Two combines over one PCollection (quantile sketch -> edges; histograms) equal the in-memory reference."""
    rng = np.random.default_rng(5)
    n = 3000
    x = np.round(rng.normal(size=n), 3).astype(np.float32).astype(float).tolist()
    x[::97] = [None] * len(x[::97])
    y = np.round(rng.uniform(0, 9, n), 2).astype(np.float32).astype(float).tolist()
    dept = rng.choice(["sales", "it", "hr", ""], n, p=[.5, .3, .15, .05]).tolist()
    dept[::50] = [None] * len(dept[::50])
    split = (rng.random(n) < .2).astype(int).tolist()
    train = [i for i in range(n) if split[i] == 0]
    expected = training_statistics_from_columns(
        _spec(), {"x": [x[i] for i in train], "y": [y[i] for i in train], "dept": [dept[i] for i in train]})

    def check(got):
        (stats,) = got
        assert stats["rows"] == len(train)
        for name in ("y", "dept"):
            assert stats["features"][name] == expected.to_dict()["features"][name], name
        gx, ex = stats["features"]["x"], expected.to_dict()["features"]["x"]
        assert gx["missing"] == ex["missing"] and gx["min"] == ex["min"] and gx["max"] == ex["max"]
        assert sum(gx["counts"]) == sum(ex["counts"])
        assert max(abs(a - b) for a, b in zip(gx["edges"], ex["edges"])) < 0.05  # sketch vs exact quantiles

    with TestPipeline() as p:
        stats = (p | beam.Create(_marked_batches({"x": x, "y": y, "dept": dept}, split, 700), reshuffle=False)
                 | TrainingStatisticsTransform(_spec()))
        assert_that(stats, check)


def test_monitor_flags_fail_fast_naming_the_flag(tmp_path):
    def monitor_settings(*argv):
        return parse_pipeline_options(list(argv), MonitorOptions).view_as(MonitorOptions).validated()

    assert monitor_settings() is None
    s = monitor_settings("--monitor", "--monitor_window=30s", "--monitor_thresholds=x=0.2", "--monitor_topic=m")
    assert s.window.kind == "duration" and s.thresholds.get("x", "numeric", "js") == 0.2 and s.topic == "m"
    for argv, flag in [(["--alert_topic=a"], "--alert_topic"), (["--monitor", "--monitor_window=soon"],
                                                                  "--monitor_window"),
                       (["--monitor", "--monitor_table=p:d"], "--monitor_table"),
                       (["--monitor", "--metrics_port=70000"], "--metrics_port")]:
        with pytest.raises(UserError, match=flag):
            monitor_settings(*argv)
    version = tmp_path / "1"
    (version / "assets.extra").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    (version / "assets.extra" / "beam_ml.json").write_text("{}")
    with pytest.raises(UserError, match="--monitor: .* no training statistics"):
        plan_monitor(monitor_settings("--monitor"), str(tmp_path))
    write_training_statistics(str(version), _stats(100))
    assert plan_monitor(monitor_settings("--monitor"), str(tmp_path)).window.size == 1000


@given(st.text(max_size=30))
def test_window_and_threshold_parsers_accept_or_name_the_flag(text):
    for parse, flag in ((parse_window, "--monitor_window"), (parse_thresholds, "--monitor_thresholds")):
        try:
            parse(text)
        except UserError as e:
            assert str(e).startswith(flag)


def _reference_prediction_counts(predictions):
    """add_predictions' figures, prediction by prediction (the definition the batched path must match)."""
    n, positives, versions, scores = 0, 0, {}, []
    for p in predictions:
        try:
            score, class_id = float(p.get("score")), int(p.get("class_id", 0) or 0)
        except (TypeError, ValueError, AttributeError):
            continue
        n, positives = n + 1, positives + (class_id == 1)
        scores.append(score)
        if p.get("model_version") is not None:
            versions[int(p["model_version"])] = versions.get(int(p["model_version"]), 0) + 1
    return n, positives, versions, len(predictions) - n


@settings(max_examples=80, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"score": st.one_of(st.floats(0, 1), st.none(), st.sampled_from(["0.5", "x"])),
     "class_id": st.one_of(st.integers(0, 1), st.none(), st.sampled_from(["1", "0", "?"])),
     "model_version": st.one_of(st.integers(1, 3), st.none())}), max_size=30))
def test_batched_prediction_counts_equal_the_per_prediction_definition(predictions):
    acc = WindowAccumulator(_stats(500))
    acc.add_predictions(predictions)
    n, positives, versions, bad = _reference_prediction_counts(predictions)
    assert (acc.predictions, acc.positives, acc.model_versions, acc.bad_rows) == (n, positives, versions, bad)
    assert int(acc.score_counts.sum()) == n
