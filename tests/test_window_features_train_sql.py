"""--sql together with --features_sql: the cleaning statement first (its WHERE and projection), then the windows over
the rows it keeps -- in training's source, in train's stored spec, and in batch_predict (the same order)."""
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.errors import DEAD_TAG
from beam_ml.features import FeaturePlan
from beam_ml.features.cards import CARD_FEATURES_SQL, card_events, write_card_csv
from beam_ml.features.csv_source import add_features
from beam_ml.jobs.features import plan_training_features
from beam_ml.jobs.sql import plan_training_sql
from beam_ml.spec import DatasetSpec

CLEAN_SQL = "SELECT card_id, ts, Amount, V1, Class FROM events WHERE status <> 'void'"
COLUMNS = ["card_id", "ts", "Amount", "V1", "Class", "status", "note"]


def _dirty(path: str, n: int, cards: int, seed: int) -> tuple[str, list[dict]]:
    """Card events where every 4th row is a voided attempt (to be dropped by --sql) and a junk column rides along."""
    rows = card_events(n, cards=cards, seed=seed)
    for i, r in enumerate(rows):
        r["status"] = "void" if i % 4 == 1 else "ok"
        r["note"] = f"free text {i}"
    return write_card_csv(path, rows, COLUMNS), rows


def _expected(rows: list[dict]) -> dict:
    """line -> the kept row with the features computed over the kept rows only (the in-process definition)."""
    kept = [(i + 2, {k: r[k] for k in COLUMNS[:5]}) for i, r in enumerate(rows) if r["status"] != "void"]
    table = pa.Table.from_pylist([r for _, r in kept])
    plan = FeaturePlan.parse(CARD_FEATURES_SQL, "ts", table.column_names)
    return {line: row for (line, _), row in zip(kept, add_features(plan, table).to_pylist())}


def _options(*extra: str) -> PipelineOptions:
    return PipelineOptions([f"--sql={CLEAN_SQL}", f"--features_sql={CARD_FEATURES_SQL}", "--event_time_column=ts",
                            *extra])


def test_training_source_cleans_first_then_computes_the_windows_on_what_remains(tmp_path):
    path, rows = _dirty(str(tmp_path / "dirty.csv"), 1200, 25, seed=4)
    expected = _expected(rows)
    infer = dict(label="Class", positive_label=None, task=None, key=None, drop=[])
    sql = plan_training_sql(_options(), path, str(tmp_path), None, infer, {})
    tf = plan_training_features(_options(), path, str(tmp_path), None, infer, {}, sql=sql)
    assert tf.spec.cleaning["sql"] == CLEAN_SQL and tf.spec.features["sql"] == CARD_FEATURES_SQL
    assert "status" not in tf.spec.column_names and "note" not in tf.spec.column_names
    want = [(line, np.float32(r["tx_10m"]).item(), np.float32(r["amount_10m"]).item()) for line, r in expected.items()]
    # The windows over every row would differ: the dropped rows sit inside the kept rows' windows.
    everything = add_features(FeaturePlan.parse(CARD_FEATURES_SQL, "ts", COLUMNS), pa.Table.from_pylist(rows))
    assert sum(a != e["tx_10m"] for a, e in zip(everything.column("tx_10m").to_pylist()[::4],
                                                  list(expected.values())[::3])) > 10
    with TestPipeline() as p:
        out = p | tf.source(path)
        got = out["rows"] | beam.FlatMap(lambda b: zip(b.column("__line__").to_pylist(),
                                                       [v[0] for v in b.column("tx_10m").to_pylist()],
                                                       [v[0] for v in b.column("amount_10m").to_pylist()]))
        assert_that(got, equal_to(want), label="features")
        assert_that(out[DEAD_TAG], equal_to([]), label="dead")


@pytest.mark.slow
def test_train_and_batch_predict_apply_both_statements_in_the_same_order(tmp_path):
    from beam_ml.serving import ServingModel
    from pipelines import batch_predict, train
    path, rows = _dirty(str(tmp_path / "dirty.csv"), 3000, 60, seed=6)
    expected = _expected(rows)
    out = tmp_path / "out"
    run = train.run([f"--input={path}", "--label=Class", f"--output_dir={out}", "--epochs=1", "--runner=DirectRunner",
                     "--verbose=0", f"--sql={CLEAN_SQL}", f"--features_sql={CARD_FEATURES_SQL}",
                     "--event_time_column=ts"])
    c = run.counts
    assert (c["rows_in"], c["rows_filtered"], c["rows_good"], c["rows_dead"]) == (3000, 750, 2250, 0), c
    spec = DatasetSpec.load(str(out / "spec.json"))
    assert spec.cleaning["sql"] == CLEAN_SQL and spec.features["sql"] == CARD_FEATURES_SQL
    assert {spec.column(n).role for n in ("tx_10m", "amount_10m", "max_10m")} == {"numeric"}
    model = ServingModel.load(str(out / "model"))
    lines = sorted(expected)
    offline = dict(zip(lines, model.predict_records([expected[line] for line in lines])))
    scored = tmp_path / "preds.jsonl"
    counts = batch_predict.run([f"--model_dir={out / 'model'}", f"--input={path}", f"--output={scored}",
                                "--runner=DirectRunner"]).counts  # both stored statements apply by default
    assert counts["predictions"] == 2250 and counts["dead_letters"] == 0, counts
    batch = {p["position"]: p for p in map(json.loads, scored.read_text().splitlines())}
    assert set(batch) == set(lines)
    for line in lines:
        assert batch[line]["score"] == pytest.approx(offline[line]["score"], abs=1e-5), line
