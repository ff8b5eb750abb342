"""--features_sql live: stream_predict scores each event with the value training's definition gives it."""
import json

import pyarrow as pa
import pytest

from beam_ml.features import FeaturePlan, LiveFeatures
from beam_ml.features.cards import CARD_FEATURES_SQL, card_events, write_card_csv
from beam_ml.features.csv_source import add_features
from beam_ml.features.live import add_live_features
from beam_ml.inference.batches import RowBatch
from beam_ml.producer import csv_events
from beam_ml.serving import ServingModel
from beam_ml.spec import DatasetSpec
from beam_ml.testing import read_topic
from pipelines import batch_predict, produce, stream_predict, train


def _training_rows(path: str, plan: FeaturePlan) -> dict:
    """event id -> the row with the features training computes (its in-process twin, tested equal to Beam's)."""
    events = list(csv_events(path))
    table = pa.Table.from_pylist([e for _, e in events])
    featured = add_features(plan, table).to_pylist()
    return {event_id: row for (event_id, _), row in zip(events, featured)}


def test_live_features_equal_training_features_poll_by_poll():
    rows = card_events(2000, cards=30, seed=5)
    plan = FeaturePlan.parse(CARD_FEATURES_SQL, "ts", list(rows[0]))
    expected = add_features(plan, pa.Table.from_pylist(rows)).to_pylist()
    live, got = LiveFeatures(plan), []
    spec = DatasetSpec(columns=[], task="binary", label="Class", label_classes=["0", "1"])
    for start in range(0, len(rows), 97):  # polls of 97 events
        batch = [dict(r) for r in rows[start:start + 97]]
        featured, dead = add_live_features(live, RowBatch(list(range(len(batch))), batch), spec)
        assert not dead
        got += featured.rows
    assert got == expected


def _train(path, out):
    train.run([f"--input={path}", "--label=Class", f"--output_dir={out}", "--epochs=1", "--runner=DirectRunner",
               "--verbose=0", f"--features_sql={CARD_FEATURES_SQL}", "--event_time_column=ts"])
    return str(out / "model")


def _offline_scores(path, out, model_dir):
    model = ServingModel.load(model_dir)
    plan = FeaturePlan.from_dict(DatasetSpec.load(str(out / "spec.json")).features)
    rows = _training_rows(path, plan)
    ids = sorted(rows)
    return rows, dict(zip(ids, model.predict_records([rows[i] for i in ids])))


def _trained_and_produced(kafka_broker, new_topic, tmp_path, rows, group: str, batch: int):
    """(csv path, output dir, model dir, predictions topic, stream_predict argv) for `rows` on a fresh topic."""
    path = write_card_csv(str(tmp_path / "cards.csv"), rows)
    out = tmp_path / "model_out"
    model_dir = _train(path, out)
    source, predictions, dlq = new_topic(prefix="in"), new_topic(prefix="out"), new_topic(prefix="dlq")
    produce.run([f"--input={path}", f"--topic={source}", f"--bootstrap_servers={kafka_broker}"])
    argv = [f"--model_dir={model_dir}", f"--input_topic={source}", f"--output_topic={predictions}",
            f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}", "--runner=DirectRunner",
            "--streaming", "--max_read_time=120", f"--group_id={group}", f"--max_batch_size={batch}"]
    return path, out, model_dir, predictions, argv


@pytest.mark.integration
@pytest.mark.slow
def test_a_restarted_run_rebuilds_its_windows_from_the_topic(kafka_broker, new_topic, tmp_path):
    """Two runs of one --group_id (the second one started fresh): the second scores as if never stopped."""
    rows = card_events(1200, cards=30, seed=9)
    path, out, model_dir, predictions, argv = _trained_and_produced(kafka_broker, new_topic, tmp_path, rows,
                                                                    "restart", 50)
    offline_rows, offline = _offline_scores(path, out, model_dir)
    # stop the first run inside a burst: the next event's features need events the first run saw
    cut = next(i for i in range(600, len(rows)) if offline_rows[f"cards.csv:{i + 2}"]["tx_10m"] >= 2)
    first = stream_predict.run(argv + [f"--max_records={cut}"]).counts
    second = stream_predict.run(argv + [f"--max_records={1200 - cut}"]).counts
    assert first["predictions"] == cut and second["predictions"] == 1200 - cut and second["late_events"] == 0
    live = [json.loads(r.value) for r in read_topic(kafka_broker, predictions, 1200, 60)]
    assert {p["event_id"] for p in live} == set(offline)
    for p in live:  # replays (at least once) included: each scored with the features it had
        assert p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5), p["event_id"]


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_reproduces_training_features_and_scores(kafka_broker, new_topic, tmp_path):
    rows = card_events(1500, cards=40, seed=7)
    path, out, model_dir, predictions, argv = _trained_and_produced(kafka_broker, new_topic, tmp_path, rows,
                                                                    "w1", 64)
    n = len(rows)
    result = stream_predict.run(argv + [f"--max_records={n}"])  # the stored statement applies by default
    assert result.counts["predictions"] == n and result.counts["dead_letters"] == 0, result.counts
    assert result.counts["late_events"] == 0
    live = {p["event_id"]: p for p in (json.loads(r.value) for r in read_topic(kafka_broker, predictions, n, 60))}
    offline_rows, offline = _offline_scores(path, out, model_dir)
    model = ServingModel.load(model_dir)
    ids = sorted(offline_rows)
    assert set(live) == set(offline)
    assert sum(offline_rows[i]["tx_10m"] > 0 for i in ids) > 100  # the windows are not empty
    for event_id in ids:
        assert live[event_id]["score"] == pytest.approx(offline[event_id]["score"], abs=1e-5), event_id
    # batch_predict applies the stored statement too, with training's computation
    scored = tmp_path / "preds.jsonl"
    counts = batch_predict.run([f"--model_dir={model_dir}", f"--input={path}", f"--output={scored}",
                                "--runner=DirectRunner"]).counts
    assert counts["predictions"] == n and counts["dead_letters"] == 0, counts
    batch = {f"cards.csv:{p['position']}": p for p in map(json.loads, scored.read_text().splitlines())}
    for event_id in ids:
        assert batch[event_id]["score"] == pytest.approx(offline[event_id]["score"], abs=1e-5), event_id
    # and without the features the model scores differently: the live path really used them
    zeroed = model.predict_records([{**offline_rows[i], "tx_10m": 0.0, "amount_10m": 0.0, "max_10m": 0.0}
                                    for i in ids])
    assert sum(abs(z["score"] - offline[i]["score"]) > 1e-3 for z, i in zip(zeroed, ids)) > 100
