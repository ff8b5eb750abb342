"""Interop with a real non-Python Kafka client: librdkafka (confluent-kafka) on both ends, every codec.

    python -m pytest tests/io/test_kafka_interop.py -q -m integration

A librdkafka producer with compression.type=<codec> writes fraud events (and
one malformed event) to a fresh topic on the Tansu broker; stream_predict
scores them and writes with --compression_type=<codec>; a librdkafka
consumer reads every prediction and the dead letter back. Before beam_ml
shipped the codec packages, lz4/snappy input killed the pipeline with
UnsupportedCodecError.
"""
import json
import time

import pytest

from beam_ml.producer import csv_events
from beam_ml.serving import ServingModel
from pipelines import produce, stream_predict

confluent_kafka = pytest.importorskip("confluent_kafka")

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def _librdkafka_produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], codec: str) -> None:
    errors = []
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                                         "linger.ms": 20, "enable.idempotence": True})
    for key, value in messages:
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors


def _librdkafka_consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"interop-{topic}",
                                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    out, deadline = [], time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                assert msg.error() is None, msg.error()
                out.append((msg.key(), msg.value()))
        time.sleep(0.5)
        out += [(m.key(), m.value()) for m in consumer.consume(500, 1.0) if m.error() is None]  # duplicates?
    finally:
        consumer.close()
    return out


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_in_and_out_with_every_codec(kafka_broker, new_topic, model_root, fraud, codec):
    source, out, dlq = new_topic(prefix="in"), new_topic(prefix="out"), new_topic(prefix="dlq")
    events = dict(list(csv_events(fraud[1]))[:40])
    messages = [(event_id.encode(), json.dumps(dict(event, produce_ts=1)).encode())
                for event_id, event in events.items()]
    _librdkafka_produce(kafka_broker, source, messages + [(b"bad", b"{not json")], codec)
    n = len(messages) + 1

    result = stream_predict.run([f"--model_dir={model_root}", f"--input_topic={source}", f"--output_topic={out}",
                                 f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}",
                                 "--runner=DirectRunner", "--streaming", f"--max_records={n}",
                                 "--max_read_time=120", f"--compression_type={codec}"])
    assert result.counts["rows_in"] == n
    assert (result.counts["predictions"], result.counts["dead_letters"]) == (len(messages), 1)

    predictions = [json.loads(value) for _, value in _librdkafka_consume(kafka_broker, out, len(messages))]
    offline = ServingModel.load(model_root).predict_records(list(events.values()))
    by_id = {p["event_id"]: p for p in predictions}
    assert len(predictions) == len(events) and set(by_id) == set(events)
    for (event_id, _), expected in zip(events.items(), offline):
        assert by_id[event_id]["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert by_id[event_id]["key"] == event_id and by_id[event_id]["model_version"] == 1
    dead = [json.loads(value) for _, value in _librdkafka_consume(kafka_broker, dlq, 1)]
    assert len(dead) == 1 and dead[0]["stage"] == "parse" and dead[0]["position"] == len(messages)


@pytest.mark.integration
@pytest.mark.parametrize("codec", CODECS)
def test_produce_compresses_for_librdkafka(kafka_broker, new_topic, tmp_path, codec):
    topic = new_topic(prefix="produce")
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("id,amount\n" + "".join(f"e{i},{i}.5\n" for i in range(25)))
    stats = produce.run([f"--input={csv_path}", f"--topic={topic}", f"--bootstrap_servers={kafka_broker}",
                         "--key_column=id", f"--compression_type={codec}"])
    assert stats["events"] == 25
    got = _librdkafka_consume(kafka_broker, topic, 25)
    assert sorted(json.loads(v)["amount"] for _, v in got) == [i + 0.5 for i in range(25)]
    assert {k for k, _ in got} == {f"e{i}".encode() for i in range(25)}
