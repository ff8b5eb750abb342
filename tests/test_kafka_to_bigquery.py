"""pipelines.kafka_to_bigquery: pure parts (typing, inference, Avro, BigQuery rows and schemas, flags) and
end-to-end runs against a real Kafka-compatible broker (Tansu) and a BigQuery emulator on 127.0.0.1.

    python -m pytest tests/test_kafka_to_bigquery.py -q -m "not slow and not integration"   # pure
    python -m pytest tests/test_kafka_to_bigquery.py -q                                      # everything

Every end-to-end test reads both tables back with the BigQuery client: each good
event is in the table exactly as it was sent, each bad one in the dead-letter
table with its reason and its topic/partition/offset, and the counts add up.
"""
import base64
import datetime
import io
import json
import math
import os
import signal
import threading
import time

import fastavro
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from beam_ml import datasets
from beam_ml.errors import UserError
from beam_ml.ingest import (IngestSchema, bigquery_schema, infer_schema, insert_rows,
                            records_to_table, spec_schema, table_to_rows)
from beam_ml.ingest.values import avro_ingest_schema, load_avro_schema
from beam_ml.formats import record_format
from beam_ml.formats.text import encode_csv_line
from beam_ml.options import FLAG_ALIASES, KafkaToBigQueryOptions, parse_pipeline_options
from beam_ml.producer import csv_events
from beam_ml.spec import infer_spec
from beam_ml.testing.process import start_module
from pipelines import kafka_to_bigquery
from templates import flex

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fraud_csv(tmp_path_factory) -> str:
    """3,000 generated credit-card rows (both classes)."""
    return datasets.materialize("fraud", str(tmp_path_factory.mktemp("fraud")), rows=3000)


@pytest.fixture(scope="module")
def spec_path(fraud_csv, tmp_path_factory) -> str:
    """The dataset spec of those rows, as a --spec file."""
    return infer_spec(fraud_csv, "Class").save(str(tmp_path_factory.mktemp("spec") / "spec.json"))


# ================================================================ pure: typing
_scalars = (st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                            max_size=3), max_leaves=6)
_records = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _json, max_size=4), max_size=25)
_types = st.sampled_from([pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.timestamp("us", tz="UTC"),
                          pa.date32(), pa.binary(), pa.decimal128(12, 3)])


@given(_records, st.lists(_types, min_size=4, max_size=4), st.sets(st.sampled_from(["a", "b", "c", "d"])))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_record_is_typed_or_reported_once(records, types, required):
    schema = IngestSchema(pa.schema([pa.field(n, t) for n, t in zip("abcd", types)]), tuple(sorted(required)),
                          ("NA",))
    table, kept, errors = records_to_table(records, schema)
    bad = [i for i, _ in errors]
    assert sorted(list(kept) + bad) == list(range(len(records)))
    assert table.num_rows == len(kept) and table.schema == schema.schema
    assert all(isinstance(reason, str) and reason.startswith(("field '", "missing field '")) for _, reason in errors)
    rows, positions, row_errors = table_to_rows(table)
    assert len(rows) + len(row_errors) == table.num_rows
    json.dumps(rows, allow_nan=False)  # what insertAll sends


_KINDS = {"int": st.integers(-2 ** 63, 2 ** 63 - 1), "float": st.floats(allow_nan=False, allow_infinity=False),
          "bool": st.booleans(), "text": st.text(max_size=10),
          "object": st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=2)}


@st.composite
def _typed_records(draw):
    kinds = draw(st.dictionaries(st.text(min_size=1, max_size=6), st.sampled_from(sorted(_KINDS)), min_size=1,
                                 max_size=5))
    out = []
    for n in range(draw(st.integers(1, 20))):
        r = {}
        for name, kind in kinds.items():
            choice = draw(st.integers(0 if n else 2, 4))  # the first record has every field
            if choice == 0:
                continue  # absent: a null
            r[name] = None if choice == 1 else draw(_KINDS[kind])
        out.append(r)
    return out


@given(_typed_records())
@settings(max_examples=200, deadline=None)
def test_inferred_columns_take_the_sample_as_it_was_sent(records):
    schema = infer_schema(records)
    table, kept, errors = records_to_table(records, schema)
    assert errors == [] and list(kept) == list(range(len(records)))
    for record, row in zip(records, table.to_pylist()):
        for name, value in row.items():
            sent = record.get(name)
            if isinstance(sent, dict):
                assert json.loads(value) == sent
            else:
                assert value == sent and (sent is None or type(value) is type(sent) or isinstance(sent, int))


