"""The batch-per-element serving pieces: parse_event_batch, RowBatchModelHandler, ScoreRowBatches.

    python -m pytest tests/test_inference_batches.py -q

Pure parsing is property-tested; scoring runs the session's fraud model on the local runner.
"""
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.inference import (RowBatch, RowBatchModelHandler, ScoredBatch, ScoreRowBatches, parse_event_batch,
                               prediction_fields, scored_rows)
from beam_ml.io.kafka import KafkaRecord
from beam_ml.serving import ServingModel
from beam_ml.spec import ColumnSpec, DatasetSpec
from tests.model_fixture import feature_rows

SPEC = DatasetSpec(columns=[ColumnSpec("amount", "numeric"), ColumnSpec("kind", "categorical"),
                            ColumnSpec("label", "label")],
                   task="binary", label="label", label_classes=["0", "1"])

GOOD = st.fixed_dictionaries({"amount": st.one_of(st.none(), st.floats(-1e6, 1e6), st.integers(-10**6, 10**6)),
                              "kind": st.one_of(st.none(), st.text(max_size=5))})
# (value bytes, the stage that must reject it, or None when it is good)
VALUES = st.one_of(
    GOOD.map(lambda e: (json.dumps(e).encode(), None)),
    st.just((b"{not json", "parse")),
    st.just((b"\xff\xfe", "parse")),
    st.just((b"[1, 2]", "parse")),
    st.just((json.dumps({"kind": "a"}).encode(), "validate")),
    st.just((json.dumps({"amount": "twelve", "kind": "a"}).encode(), "validate")),
)


@given(st.lists(VALUES, max_size=40))
@settings(max_examples=200, deadline=None)
def test_every_record_is_a_row_or_a_dead_letter_in_order(values):
    records = [KafkaRecord(b"k%d" % i, value, "t", 2, 100 + i, 1_700_000_000_000 + i)
               for i, (value, _) in enumerate(values)]
    batch, dead = parse_event_batch(records, SPEC)
    assert len(batch.refs) == len(batch.rows) and len(batch.rows) + len(dead) == len(records)
    good = [100 + i for i, (_, stage) in enumerate(values) if stage is None]
    assert [ref.position for ref in batch.refs] == good
    assert [(d.position, d.stage) for d in dead] == [(100 + i, stage) for i, (_, stage) in enumerate(values)
                                                     if stage is not None]
    for ref in batch.refs:
        assert ref.source == "t/2" and ref.id == f"k{ref.position - 100}"
        assert dict(ref.carry)["event_ts"] == 1_700_000_000_000 + ref.position - 100


def test_scored_rows_splits_failed_rows_off_as_dead_letters():
    batch, _ = parse_event_batch([KafkaRecord(None, json.dumps({"amount": i, "kind": "a"}).encode(), "t", 0, i, 5)
                                  for i in range(3)], SPEC)
    ok = {"score": 0.5, "class_id": 1, "class": "1", "threshold": 0.4, "model_version": 3}
    good, dead = scored_rows(ScoredBatch(batch.refs, batch.rows, [ok, {"error": "boom"}, ok]))
    assert [ref.position for ref, _ in good] == [0, 2]
    assert [(d.position, d.stage, d.reason) for d in dead] == [(1, "inference", "boom")]
    record = prediction_fields(good[0][0], good[0][1], "event_id")
    assert record["event_id"] == "t/0/0" and record["model_version"] == 3 and record["class"] == "1"


def _fail_on_marker(model, rows):
    if any(row.get("V3") == "boom" for row in rows):
        raise ValueError("injected failure")
    return model.predict_records(list(rows))


@pytest.mark.slow
def test_one_model_call_per_batch_scores_like_the_offline_model_and_dead_letters_only_bad_rows(fraud):
    root, csv_path = fraud
    rows = feature_rows(csv_path, 30)
    rows[4]["V3"] = "boom"      # the injected inference_fn fails any call holding this row
    rows[21]["V1"] = 10 ** 400  # passes validation (an int) but float() overflows: a real failure
    from beam_ml.records import RowRef

    batches = [RowBatch([RowRef("t/0", i, f"e{i}") for i in range(start, start + 10)], rows[start:start + 10])
               for start in (0, 10, 20)]
    model = ServingModel.load(root)
    good = [i for i in range(30) if i not in (4, 21)]
    offline = dict(zip(good, model.predict_records([rows[i] for i in good])))
    handler = RowBatchModelHandler(root, inference_fn=_fail_on_marker)

    def split(scored):
        ok, dead = scored_rows(scored)
        return [("ok", ref.position, round(p["score"], 5), p["model_version"]) for ref, p in ok] + \
               [("dead", d.position, d.reason.split("(")[0], d.stage) for d in dead]

    with TestPipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        scored, failed = p | beam.Create(batches) | ScoreRowBatches(handler)
        # One ScoredBatch per RowBatch, rows in order.
        assert_that(scored | beam.Map(lambda s: [ref.position for ref in s.refs]),
                    equal_to([list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]), label="Shape")
        assert_that(scored | beam.FlatMap(split), equal_to(
            [("ok", i, round(offline[i]["score"], 5), model.version) for i in good] +
            [("dead", 4, "inference failed: ValueError", "inference"),
             ("dead", 21, "inference failed: OverflowError", "inference")]), label="Rows")
        assert_that(failed[0], equal_to([]), label="NoWholeBatchFailures")


@pytest.mark.slow
def test_with_the_monitor_each_batch_carries_the_models_columns_and_scores_the_same(fraud):
    """keep_rows (stream_predict --monitor): the columns the model scored travel in the ScoredBatch (one
    conversion for the model and the monitor); predictions are unchanged; a batch whose columns cannot be built
    keeps its rows, and the monitor's figures are the same either way."""
    import numpy as np

    from beam_ml.monitoring.drift import ColumnBatch, WindowAccumulator
    from beam_ml.monitoring.stats import training_statistics_from_columns
    from beam_ml.records import RowRef, records_to_columns

    root, csv_path = fraud
    rows = feature_rows(csv_path, 20)
    rows[15]["V1"] = 10 ** 400  # passes validation (an int), but no float holds it: that row fails alone
    model = ServingModel.load(root)
    plain, monitored = RowBatchModelHandler(root), RowBatchModelHandler(root)
    monitored.keep_rows = True
    out = {}
    for start in (0, 10):
        batch = RowBatch([RowRef("t/0", i, f"e{i}") for i in range(start, start + 10)], rows[start:start + 10])
        (a,), (b,) = plain.run_inference([batch], model), monitored.run_inference([batch], model)
        assert a.predictions == b.predictions and a.columns is None
        out[start] = b
    whole = out[0]
    assert whole.rows is None and set(whole.columns) == set(records_to_columns(rows[:10], model.spec))
    for name, column in records_to_columns(rows[:10], model.spec).items():
        np.testing.assert_array_equal(whole.columns[name], column)
    failed = out[10]
    assert failed.columns is None and failed.rows == rows[10:20]
    assert "error" in failed.predictions[5] and sum("error" in p for p in failed.predictions) == 1
    stats = training_statistics_from_columns(model.spec, {c: [float(r[c]) for r in rows[:10]]
                                                          for c in model.spec.feature_columns})
    by_rows, by_columns = WindowAccumulator(stats), WindowAccumulator(stats)
    by_rows.add_rows(rows[:10])
    by_columns.add_rows(ColumnBatch(whole.columns, 10))
    assert by_columns.figures() == by_rows.figures() and by_columns.rows == 10
