"""BigQuery IO: schema mapping, rows ↔ batches, row checks, dead-letter rows, and real
reads and writes against the BigQuery emulator (bqemulator on 127.0.0.1)."""
import base64
import json
import math
import os
import socket
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.io import bigquery as bq
from beam_ml.io.batches import LINE_COLUMN, arrow_schema_for
from beam_ml.jobs.settings import bigquery_endpoint
from beam_ml.options import BigQueryOptions, parse_pipeline_options
from beam_ml.spec import ColumnSpec, DatasetSpec
from beam_ml.testing.bigquery import MAKE_TARGET, BigQueryEmulator


def _spec():
    return DatasetSpec(columns=[ColumnSpec("id", "key"), ColumnSpec("amount", "numeric"),
                                ColumnSpec("n", "numeric"), ColumnSpec("kind", "categorical", max_categories=5),
                                ColumnSpec("ssn", "mask"), ColumnSpec("note", "drop"), ColumnSpec("label", "label")],
                       task="binary", label="label", label_classes=["no", "yes"]).validate()


def _good_rows(n=30):
    return [{"id": f"r{i}", "amount": i * 1.5, "n": float(i % 7), "kind": "abc"[i % 3], "ssn": "123456789",
             "note": "free text", "label": "yes" if i % 4 == 0 else "no"} for i in range(n)]


# ------------------------------------------------------------------ pure functions
def test_parse_table_forms_and_errors():
    assert bq.parse_table("p:d.t") == ("p", "d", "t")
    assert bq.parse_table("my-proj.d.t") == ("my-proj", "d", "t")
    assert bq.parse_table("d.t", project="p") == ("p", "d", "t")
    with pytest.raises(UserError, match="--output_table: 'd.t' names no project"):
        bq.parse_table("d.t")
    with pytest.raises(UserError, match="--input_table: expected PROJECT:DATASET.TABLE, got 'nodots'"):
        bq.parse_table("nodots", "--input_table")


def test_table_schema_follows_roles():
    schema = bq.table_schema_for(_spec(), extra_fields=[{"name": "score", "type": "FLOAT64", "mode": "NULLABLE"}])
    assert [(f["name"], f["type"], f["mode"]) for f in schema["fields"]] == [
        ("id", "STRING", "NULLABLE"), ("amount", "FLOAT64", "NULLABLE"), ("n", "FLOAT64", "NULLABLE"),
        ("kind", "STRING", "NULLABLE"), ("ssn", "STRING", "NULLABLE"), ("note", "STRING", "NULLABLE"),
        ("label", "STRING", "NULLABLE"), ("score", "FLOAT64", "NULLABLE")]
    assert "label" not in [f["name"] for f in bq.table_schema_for(_spec(), with_label=False)["fields"]]
    with pytest.raises(UserError, match="'amount' is both a dataset column and an extra field"):
        bq.table_schema_for(_spec(), extra_fields=[{"name": "amount", "type": "STRING"}])


def test_type_hints_from_bigquery_types():
    schema = [{"name": n, "type": t, "mode": m} for n, t, m in [
        ("a", "INTEGER", None), ("b", "FLOAT", "NULLABLE"), ("c", "NUMERIC", None), ("d", "BOOLEAN", None),
        ("e", "STRING", None), ("f", "TIMESTAMP", None), ("g", "DATE", None), ("h", "BYTES", None),
        ("i", "RECORD", None), ("j", "STRING", "REPEATED"), ("k", "INT64", "REQUIRED")]]
    assert bq.type_hints(schema) == {"a": "numeric", "b": "numeric", "c": "numeric", "d": "numeric", "e": "text",
                                     "f": "drop", "g": "drop", "h": "drop", "i": "drop", "j": "drop",
                                     "k": "numeric"}


