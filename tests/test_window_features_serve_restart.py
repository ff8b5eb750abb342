"""stream_predict's restart reads back one window span of the topic (by record timestamp), not all of it."""
import json

import pytest
from kafka import KafkaProducer

from beam_ml.features.cards import card_events, write_card_csv
from beam_ml.formats.text import dumps_event
from beam_ml.producer import csv_events
from beam_ml.testing import read_topic
from pipelines import stream_predict
from tests.test_window_features_stream import _offline_scores, _train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _produce_at_event_time(broker: str, topic: str, path: str) -> None:
    """The CSV's events with record timestamp = event time (what a bounded rebuild seeks by)."""
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for event_id, event in csv_events(path):
        producer.send(topic, key=event_id.encode(), value=dumps_event(event), timestamp_ms=int(event["ts"]))
    producer.flush(30)
    producer.close()


def test_a_restart_rereads_only_the_last_window_span(kafka_broker, new_topic, tmp_path):
    rows = card_events(1200, cards=30, seed=9)  # ~5 days of event time; the window is 10 minutes
    path = write_card_csv(str(tmp_path / "cards.csv"), rows)
    out = tmp_path / "model_out"
    model_dir = _train(path, out)
    source, predictions, dlq = new_topic(prefix="in"), new_topic(prefix="out"), new_topic(prefix="dlq")
    _produce_at_event_time(kafka_broker, source, path)
    offline_rows, offline = _offline_scores(path, out, model_dir)
    argv = [f"--model_dir={model_dir}", f"--input_topic={source}", f"--output_topic={predictions}",
            f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}", "--runner=DirectRunner",
            "--streaming", "--max_read_time=120", "--group_id=bounded", "--max_batch_size=50"]
    # stop the first run inside a burst: the next event's features need events the first run saw
    cut = next(i for i in range(600, len(rows)) if offline_rows[f"cards.csv:{i + 2}"]["tx_10m"] >= 2)
    first = stream_predict.run(argv + [f"--max_records={cut}"]).counts
    second = stream_predict.run(argv + [f"--max_records={1200 - cut}"]).counts
    assert first["predictions"] == cut and second["predictions"] == 1200 - cut and second["late_events"] == 0
    # the committed records = re-read (the last 10 min + 1 min skew margin of record time) + not re-read
    print(f"restart: {cut} committed records, {second['rebuild_records']} re-read, "
          f"{second['rebuild_skipped']} not re-read")
    assert second["rebuild_records"] + second["rebuild_skipped"] == cut, second
    assert 2 <= second["rebuild_records"] < 50 and second["rebuild_skipped"] > cut - 50, second
    live = [json.loads(r.value) for r in read_topic(kafka_broker, predictions, 1200, 60)]
    assert {p["event_id"] for p in live} == set(offline)
    for p in live:  # every prediction of both runs equals the offline score from training's features
        assert p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5), p["event_id"]
