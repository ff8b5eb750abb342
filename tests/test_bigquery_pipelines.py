"""BigQuery in train, batch_predict and stream_predict, end to end against the BigQuery emulator
(bqemulator on 127.0.0.1) and Tansu; plus the new flags' one-line errors (fast, no servers)."""
import csv
import json
import os

import pytest

from beam_ml.errors import UserError
from beam_ml.producer import csv_events
from beam_ml.serving import ServingModel
from pipelines import batch_predict, produce, stream_predict, train
from tests.conftest import own_messages

LABEL = "left"
STRINGS = ("sales", "salary")
BAD_LINE_VALUE = "not-a-number"


# ----------------------------------------------------------------- fast: flags
@pytest.mark.parametrize("argv, message", [
    (["--input_table=p:d.t", "--input=x.csv"], "--input and --input_table are exclusive: give one input"),
    (["--input_table=p:d.t", "--dataset=fraud"], "--dataset and --input_table are exclusive: give one input"),
    (["--input_query=SELECT 1", "--input_topic=t"], "--input_topic and --input_query are exclusive: give one input"),
    (["--input_table=p:d.t", "--input_query=SELECT 1"],
     "--input_table and --input_query are exclusive: give one input"),
    (["--input_query= "], "--input_query: empty query"),
    (["--input_table=p:d.t"], "--label: required with --input_table (the column to predict), unless --spec is given"),
    (["--input_table=nodots", "--label=y"], "--input_table: expected PROJECT:DATASET.TABLE, got 'nodots'"),
    (["--input_table=d.t", "--label=y"], "--input_table: 'd.t' names no project; write PROJECT:DATASET.TABLE or "
                                         "pass --project"),
    (["--input_table=p:d.t", "--label=y", "--bigquery_endpoint=http://127.0.0.1:9"],
     "--bigquery_storage_endpoint: reading through --bigquery_endpoint needs the Storage Read API's HOST:PORT too"),
    (["--input_table=p:d.t", "--label=y", "--bigquery_endpoint=127.0.0.1:9"],
     "--bigquery_endpoint: expected http://HOST:PORT, got '127.0.0.1:9'"),
])
def test_train_bigquery_flag_errors_are_one_line(argv, message, tmp_path):
    with pytest.raises(UserError) as e:
        train.run(argv + [f"--output_dir={tmp_path}/out"])
    assert str(e.value) == message


def test_train_endpoint_that_does_not_answer_fails_fast(tmp_path):
    from beam_ml.testing.broker import find_free_port

    port = find_free_port("127.0.0.1")
    with pytest.raises(UserError, match=rf"^--bigquery_endpoint: nothing answers at 127.0.0.1:{port} "):
        train.run(["--input_table=p:d.t", "--label=y", f"--bigquery_endpoint=http://127.0.0.1:{port}",
                   f"--bigquery_storage_endpoint=127.0.0.1:{port}", f"--output_dir={tmp_path}/out"])


@pytest.mark.parametrize("extra, message", [
    (["--output=p.jsonl", "--output_table=p:d.t"], "--output, --output_topic or --output_table: give exactly one "
                                                   "(got --output and --output_table)"),
    ([], "--output, --output_topic or --output_table: give exactly one"),
    (["--output=p.jsonl", "--dead_letter_table=p:d.e"], "--dead_letter_table: only applies with --output_table"),
    (["--output_table=p:d.t", "--dead_letter=d.jsonl"],
     "--dead_letter/--dead_letter_topic: with --output_table dead letters go to --dead_letter_table "
     "(default <output_table>_error_records)"),
])
def test_batch_predict_bigquery_flag_errors_are_one_line(extra, message, tmp_path):
    with pytest.raises(UserError) as e:
        batch_predict.run([f"--model_dir={tmp_path}", "--input=x.csv", *extra])
    assert str(e.value) == message