def test_infer_spec_from_table_uses_the_spec_logic_and_type_hints():
    schema = [{"name": "tx_id", "type": "STRING"}, {"name": "amount", "type": "FLOAT64"},
              {"name": "flag", "type": "BOOL"}, {"name": "city", "type": "STRING"},
              {"name": "created", "type": "TIMESTAMP"}, {"name": "Class", "type": "INT64"}]
    rows = [{"tx_id": f"t{i}", "amount": i * 0.5, "flag": i % 2 == 0, "city": ["Oslo", "Rome"][i % 2],
             "created": "2024-01-01 00:00:00", "Class": int(i % 10 == 0)} for i in range(200)]
    spec = bq.infer_spec_from_table(schema, rows, "Class", "test:ds.tx")
    assert {c.name: c.role for c in spec.columns} == {"tx_id": "key", "amount": "numeric", "flag": "numeric",
                                                      "city": "categorical", "created": "drop", "Class": "label"}
    assert spec.task == "binary" and spec.label_classes == ["0", "1"]
    assert bq.rows_to_chunk(rows, "test:ds.tx", spec).dead == []  # the reader agrees with the inference
    bool_label = [dict(f, type="BOOL") if f["name"] == "Class" else f for f in schema]
    bool_rows = [dict(r, Class=r["Class"] == 1) for r in rows]
    spec = bq.infer_spec_from_table(bool_label, bool_rows, "Class", "test:ds.tx")
    assert spec.label_classes == ["false", "true"] and spec.column("flag").role == "numeric"
    chunk = bq.rows_to_chunk(bool_rows, "test:ds.tx", spec)
    assert chunk.dead == [] and chunk.batch.column("flag").to_pylist()[:2] == [[1.0], [0.0]]
    with pytest.raises(UserError, match="--label: column 'nope' is not in test:ds.tx"):
        bq.infer_spec_from_table(schema, rows, "nope", "test:ds.tx")
    with pytest.raises(UserError, match="test:ds.tx: no rows"):
        bq.infer_spec_from_table(schema, [], "Class", "test:ds.tx")


def test_rows_to_chunk_batches_like_csv_and_dead_letters_name_the_row():
    spec = _spec()
    rows = _good_rows(4) + [
        {"id": "bad-num", "amount": "abc", "n": 1, "kind": "a", "ssn": "123456789", "note": None, "label": "no"},
        {"id": "null-label", "amount": 1.0, "n": 1, "kind": "a", "ssn": "123456789", "note": None, "label": None},
        {"id": "odd-label", "amount": 1.0, "n": 1, "kind": "a", "ssn": "123456789", "note": None, "label": "maybe"},
        {"id": "no-kind", "amount": 1.0, "n": 1, "ssn": None, "note": None, "label": "no"},
        {"id": "missing", "amount": None, "n": "NA", "kind": None, "ssn": None, "note": None, "label": "yes"},
    ]
    r = bq.rows_to_chunk(rows, "test:ds.tx", spec)
    assert r.lines == len(rows) == r.batch.num_rows + len(r.dead)
    assert r.batch.schema == arrow_schema_for(spec)
    b = r.batch.to_pydict()
    assert b["id"] == ["r0", "r1", "r2", "r3", "missing"]
    assert [v[0] for v in b["amount"]][:4] == [0.0, 1.5, 3.0, 4.5]
    assert math.isnan(b["amount"][4][0]) and math.isnan(b["n"][4][0])  # NULL and the spec's NA token
    assert b["kind"][4] == [b""]
    assert b[LINE_COLUMN] == [bq.row_fingerprint(rows[i], spec) for i in (0, 1, 2, 3, 8)]
    dead = {json.loads(d.raw)["id"]: d for d in r.dead}
    assert dead["bad-num"].reason == "column 'amount': expected a number, got 'abc'"
    assert dead["null-label"].reason == "column 'label': missing label"
    assert dead["odd-label"].reason == "column 'label': unknown label 'maybe', expected one of ['no', 'yes']"
    assert dead["no-kind"].reason == "missing field 'kind'"
    for key, d in dead.items():
        row = next(x for x in rows if x["id"] == key)
        assert (d.source, d.position) == ("test:ds.tx", bq.row_fingerprint(row, spec))
    assert "123456789" not in dead["bad-num"].raw and "*****6789" in dead["bad-num"].raw


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_numbers = st.one_of(st.none(), st.integers(-10**12, 10**12), st.booleans(),
                     st.floats(allow_nan=False, allow_infinity=False, width=32), _text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"amount": _numbers, "kind": st.one_of(st.none(), _text),
                                        "label": st.sampled_from(["no", "yes", "", "other", None])}),
                max_size=25))