def test_a_few_malformed_values_do_not_change_an_inferred_type():
    sample = [{"amount": float(i) + 0.5, "n": i} for i in range(40)] + [{"amount": "twelve euros", "n": "x"}]
    schema = infer_schema(sample)
    assert schema.schema.field("amount").type == pa.float64() and schema.schema.field("n").type == pa.int64()
    table, kept, errors = records_to_table(sample, schema)
    assert table.num_rows == 40 and errors == [(40, "field 'amount': expected a number, got 'twelve euros'")]
    mixed = infer_schema([{"v": 1}, {"v": "a"}, {"v": 2}])
    assert mixed.schema.field("v").type == pa.string()
    assert records_to_table([{"v": 1}, {"v": "a"}, {"v": 2.5}], mixed)[0].column("v").to_pylist() == ["1", "a", "2.5"]


def test_spec_columns_require_features_and_read_na_texts_as_missing(spec_path):
    from beam_ml.spec import DatasetSpec

    spec = DatasetSpec.load(spec_path)
    schema = spec_schema(spec)
    assert schema.schema.field("V1").type == pa.float64() and schema.schema.field("Class").type == pa.string()
    good = {c: 1.5 for c in spec.feature_columns}
    records = [dict(good, Class="1"), dict(good, V2="NA", Class=None), {k: v for k, v in good.items() if k != "V3"},
               dict(good, V4=True)]
    table, kept, errors = records_to_table(records, schema)
    assert list(kept) == [0, 1]
    assert table.column("V2").to_pylist() == [1.5, None] and table.column("Class").to_pylist() == ["1", None]
    assert errors == [(2, "missing field 'V3'"), (3, "field 'V4': expected a number, got True")]


def test_csv_values_are_the_spec_columns_in_order():
    decoder = record_format("csv", columns=["a", "b"])
    assert decoder.decode(b'1.5,"x, y"') == {"a": "1.5", "b": "x, y"}
    with pytest.raises(ValueError, match="expected 2 fields"):
        decoder.decode(b"1,2,3")


@given(st.binary(max_size=64), st.sampled_from(["json", "csv", "avro"]))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_a_record_or_a_reason(value, value_format):
    decoder = record_format(value_format, columns=["a", "b"], avro_schema=fastavro.parse_schema(_AVRO))
    try:
        assert isinstance(decoder.decode(value), dict)
    except ValueError as e:
        assert str(e)


_AVRO = {"type": "record", "name": "Payment", "namespace": "test", "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "amount", "type": "double"},
    {"name": "count", "type": "long"},
    {"name": "ok", "type": "boolean"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "note", "type": ["null", "string"], "default": None},
    {"name": "raw", "type": "bytes"},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
]}


def _avro_record(i: int) -> dict:
    import decimal

    return {"event_id": f"p{i}", "amount": i * 1.25, "count": 2 ** 40 + i, "ok": i % 2 == 0,
            "ts": datetime.datetime(2024, 5, 1, 12, 0, i % 60, 123000, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2024, 5, 1 + i % 28), "tags": ["a", f"t{i}"], "note": None if i % 3 else f"n{i}",
            "raw": bytes([i % 256, 255]), "price": decimal.Decimal(f"{i}.25")}


def _avro_bytes(record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(_AVRO), record)
    return buf.getvalue()


def test_avro_values_become_typed_columns_and_bigquery_rows():
    schema = avro_ingest_schema(fastavro.parse_schema(_AVRO))
    assert [str(f.type) for f in schema.schema] == ["string", "double", "int64", "bool", "timestamp[us, tz=UTC]",
                                                    "date32[day]", "string", "string", "binary", "decimal128(10, 2)"]
    decoder = record_format("avro", avro_schema=fastavro.parse_schema(_AVRO))
    sent = [_avro_record(i) for i in range(5)]
    table, kept, errors = records_to_table([decoder.decode(_avro_bytes(r)) for r in sent], schema)
    assert errors == []
    rows, _, bad = table_to_rows(table)
    assert bad == []
    for r, row in zip(sent, rows):
        assert row["ts"] == r["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ") and row["day"] == r["day"].isoformat()
        assert json.loads(row["tags"]) == r["tags"] and row["note"] == r["note"]
        assert base64.b64decode(row["raw"]) == r["raw"] and row["price"] == str(r["price"])
        assert (row["event_id"], row["amount"], row["count"], row["ok"]) == (r["event_id"], r["amount"], r["count"],
                                                                             r["ok"])
    with pytest.raises(ValueError, match="bytes left after the record"):
        decoder.decode(_avro_bytes(sent[0]) + b"\x00")
    with pytest.raises(ValueError, match="invalid Avro"):
        decoder.decode(b"\x02")