@pytest.mark.parametrize("extra, message", [
    ([], "--output_topic or --output_table: required (either or both)"),
    (["--output_topic=o"], "--dead_letter_topic: required with --output_topic (or give --output_table, whose "
                           "dead letters go to --dead_letter_table)"),
    (["--output_topic=o", "--dead_letter_topic=d", "--dead_letter_table=p:d.e"],
     "--dead_letter_table: only applies with --output_table"),
])
def test_stream_predict_bigquery_flag_errors_are_one_line(extra, message, tmp_path):
    with pytest.raises(UserError) as e:
        stream_predict.run([f"--model_dir={tmp_path}", "--input_topic=t", *extra])
    assert str(e.value) == message


def test_prediction_table_schema_has_the_prediction_fields():
    from beam_ml.jobs.bigquery import prediction_table_schema
    from beam_ml.spec import ColumnSpec, DatasetSpec

    spec = DatasetSpec(columns=[ColumnSpec("x", "numeric"), ColumnSpec("y", "label")], task="binary", label="y",
                       label_classes=["0", "1"]).validate()
    names = [f["name"] for f in prediction_table_schema(spec, "line", with_label=True)["fields"]]
    assert names == ["source", "position", "score", "class_id", "class", "threshold", "model_version", "y"]
    names = [f["name"] for f in prediction_table_schema(spec, "event_id", kafka_input=True, streaming=True)["fields"]]
    assert names == ["event_id", "source", "position", "score", "class_id", "class", "threshold", "model_version",
                     "key", "event_ts", "produce_ts", "processing_ts"]


# ------------------------------------------------------------ emulator helpers
def _typed(row):
    out = {}
    for k, v in row.items():
        if k in STRINGS:
            out[k] = v
        elif k == LABEL:
            out[k] = int(v)
        else:
            out[k] = float(v) if v != "" else None
    return out


def _load_table(client, table_id, rows):
    from google.cloud import bigquery

    schema = [bigquery.SchemaField(k, "STRING" if k in STRINGS else "INT64" if k == LABEL else "FLOAT64")
              for k in rows[0]]
    client.create_table(bigquery.Table(table_id, schema=schema))
    for i in range(0, len(rows), 500):
        errors = client.insert_rows_json(table_id, [_typed(r) for r in rows[i:i + 500]], retry=None)
        assert errors == []


def _endpoint_flags(emulator):
    return [f"--bigquery_endpoint={emulator.endpoint}", f"--bigquery_storage_endpoint={emulator.grpc_endpoint}"]


_TRAIN_FLAGS = ["--epochs=2", "--cv_folds=2", "--hidden_units=8", "--verbose=0", "--runner=DirectRunner"]


@pytest.fixture(scope="module")
def trained_from_table(bigquery_emulator, tmp_path_factory):
    """A retention model trained from an emulator table: (model root, the CSV rows, dataset, table spec)."""
    from beam_ml import datasets

    base = tmp_path_factory.mktemp("bqtrain")
    path = datasets.materialize("retention", str(base / "data"), rows=600)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    client = bigquery_emulator.client()
    dataset = "ds_train"
    client.create_dataset(f"test.{dataset}", exists_ok=True)
    _load_table(client, f"test.{dataset}.retention", rows)
    run = train.run([f"--input_table=test:{dataset}.retention", f"--label={LABEL}", f"--output_dir={base}/out",
                     *_endpoint_flags(bigquery_emulator), *_TRAIN_FLAGS])
    yield run, path, rows, client, dataset
    client.close()


@pytest.mark.integration
@pytest.mark.slow
def test_train_from_a_table_infers_the_spec_from_its_schema_and_counts_every_row(trained_from_table):
    run, _, rows, _, _ = trained_from_table
    assert run.counts["rows_in"] == len(rows) and run.counts["rows_dead"] == 0
    assert run.counts["rows_good"] == len(rows)
    spec = json.load(open(run.spec_path))
    roles = {c["name"]: c["role"] for c in spec["columns"]}
    assert roles[LABEL] == "label" and roles["sales"] == "categorical" and roles["satisfaction_level"] == "numeric"
    assert spec["label_classes"] == ["0", "1"]
    assert run.metrics is not None and os.path.isdir(os.path.join(run.output_dir, "model"))