def test_rows_to_chunk_property_every_row_is_counted_and_values_survive(rows):
    spec = DatasetSpec(columns=[ColumnSpec("amount", "numeric"), ColumnSpec("kind", "categorical", max_categories=9),
                                ColumnSpec("label", "label")], task="binary", label="label",
                       label_classes=["no", "yes"]).validate()
    r = bq.rows_to_chunk(rows, "t", spec)
    good = r.batch.num_rows if r.batch is not None else 0
    assert r.lines == len(rows) == good + len(r.dead)
    if r.batch is None:
        return
    by_id = {bq.row_fingerprint(row, spec): row for row in rows}
    b = r.batch.to_pydict()
    for line, amount, kind, label in zip(b[LINE_COLUMN], b["amount"], b["kind"], b["label"]):
        row = by_id[line]
        assert label[0].decode() == row["label"] in ("no", "yes")
        v = row["amount"]
        if v is None or (isinstance(v, str) and v.strip() in spec.na_values):
            assert math.isnan(amount[0])
        else:
            expected = np.float32(float(v) if not isinstance(v, bool) else float(int(v)))
            assert np.isclose(amount[0], expected, rtol=1e-6, atol=0, equal_nan=True), (v, amount[0])
        text = "" if row["kind"] is None else row["kind"].replace("\r", " ").replace("\n", " ")
        assert kind[0].decode() == ("" if text in spec.na_values else text)
    for d in r.dead:
        assert d.source == "t" and d.position in by_id


def test_validate_row_against_a_schema():
    schema = {"fields": [
        {"name": "id", "type": "STRING", "mode": "REQUIRED"}, {"name": "n", "type": "INTEGER"},
        {"name": "x", "type": "FLOAT"}, {"name": "ok", "type": "BOOLEAN"}, {"name": "ts", "type": "TIMESTAMP"},
        {"name": "tags", "type": "STRING", "mode": "REPEATED"},
        {"name": "meta", "type": "RECORD", "fields": [{"name": "k", "type": "STRING"}, {"name": "v", "type": "INT64"}]},
    ]}
    good = {"id": "a", "n": "12", "x": 1, "ok": True, "ts": "2024-05-01T10:00:00Z", "tags": ["a"],
            "meta": {"k": "z", "v": 3}}
    assert bq.validate_row(good, schema) is None
    assert bq.validate_row({"id": "a"}, schema) is None  # NULLABLE fields may be absent
    cases = {
        "field 'id': missing value in a REQUIRED field": {"n": 1},
        "field 'n': expected an integer, got 'x'": {"id": "a", "n": "x"},
        f"field 'n': {2**70} is out of the INT64 range": {"id": "a", "n": 2**70},
        "field 'x': expected FLOAT64, got 'abc'": {"id": "a", "x": "abc"},
        "field 'x': nan is not a JSON number (NaN/Infinity)": {"id": "a", "x": float("nan")},
        "field 'ok': expected BOOL, got 1": {"id": "a", "ok": 1},
        "field 'ts': expected TIMESTAMP, got 'yesterday'": {"id": "a", "ts": "yesterday"},
        "field 'tags': expected a list (REPEATED), got str": {"id": "a", "tags": "a"},
        "field 'meta.v': expected an integer, got 'q'": {"id": "a", "meta": {"k": "z", "v": "q"}},
        "no such field(s) extra in the table schema": {"id": "a", "extra": 1},
    }
    for reason, row in cases.items():
        assert bq.validate_row(row, schema) == reason, row
    assert bq.validate_row({"id": "a", "extra": 1}, schema, ignore_unknown=True) is None


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({"s": st.one_of(st.none(), _text), "i": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
                              "f": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
                              "b": st.one_of(st.none(), st.booleans())}),
       st.sampled_from(["s", "i", "f", "b"]), st.sampled_from([[1], {"a": 1}, "not-a-number-x"]))
def test_validate_row_property_valid_rows_pass_and_a_wrong_value_is_named(row, field, wrong):
    schema = [{"name": "s", "type": "STRING"}, {"name": "i", "type": "INT64"},
              {"name": "f", "type": "FLOAT64"}, {"name": "b", "type": "BOOL"}]
    assert bq.validate_row(row, schema) is None
    if field == "s" and isinstance(wrong, str):
        wrong = 7
    reason = bq.validate_row(dict(row, **{field: wrong}), schema)
    assert reason is not None and reason.startswith(f"field '{field}'")


def test_dead_letter_rows_fit_googles_schema():
    names = [f["name"] for f in bq.DEAD_LETTER_SCHEMA["fields"]]
    assert names[:6] == ["timestamp", "payloadString", "payloadBytes", "attributes", "errorMessage", "stacktrace"]
    assert names[6:] == ["stage", "source_topic", "partition", "offset"]
    d = DeadLetter("transactions/2", 41, "field 'V1': expected a number, got 'x'", '{"V1": "x"}', "validate")
    row = bq.dead_letter_row(d, 1700000000.25, from_kafka=True)
    assert bq.validate_row(row, bq.DEAD_LETTER_SCHEMA) is None
    assert row["timestamp"] == "2023-11-14 22:13:20.250000 UTC"
    assert base64.b64decode(row["payloadBytes"]).decode() == row["payloadString"] == '{"V1": "x"}'
    assert (row["source_topic"], row["partition"], row["offset"], row["stage"]) == ("transactions", 2, 41, "validate")
    assert row["errorMessage"] == d.reason
    assert {a["key"]: a["value"] for a in row["attributes"]} == {"source": "transactions/2", "position": "41"}
    file_row = bq.dead_letter_row(DeadLetter("data/in.csv", 7, "bad", "a,b"), 0.0)
    assert (file_row["source_topic"], file_row["partition"], file_row["offset"]) == (None, None, None)


