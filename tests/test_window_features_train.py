"""--features_sql in training: the Beam computation equals the in-process definition; train stores the statement."""
import json
import os

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.errors import DEAD_TAG, UserError
from beam_ml.features import FeaturePlan, PointInTimeFeatures
from beam_ml.features.cards import CARD_FEATURES_SQL, card_events, write_card_csv
from beam_ml.features.csv_source import add_features
from beam_ml.spec import DatasetSpec


def test_beam_features_equal_the_in_process_definition_row_by_row():
    rows = card_events(3000, cards=40, seed=3)
    for i, r in enumerate(rows):
        r["__line__"] = i + 2
    rows[5]["card_id"] = None  # dead-lettered, not dropped
    table = pa.Table.from_pylist(rows)
    plan = FeaturePlan.parse(CARD_FEATURES_SQL, "ts", table.column_names)
    expected = [r for r in add_features(plan, table).to_pylist() if r["card_id"] is not None]
    with TestPipeline() as p:
        out = (p | beam.Create(table.to_batches(max_chunksize=256))
               | PointInTimeFeatures(plan, "__line__", table.schema, source="cards.csv"))
        got = out["rows"] | beam.FlatMap(lambda b: b.to_pylist())
        assert_that(got, equal_to(expected), label="rows")
        assert_that(out[DEAD_TAG] | beam.Map(lambda d: (d.position, d.stage, d.reason)),
                    equal_to([(7, "features", "card_id: missing or unreadable (needed by --features_sql)")]),
                    label="dead")
    assert sum(r["tx_10m"] for r in expected) > 0


@pytest.mark.slow
def test_train_with_features_sql_stores_the_statement_and_the_columns(tmp_path):
    from pipelines import train
    path = write_card_csv(str(tmp_path / "cards.csv"), card_events(4000, cards=150, seed=1))
    out = tmp_path / "out"
    train.run([f"--input={path}", "--label=Class", f"--output_dir={out}", "--epochs=2", "--runner=DirectRunner",
               "--verbose=0", f"--features_sql={CARD_FEATURES_SQL}", "--event_time_column=ts"])
    spec = DatasetSpec.load(str(out / "spec.json"))
    roles = {c.name: c.role for c in spec.columns}
    assert spec.features == {"sql": CARD_FEATURES_SQL, "event_time_column": "ts"}
    assert {roles["tx_10m"], roles["amount_10m"], roles["max_10m"]} == {"numeric"}
    assert roles["card_id"] == "drop" and roles["ts"] == "drop"
    counts = json.load(open(out / "counts.json"))
    assert counts["rows_in"] == counts["rows_good"] == 4000, counts
    versions = sorted(os.listdir(out / "model"))
    meta = json.load(open(out / "model" / versions[-1] / "assets.extra" / "beam_ml.json"))
    assert json.dumps(meta).count("WINDOW HOPPING") >= 1


def test_bad_features_sql_fails_fast_naming_the_flag(tmp_path):
    from pipelines import train
    path = write_card_csv(str(tmp_path / "cards.csv"), card_events(200, cards=10, seed=1))
    with pytest.raises(UserError, match="^--features_sql: .*GROUP BY"):
        train.run([f"--input={path}", "--label=Class", f"--output_dir={tmp_path / 'o'}",
                   "--features_sql=SELECT card_id, COUNT(*) AS n FROM events WINDOW TUMBLING (SIZE 1 MINUTE)",
                   "--event_time_column=ts"])
    with pytest.raises(UserError, match="^--event_time_column"):
        train.run([f"--input={path}", "--label=Class", f"--output_dir={tmp_path / 'o'}",
                   f"--features_sql={CARD_FEATURES_SQL}", "--event_time_column=when"])


@pytest.mark.slow
def test_velocity_features_beat_the_same_model_without_them_on_held_out_events(tmp_path):
    """Fraud visible through bursts on a card: ROC-AUC with the window features vs without, on the test split."""
    from pipelines import train
    path = write_card_csv(str(tmp_path / "cards.csv"), card_events(6000, cards=200, seed=11))
    common = [f"--input={path}", "--label=Class", "--epochs=3", "--runner=DirectRunner", "--verbose=0",
              "--drop_columns=card_id,ts"]
    train.run(common + [f"--output_dir={tmp_path / 'with'}", f"--features_sql={CARD_FEATURES_SQL}",
                        "--event_time_column=ts"])
    train.run(common + [f"--output_dir={tmp_path / 'without'}"])
    auc = {name: json.load(open(tmp_path / name / "metrics.json"))["test"]["roc_auc"] for name in ("with", "without")}
    print("test ROC-AUC", auc)
    assert auc["with"] >= auc["without"] + 0.15, auc
    assert auc["with"] > 0.9, auc
