"""ServingModelHandler / RunInferenceWithDeadLetters / WatchModelVersions on the local runner.

    python -m pytest tests/test_inference.py -q

A small fraud model is trained once per session (tests/model_fixture.py).
"""
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from beam_ml.inference import RunInferenceWithDeadLetters, ServingModelHandler, WatchModelVersions, prediction_record
from beam_ml.model_store import model_root_of
from beam_ml.records import RowRef
from beam_ml.serving import ServingModel
from tests.model_fixture import export_copy, feature_rows


def _pipeline():
    return TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))


def _keyed(rows):
    return [(RowRef("test.csv", i + 2, f"row-{i}"), row) for i, row in enumerate(rows)]


def _matches_offline(expected: dict, tolerance: float = 1e-5):
    """An assert_that matcher: {id: (score, class, version)} within tolerance."""

    def check(actual):
        got = {r["id"]: (r["score"], r["class"], r["model_version"]) for r in actual}
        if len(actual) != len(got) or set(got) != set(expected):
            raise BeamAssertException(f"ids differ: {sorted(set(got) ^ set(expected))} (or repeated)")
        for k, (score, cls, version) in expected.items():
            g = got[k]
            if abs(g[0] - score) > tolerance or g[1] != cls or g[2] != version:
                raise BeamAssertException(f"{k}: got {g}, expected {(score, cls, version)}")

    return check


@pytest.mark.slow
def test_predictions_equal_offline_model(fraud):
    root, csv_path = fraud
    rows = feature_rows(csv_path, 70)
    model = ServingModel.load(root)
    offline = model.predict_records(rows)
    expected = {f"row-{i}": (p["score"], p["class"], model.version) for i, p in enumerate(offline)}
    with _pipeline() as p:
        predictions, dead = (p | beam.Create(_keyed(rows))
                             | RunInferenceWithDeadLetters(ServingModelHandler(root, max_batch_size=16)))
        dead = dead | beam.Flatten()
        records = predictions | beam.MapTuple(lambda ref, result: prediction_record(ref, result))
        assert_that(records, _matches_offline(expected))
        assert_that(dead, equal_to([]), label="NoDeadLetters")
        thresholds = records | beam.Map(lambda r: (r["threshold"], r["source"], r["position"] >= 2))
        assert_that(thresholds | beam.Distinct(), equal_to([(model.threshold, "test.csv", True)]),
                    label="ThresholdAndSource")


def _fail_on_marker(model, batch):
    if any(row.get("V3") == "boom" for row in batch):
        raise ValueError("injected failure")
    return model.predict_records(list(batch))


@pytest.mark.slow
def test_inference_failure_dead_letters_only_the_failing_rows(fraud):
    root, csv_path = fraud
    rows = feature_rows(csv_path, 40)
    rows[5]["V3"] = "boom"       # the injected inference_fn fails any batch holding this row
    rows[17]["V1"] = 10 ** 400   # passes validation (an int) but float() overflows: a real failure
    good = [i for i in range(len(rows)) if i not in (5, 17)]
    model = ServingModel.load(root)
    offline = model.predict_records([rows[i] for i in good])
    expected = {f"row-{i}": (p["score"], p["class"], model.version) for i, p in zip(good, offline)}
    handler = ServingModelHandler(root, min_batch_size=8, max_batch_size=8, inference_fn=_fail_on_marker)
    with _pipeline() as p:
        predictions, dead = p | beam.Create(_keyed(rows)) | RunInferenceWithDeadLetters(handler)
        dead = dead | beam.Flatten()
        records = predictions | beam.MapTuple(lambda ref, result: prediction_record(ref, result))
        assert_that(records, _matches_offline(expected))
        summary = dead | beam.Map(lambda d: (d.position, d.stage, d.reason.split("(")[0], d.source))
        assert_that(summary, equal_to([
            (7, "inference", "inference failed: ValueError", "test.csv"),
            (19, "inference", "inference failed: OverflowError", "test.csv"),
        ]), label="DeadLetters")


def _export_at(model_root: str, position: int):
    def maybe_export(element):
        ref, _ = element
        if ref.position == position:
            export_copy(model_root, threshold=0.123)
        return element

    return maybe_export


def _append_to(path: str):
    def append(record):
        with open(path, "a") as f:  # appends: the order rows were scored in
            f.write(json.dumps([record["position"], record["model_version"], record["threshold"]]) + "\n")

    return append