def test_failed_row_becomes_a_dead_letter_with_bigquerys_reason():
    d = bq.failed_row_to_dead_letter("p:d.t", {"x": "abc", "topic": "tx", "partition": 1, "offset": 9},
                                     [{"reason": "invalid", "location": "x", "message": "Cannot convert"}],
                                     origin=lambda r: (f"{r['topic']}/{r['partition']}", r["offset"]))
    assert (d.source, d.position, d.stage) == ("tx/1", 9, "bigquery")
    assert d.reason == "BigQuery rejected the row for p:d.t: invalid: Cannot convert (field 'x')"


def test_endpoint_flags_are_checked():
    opts = parse_pipeline_options(["--bigquery_endpoint=http://127.0.0.1:9050",
                                   "--bigquery_storage_endpoint=127.0.0.1:9060"], BigQueryOptions)
    assert bigquery_endpoint(opts) == bq.BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")
    assert bigquery_endpoint(parse_pipeline_options([], BigQueryOptions)) is None
    with pytest.raises(UserError, match="--bigquery_endpoint: expected http://HOST:PORT, got '127.0.0.1:9050'"):
        bq.BigQueryEndpoint("127.0.0.1:9050")
    with pytest.raises(UserError, match="--bigquery_storage_endpoint: only meaningful with --bigquery_endpoint"):
        bigquery_endpoint(parse_pipeline_options(["--bigquery_storage_endpoint=h:1"], BigQueryOptions))
    with pytest.raises(UserError, match="--create_disposition"):
        parse_pipeline_options(["--create_disposition=SOMETIMES"], BigQueryOptions)
    from beam_ml.testing import find_free_port

    port = find_free_port()
    with pytest.raises(UserError, match=f"--bigquery_endpoint: nothing answers at 127.0.0.1:{port}"):
        bq.BigQueryEndpoint(f"http://127.0.0.1:{port}").check(timeout=1)


def test_write_settings_fail_fast():
    with pytest.raises(UserError, match="streaming inserts only append"):
        bq.WriteRowsToBigQuery("p:d.t", {"fields": []}, write_disposition="WRITE_TRUNCATE")
    with pytest.raises(UserError, match="--output_table: creating p:d.t needs a schema"):
        bq.WriteRowsToBigQuery("p:d.t", None)
    with pytest.raises(UserError, match="--input_table / --input_query: give exactly one"):
        bq.ReadFromBigQueryBatches(_spec())
    with pytest.raises(UserError, match="--bigquery_storage_endpoint: reading through --bigquery_endpoint"):
        bq.ReadFromBigQueryBatches(_spec(), table="p:d.t", endpoint=bq.BigQueryEndpoint("http://127.0.0.1:1"))


def test_missing_emulator_venv_names_the_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"run `{MAKE_TARGET}`"):
        BigQueryEmulator(venv=str(tmp_path / "nowhere")).start()