@pytest.mark.integration
@pytest.mark.slow
def test_train_from_a_query_reads_what_the_query_selects(trained_from_table, bigquery_emulator, tmp_path):
    _, _, rows, client, dataset = trained_from_table
    # A bad row in the table: its label is neither 0 nor 1 once the query casts it to text.
    query = (f"SELECT * FROM `test.{dataset}.retention` WHERE salary != 'high' "
             f"UNION ALL (SELECT satisfaction_level, last_evaluation, number_project, average_montly_hours, "
             f"time_spend_company, Work_accident, 7 AS `left`, promotion_last_5years, sales, salary "
             f"FROM `test.{dataset}.retention` WHERE salary = 'high' LIMIT 1)")
    run = train.run([f"--input_query={query}", f"--label={LABEL}", f"--output_dir={tmp_path}/out",
                     "--preprocess_only", "--max_bad_rows_fraction=0.5", "--project=test",
                     *_endpoint_flags(bigquery_emulator), *_TRAIN_FLAGS])
    expected = sum(r["salary"] != "high" for r in rows)
    assert run.counts["rows_in"] == expected + 1
    assert run.counts["rows_good"] == expected and run.counts["rows_dead"] == 1
    dead = [json.loads(line) for name in os.listdir(f"{tmp_path}/out/dead_letter")
            for line in open(f"{tmp_path}/out/dead_letter/{name}") if line.strip()]
    assert len(dead) == 1
    assert dead[0]["source"].startswith("query: SELECT * FROM") and isinstance(dead[0]["position"], int)
    assert "unknown label '7'" in dead[0]["reason"]
    # The query's scratch table is gone.
    assert not [d.dataset_id for d in client.list_datasets() if d.dataset_id.startswith("beam_ml_tmp_")]