def test_avro_schema_file_errors_name_the_flag(tmp_path):
    with pytest.raises(UserError, match="--avro_schema: file not found"):
        load_avro_schema(str(tmp_path / "missing.avsc"))
    (tmp_path / "bad.avsc").write_text('{"type": "record", "name": "x", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(UserError, match="--avro_schema: .*not a valid Avro schema"):
        load_avro_schema(str(tmp_path / "bad.avsc"))
    (tmp_path / "int.avsc").write_text('"int"')
    with pytest.raises(UserError, match="expected a record schema"):
        load_avro_schema(str(tmp_path / "int.avsc"))


def test_bigquery_schema_of_arrow_columns():
    schema = pa.schema([("b", pa.bool_()), ("i", pa.int32()), ("f", pa.float32()), ("s", pa.large_string()),
                        ("y", pa.binary()), ("t", pa.timestamp("ms", tz="UTC")), ("dt", pa.timestamp("us")),
                        ("d", pa.date32()), ("tm", pa.time64("us")), ("n", pa.decimal128(10, 2)),
                        ("bn", pa.decimal128(38, 20)), ("l", pa.list_(pa.string())),
                        ("r", pa.struct([("x", pa.int64())]))])
    fields = {f["name"]: (f["type"], f["mode"]) for f in bigquery_schema(schema)["fields"]}
    assert fields == {"b": ("BOOL", "NULLABLE"), "i": ("INT64", "NULLABLE"), "f": ("FLOAT64", "NULLABLE"),
                      "s": ("STRING", "NULLABLE"), "y": ("BYTES", "NULLABLE"), "t": ("TIMESTAMP", "NULLABLE"),
                      "dt": ("DATETIME", "NULLABLE"), "d": ("DATE", "NULLABLE"), "tm": ("TIME", "NULLABLE"),
                      "n": ("NUMERIC", "NULLABLE"), "bn": ("BIGNUMERIC", "NULLABLE"), "l": ("STRING", "REPEATED"),
                      "r": ("RECORD", "NULLABLE")}
    with pytest.raises(UserError, match="column 'a-b' cannot be a BigQuery column name"):
        bigquery_schema(pa.schema([("a-b", pa.int64())]))
    with pytest.raises(UserError, match="differ only in case: x"):
        bigquery_schema(pa.schema([("x", pa.int64()), ("X", pa.int64())]))


def test_rows_with_nan_from_a_statement_are_reported_not_sent():
    table = pa.table({"v": [1.0, math.nan, math.inf], "__line__": [10, 11, 12]})
    rows, positions, errors = table_to_rows(table, "__line__")
    assert rows == [{"v": 1.0}] and list(positions) == [10]
    assert [i for i, _ in errors] == [1, 2] and "not a finite number" in errors[0][1]


class _ScriptedClient:
    """Answers insert_rows_json from a script: what a BigQuery service may answer, transient errors included
    (the emulator never answers those)."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def insert_rows_json(self, table, rows, row_ids=None, skip_invalid_rows=None, **unused):
        self.calls.append((table, [r["id"] for r in rows], list(row_ids), skip_invalid_rows))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_inserts_retry_transient_errors_and_return_refused_rows():
    from google.api_core import exceptions

    client = _ScriptedClient([
        exceptions.InternalServerError("boom"),  # the all-or-nothing request fails
        [{"index": 0, "errors": [{"reason": "backendError"}]}, {"index": 2, "errors": [{"reason": "invalid"}]}],
        [],  # the retried row goes in
    ])
    slept = []
    failed = insert_rows(client, "p:d.t", [{"id": 1}, {"id": 2}, {"id": 3}], ["a", "b", "c"], sleep=slept.append)
    assert failed == [(2, [{"reason": "invalid"}])] and len(slept) == 1
    assert client.calls == [("p.d.t", [1, 2, 3], ["a", "b", "c"], False), ("p.d.t", [1, 2, 3], ["a", "b", "c"], True),
                            ("p.d.t", [1], ["a"], True)]
    assert insert_rows(_ScriptedClient([[]]), "p:d.t", [{"id": 1}], ["a"]) == []
    # A request the service refuses outright (e.g. the table is gone) is a failure of each row, as in Beam.
    gone = _ScriptedClient([exceptions.NotFound("x"), exceptions.NotFound("table gone")])
    refused = insert_rows(gone, "p:d.t", [{"id": 1}, {"id": 2}], ["a", "b"], max_retries=2, sleep=slept.append)
    assert [(i, e[0]["reason"]) for i, e in refused] == [(0, "Not Found"), (1, "Not Found")]
    assert len(slept) == 1  # 'Not Found' is permanent for Beam's RETRY_ON_TRANSIENT_ERROR: no retry


# ============================================================== pure: flags
def _argv(*extra, topic="tx", table="test:ds.tx"):
    return [f"--input_topic={topic}", f"--output_table={table}", *extra]


def test_google_template_names_are_flag_aliases_and_the_template_parameters():
    options = parse_pipeline_options(["--bootstrapServers=h:1", "--inputTopic=a,b", "--outputTableSpec=p:d.t",
                                      "--outputDeadletterTable=p:d.dead", "--consumerGroupId=g",
                                      "--kafkaReadOffset=earliest", "--writeDisposition=WRITE_TRUNCATE"],
                                     *kafka_to_bigquery.OPTIONS)
    opts = options.view_as(KafkaToBigQueryOptions)
    assert (opts.topics, opts.output_table, opts.dead_letter_table, opts.group_id, opts.start) == (
        ["a", "b"], "p:d.t", "p:d.dead", "g", "earliest")
    assert options.get_all_options()["bootstrap_servers"] == "h:1"
    names = {p["name"] for p in flex.metadata_for("kafka_to_bigquery")["parameters"]}
    assert {"bootstrapServers", "inputTopic", "outputTableSpec", "outputDeadletterTable", "sql", "lookup",
            "avro_schema", "bigquery_endpoint", "with_kafka_metadata", "bounded"} <= names
    assert not {"bootstrap_servers", "input_topic", "output_table", "sasl_password"} & names
    for p in flex.PARAMETER_NAMES["kafka_to_bigquery"].values():
        assert f"--{p}" in FLAG_ALIASES


@pytest.mark.parametrize("argv, message", [
    (["--output_table=p:d.t"], "--input_topic: required"),
    (["--input_topic=a"], "--output_table: required"),
    (_argv("--spec=s.json", "--avro_schema=a.avsc"), "--spec and --avro_schema are exclusive"),
    (_argv("--value_format=csv"), "--value_format=csv: CSV lines carry no field names"),
    (_argv("--avro_schema=a.avsc", "--value_format=csv"), "values are Avro with --avro_schema"),
    (_argv("--insert_batch_size=0"), "--insert_batch_size"),
    (_argv("--start=yesterday"), "--start"),
    (["--input_topic=a", "--output_table=nodataset"], "--output_table: expected PROJECT:DATASET.TABLE"),
    (_argv("--write_disposition=WRITE_TRUNCATE"), "a stream only appends; use --bounded"),
    (_argv("--dead_letter_table=test:ds.tx"), "--dead_letter_table: must differ"),
    (_argv("--lookup=users=u.csv", "--spec={spec}"), "--lookup: lookups are joined by a --sql statement"),
    (_argv("--spec={spec}", "--sql=SELECT * FROM events", "--lookup=users=missing.csv"),
     "--lookup users: file not found"),
])
def test_bad_flags_fail_at_launch_naming_the_flag(argv, message, spec_path):
    with pytest.raises(UserError, match=message):
        kafka_to_bigquery.run([a.replace("{spec}", spec_path) for a in argv])


def test_a_bad_statement_fails_at_start_with_the_engine_message(spec_path):
    with pytest.raises(UserError, match=r'^--sql: .*"nope"'):
        kafka_to_bigquery.run(_argv(f"--spec={spec_path}", "--sql=SELECT nope FROM events",
                                    "--bootstrap_servers=127.0.0.1:1"))
    with pytest.raises(UserError, match="--sql: .*column name"):
        kafka_to_bigquery.run(_argv(f"--spec={spec_path}", '--sql=SELECT V1 AS "a b" FROM events',
                                    "--bootstrap_servers=127.0.0.1:1"))
    with pytest.raises(UserError, match="--with_kafka_metadata: the rows already have column.*offset"):
        kafka_to_bigquery.run(_argv(f"--spec={spec_path}", "--sql=SELECT V1 AS offset FROM events",
                                    "--with_kafka_metadata", "--bootstrap_servers=127.0.0.1:1"))


def test_help_lists_the_pipeline_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        kafka_to_bigquery.run(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipelines.kafka_to_bigquery") and "--dead_letter_table" in out
    assert "beam_ml cleaning" in out and "--bigquery_endpoint" in out


# ======================================================== servers: helpers
def _fraud_events(fraud_csv: str, n: int) -> list[tuple[str, dict]]:
    return list(csv_events(fraud_csv))[:n]


def _send(bootstrap: str, topic: str, values, partitions: int = 1) -> list:
    """Sends (key, value) pairs round-robin over the partitions; returns each record's metadata."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [producer.send(topic, key=None if k is None else k.encode(), value=v, partition=i % partitions)
                   for i, (k, v) in enumerate(values)]
        producer.flush(30)
        return [f.get(30) for f in futures]
    finally:
        producer.close()