@pytest.mark.slow
def test_hot_reload_polls_and_later_rows_name_the_new_version(model_root, fraud, tmp_path):
    rows = feature_rows(fraud[1], 30)
    switch_at = 2 + 12  # the 13th row's position
    log = str(tmp_path / "scored.jsonl")
    handler = ServingModelHandler(model_root, max_batch_size=1, reload_interval=0)
    with _pipeline() as p:
        predictions, dead = (p | beam.Create(_keyed(rows))
                             | "ExportMidRun" >> beam.Map(_export_at(model_root, switch_at))
                             | RunInferenceWithDeadLetters(handler))
        dead = dead | beam.Flatten()
        records = predictions | beam.MapTuple(lambda ref, result: prediction_record(ref, result))
        _ = records | beam.Map(_append_to(log))
        assert_that(dead, equal_to([]), label="NoDeadLetters")
    with open(log) as f:
        _SCORED = [tuple(json.loads(line)) for line in f]
    versions = [v for _, v, _ in _SCORED]
    assert len(_SCORED) == len(rows)
    assert versions == sorted(versions), f"a row was scored by an older version after a newer one: {_SCORED}"
    assert set(versions) == {1, 2}
    assert _SCORED[0][1] == 1
    # Rows after switch_at pass the export step after version 2 exists, and the
    # handler checks for a new version on every batch: all of them name it.
    assert all(v == 2 and t == pytest.approx(0.123) for pos, v, t in _SCORED if pos > switch_at), _SCORED
    # Version 2 is a copy of version 1's graph: same scores, named as version 2.
    v2 = ServingModel.load(model_root)
    assert v2.version == 2


@pytest.mark.slow
def test_pinned_version_dir_is_never_reloaded(model_root, fraud):
    assert model_root_of(model_root + "/1") is None
    assert model_root_of(model_root) == model_root
    handler = ServingModelHandler(model_root + "/1", reload_interval=0)
    model = handler.load_model()
    export_copy(model_root, threshold=0.5)
    [result] = handler.run_inference(feature_rows(fraud[1], 1), model)
    assert result.inference["model_version"] == 1 and result.model_id.endswith("/1")


@pytest.mark.slow
def test_update_model_path_switches_the_next_load(model_root):
    handler = ServingModelHandler(model_root)
    assert handler.load_model().version == 1
    v2 = export_copy(model_root, threshold=0.3)
    handler.update_model_path("")  # Beam passes '' for "no new model": keep serving
    assert handler.load_model().version == 2  # the latest, when nothing was pinned by the side input
    handler.update_model_path(model_root + "/1")
    assert handler.load_model().version == 1
    handler.update_model_path(v2)
    assert handler.load_model().version == 2


@pytest.mark.slow
def test_watch_model_versions_announces_each_new_version_once(model_root):
    """v1 is announced; v2, exported only after that announcement, is announced once too.

    The export is triggered downstream of the watcher (not by a timer), so the
    test does not depend on how long the pipeline takes to start.
    """
    def export_after_v1(announcement):
        if announcement[0] == "1":
            export_copy(model_root, threshold=0.4)
        return announcement

    with _pipeline() as p:
        seen = (p | WatchModelVersions(model_root, interval=0.2, stop_after=8)
                | beam.Map(lambda m: (m.model_name, m.model_id))
                | "ExportV2AfterV1" >> beam.Map(export_after_v1))
        assert_that(seen, equal_to([("1", model_root + "/1"), ("2", model_root + "/2")]))


def test_batch_sizes_are_checked():
    with pytest.raises(ValueError, match="batch sizes"):
        ServingModelHandler("m", min_batch_size=5, max_batch_size=2)
    assert ServingModelHandler("m", min_batch_size=2, max_batch_size=9).batch_elements_kwargs() == {
        "min_batch_size": 2, "max_batch_size": 9}


def test_settle_heap_freezes_the_live_heap_and_a_later_call_frees_what_was_dropped():
    """Full collections skip what lives at model load; a reload's settle still frees the model it replaced."""
    import gc
    import weakref

    from beam_ml.inference.handler import settle_heap

    class Model:  # a reference cycle, as a loaded model's object graph has
        def __init__(self):
            self.me = self

    old = Model()
    ref = weakref.ref(old)
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000  # the interpreter's, Beam's and this test's objects
        del old
        gc.collect()
        assert ref() is not None  # frozen: a plain full collection does not see it
        settle_heap()  # what a reload does after loading the next version
        assert ref() is None
    finally:
        gc.unfreeze()