def test_emulator_that_fails_to_start_reports_its_log(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "bqemulator"
    script.write_text("#!/bin/sh\necho 'duckdb: extension spatial not found' >&2\nexit 3\n")
    script.chmod(0o755)
    ext = venv / "home" / ".duckdb" / "extensions" / "v1.5.5" / "linux_amd64"
    ext.mkdir(parents=True)
    (ext / "spatial.duckdb_extension").write_bytes(b"")
    emulator = BigQueryEmulator(venv=str(venv), startup_timeout=10)
    with pytest.raises(RuntimeError, match="(?s)did not start.*extension spatial not found"):
        emulator.start()
    assert emulator.pid is None


def test_without_an_endpoint_beams_io_is_left_as_is():
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    factory, storage = bigquery_tools.BigQueryWrapper._bigquery_client, beam_bigquery.bq_storage
    p = beam.Pipeline()
    _ = p | bq.ReadFromBigQueryBatches(_spec(), table="proj:ds.tx")
    _ = p | beam.Create([{"id": "a"}]) | bq.WriteRowsToBigQuery("proj:ds.out", bq.table_schema_for(_spec()))
    assert bigquery_tools.BigQueryWrapper._bigquery_client == factory and beam_bigquery.bq_storage is storage
    assert not p.options.view_as(beam.options.pipeline_options.SetupOptions).beam_plugins
    assert bq.ENDPOINT_ENV not in os.environ


def test_importing_the_io_patches_nothing_and_a_read_at_an_endpoint_asks_for_the_redirect(tmp_path):
    code = ("import os; os.environ['%s'] = '{\"rest\": \"http://127.0.0.1:1\"}'\n"
            "from apache_beam.io.gcp import bigquery_tools\n"
            "factory = bigquery_tools.BigQueryWrapper.__dict__['_bigquery_client']\n"
            "import beam_ml.io.bigquery, beam_ml.jobs.bigquery, beam_ml.jobs.train\n"
            "assert bigquery_tools.BigQueryWrapper.__dict__['_bigquery_client'] is factory\n" % bq.ENDPOINT_ENV)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with socket.create_server(("127.0.0.1", 0)) as rest, socket.create_server(("127.0.0.1", 0)) as storage:
        endpoint = bq.BigQueryEndpoint(f"http://127.0.0.1:{rest.getsockname()[1]}",
                                       f"127.0.0.1:{storage.getsockname()[1]}")
        with pytest.raises(ValueError, match="call beam_ml.io.bigquery.use_endpoint"):
            _ = beam.Pipeline() | bq.ReadFromBigQueryBatches(_spec(), table="proj:ds.tx", endpoint=endpoint)
        p = beam.Pipeline()
        bq.use_endpoint(endpoint, options=p.options)
        try:
            _ = p | bq.ReadFromBigQueryBatches(_spec(), table="proj:ds.tx", endpoint=endpoint)
            assert bq.ENDPOINT_PLUGIN in p.options.view_as(beam.options.pipeline_options.SetupOptions).beam_plugins
        finally:
            bq.clear_endpoint()


def test_use_endpoint_redirects_beams_read_clients_and_clear_restores_them():
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp import bigquery_tools

    factory, storage = bigquery_tools.BigQueryWrapper._bigquery_client, beam_bigquery.bq_storage
    bq.use_endpoint(bq.BigQueryEndpoint("http://127.0.0.1:1", "127.0.0.1:2"))
    try:
        client = bigquery_tools.BigQueryWrapper._bigquery_client(PipelineOptions())
        assert client.url == "http://127.0.0.1:1/bigquery/v2/"
        assert beam_bigquery.bq_storage.types is storage.types  # same request types, own client
        assert json.loads(os.environ[bq.ENDPOINT_ENV])["storage"] == "127.0.0.1:2"
    finally:
        bq.clear_endpoint()
    assert bigquery_tools.BigQueryWrapper._bigquery_client == factory
    assert beam_bigquery.bq_storage is storage and bq.ENDPOINT_ENV not in os.environ


# ------------------------------------------------------------- against the emulator
def _load_loose_table(ds, name, rows):
    """A table whose columns are all STRING (as a careless upstream loads them), with rows."""
    from google.cloud import bigquery

    fields = [bigquery.SchemaField(n, "STRING") for n in ("id", "amount", "n", "kind", "ssn", "note", "label")]
    ds.client.create_table(bigquery.Table(ds.table_id(name), schema=fields))
    assert ds.client.insert_rows_json(ds.table_id(name), rows, retry=None) == []


def _read(pipeline, spec, endpoint, **kwargs):
    bq.use_endpoint(endpoint, options=pipeline.options)  # what a job given --bigquery_endpoint does
    out = pipeline | bq.ReadFromBigQueryBatches(spec, endpoint=endpoint, **kwargs)
    rows = out["rows"] | "RowIds" >> beam.FlatMap(
        lambda b: zip(b.column("id").to_pylist(), b.column(LINE_COLUMN).to_pylist(),
                      [v[0] for v in b.column("amount").to_pylist()], [v[0] for v in b.column("label").to_pylist()]))
    dead = out[DEAD_TAG] | "DeadIds" >> beam.Map(lambda d: (json.loads(d.raw)["id"], d.source, d.position, d.reason))
    return rows, dead


@pytest.mark.integration
def test_write_a_specd_table_then_read_it_back_as_batches(bq_dataset, bq_endpoint):
    import glob
    import tempfile

    scratch = set(glob.glob(os.path.join(tempfile.gettempdir(), "beam_ml-bq-load-*")))
    spec, rows = _spec(), _good_rows(30)
    with TestPipeline() as p:
        dead = (p | beam.Create(rows)
                | bq.WriteRowsToBigQuery(bq_dataset.table("tx"), bq.table_schema_for(spec), method=bq.FILE_LOADS,
                                         endpoint=bq_endpoint))
        assert_that(dead, equal_to([]))
    assert sorted(r["id"] for r in bq_dataset.rows("tx")) == sorted(r["id"] for r in rows)
    # The load files (PII included) do not outlive the load jobs.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "beam_ml-bq-load-*"))) == scratch

    expected = [(r["id"], bq.row_fingerprint(r, spec), r["amount"], r["label"].encode())
                for r in rows]
    p = TestPipeline()
    good, dead = _read(p, spec, bq_endpoint, table=bq_dataset.table("tx"))
    assert_that(good, equal_to(expected), label="Good")
    assert_that(dead, equal_to([]), label="NoDead")
    result = p.run()
    result.wait_until_finish()
    assert metrics.query_counter(result, metrics.READ, "lines_in") == 30
    assert metrics.query_counter(result, metrics.READ, "rows_good") == 30


@pytest.mark.integration
def test_read_loose_table_dead_letters_bad_rows_and_counts_add_up(bq_dataset, bq_endpoint):
    good = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in _good_rows(12)]
    bad = [dict(good[0], id="null-label", label=None), dict(good[0], id="odd-label", label="maybe"),
           dict(good[0], id="text-amount", amount="twelve")]
    _load_loose_table(bq_dataset, "loose", good + bad)
    table = bq_dataset.table("loose")
    p = TestPipeline()
    rows, dead = _read(p, _spec(), bq_endpoint, table=table)
    assert_that(rows | beam.Map(lambda t: t[0]), equal_to([r["id"] for r in good]), label="Good")
    fp = {r["id"]: bq.row_fingerprint(r, _spec()) for r in bad}
    assert_that(dead, equal_to([
        ("null-label", table, fp["null-label"], "column 'label': missing label"),
        ("odd-label", table, fp["odd-label"], "column 'label': unknown label 'maybe', expected one of ['no', 'yes']"),
        ("text-amount", table, fp["text-amount"], "column 'amount': expected a number, got 'twelve'"),
    ]), label="Dead")
    result = p.run()
    result.wait_until_finish()
    counts = {n: metrics.query_counter(result, metrics.READ, n) for n in ("lines_in", "rows_good", "rows_dead")}
    assert counts == {"lines_in": 15, "rows_good": 12, "rows_dead": 3}


