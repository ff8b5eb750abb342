"""Kafka JSON events → typed RecordBatches; and training from a real topic snapshot."""
import json
import os

import numpy as np
import pytest

from beam_ml.io.batches import LINE_COLUMN
from beam_ml.io.kafka.topic_batches import position_code, records_to_chunk
from beam_ml.spec import ColumnSpec, DatasetSpec


def _spec():
    return DatasetSpec(columns=[ColumnSpec("event_id", "key"), ColumnSpec("amount", "numeric"),
                                ColumnSpec("country", "categorical", max_categories=5),
                                ColumnSpec("card", "mask"), ColumnSpec("Class", "label")],
                       task="binary", label="Class", label_classes=["0", "1"]).validate()


def _ev(offset, **fields):
    return offset, json.dumps(fields).encode()


def test_events_become_the_same_batches_as_csv_rows_with_offsets_in_dead_letters():
    events = [
        _ev(10, event_id="a", amount=12.5, country="FR", card="4111111111111111", Class="0"),
        (11, b"{not json"),
        _ev(12, event_id="b", amount=None, country="DE\nX", card="x", Class=1),   # missing amount, int label
        _ev(13, event_id="c", amount="abc", country="FR", card="x", Class="0"),   # mistyped
        _ev(14, event_id="d", country="FR", card="x", Class="0"),                 # missing field
        _ev(15, event_id="e", amount=3, country="FR", card="x", Class="7"),       # unknown label
        _ev(16, event_id="f", amount="4.5", country=None, card="x", Class="1"),
    ]
    r = records_to_chunk(events, "tx/2", 2, _spec())
    b = r.batch.to_pydict()
    assert b["event_id"] == ["a", "b", "f"]
    amounts = [v[0] for v in b["amount"]]
    assert amounts[0] == 12.5 and np.isnan(amounts[1]) and amounts[2] == 4.5
    assert [v[0] for v in b["country"]] == [b"FR", b"DE X", b""]
    assert [v[0] for v in b["Class"]] == [b"0", b"1", b"1"]
    assert b[LINE_COLUMN] == [position_code(2, o) for o in (10, 12, 16)]
    dead = {d.position: d for d in r.dead}
    assert sorted(dead) == [11, 13, 14, 15]
    assert all(d.source == "tx/2" for d in r.dead)
    assert "invalid JSON" in dead[11].reason
    assert "'amount': expected a number, got 'abc'" in dead[13].reason
    assert "missing field 'amount'" in dead[14].reason
    assert "unknown label '7'" in dead[15].reason
    assert r.lines == len(events) == r.batch.num_rows + len(r.dead)


@pytest.mark.integration
@pytest.mark.slow
def test_train_from_a_bounded_topic_snapshot(kafka_broker, new_topic, tmp_path):
    """Produce the fraud-schema events (some malformed) into 3 partitions, train from the topic."""
    from kafka import KafkaProducer

    from beam_ml import datasets
    from pipelines import train

    topic = new_topic(partitions=3)
    import csv
    rows = list(csv.DictReader(open(datasets.materialize("retention", str(tmp_path / "d"), rows=3000))))
    producer = KafkaProducer(bootstrap_servers=kafka_broker, linger_ms=5)
    bad = {100: b"garbage", 200: json.dumps({"satisfaction_level": "high"}).encode()}
    for i, row in enumerate(rows):
        value = bad.get(i) or json.dumps({"event_id": f"e{i}", "produce_ts": 1, **row}).encode()
        producer.send(topic, value=value, partition=i % 3)
    producer.flush()
    producer.close()

    out = tmp_path / "out"
    result = train.run([f"--input_topic={topic}", f"--bootstrap_servers={kafka_broker}", "--label=left",
                        f"--output_dir={out}", "--epochs=6", "--verbose=0", "--runner=DirectRunner"])
    c = result.counts
    assert c["rows_in"] == len(rows) == c["rows_good"] + c["rows_dead"]  # nothing lost, even batched sends
    assert c["rows_dead"] == 2
    spec = json.load(open(out / "spec.json"))
    roles = {col["name"]: col["role"] for col in spec["columns"]}
    assert roles["event_id"] == "key" and roles["produce_ts"] == "drop"
    m = json.load(open(out / "metrics.json"))["test"]
    assert m["roc_auc"] > 0.85
    dead = [json.loads(l) for f in os.listdir(out / "dead_letter") for l in open(out / "dead_letter" / f)]
    assert sorted(d["source"].split("/")[0] for d in dead) == [topic, topic]
