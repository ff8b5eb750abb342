"""The record formats and spec inference from decoded records (pure: no servers)."""
import csv

import fastavro
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from beam_ml.errors import UserError
from beam_ml.formats import (VALUE_FORMATS, avro_type_hints, cell_text, format_from_flags, kafka_dead_letter,
                             record_format)
from beam_ml.io.kafka import KafkaRecord
from beam_ml.spec import infer_spec, infer_spec_from_rows, infer_spec_from_table

AVSC = {"type": "record", "name": "Row", "fields": [
    {"name": "amount", "type": "double"}, {"name": "n", "type": "long"}, {"name": "ok", "type": "boolean"},
    {"name": "zip", "type": "string"}, {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
    {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "mixed", "type": ["null", "double", "string"]}, {"name": "maybe", "type": ["null", "double"]},
    {"name": "tags", "type": {"type": "array", "items": "string"}}]}


def test_each_format_round_trips_and_refuses_with_a_reason():
    row = {"a": "x", "b": 1.5}
    for fmt in (record_format("json"), record_format("csv", columns=["a", "b"])):
        decoded = fmt.decode(fmt.encode(row))
        assert decoded["a"] == "x" and float(decoded["b"]) == 1.5
    avro = record_format("avro", avro_schema=fastavro.parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "double"}]}))
    assert avro.decode(avro.encode(row)) == row
    for fmt, value, reason in [(record_format("json"), b"[1]", "expected a JSON object"),
                               (record_format("csv", columns=["a", "b"]), b"1,2,3", "expected 2 fields"),
                               (avro, b"\x02", "invalid Avro"), (avro, None, "tombstone")]:
        with pytest.raises(ValueError, match=reason):
            fmt.decode(value)
    assert set(VALUE_FORMATS) == {"json", "csv", "avro", "avro_confluent"}


def test_dead_letters_name_topic_partition_offset_and_keep_binary_as_base64():
    record = KafkaRecord(None, b"\xff\x00", "t", 2, 41, 0)
    dead = kafka_dead_letter(record, "bad", record_format("avro", avro_schema=fastavro.parse_schema(AVSC)))
    assert (dead.source, dead.position, dead.reason, dead.raw, dead.stage) == ("t/2", 41, "bad", "base64:/wA=",
                                                                               "parse")
    assert kafka_dead_letter(record, "bad", record_format("json")).raw == "\ufffd\x00"


def test_flags_fail_in_one_line_naming_the_flag():
    class O:
        value_format, avro_schema, schema_registry_url = "avro", None, None
    with pytest.raises(UserError, match="^--avro_schema: required"):
        format_from_flags(O(), "t")
    O.value_format, O.avro_schema = "avro", "/no/such.avsc"
    with pytest.raises(UserError, match="^--avro_schema: file not found"):
        format_from_flags(O(), "t")


def test_avro_types_are_hints():
    assert avro_type_hints(fastavro.parse_schema(AVSC)) == {
        "amount": "numeric", "n": "numeric", "ok": "numeric", "zip": "text", "kind": "text", "when": "drop",
        "maybe": "numeric", "tags": "drop"}  # 'mixed' (two types) has none: its values decide


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["yes", "no"]), st.floats(-1e6, 1e6, allow_nan=False),
                          st.sampled_from(["red", "blue", "green", "", "NA"]),
                          st.one_of(st.none(), st.integers(-5, 5))), min_size=8, max_size=60))
def test_rows_and_the_same_csv_give_the_same_spec(tmp_path_factory, data):
    """No CSV detour, same decisions: a row sample and the CSV of those rows infer one spec."""
    rows = [{"label": l, "x": x, "color": c, "k": k} for l, x, c, k in data]
    rows += [dict(rows[0], label="yes"), dict(rows[0], label="no")] * 2  # both classes, each at least twice
    path = tmp_path_factory.mktemp("s") / "rows.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "x", "color", "k"])
        for r in rows:
            w.writerow([cell_text(r[c]) for c in ("label", "x", "color", "k")])
    from_csv = infer_spec(str(path), "label", delimiter=",")
    from_rows = infer_spec_from_rows(rows, "label", "the rows")
    assert [c.to_dict() for c in from_rows.columns] == [c.to_dict() for c in from_csv.columns]
    assert (from_rows.task, from_rows.label_classes) == (from_csv.task, from_csv.label_classes)


def test_schema_types_beat_values():
    rows = [{"zip": str(10000 + i % 7), "amount": float(i), "flag": i % 2 == 0, "y": "a" if i % 3 else "b"}
            for i in range(100)]
    guessed = {c.name: c.role for c in infer_spec_from_rows(rows, "y", "rows").columns}
    assert guessed["zip"] == "numeric"  # digits look like numbers
    typed = {c.name: c.role for c in infer_spec_from_rows(rows, "y", "rows", hints={"zip": "text"}).columns}
    assert typed["zip"] == "categorical" and typed["amount"] == "numeric"
    table = pa.table({"zip": pa.array([r["zip"] for r in rows]), "amount": [r["amount"] for r in rows],
                      "flag": [r["flag"] for r in rows], "y": [r["y"] for r in rows],
                      "ts": pa.array(range(100), pa.timestamp("s"))})
    roles = {c.name: c.role for c in infer_spec_from_table(table, "y", "a table").columns}
    assert roles == {"zip": "categorical", "amount": "numeric", "flag": "numeric", "y": "label", "ts": "drop"}
    with pytest.raises(UserError, match="--label: field 'nope' is not in rows"):
        infer_spec_from_rows(rows, "nope", "rows")


def test_cell_text_is_what_the_chunk_parser_reads():
    assert [cell_text(v) for v in (None, True, 1.5, 3, "a\nb", {"k": [1]})] == \
        ["", "true", "1.5", "3", "a b", '{"k": [1]}']
    assert cell_text(False, numeric=True) == "0"