@pytest.mark.integration
def test_query_read_runs_standard_sql_and_leaves_no_scratch_table(bq_dataset, bq_endpoint):
    good = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in _good_rows(20)]
    _load_loose_table(bq_dataset, "loose", good + [dict(good[0], id="odd", label="maybe")])
    query = f"SELECT * FROM `{bq_dataset.table_id('loose')}` WHERE label != 'no' AND SAFE_CAST(n AS FLOAT64) < 5"
    with TestPipeline() as p:
        rows, dead = _read(p, _spec(), bq_endpoint, query=query, project=bq_dataset.project)
        assert_that(rows | beam.Map(lambda t: t[0]),
                    equal_to([r["id"] for r in good if r["label"] == "yes" and float(r["n"]) < 5]), label="Good")
        assert_that(dead | beam.Map(lambda t: (t[0], t[1][:12])), equal_to([("odd", "query: SELEC")]), label="Dead")
    left = [d.dataset_id for d in bq_dataset.client.list_datasets() if d.dataset_id.startswith("beam_ml_tmp_")]
    assert left == []


@pytest.mark.integration
def test_query_errors_are_user_errors(bq_dataset, bq_endpoint):
    with pytest.raises(UserError, match="--input_query: the query failed"):
        with TestPipeline() as p:
            _read(p, _spec(), bq_endpoint, query="SELECT * FROM `test.no_such_dataset.t`", project="test")


def _scored(i):
    return {"id": f"r{i}", "score": i / 100, "n": i}


_OUT_SCHEMA = {"fields": [{"name": "id", "type": "STRING", "mode": "NULLABLE"},
                          {"name": "score", "type": "FLOAT64", "mode": "NULLABLE"},
                          {"name": "n", "type": "INT64", "mode": "NULLABLE"}]}


