"""Confluent wire-format Avro through the pipelines, against Tansu and the test schema registry.

Events are written by confluent-kafka's AvroSerializer (two schema versions on
one topic), predictions written by stream_predict are read back with its
AvroDeserializer, and train infers its spec from the registry's schema.
"""
import csv
import json

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka import KafkaProducer

from beam_ml.serving import ServingModel
from beam_ml.testing import read_topic
from beam_ml.testing.schema_registry import SchemaRegistryServer

FEATURES = ["Time"] + [f"V{i}" for i in range(1, 29)] + ["Amount"]


def _schema(extra=(), label=False):
    fields = [{"name": "event_id", "type": "string"}]
    for name in FEATURES:
        # V4 may arrive as text from some producers: a union, so a word there is a record the model cannot score.
        fields.append({"name": name, "type": ["double", "string"] if name == "V4" else "double"})
    if label:
        fields.append({"name": "Class", "type": "string"})
    return {"type": "record", "name": "Transaction", "namespace": "fraud", "fields": fields + list(extra)}


V1 = _schema()
V2 = _schema([{"name": "channel", "type": "string", "default": "web"}])


@pytest.fixture(scope="module")
def registry():
    with SchemaRegistryServer() as server:
        yield server


def _rows(path, n):
    with open(path, newline="") as f:
        return [row for _, row in zip(range(n), csv.DictReader(f))]


def _event(i, row, schema):
    event = {"event_id": f"e{i}", **{k: float(row[k]) for k in FEATURES}}
    if schema is V2:
        event["channel"] = "pos"
    return event


def _send(bootstrap, topic, values):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush(10)
    producer.close()


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_reads_and_writes_confluent_avro(kafka_broker, new_topic, model_root, fraud, registry):
    from pipelines import stream_predict

    source, out, dlq = new_topic(prefix="avin"), new_topic(prefix="avout"), new_topic(prefix="avdlq")
    rows = _rows(fraud[1], 40)
    client = SchemaRegistryClient({"url": registry.url})
    ctx = SerializationContext(source, MessageField.VALUE)
    values, events = [], {}
    for i, row in enumerate(rows):
        schema = V1 if i < 20 else V2  # two writer schemas on one topic
        event = _event(i, row, schema)
        events[event["event_id"]] = {k: event[k] for k in FEATURES}
        values.append((event["event_id"].encode(), AvroSerializer(client, json.dumps(schema))(event, ctx)))
    good = values[0][1]
    bad = {
        b"\x01" + good[1:]: "magic byte 1",
        b"\x00\x00\x00\x30\x39" + good[5:]: "unknown schema id 12345",
        good[:40]: "invalid Avro for schema id",
        AvroSerializer(client, json.dumps(V1))(dict(_event(99, rows[0], V1), V4="twelve"), ctx):
            "field 'V4': expected a number, got 'twelve'",
    }
    _send(kafka_broker, source, values + [(None, v) for v in bad])
    n = len(values) + len(bad)

    result = stream_predict.run([
        f"--model_dir={model_root}", f"--input_topic={source}", f"--output_topic={out}",
        f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}", "--runner=DirectRunner", "--streaming",
        "--value_format=avro_confluent", f"--schema_registry_url={registry.url}", "--output_format=avro_confluent",
        f"--max_records={n}", "--max_read_time=120"])
    c = result.counts
    assert c["rows_in"] == n == c["predictions"] + c["dead_letters"]
    assert (c["predictions"], c["dead_parse"], c["dead_validate"]) == (len(values), 3, 1)

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    predictions = [deserialize(r.value, SerializationContext(out, MessageField.VALUE))
                   for r in read_topic(kafka_broker, out, len(values), 60)]
    model = ServingModel.load(model_root)
    ids = sorted(events)
    offline = dict(zip(ids, model.predict_records([events[i] for i in ids])))
    assert sorted(p["event_id"] for p in predictions) == ids
    for p in predictions:
        assert p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5)
        assert p["class"] == offline[p["event_id"]]["class"] and p["source"] == f"{source}/0"
    assert f"{out}-value" in SchemaRegistryClient({"url": registry.url}).get_subjects()

    dead = [json.loads(r.value) for r in read_topic(kafka_broker, dlq, len(bad), 60)]
    reasons = sorted(d["reason"] for d in dead)
    for expected in bad.values():
        assert any(expected in r for r in reasons), (expected, reasons)
    assert all(d["source"] == f"{source}/0" and isinstance(d["position"], int) for d in dead)
    assert all(d["raw"].startswith("base64:") for d in dead if d["stage"] == "parse")