@pytest.mark.integration
@pytest.mark.slow
def test_batch_predict_into_a_table_equals_the_offline_scores(trained_from_table, bigquery_emulator, bq_dataset,
                                                               tmp_path):
    run, path, rows, _, _ = trained_from_table
    model_root = os.path.join(run.output_dir, "model")
    lines = open(path).read().splitlines()
    bad = lines[1].split(",")
    bad[0] = BAD_LINE_VALUE
    lines = lines[:101] + [",".join(bad)]
    csv_path = tmp_path / "score.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    table = bq_dataset.table("preds")
    result = batch_predict.run([f"--model_dir={model_root}", f"--input={csv_path}", f"--output_table={table}",
                                f"--bigquery_endpoint={bigquery_emulator.endpoint}", "--runner=DirectRunner"])
    assert result.counts["rows_in"] == 101
    assert result.counts["predictions"] == 100 and result.counts["dead_letters"] == 1
    assert result.counts["dead_output"] == 0 and result.counts["written"] == 100
    assert result.output == f"bigquery:{table}" and result.dead_letter == f"bigquery:{table}_error_records"

    preds = bq_dataset.rows("preds")
    assert len(preds) == 100
    by_line = {p["position"]: p for p in preds}
    assert len(by_line) == 100 and all(p["source"] == str(csv_path) for p in preds)
    records = list(csv.DictReader(lines))
    model = ServingModel.load(model_root)
    good = records[:100]
    offline = model.predict_records([{k: v for k, v in r.items() if k != LABEL} for r in good])
    for i, (record, expected) in enumerate(zip(good, offline)):
        p = by_line[i + 2]  # header = line 1
        assert p["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert p["class"] == expected["class"] and p["model_version"] == 1
        assert p[LABEL] == record[LABEL]

    (dead,) = bq_dataset.rows("preds_error_records")
    assert dead["stage"] in ("parse", "validate")
    assert BAD_LINE_VALUE in dead["errorMessage"] and "satisfaction_level" in dead["errorMessage"]
    assert dead["attributes"] == [{"key": "source", "value": str(csv_path)}, {"key": "position", "value": "102"}]
    assert BAD_LINE_VALUE in dead["payloadString"]


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_into_a_table_scores_every_event_once(trained_from_table, bigquery_emulator, bq_dataset,
                                                              kafka_broker, new_topic, tmp_path):
    from kafka import KafkaProducer

    run, path, _, _, _ = trained_from_table
    model_root = os.path.join(run.output_dir, "model")
    lines = open(path).read().splitlines()[:61]
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    topic = new_topic(prefix="in")
    produce.run([f"--input={csv_path}", f"--topic={topic}", f"--bootstrap_servers={kafka_broker}"])
    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    for value in (b"not json", json.dumps({"event_id": "missing-fields"}).encode()):
        producer.send(topic, value=value)
    producer.flush(10)
    producer.close()
    events = dict(csv_events(str(csv_path)))
    n = len(events) + 2

    table = bq_dataset.table("scores")
    result = stream_predict.run([f"--model_dir={model_root}", f"--input_topic={topic}", f"--output_table={table}",
                                 f"--bootstrap_servers={kafka_broker}",
                                 f"--bigquery_endpoint={bigquery_emulator.endpoint}",
                                 f"--max_records={n}", "--max_read_time=120", "--runner=DirectRunner", "--streaming"])
    assert result.counts["rows_in"] == n
    assert result.counts["predictions"] == len(events) and result.counts["dead_letters"] == 2
    assert result.counts["dead_output"] == 0

    preds = bq_dataset.rows("scores")
    assert sorted(p["event_id"] for p in preds) == sorted(events)  # every event, once
    ids = sorted(events)
    model = ServingModel.load(model_root)
    offline = dict(zip(ids, model.predict_records([events[i] for i in ids])))
    for p in preds:
        assert p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5)
        assert p["source"] == f"{topic}/0" and p["processing_ts"] >= p["event_ts"] > 0

    dead = sorted(bq_dataset.rows("scores_error_records"), key=lambda r: r["offset"])
    assert [(d["source_topic"], d["partition"], d["offset"]) for d in dead] == [
        (topic, 0, len(events)), (topic, 0, len(events) + 1)]
    assert [d["stage"] for d in dead] == ["parse", "validate"]
    assert all(d["errorMessage"] for d in dead)


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_rows_bigquery_rejects_are_dead_letters_not_losses(trained_from_table, bigquery_emulator,
                                                                          bq_dataset, kafka_broker, new_topic,
                                                                          tmp_path):
    from google.cloud import bigquery

    run, path, _, _, _ = trained_from_table
    model_root = os.path.join(run.output_dir, "model")
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("\n".join(open(path).read().splitlines()[:11]) + "\n")
    topic = new_topic(prefix="in")
    produce.run([f"--input={csv_path}", f"--topic={topic}", f"--bootstrap_servers={kafka_broker}"])
    # The table exists, and its `source` column is a FLOAT64: BigQuery refuses every prediction row.
    from beam_ml.jobs.bigquery import prediction_table_schema
    from beam_ml.model_store import load_model_metadata

    fields = prediction_table_schema(load_model_metadata(model_root)[2], "event_id", kafka_input=True,
                                     streaming=True)["fields"]
    schema = [bigquery.SchemaField(f["name"], "FLOAT64" if f["name"] == "source" else f["type"]) for f in fields]
    bq_dataset.client.create_table(bigquery.Table(bq_dataset.table_id("scores"), schema=schema))

    table = bq_dataset.table("scores")
    result = stream_predict.run([f"--model_dir={model_root}", f"--input_topic={topic}", f"--output_table={table}",
                                 f"--bootstrap_servers={kafka_broker}",
                                 f"--bigquery_endpoint={bigquery_emulator.endpoint}",
                                 "--max_records=10", "--max_read_time=120", "--runner=DirectRunner", "--streaming"])
    assert result.counts["rows_in"] == 10 and result.counts["predictions"] == 10
    assert result.counts["dead_output"] == 10 and result.counts["dead_letters"] == 0
    assert bq_dataset.rows("scores") == []
    dead = sorted(bq_dataset.rows("scores_error_records"), key=lambda r: r["offset"])
    assert [(d["source_topic"], d["partition"], d["offset"], d["stage"]) for d in dead] == [
        (topic, 0, i, "bigquery") for i in range(10)]
    for d in dead:
        assert d["errorMessage"].startswith(f"BigQuery rejected the row for {table}: invalid")
        assert json.loads(d["payloadString"])["source"] == f"{topic}/0"