def _base_argv(kafka_broker, topic, bq_dataset, bq_endpoint, *extra):
    return [f"--bootstrap_servers={kafka_broker}", f"--input_topic={topic}", f"--output_table={bq_dataset.table('tx')}",
            f"--bigquery_endpoint={bq_endpoint.rest}", "--runner=DirectRunner", *extra]


def _dead_rows(bq_dataset) -> dict:
    return {(r["source_topic"], r["partition"], r["offset"]): r for r in bq_dataset.rows("tx_error_records")}


def _create_table(bq_dataset, name: str, fields: list[tuple[str, str]]) -> None:
    from google.cloud import bigquery

    bq_dataset.client.create_table(bigquery.Table(bq_dataset.table_id(name),
                                                  schema=[bigquery.SchemaField(n, t) for n, t in fields]))


# ========================================================= servers: tests
@pytest.mark.integration
@pytest.mark.slow
def test_stream_writes_good_events_exactly_and_dead_letters_every_bad_one(kafka_broker, new_topic, bq_dataset,
                                                                          bq_endpoint, fraud_csv, capsys):
    topic = new_topic(partitions=2, prefix="tx")
    events = _fraud_events(fraud_csv, 120)
    for i, (_, event) in enumerate(events):
        event["day"] = f"2024-01-{i % 28 + 1:02d}"
    template = dict(events[0][1])
    bad = [  # (id, value, stage, part of the reason)
        ("bad-json", b"not json at all", "parse", "invalid JSON"),
        ("bad-list", b"[1, 2, 3]", "parse", "expected a JSON object"),
        ("bad-utf8", b"\xff\xfe garbage", "parse", "not UTF-8"),
        ("bad-tombstone", None, "parse", "tombstone"),
        ("bad-amount", json.dumps(dict(template, event_id="bad-amount", Amount="twelve euros")).encode(), "schema",
         "field 'Amount': expected a number, got 'twelve euros'"),
        ("bad-object", json.dumps(dict(template, event_id="bad-object", V1={"x": 1})).encode(), "schema",
         "field 'V1': expected a number, got an object"),
        # The table (created beforehand) has day DATE: only BigQuery knows these are not dates.
        ("bad-day", json.dumps(dict(template, event_id="bad-day", day="2024-02-31")).encode(), "bigquery",
         "BigQuery rejected the row"),
        ("bad-day-text", json.dumps(dict(template, event_id="bad-day-text", day="someday")).encode(), "bigquery",
         "BigQuery rejected the row"),
    ]
    values = [(i, json.dumps(e).encode()) for i, e in events] + [(b[0], b[1]) for b in bad]
    sent = _send(kafka_broker, topic, values, partitions=2)
    _create_table(bq_dataset, "tx", [("Time", "INT64")] + [(f"V{i}", "FLOAT64") for i in range(1, 29)]
                  + [("Amount", "FLOAT64"), ("Class", "INT64"), ("event_id", "STRING"), ("day", "DATE")])

    result = kafka_to_bigquery.run(_base_argv(kafka_broker, topic, bq_dataset, bq_endpoint, "--group_id=e2e",
                                              f"--max_records={len(values)}", "--max_read_time=120"))

    c = result.counts
    assert c["records_in"] == len(values) and c["rows_written"] == len(events)
    assert (c["dead_letters"], c["dead_parse"], c["dead_schema"], c["dead_bigquery"], c["dead_sql"]) == (8, 4, 2, 2, 0)
    out = capsys.readouterr().out
    assert "BigQuery" in out and bq_endpoint.rest in out and "day: rows carry STRING NULLABLE, the table has DATE" in out
    assert f"{len(values)} records in = {len(events)} rows written" in out

    rows = bq_dataset.rows("tx")
    by_id = {r["event_id"]: r for r in rows}
    assert len(rows) == len(events) and set(by_id) == {i for i, _ in events}
    for event_id, event in events:
        row = by_id[event_id]
        assert {k: (v.isoformat() if k == "day" else v) for k, v in row.items()} == event
    dead = _dead_rows(bq_dataset)
    assert len(dead) == len(bad)
    for (event_id, value, stage, reason), meta in zip(bad, sent[len(events):]):
        d = dead[(topic, meta.partition, meta.offset)]
        assert d["stage"] == stage and reason in d["errorMessage"], (event_id, d)
        assert {(a["key"], a["value"]) for a in d["attributes"]} == {("source", f"{topic}/{meta.partition}"),
                                                                    ("position", str(meta.offset))}
        assert isinstance(d["timestamp"], datetime.datetime)
        if stage == "bigquery":
            assert json.loads(d["payloadString"])["event_id"] == event_id
        elif value is None:
            assert d["payloadString"] == ""
        elif event_id == "bad-utf8":
            assert d["payloadString"] == "base64:" + base64.b64encode(value).decode()
        else:
            assert d["payloadString"] == value.decode()  # the record as it was sent