@pytest.mark.integration
@pytest.mark.slow
def test_train_infers_the_spec_from_the_registry_schema(kafka_broker, new_topic, fraud, registry, tmp_path):
    """Types come from the Avro schema: a string field of digits is categorical, not numeric."""
    from pipelines import train

    topic = new_topic(prefix="avtrain")
    schema = _schema([{"name": "region", "type": "string"}], label=True)
    client = SchemaRegistryClient({"url": registry.url})
    serialize = AvroSerializer(client, json.dumps(schema))
    ctx = SerializationContext(topic, MessageField.VALUE)
    rows = _rows(fraud[1], 3000)
    values = []
    for i, row in enumerate(rows):
        event = dict(_event(i, row, V1), Class=row["Class"], region=str(100 + i % 3))
        values.append((None, serialize(event, ctx)))
    values.append((None, b"\x00\x00\x00\x00"))  # a truncated header: one dead letter
    _send(kafka_broker, topic, values)

    out = tmp_path / "out"
    result = train.run([f"--input_topic={topic}", f"--bootstrap_servers={kafka_broker}", "--label=Class",
                        "--value_format=avro_confluent", f"--schema_registry_url={registry.url}",
                        f"--output_dir={out}", "--epochs=1", "--verbose=0", "--runner=DirectRunner"])
    c = result.counts
    assert c["rows_in"] == len(values) == c["rows_good"] + c["rows_dead"] and c["rows_dead"] == 1
    roles = {col["name"]: col["role"] for col in json.load(open(out / "spec.json"))["columns"]}
    assert roles["region"] == "categorical" and roles["Amount"] == "numeric" and roles["V4"] == "numeric"
    assert roles["event_id"] == "key" and roles["Class"] == "label"


@pytest.mark.integration
@pytest.mark.slow
def test_kafka_to_bigquery_with_google_template_names(kafka_broker, new_topic, bq_dataset, bq_endpoint, registry):
    """messageFormat=AVRO_CONFLUENT_WIRE_FORMAT + schemaRegistryConnectionUrl: columns from the registry's
    latest schema, both versions written, every bad record a dead letter naming topic/partition/offset."""
    from pipelines import kafka_to_bigquery
    from tests.test_kafka_to_bigquery import _base_argv, _dead_rows

    topic = new_topic(prefix="avbq")
    v1 = {"type": "record", "name": "Payment", "fields": [{"name": "event_id", "type": "string"},
                                                          {"name": "amount", "type": "double"}]}
    v2 = {**v1, "fields": v1["fields"] + [{"name": "channel", "type": "string", "default": "web"}]}
    client = SchemaRegistryClient({"url": registry.url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    old = [AvroSerializer(client, json.dumps(v1))({"event_id": f"a{i}", "amount": i + 0.5}, ctx) for i in range(5)]
    new = [AvroSerializer(client, json.dumps(v2))({"event_id": f"b{i}", "amount": i + 0.25, "channel": "pos"}, ctx)
           for i in range(5)]
    bad = [b"\x07" + old[0][1:], b"\x00\x00\x00\xff\xff" + old[0][5:], old[0][:6]]
    _send(kafka_broker, topic, [(None, v) for v in old + new + bad])

    result = kafka_to_bigquery.run(_base_argv(
        kafka_broker, topic, bq_dataset, bq_endpoint, "--messageFormat=AVRO_CONFLUENT_WIRE_FORMAT",
        f"--schemaRegistryConnectionUrl={registry.url}", "--max_records=13", "--max_read_time=120"))
    c = result.counts
    assert (c["records_in"], c["rows_written"], c["dead_parse"]) == (13, 10, 3)
    rows = {r["event_id"]: r for r in bq_dataset.rows("tx")}
    assert rows["a0"]["channel"] == "web" and rows["b1"]["channel"] == "pos" and rows["b1"]["amount"] == 1.25
    dead = _dead_rows(bq_dataset)
    reasons = [dead[(topic, 0, offset)]["errorMessage"] for offset in (10, 11, 12)]
    assert "magic byte 7" in reasons[0] and "unknown schema id 65535" in reasons[1] and "invalid Avro" in reasons[2]


@pytest.mark.integration
@pytest.mark.slow
def test_batch_predict_scores_a_confluent_avro_topic(kafka_broker, new_topic, model_root, fraud, registry, tmp_path):
    from pipelines import batch_predict

    topic = new_topic(prefix="avbatch")
    client = SchemaRegistryClient({"url": registry.url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    rows = _rows(fraud[1], 30)
    events = {f"e{i}": _event(i, row, V1) for i, row in enumerate(rows)}
    serialize = AvroSerializer(client, json.dumps(V1))
    _send(kafka_broker, topic, [(None, serialize(e, ctx)) for e in events.values()] + [(None, b"\x00\x00")])
    out = tmp_path / "predictions.jsonl"
    result = batch_predict.run([f"--model_dir={model_root}", f"--input_topic={topic}", f"--output={out}",
                                f"--bootstrap_servers={kafka_broker}", "--value_format=avro_confluent",
                                f"--schema_registry_url={registry.url}", "--runner=DirectRunner"])
    assert (result.counts["rows_in"], result.counts["predictions"], result.counts["dead_letters"]) == (31, 30, 1)
    predictions = [json.loads(line) for line in open(out)]
    model = ServingModel.load(model_root)
    ids = sorted(events)
    offline = dict(zip(ids, model.predict_records([{k: events[i][k] for k in FEATURES} for i in ids])))
    assert sorted(p["event_id"] for p in predictions) == ids
    assert all(p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5) for p in predictions)
    dead = [json.loads(line) for line in open(tmp_path / "predictions.dead_letter.jsonl")]
    assert len(dead) == 1 and "fewer than the 5-byte header" in dead[0]["reason"]