@pytest.mark.integration
@pytest.mark.slow
def test_train_from_a_table_with_a_given_spec(trained_from_table, bigquery_emulator, bq_dataset, tmp_path):
    run, _, rows, _, _ = trained_from_table
    _load_table(bq_dataset.client, bq_dataset.table_id("more"), rows[:300])
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(open(run.spec_path).read())
    again = train.run([f"--input_table={bq_dataset.table('more')}", f"--spec={spec_path}", "--preprocess_only",
                       f"--output_dir={tmp_path}/out", *_endpoint_flags(bigquery_emulator), *_TRAIN_FLAGS])
    assert again.counts["rows_in"] == 300 and again.counts["rows_dead"] == 0
    assert json.load(open(again.spec_path)) == json.load(open(spec_path))  # --spec wins over inference
    # A table without a column the spec reads fails at launch, naming the flag and the column.
    _load_table(bq_dataset.client, bq_dataset.table_id("narrow"), [{k: v for k, v in r.items() if k != "salary"}
                                                                   for r in rows[:20]])
    with pytest.raises(UserError) as e:
        train.run([f"--input_table={bq_dataset.table('narrow')}", f"--spec={spec_path}", "--preprocess_only",
                   f"--output_dir={tmp_path}/out2", *_endpoint_flags(bigquery_emulator), *_TRAIN_FLAGS])
    assert str(e.value) == f"--input_table: {bq_dataset.table('narrow')} lacks column(s) salary named by the spec"


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_to_a_topic_and_a_table_at_once(trained_from_table, bigquery_emulator, bq_dataset,
                                                       kafka_broker, new_topic, tmp_path):
    from beam_ml.testing import read_topic

    run, path, _, _, _ = trained_from_table
    model_root = os.path.join(run.output_dir, "model")
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("\n".join(open(path).read().splitlines()[:21]) + "\n")
    source, out, dlq = new_topic(prefix="in"), new_topic(prefix="out"), new_topic(prefix="dlq")
    produce.run([f"--input={csv_path}", f"--topic={source}", f"--bootstrap_servers={kafka_broker}"])
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    producer.send(source, value=b"not json")
    producer.flush(10)
    producer.close()
    table = bq_dataset.table("both")
    result = stream_predict.run([f"--model_dir={model_root}", f"--input_topic={source}", f"--output_topic={out}",
                                 f"--dead_letter_topic={dlq}", f"--output_table={table}",
                                 f"--bootstrap_servers={kafka_broker}",
                                 f"--bigquery_endpoint={bigquery_emulator.endpoint}",
                                 "--max_records=21", "--max_read_time=120", "--runner=DirectRunner", "--streaming"])
    # Each dead letter is counted once, though it goes to both sinks.
    assert (result.counts["rows_in"], result.counts["predictions"], result.counts["dead_letters"]) == (21, 20, 1)
    on_topic = sorted((json.loads(r.value)["event_id"], json.loads(r.value)["score"])
                      for r in read_topic(kafka_broker, out, 20, 60))
    in_table = sorted((r["event_id"], r["score"]) for r in bq_dataset.rows("both"))
    assert len(on_topic) == 20 and [i for i, _ in on_topic] == [i for i, _ in in_table]
    for (_, a), (_, b) in zip(on_topic, in_table):
        assert a == pytest.approx(b, abs=1e-9)
    (dead_event,) = [json.loads(r.value) for r in read_topic(kafka_broker, dlq, 1, 60)]
    (dead_row,) = bq_dataset.rows("both_error_records")
    assert (dead_row["source_topic"], dead_row["partition"], dead_row["offset"]) == (source, 0, 20)
    assert dead_event["position"] == 20 and dead_event["stage"] == dead_row["stage"] == "parse"