def _sql_events(n: int, start: int = 0) -> list[tuple[str, dict]]:
    return [(f"e{i}", {"event_id": f"e{i}", "uid": f"u{i % 5}", "amount": 5.0 + (i % 4) * 5.0,
                       "note": "x" if i % 7 == 3 else str(i)}) for i in range(start, start + n)]


@pytest.mark.integration
@pytest.mark.slow
def test_sql_filters_joins_a_refreshed_lookup_and_counts_add_up(kafka_broker, new_topic, bq_dataset, bq_endpoint,
                                                                  tmp_path):
    topic = new_topic(prefix="sql")
    users = tmp_path / "users.csv"
    users.write_text("uid,tier\nu0,gold\nu1,silver\nu2,bronze\nu3,gold\n")
    first, second = _sql_events(28), _sql_events(28, start=28)
    sql = ("SELECT e.event_id, e.amount, CAST(e.note AS INTEGER) AS note_n, u.tier FROM events e "
           "LEFT JOIN users u ON e.uid = u.uid WHERE e.amount > 10")
    argv = _base_argv(kafka_broker, topic, bq_dataset, bq_endpoint, "--group_id=sql", f"--sql={sql}",
                      f"--lookup=users={users}", "--lookup_refresh=0.5", "--with_kafka_metadata",
                      f"--max_records={len(first) + len(second)}", "--max_read_time=120")
    results = {}
    thread = threading.Thread(target=lambda: results.update(run=kafka_to_bigquery.run(argv)))
    sent = _send(kafka_broker, topic, [(i, json.dumps(e).encode()) for i, e in first])
    thread.start()
    try:
        deadline = time.monotonic() + 120
        expected_first = [i for i, e in first if e["amount"] > 10 and e["note"] != "x"]
        while _rows_now(bq_dataset) < len(expected_first):
            assert thread.is_alive() and time.monotonic() < deadline, "the first events never arrived"
            time.sleep(0.5)
        tmp = tmp_path / "users.next.csv"
        tmp.write_text("uid,tier\nu0,platinum\nu1,platinum\nu2,platinum\nu3,platinum\nu4,new\n")
        os.replace(tmp, users)
        time.sleep(2)  # > --lookup_refresh
        sent += _send(kafka_broker, topic, [(i, json.dumps(e).encode()) for i, e in second])
    finally:
        thread.join(180)
    assert not thread.is_alive()
    c = results["run"].counts
    events = first + second
    kept = [(i, e) for i, e in events if e["amount"] > 10]
    assert c["records_in"] == len(events) and c["rows_filtered"] == len(events) - len(kept)
    assert c["dead_sql"] == sum(e["note"] == "x" for _, e in kept) > 0
    assert c["records_in"] == c["rows_written"] + c["dead_letters"] + c["rows_filtered"]
    by_id = {r["event_id"]: r for r in bq_dataset.rows("tx")}
    meta = {i: m for (i, _), m in zip(events, sent)}
    assert set(by_id) == {i for i, e in kept if e["note"] != "x"}
    old = {"u0": "gold", "u1": "silver", "u2": "bronze", "u3": "gold"}
    for i, e in kept:
        if e["note"] == "x":
            continue
        row = by_id[i]
        tier = old.get(e["uid"]) if (i, e) in first else {"u4": "new"}.get(e["uid"], "platinum")
        assert (row["amount"], row["note_n"], row["tier"]) == (e["amount"], int(e["note"]), tier)
        m = meta[i]
        assert (row["topic"], row["partition"], row["offset"], row["key"]) == (topic, 0, m.offset, i)
        assert row["event_ts"] == datetime.datetime.fromtimestamp(m.timestamp / 1000, datetime.timezone.utc)
    dead = _dead_rows(bq_dataset)
    assert {d["stage"] for d in dead.values()} == {"sql"}
    for i, e in kept:
        if e["note"] == "x":
            d = dead[(topic, 0, meta[i].offset)]
            assert d["errorMessage"].startswith("sql: ") and "x" in d["errorMessage"]