@pytest.mark.integration
def test_streaming_insert_rejected_rows_land_in_the_dead_letter_table(bq_dataset, bq_endpoint):
    rows = [_scored(i) for i in range(20)] + [{"id": "bad-a", "score": "high", "n": 1},
                                              {"id": "bad-b", "score": "low", "n": 2}]
    p = TestPipeline()
    # validate=False: the rows reach BigQuery, which rejects the two bad ones itself.
    dead = (p | beam.Create(rows)
            | bq.WriteRowsToBigQuery(bq_dataset.table("scores"), _OUT_SCHEMA, endpoint=bq_endpoint, validate=False,
                                     origin=lambda r: ("events/0", int(r["n"]))))
    _ = dead | bq.WriteDeadLettersToBigQuery(bq_dataset.table("scores_error_records"), from_kafka=True,
                                             endpoint=bq_endpoint, clock=lambda: 1700000000.0)
    result = p.run()
    result.wait_until_finish()
    assert sorted(r["id"] for r in bq_dataset.rows("scores")) == sorted(f"r{i}" for i in range(20))
    dlq = sorted(bq_dataset.rows("scores_error_records"), key=lambda r: r["offset"])
    assert [(r["stage"], r["source_topic"], r["partition"], r["offset"]) for r in dlq] == [
        ("bigquery", "events", 0, 1), ("bigquery", "events", 0, 2)]
    for r, bad in zip(dlq, ("bad-a", "bad-b")):
        assert r["errorMessage"].startswith(f"BigQuery rejected the row for {bq_dataset.table('scores')}: invalid:")
        assert json.loads(r["payloadString"])["id"] == bad and r["payloadBytes"] == r["payloadString"].encode()
        assert r["timestamp"].timestamp() == 1700000000.0
    assert metrics.query_counter(result, metrics.WRITE, "rows_in") == 22
    assert metrics.query_counter(result, metrics.WRITE, "dead_rejected") == 2


@pytest.mark.integration
def test_rows_that_do_not_fit_the_schema_never_reach_bigquery(bq_dataset, bq_endpoint):
    rows = [_scored(i) for i in range(10)] + [
        {"id": "overflow", "score": 1.0, "n": 2**70},   # the emulator would answer 500 and be retried
        {"id": "unknown", "score": 1.0, "extra": 1}, {"id": "nan", "score": float("nan"), "n": 1}]
    p = TestPipeline()
    dead = (p | beam.Create(rows)
            | bq.WriteRowsToBigQuery(bq_dataset.table("scores"), _OUT_SCHEMA, endpoint=bq_endpoint))
    assert_that(dead | beam.Map(lambda d: (json.loads(d.raw)["id"], d.stage, d.source, d.reason.split(": ", 1)[1])),
                equal_to([("overflow", "schema", bq_dataset.table("scores"), f"field 'n': {2**70} is out of the INT64 range"),
                          ("unknown", "schema", bq_dataset.table("scores"), "no such field(s) extra in the table schema"),
                          ("nan", "schema", bq_dataset.table("scores"), "field 'score': nan is not a JSON number (NaN/Infinity)")]))
    result = p.run()
    result.wait_until_finish()
    assert len(bq_dataset.rows("scores")) == 10
    written = metrics.query_counter(result, metrics.WRITE, "rows_in") - metrics.query_counter(result, metrics.WRITE, "dead_schema")
    assert written == 10


@pytest.mark.integration
def test_file_loads_write_and_truncate(bq_dataset, bq_endpoint, tmp_path):
    table = bq_dataset.table("loaded")
    for n, disposition in ((5, "WRITE_APPEND"), (7, "WRITE_APPEND"), (3, "WRITE_TRUNCATE")):
        with TestPipeline() as p:
            dead = (p | beam.Create([_scored(i) for i in range(n)])
                    | bq.WriteRowsToBigQuery(table, _OUT_SCHEMA, method=bq.FILE_LOADS, write_disposition=disposition,
                                             endpoint=bq_endpoint, temp_location=str(tmp_path)))
            assert_that(dead, equal_to([]))
    assert sorted(r["id"] for r in bq_dataset.rows("loaded")) == ["r0", "r1", "r2"]
    with pytest.raises(Exception, match="absent"):  # CREATE_NEVER: the load job fails, naming the table
        with TestPipeline() as p:
            _ = (p | beam.Create([_scored(1)])
                 | bq.WriteRowsToBigQuery(bq_dataset.table("absent"), _OUT_SCHEMA, method=bq.FILE_LOADS,
                                          create_disposition="CREATE_NEVER", endpoint=bq_endpoint,
                                          temp_location=str(tmp_path)))