@pytest.mark.integration
@pytest.mark.slow
def test_every_pipeline_announces_the_endpoint_at_start(trained_from_table, bigquery_emulator, monkeypatch, caplog):
    import logging

    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_ml.io.bigquery import endpoint
    from beam_ml.jobs.batch_predict import plan_batch_predict
    from beam_ml.jobs.bigquery import bigquery_input
    from beam_ml.jobs.stream_predict import plan_stream_predict

    run, path, _, _, dataset = trained_from_table
    model = os.path.join(run.output_dir, "model")
    rest = f"--bigquery_endpoint={bigquery_emulator.endpoint}"
    monkeypatch.setattr(endpoint, "_ANNOUNCED", set())
    caplog.set_level(logging.WARNING, logger="beam_ml.io.bigquery")
    bigquery_input(PipelineOptions(_endpoint_flags(bigquery_emulator)), f"test:{dataset}.retention", None)
    plan_batch_predict(PipelineOptions([f"--model_dir={model}", f"--input={path}", "--output_table=test:d.t",
                                        rest]))
    reads = f"BigQuery reads use the endpoint {bigquery_emulator.endpoint} and Storage API " \
            f"{bigquery_emulator.grpc_endpoint} (--bigquery_endpoint), not Google's BigQuery"
    writes = f"BigQuery writes use the endpoint {bigquery_emulator.endpoint} (--bigquery_endpoint), " \
             "not Google's BigQuery"
    assert own_messages(caplog) == [reads, writes]
    caplog.clear()
    monkeypatch.setattr(endpoint, "_ANNOUNCED", set())
    plan_stream_predict(PipelineOptions([f"--model_dir={model}", "--input_topic=t", "--output_table=test:d.t",
                                         rest]), local=True)
    assert own_messages(caplog) == [writes]


@pytest.mark.integration
def test_a_bigquery_table_is_a_lookup_a_statement_joins_and_refreshes(bq_dataset, bq_endpoint):
    """--lookup=users=bq:PROJECT:DATASET.TABLE: read at preparation, in the DoFn, and again once the table changed."""
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from google.cloud import bigquery

    from beam_ml.clean import lookup_from_flag, prepare_cleaning
    from beam_ml.options import CleanOptions

    table_id = bq_dataset.table_id("users")
    schema = [bigquery.SchemaField("userid", "STRING"), bigquery.SchemaField("CITY", "STRING")]
    bq_dataset.client.create_table(bigquery.Table(table_id, schema=schema))
    assert bq_dataset.client.insert_rows_json(table_id, [{"userid": "u1", "CITY": "Premium Berlin"},
                                                         {"userid": "u2", "CITY": "Basic Rome"}]) == []
    events = pa.schema([("V1", pa.float64()), ("userid", pa.string()), ("__line__", pa.int64())])
    opts = PipelineOptions([f"--lookup=users=bq:{bq_dataset.table('users')}",
                            "--sql=SELECT c.V1, u.CITY FROM events c INNER JOIN users u ON c.userid = u.userid "
                            "WHERE u.CITY LIKE 'Premium%'"]).view_as(CleanOptions)
    cleaning = prepare_cleaning(opts, events, position_column="__line__", bigquery_endpoint=bq_endpoint)
    assert [f.name for f in cleaning.statement.output_schema if f.name != "__line__"] == ["V1", "CITY"]
    batch = pa.RecordBatch.from_pydict({"V1": [6.0, 7.0, 8.0], "userid": ["u1", "u2", "u9"],
                                        "__line__": [2, 3, 4]}, schema=events)
    with TestPipeline(options=PipelineOptions([])) as p:
        rows = (p | beam.Create([batch]) | cleaning.transform(source="events.csv")).rows
        assert_that(rows | beam.FlatMap(lambda b: [(r["V1"], r["CITY"]) for r in b.to_pylist()]),
                    equal_to([(6.0, "Premium Berlin")]))
    # The table changes: refresh() sees it (what --lookup_refresh does in a stream).
    users = lookup_from_flag(f"users=bq:{bq_dataset.table('users')}", bigquery_endpoint=bq_endpoint)
    users.open()
    assert users.load().num_rows == 2 and users.refresh() is None
    assert bq_dataset.client.insert_rows_json(table_id, [{"userid": "u9", "CITY": "Premium Oslo"}]) == []
    changed = users.refresh()
    assert changed is not None and sorted(changed.column("userid").to_pylist()) == ["u1", "u2", "u9"]
    users.close()
    with pytest.raises(UserError, match="--lookup users: BigQuery table .* not found"):
        lookup_from_flag(f"users=bq:{bq_dataset.table('nope')}", bigquery_endpoint=bq_endpoint).schema()