def _subprocess(argv, log_path):
    return start_module("pipelines.kafka_to_bigquery", argv, log_path, cwd=REPO)


def _count(bq_dataset) -> int:
    return list(bq_dataset.client.query(f"SELECT COUNT(*) AS n FROM `{bq_dataset.table_id('tx')}`").result())[0]["n"]


def _rows_now(bq_dataset) -> int:
    """Rows in the output table now (0 before the pipeline created it)."""
    from google.api_core import exceptions

    try:
        return list(bq_dataset.client.query(f"SELECT COUNT(*) AS n FROM `{bq_dataset.table_id('tx')}`")
                    .result())[0]["n"]
    except exceptions.NotFound:
        return 0


def _send_paced(bootstrap: str, topic: str, events, rate: float) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        start = time.monotonic()
        for n, (event_id, event) in enumerate(events):
            producer.send(topic, key=event_id.encode(), value=json.dumps(event).encode())
            time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
        producer.flush(30)
    finally:
        producer.close()


@pytest.mark.integration
@pytest.mark.slow
def test_restart_after_kill_loses_nothing(kafka_broker, new_topic, bq_dataset, bq_endpoint, fraud_csv, tmp_path):
    topic = new_topic(prefix="kill")
    events = _fraud_events(fraud_csv, 260)
    head, tail = events[:20], events[20:]
    malformed = [("bad-1", b"{oops"), ("bad-2", b"[]")]
    argv = _base_argv(kafka_broker, topic, bq_dataset, bq_endpoint, "--group_id=restart")
    _send(kafka_broker, topic, [(i, json.dumps(e).encode()) for i, e in head] + malformed)
    proc, log = _subprocess(argv + ["--max_read_time=300"], tmp_path / "run1.log")
    # Once the first run writes, the rest arrives at 25 events/s, so the kill lands mid-stream.
    producer = threading.Thread(target=_send_paced, args=(kafka_broker, topic, tail, 25.0))
    try:
        deadline = time.monotonic() + 180
        while _rows_now(bq_dataset) < len(head):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run1.log").read_text()[-3000:]
            time.sleep(0.5)
        producer.start()
        while _rows_now(bq_dataset) < 80:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run1.log").read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: in-flight bundles are lost
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
        if producer.ident is not None:
            producer.join(120)
    before = _rows_now(bq_dataset)
    assert 0 < before < len(events), "the kill must land mid-stream"

    # Same group: resumes from the committed offsets and catches up.
    result = kafka_to_bigquery.run(argv + ["--max_read_time=25"])
    ids = [r["event_id"] for r in bq_dataset.rows("tx")]
    assert set(ids) == {i for i, _ in events}, f"lost: {sorted({i for i, _ in events} - set(ids))[:10]}"
    dead = bq_dataset.rows("tx_error_records")
    assert {d["payloadString"] for d in dead} == {"{oops", "[]"}
    duplicates = len(ids) - len(set(ids))
    print(f"rows before the kill {before}, after the restart {len(ids)} ({duplicates} duplicates: at least once); "
          f"the restart read {result.counts['records_in']} records")
    # At least once: what was in flight at the kill may be written twice; the restart did not start over.
    assert duplicates < len(events) // 2
    assert result.counts["records_in"] < len(events) + len(malformed)