@pytest.mark.integration
def test_dead_letter_table_has_googles_schema(bq_dataset, bq_endpoint):
    with TestPipeline() as p:
        _ = (p | beam.Create([DeadLetter("in.csv", 3, "bad", "a,b", "parse")])
             | bq.WriteDeadLettersToBigQuery(bq_dataset.table("dlq"), endpoint=bq_endpoint))
    table = bq_dataset.client.get_table(bq_dataset.table_id("dlq"))
    got = [(f.name, f.field_type, f.mode, [(s.name, s.field_type) for s in f.fields]) for f in table.schema]
    assert got == [
        ("timestamp", "TIMESTAMP", "REQUIRED", []), ("payloadString", "STRING", "NULLABLE", []),
        ("payloadBytes", "BYTES", "NULLABLE", []),
        ("attributes", "RECORD", "REPEATED", [("key", "STRING"), ("value", "STRING")]),
        ("errorMessage", "STRING", "NULLABLE", []), ("stacktrace", "STRING", "NULLABLE", []),
        ("stage", "STRING", "NULLABLE", []), ("source_topic", "STRING", "NULLABLE", []),
        ("partition", "INTEGER", "NULLABLE", []), ("offset", "INTEGER", "NULLABLE", [])]
    (row,) = bq_dataset.rows("dlq")
    assert (row["payloadString"], row["errorMessage"], row["stage"]) == ("a,b", "bad", "parse")
    assert row["attributes"] == [{"key": "source", "value": "in.csv"}, {"key": "position", "value": "3"}]


@pytest.mark.integration
@pytest.mark.slow
def test_read_and_write_with_multiprocessing_workers(bq_dataset, bq_endpoint):
    """Worker subprocesses reach the endpoint too (the write client pickles; reads via --beam_plugins)."""
    spec, rows = _spec(), _good_rows(40)
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    with TestPipeline(options=options) as p:
        dead = (p | beam.Create(rows)
                | bq.WriteRowsToBigQuery(bq_dataset.table("mp"), bq.table_schema_for(spec), endpoint=bq_endpoint))
        assert_that(dead, equal_to([]))
    assert len(bq_dataset.rows("mp")) == 40
    with TestPipeline(options=PipelineOptions(["--direct_running_mode=multi_processing",
                                               "--direct_num_workers=2"])) as p:
        good, dead = _read(p, spec, bq_endpoint, table=bq_dataset.table("mp"))
        assert_that(good | beam.Map(lambda t: t[0]), equal_to([r["id"] for r in rows]), label="Good")
        assert_that(dead, equal_to([]), label="NoDead")


def test_schema_forms_normalize_and_missing_columns_fail_fast():
    from apache_beam.io.gcp.internal.clients.bigquery import TableFieldSchema, TableSchema
    from google.cloud.bigquery import SchemaField

    want = [{"name": "a", "type": "INT64", "mode": "REQUIRED"}, {"name": "b", "type": "RECORD", "mode": "REPEATED",
                                                                  "fields": [{"name": "c", "type": "FLOAT64",
                                                                              "mode": "NULLABLE"}]}]
    cloud = [SchemaField("a", "INTEGER", mode="REQUIRED"),
             SchemaField("b", "RECORD", mode="REPEATED", fields=[SchemaField("c", "FLOAT")])]
    apitools = TableSchema(fields=[TableFieldSchema(name="a", type="INTEGER", mode="REQUIRED"),
                                   TableFieldSchema(name="b", type="RECORD", mode="REPEATED",
                                                    fields=[TableFieldSchema(name="c", type="FLOAT")])])

    def strip(fields):
        return [{k: (strip(v) if k == "fields" else v) for k, v in f.items()
                 if k in ("name", "type", "mode") or (k == "fields" and v)} for f in fields]

    for form in (cloud, apitools, {"fields": want}):
        assert strip(bq.schema_fields(form)) == want
    spec = _spec()
    bq.check_columns([{"name": c.name, "type": "STRING"} for c in spec.columns if c.role != "drop"], spec, "p:d.t")
    with pytest.raises(UserError, match="--input_table: p:d.t lacks column\\(s\\) ssn, label named by the spec"):
        bq.check_columns([{"name": n, "type": "STRING"} for n in ("id", "amount", "n", "kind")], spec, "p:d.t")


@pytest.mark.integration
def test_emulator_stops_cleanly():
    import socket

    with BigQueryEmulator(project="other") as emulator:
        port, pid = emulator.rest_port, emulator.pid
        client = emulator.client()
        client.create_dataset("other.d")
        assert [d.dataset_id for d in client.list_datasets()] == ["d"]
        home = emulator.home
        assert os.path.isdir(home)
    assert emulator.pid is None and not os.path.exists(home)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