@pytest.mark.integration
@pytest.mark.slow
def test_bounded_csv_snapshot_with_a_spec_is_loaded_and_committed(kafka_broker, new_topic, bq_dataset, bq_endpoint,
                                                                  fraud_csv, spec_path):
    from beam_ml.spec import DatasetSpec

    topic = new_topic(prefix="snap")
    spec = DatasetSpec.load(spec_path)
    events = _fraud_events(fraud_csv, 100)
    values = [(i, encode_csv_line(e, spec.column_names)) for i, e in events]
    bad_v1 = dict(events[0][1], V1="abc")
    values += [("short", b"1.0,2.0,3.0"), ("abc", encode_csv_line(bad_v1, spec.column_names))]
    _send(kafka_broker, topic, values)
    argv = _base_argv(kafka_broker, topic, bq_dataset, bq_endpoint, f"--spec={spec_path}", "--value_format=csv",
                      "--bounded", "--group_id=snap")

    result = kafka_to_bigquery.run(argv + ["--write_disposition=WRITE_TRUNCATE"])

    c = result.counts
    assert (c["records_in"], c["rows_written"], c["dead_parse"], c["dead_schema"]) == (102, 100, 1, 1)
    assert result.committed == {(topic, 0): 102}
    rows = bq_dataset.rows("tx")
    assert len(rows) == 100
    features = spec.numeric_columns
    by_key = {(r["Time"], r["V1"], r["Amount"]): r for r in rows}
    assert len(by_key) == 100
    for _, e in events:
        row = by_key[(e["Time"], e["V1"], e["Amount"])]
        assert all(row[f] == e[f] for f in features) and row["Class"] == str(e["Class"])
    dead = sorted(bq_dataset.rows("tx_error_records"), key=lambda d: d["offset"])
    assert [(d["stage"], d["offset"], d["source_topic"]) for d in dead] == [("parse", 100, topic),
                                                                            ("schema", 101, topic)]
    assert "expected 31 fields" in dead[0]["errorMessage"] and "field 'V1'" in dead[1]["errorMessage"]

    again = kafka_to_bigquery.run(argv)  # the group's offsets: nothing new to read
    assert again.counts["records_in"] == 0 and again.committed == {} and len(bq_dataset.rows("tx")) == 100


@pytest.mark.integration
@pytest.mark.slow
def test_avro_values_from_two_topics(kafka_broker, new_topic, bq_dataset, bq_endpoint, tmp_path):
    topics = [new_topic(prefix="avro"), new_topic(prefix="avro")]
    avsc = tmp_path / "payment.avsc"
    avsc.write_text(json.dumps(_AVRO))
    sent = {}
    for t, topic in enumerate(topics):
        records = [_avro_record(t * 100 + i) for i in range(10)]
        meta = _send(kafka_broker, topic, [(r["event_id"], _avro_bytes(r)) for r in records] + [("bad", b"\x02")])
        sent.update({r["event_id"]: r for r in records})
        sent[f"bad/{topic}"] = meta[-1]
    result = kafka_to_bigquery.run(_base_argv(kafka_broker, ",".join(topics), bq_dataset, bq_endpoint,
                                              f"--avro_schema={avsc}", "--max_records=22", "--max_read_time=120"))
    assert (result.counts["records_in"], result.counts["rows_written"], result.counts["dead_parse"]) == (22, 20, 2)
    rows = {r["event_id"]: r for r in bq_dataset.rows("tx")}
    assert len(rows) == 20
    for event_id, row in rows.items():
        r = sent[event_id]
        assert (row["amount"], row["count"], row["ok"], row["ts"], row["day"], row["note"], row["raw"],
                row["price"]) == (r["amount"], r["count"], r["ok"], r["ts"], r["day"], r["note"], r["raw"], r["price"])
        assert json.loads(row["tags"]) == r["tags"]
    dead = _dead_rows(bq_dataset)
    for topic in topics:
        d = dead[(topic, 0, 10)]
        assert d["stage"] == "parse" and "invalid Avro" in d["errorMessage"]


@pytest.mark.integration
@pytest.mark.slow
def test_dataflow_runner_translates_and_stages_both_modes(gcs_bucket, spec_path):
    from beam_ml.testing.dataflow import launch_flex_template, stage_on_dataflow

    argv = [f"--spec={spec_path}", "--input_topic=a,b", "--output_table=test-proj:ds.t",
            "--bootstrap_servers=127.0.0.1:9", "--group_id=g"]
    stream = stage_on_dataflow("pipelines.kafka_to_bigquery", argv, bucket=gcs_bucket)
    assert stream.job.top_level_labels == ["ReadFromKafka", "BatchRecords", "ToTableRows", "WriteDeadLetters",
                                           "InsertRows", "WriteRejectedRows"]
    assert stream.template["environment"]["sdkPipelineOptions"]["options"]["streaming"] is True
    assert {"beam_ml/jobs/kafka_to_bigquery.py", "pipelines/kafka_to_bigquery.py"} <= stream.job.package_modules
    bounded = stage_on_dataflow("pipelines.kafka_to_bigquery", argv + ["--bounded"], bucket=gcs_bucket)
    assert bounded.job.top_level_labels == ["ReadFromKafka", "BatchRecords", "ToTableRows", "BatchesToRows",
                                            "LoadRows", "FlattenDeadLetters", "CountDeadLetters", "LoadDeadLetters"]
    launch = launch_flex_template("kafka_to_bigquery", {"bootstrapServers": "127.0.0.1:9", "inputTopic": "tx",
                                                        "outputTableSpec": "test-proj:ds.t", "spec": spec_path},
                                  bucket=gcs_bucket)
    assert launch.returncode == 0, launch.output[-3000:]
    assert launch.staged.job.top_level_labels[:3] == ["ReadFromKafka", "BatchRecords", "ToTableRows"]


@pytest.mark.integration
@pytest.mark.slow
def test_benchmark_checks_both_methods(tmp_path):
    from benchmarks import bench_kafka_to_bigquery as bench

    report = bench.run(["--events=300", "--rounds=1", f"--work_dir={tmp_path}"])
    for name in ("loop", "ours"):
        method = report["methods"][name]
        assert method["problems"] == [] and method["rounds"][0]["rows"] == 300, name
        assert method["events_per_s"] > 0
    assert report["ours_over_loop"] > 0


@given(_typed_records(), st.lists(st.sampled_from([b"", b"\n", b"NaN", b'{"x": 1}\n{"y": 2}', b"[1]", b"\xff"]),
                                  max_size=2))
@settings(max_examples=200, deadline=None)
def test_the_fast_json_path_agrees_with_the_per_value_path(records, odd_values):
    from beam_ml.ingest.values import json_values_to_table

    schema = infer_schema(records)
    values = [json.dumps(r).encode() for r in records] + odd_values
    fast = json_values_to_table(values, schema)
    if odd_values:
        assert fast is None
    decoded = [json.loads(v) for v in values[:len(records)]]
    slow, kept, errors = records_to_table(decoded, schema)
    if fast is not None:
        assert errors == [] and fast.equals(slow.combine_chunks())


@pytest.mark.integration
@pytest.mark.slow
def test_two_worker_processes_ingest_every_event_once(kafka_broker, new_topic, bq_dataset, bq_endpoint, fraud_csv):
    """--direct_running_mode=multi_processing --direct_num_workers=2: the sink's DoFns set up in two processes."""
    topic = new_topic(partitions=4, prefix="mp")
    events = _fraud_events(fraud_csv, 200)
    _send(kafka_broker, topic, [(i, json.dumps(e).encode()) for i, e in events], partitions=4)
    result = kafka_to_bigquery.run(_base_argv(kafka_broker, topic, bq_dataset, bq_endpoint, "--group_id=mp",
                                              f"--max_records={len(events)}", "--max_read_time=180",
                                              "--direct_running_mode=multi_processing", "--direct_num_workers=2"))
    assert result.counts["records_in"] == result.counts["rows_written"] == len(events)
    rows = bq_dataset.rows("tx")
    assert sorted(r["event_id"] for r in rows) == sorted(i for i, _ in events)
    sent = dict(events)
    for r in rows:
        assert r["Amount"] == pytest.approx(float(sent[r["event_id"]]["Amount"]))
