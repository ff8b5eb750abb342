"""--sql on train, batch_predict and stream_predict: the statement is stored with the model and serving applies it.

    python -m pytest tests/test_sql_pipelines.py -q                       # the fast checks
    python -m pytest tests/test_sql_pipelines.py -q -m "slow"             # train + batch (+ stream: integration)
"""
from __future__ import annotations

import csv
import json
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from beam_ml.errors import UserError
from beam_ml.spec import ColumnSpec, DatasetSpec

NAMES = ["Anna", "Hans", "Maria", "Olaf", "Petra"]
STATEMENT = (
    "SELECT Time, V1, V2, V3, V4, V14, IFNULL(Amount, 0) AS Amount, Class, "
    "MASK_LEFT(User, 2) AS User, u.CITY AS City "
    "FROM events c INNER JOIN users u ON c.userid = u.userid "
    "WHERE Class IS NOT NULL")


def _write_inputs(d: str, rows: int = 3000) -> tuple[str, str, dict]:
    """A fraud CSV with userid and User columns, some missing labels/amounts and one bad number; users.csv.

    Returns (tx.csv, users.csv, expected {filtered, dead} of the whole file).
    """
    from beam_ml import datasets

    os.makedirs(d, exist_ok=True)
    src = datasets.materialize("fraud", d, rows=rows)
    with open(src, newline="") as f:
        data = list(csv.DictReader(f))
    cols = list(data[0].keys())
    tx = os.path.join(d, "tx.csv")
    filtered = dead = 0
    with open(tx, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + ["userid", "User"])
        for i, r in enumerate(data):
            userid = i % 23  # users.csv knows 0..19: 20, 21, 22 are dropped by the INNER JOIN
            if i == 11:
                r["V2"] = "abc"  # the reader's check on the events: a dead letter
            elif i % 97 == 5:
                r["Class"] = ""  # WHERE Class IS NOT NULL filters it
            if i % 89 == 7:
                r["Amount"] = ""  # IFNULL(Amount, 0)
            if i == 11:
                dead += 1
            elif r["Class"] == "" or userid >= 20:
                filtered += 1
            w.writerow([r[c] for c in cols] + [userid, NAMES[i % 5]])
    users = os.path.join(d, "users.csv")
    with open(users, "w") as f:
        f.write("userid,CITY\n" + "".join(f"{u},{'Premium City' if u % 2 else 'Town'}\n" for u in range(20)))
    return tx, users, {"filtered": filtered, "dead": dead, "rows": rows}


def _fake_model(d: str, spec: DatasetSpec) -> str:
    """A version directory with only its metadata: enough for the flag checks that run before any model loads."""
    version = os.path.join(d, "model", "1")
    os.makedirs(os.path.join(version, "assets.extra"))
    open(os.path.join(version, "saved_model.pb"), "wb").close()
    with open(os.path.join(version, "assets.extra", "beam_ml.json"), "w") as f:
        json.dump({"spec": spec.to_dict(), "threshold": 0.5, "task": spec.task}, f)
    return os.path.join(d, "model")


@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("a,b,Class\n" + "".join(f"{i},x{i % 3},{i % 2}\n" for i in range(40)))
    users = tmp_path / "users.csv"
    users.write_text("a,CITY\n1,Berlin\n2,Oslo\n")
    spec = DatasetSpec(columns=[ColumnSpec("a", "numeric"), ColumnSpec("b", "categorical", max_categories=5),
                                ColumnSpec("Class", "label")], task="binary", label="Class", label_classes=["0", "1"])
    return str(path), str(users), _fake_model(str(tmp_path / "m"), spec)


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ fast: bad statements fail at start
BAD = [
    ("--sql=SELECT a Class FROM events WHERE", "--sql:"),                  # syntax
    ("--sql=SELECT nope FROM events", "--sql:"),                            # unknown column
    ("--sql=SELECT e.a, u.CITY FROM events e JOIN users u ON e.a = u.a", "users"),  # unknown lookup
]


@pytest.mark.parametrize("flag,named", BAD)
def test_train_refuses_a_bad_statement_before_reading(small_csv, tmp_path, flag, named):
    from pipelines import train

    with pytest.raises(UserError) as e:
        train.run([f"--input={small_csv[0]}", "--label=Class", f"--output_dir={tmp_path / 'out'}", flag])
    message = _one_line(e)
    assert message.startswith("--sql") and named in message
    assert not os.path.exists(tmp_path / "out" / "data")


@pytest.mark.parametrize("flag,named", BAD)
def test_batch_predict_refuses_a_bad_statement(small_csv, tmp_path, flag, named):
    from pipelines import batch_predict

    with pytest.raises(UserError) as e:
        batch_predict.run([f"--model_dir={small_csv[2]}", f"--input={small_csv[0]}",
                           f"--output={tmp_path / 'p.jsonl'}", flag])
    message = _one_line(e)
    assert message.startswith("--sql") and named in message
    assert not os.path.exists(tmp_path / "p.jsonl")


@pytest.mark.parametrize("flag,named", BAD)
def test_stream_predict_refuses_a_bad_statement(small_csv, flag, named):
    from pipelines import stream_predict

    with pytest.raises(UserError) as e:
        stream_predict.run([f"--model_dir={small_csv[2]}", "--input_topic=a", "--output_topic=b",
                            "--dead_letter_topic=c", "--bootstrap_servers=127.0.0.1:1", flag])
    message = _one_line(e)
    assert message.startswith("--sql") and named in message


@pytest.mark.parametrize("pipeline", ["train", "batch_predict", "stream_predict"])
def test_a_missing_lookup_file_is_named_by_lookup(small_csv, tmp_path, pipeline):
    import importlib

    module = importlib.import_module(f"pipelines.{pipeline}")
    sql = "--sql=SELECT e.a, u.CITY FROM events e JOIN users u ON e.a = u.a"
    lookup = f"--lookup=users={tmp_path / 'nope.csv'}"
    argv = {"train": [f"--input={small_csv[0]}", "--label=Class", f"--output_dir={tmp_path / 'out'}"],
            "batch_predict": [f"--model_dir={small_csv[2]}", f"--input={small_csv[0]}",
                              f"--output={tmp_path / 'p.jsonl'}"],
            "stream_predict": [f"--model_dir={small_csv[2]}", "--input_topic=a", "--output_topic=b",
                               "--dead_letter_topic=c", "--bootstrap_servers=127.0.0.1:1"]}[pipeline]
    with pytest.raises(UserError) as e:
        module.run(argv + [sql, lookup])
    message = _one_line(e)
    assert message.startswith("--lookup users: file not found")


def test_a_lookup_without_a_statement_is_refused(small_csv, tmp_path):
    from pipelines import batch_predict

    with pytest.raises(UserError, match="^--lookup: "):
        batch_predict.run([f"--model_dir={small_csv[2]}", f"--input={small_csv[0]}",
                           f"--output={tmp_path / 'p.jsonl'}", f"--lookup=users={small_csv[1]}"])


def test_spec_json_without_cleaning_loads_as_before():
    spec = DatasetSpec(columns=[ColumnSpec("a", "numeric"), ColumnSpec("Class", "label")], task="binary",
                       label="Class", label_classes=["0", "1"])
    assert "cleaning" not in spec.to_dict()
    again = DatasetSpec.from_dict(dict(spec.to_dict(), cleaning={"sql": "SELECT a, Class FROM events"}))
    assert again.cleaning == {"sql": "SELECT a, Class FROM events"}
    assert DatasetSpec.from_dict(again.to_dict()).cleaning == again.cleaning


# ------------------------------------------------------------------ slow: train, then serve without --sql
@pytest.fixture(scope="module")
def sql_model(tmp_path_factory):
    """(train output dir, tx.csv, users.csv, expected counts, the run) of one training with --sql."""
    from pipelines import train

    base = tmp_path_factory.mktemp("sqlmodel")
    tx, users, expected = _write_inputs(str(base / "data"))
    out = str(base / "out")
    run = train.run([f"--input={tx}", "--label=Class", f"--output_dir={out}", "--epochs=1", "--verbose=0",
                     "--runner=DirectRunner", f"--sql={STATEMENT}", f"--lookup=users={users}"])
    return out, tx, users, expected, run


def _by_hand(spec: DatasetSpec, tx: str, users: str) -> tuple[list[int], list[dict]]:
    """The stored statement applied by hand: pyarrow's CSV reader, the engine, nothing of the pipelines."""
    from beam_ml.clean import Engine, Statement

    statement = Statement.from_dict(spec.cleaning)
    events = statement.events_schema
    types = {f.name: f.type for f in events if f.name != "__line__"}
    table = pacsv.read_csv(tx, convert_options=pacsv.ConvertOptions(column_types={
        n: pa.string() for n in types}, strings_can_be_null=True))
    arrays = []
    keep = None
    import pyarrow.compute as pc

    for name, t in types.items():
        col = table.column(name)
        if t == pa.string():
            arrays.append(col)
            continue
        ok = pc.fill_null(pc.match_substring_regex(col, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"), True)
        keep = ok if keep is None else pc.and_(keep, ok)
        arrays.append(pc.cast(pc.if_else(ok, col, None), t))
    arrays.append(pa.array(range(2, table.num_rows + 2), pa.int64()))
    typed = pa.Table.from_arrays(arrays, schema=events).filter(keep)
    engine = Engine(statement, {"users": pacsv.read_csv(users)})
    try:
        result = engine.run(typed, source=tx)
    finally:
        engine.close()
    rows = result.table.to_pylist()
    return [r.pop("__line__") for r in rows], rows


@pytest.mark.slow
def test_train_with_sql_counts_and_stores_the_statement(sql_model):
    out, _, users, expected, run = sql_model
    c = run.counts
    assert c["rows_in"] == expected["rows"]
    assert c["rows_filtered"] == expected["filtered"] and c["rows_dead"] == expected["dead"]
    assert c["rows_in"] == c["rows_good"] + c["rows_filtered"] + c["rows_dead"]
    spec = DatasetSpec.load(os.path.join(out, "spec.json"))
    roles = {col.name: col.role for col in spec.columns}
    assert set(roles) == {"Time", "V1", "V2", "V3", "V4", "V14", "Amount", "Class", "User", "City"}
    assert roles["City"] == "categorical" and roles["User"] == "categorical" and roles["Amount"] == "numeric"
    assert spec.cleaning["sql"] == STATEMENT
    assert spec.cleaning["lookup_sources"] == {"users": users}
    assert [f["name"] for f in spec.cleaning["lookups"]["users"]["schema"]] == ["userid", "CITY"]
    with open(os.path.join(out, "model", "1", "assets.extra", "beam_ml.json")) as f:
        assert json.load(f)["spec"]["cleaning"] == spec.cleaning
    with open(os.path.join(out, "dead_letter", os.listdir(os.path.join(out, "dead_letter"))[0])) as f:
        dead = [json.loads(line) for line in f]
    assert [(d["position"], d["stage"]) for d in dead] == [(13, "validate")]
    assert "V2" in dead[0]["reason"] and "abc" in dead[0]["reason"]


@pytest.mark.slow
def test_batch_predict_applies_the_models_statement(sql_model, tmp_path, capsys):
    from beam_ml.serving import ServingModel
    from pipelines import batch_predict

    out, tx, users, expected, _ = sql_model
    preds_path = tmp_path / "p.jsonl"
    run = batch_predict.run([f"--model_dir={out}", f"--input={tx}", f"--output={preds_path}",
                             "--runner=DirectRunner"])
    c = run.counts
    assert c["rows_in"] == expected["rows"] and c["rows_filtered"] == expected["filtered"]
    assert c["dead_letters"] == expected["dead"]
    assert c["rows_in"] == c["predictions"] + c["rows_filtered"] + c["dead_letters"]
    assert "WARNING" not in capsys.readouterr().out
    preds = {p["position"]: p for p in map(json.loads, preds_path.read_text().splitlines())}

    model = ServingModel.load(os.path.join(out, "model"))
    lines, rows = _by_hand(model.spec, tx, users)
    assert {r["User"] for r in rows} == {"Xx" + n[2:] for n in NAMES} and "City" in rows[0]  # ksqlDB's MASK_LEFT
    offline = model.predict_records(rows)
    assert sorted(preds) == lines
    for line, p in zip(lines, offline):
        assert preds[line]["score"] == pytest.approx(p["score"], abs=1e-6)
        assert preds[line]["class"] == p["class"]


@pytest.mark.slow
def test_sql_on_serving_overrides_the_model_with_a_warning(sql_model, tmp_path, capsys):
    from pipelines import batch_predict

    out, tx, users, expected, _ = sql_model
    override = STATEMENT + " AND V1 > 0"
    run = batch_predict.run([f"--model_dir={out}", f"--input={tx}", f"--output={tmp_path / 'p.jsonl'}",
                             "--runner=DirectRunner", f"--sql={override}", f"--lookup=users={users}"])
    assert "WARNING: --sql overrides the statement stored with the model" in capsys.readouterr().out
    c = run.counts
    assert c["rows_filtered"] > expected["filtered"]
    assert c["rows_in"] == c["predictions"] + c["rows_filtered"] + c["dead_letters"]


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_applies_the_models_statement(sql_model, kafka_broker, new_topic, tmp_path):
    from kafka import KafkaProducer

    from beam_ml.testing import read_topic
    from pipelines import batch_predict, stream_predict

    out, tx, users, expected, _ = sql_model
    n = 300
    head = tmp_path / "head.csv"
    with open(tx) as f:
        lines = f.read().splitlines()
    head.write_text("\n".join(lines[:n + 1]) + "\n")
    batch_path = tmp_path / "b.jsonl"
    batch_predict.run([f"--model_dir={out}", f"--input={head}", f"--output={batch_path}", "--runner=DirectRunner"])
    batch = {p["position"]: p for p in map(json.loads, batch_path.read_text().splitlines())}

    source, predictions, dlq = new_topic(prefix="in"), new_topic(prefix="out"), new_topic(prefix="dlq")
    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    with open(head, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            event = {}
            for k, v in row.items():
                if v == "":
                    event[k] = None
                elif k == "User":
                    event[k] = v
                else:
                    try:
                        event[k] = float(v)
                    except ValueError:
                        event[k] = v  # the bad number: a dead letter, as in the file
            event["event_id"] = str(i + 2)  # the file line
            producer.send(source, value=json.dumps(event).encode())
    producer.flush(10)
    producer.close()
    run = stream_predict.run([f"--model_dir={out}", f"--input_topic={source}", f"--output_topic={predictions}",
                              f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}",
                              "--runner=DirectRunner", "--streaming", f"--max_records={n}", "--max_read_time=120"])
    c = run.counts
    assert c["rows_in"] == n
    assert c["rows_in"] == c["predictions"] + c["rows_filtered"] + c["dead_letters"]
    scored = [json.loads(r.value) for r in read_topic(kafka_broker, predictions, c["predictions"], 60)]
    assert len(scored) == len(batch) == c["predictions"]
    for p in scored:
        b = batch[int(p["event_id"])]
        assert p["score"] == pytest.approx(b["score"], abs=1e-6) and p["class"] == b["class"]


@pytest.mark.integration
@pytest.mark.slow
def test_stream_demo_cleans_with_the_fraud_statement(tmp_path):
    """make stream-demo's --clean: a model trained with FRAUD_SQL, stream_predict applying it with no --sql."""
    from beam_ml.jobs.demo import FRAUD_SQL, USERS_CSV, users_rows
    from pipelines import stream_demo

    with open(USERS_CSV) as f:  # the bundled table is what users_rows generates
        assert f.read().splitlines()[1:] == [f"{u},{c},{t}" for u, c, t in users_rows()]
    summary = stream_demo.run(["--clean", "--events=600", "--malformed_fraction=0.02",
                               f"--model_dir={tmp_path / 'm'}", f"--data_dir={tmp_path / 'data'}",
                               "--train_rows=3000", "--epochs=1", "--seconds=120"])
    spec = DatasetSpec.load(os.path.join(tmp_path, "m", "spec.json"))
    assert spec.cleaning["sql"] == FRAUD_SQL and "City" in spec.column_names
    assert summary["rows_read"] == 600
    assert summary["predictions"] + summary["dead_letters"] + summary["filtered"] == 600
    assert summary["filtered"] > 0  # unlabelled events and users the table does not know
    # not_json/not_object fail parsing, not_a_number the events' typing; a missing V1 is a NULL the statement keeps.
    assert summary["dead_letters_by_stage"] == {"parse": 6, "validate": 3}


# ------------------------------------------------------------------ fast: the stored statement on serving
def _stored_model(tmp_path, users_path: str) -> tuple[DatasetSpec, object]:
    """A spec holding a statement prepared as training stores it (events a, b, userid; lookup users)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_ml.clean import prepare_cleaning
    from beam_ml.jobs.sql import cleaning_record
    from beam_ml.options import CleanOptions

    events = pa.schema([("a", pa.float64()), ("b", pa.string()), ("userid", pa.float64()), ("__line__", pa.int64())])
    sql = ("SELECT a, IFNULL(b, 'none') AS b, MASK_LEFT(b, 1) AS m, u.CITY AS City FROM events e "
           "INNER JOIN users u ON e.userid = u.userid WHERE a IS NOT NULL")
    opts = PipelineOptions([f"--sql={sql}", f"--lookup=users={users_path}"]).view_as(CleanOptions)
    cleaning = prepare_cleaning(opts, events, position_column="__line__")
    spec = DatasetSpec(columns=[ColumnSpec("a", "numeric"), ColumnSpec("b", "categorical", max_categories=5),
                                ColumnSpec("City", "categorical", max_categories=5), ColumnSpec("m", "drop"),
                                ColumnSpec("Class", "label")], task="binary", label="Class",
                       label_classes=["0", "1"], cleaning=cleaning_record(cleaning, opts.lookup))
    return spec, PipelineOptions


def test_serving_reopens_the_stored_lookups_unless_lookup_names_them(tmp_path):
    from beam_ml.jobs.sql import serving_cleaning

    users = tmp_path / "users.csv"
    users.write_text("userid,CITY\n1,Berlin\n2,Oslo\n")
    other = tmp_path / "other.csv"
    other.write_text("userid,CITY\n1,Lima\n")
    spec, options = _stored_model(tmp_path, str(users))
    assert spec.cleaning["lookup_sources"] == {"users": str(users)}

    stored = serving_cleaning(options([]), spec)
    assert stored.statement.sql == spec.cleaning["sql"] and stored.lookups[0].path == str(users)
    moved = serving_cleaning(options([f"--lookup=users={other}"]), spec)
    assert moved.lookups[0].path == str(other)
    with pytest.raises(UserError, match="^--lookup: the model's statement joins no table named nope$"):
        serving_cleaning(options([f"--lookup=nope={other}"]), spec)
    users.unlink()
    with pytest.raises(UserError, match="^--lookup users: file not found"):
        serving_cleaning(options([]), spec)


def test_stream_hot_path_and_per_record_path_give_the_same_rows(tmp_path):
    """A poll typed by Arrow's JSON reader and one that needs the per-record path score the same rows."""
    from beam_ml.clean.layout import CleanEventBatchesFn
    from beam_ml.jobs.sql import serving_cleaning
    from beam_ml.inference.batches import RowBatch
    from beam_ml.io.kafka import KafkaRecord

    users = tmp_path / "users.csv"
    users.write_text("userid,CITY\n1,Berlin\n2,Oslo\n")
    spec, options = _stored_model(tmp_path, str(users))
    fn = CleanEventBatchesFn(spec, serving_cleaning(options([]), spec))
    fn.setup()
    events = [{"event_id": "e0", "a": 1.5, "b": "xy", "userid": 1, "produce_ts": 7},
              {"event_id": "e1", "a": None, "b": "zz", "userid": 1},      # WHERE a IS NOT NULL
              {"event_id": "e2", "a": 2, "b": "NA", "userid": 2},         # NA text: missing -> IFNULL
              {"event_id": "e3", "a": 3.0, "b": "q", "userid": 9}]        # no such user: INNER JOIN
    good = [KafkaRecord(None, json.dumps(e).encode(), "t", 0, i, 100 + i) for i, e in enumerate(events)]
    slow = good + [KafkaRecord(None, b'{"event_id": "bad", "a": "word", "b": "x", "userid": 1}', "t", 0, 9, 1)]
    assert fn._fast(good) is not None and fn._fast(slow) is None  # the two paths this test compares
    try:
        fast_out = list(fn.process(good))
        slow_out = list(fn.process(slow))
    finally:
        fn.teardown()
    fast_batch = [x for x in fast_out if isinstance(x, RowBatch)]
    slow_batch = [x for x in slow_out if isinstance(x, RowBatch)]
    assert len(fast_batch) == len(slow_batch) == 1
    assert fast_batch[0].rows == slow_batch[0].rows == [
        {"a": 1.5, "b": "xy", "City": "Berlin"}, {"a": 2.0, "b": "none", "City": "Oslo"}]
    assert [r.id for r in fast_batch[0].refs] == [r.id for r in slow_batch[0].refs] == ["e0", "e2"]
    assert dict(fast_batch[0].refs[0].carry)["produce_ts"] == 7
    dead = [x.value for x in slow_out if not isinstance(x, RowBatch)]
    assert [(d.position, d.stage) for d in dead] == [(9, "validate")] and "'a'" in dead[0].reason


@pytest.mark.integration
@pytest.mark.slow
def test_a_kafka_lookup_is_stored_and_reopened_by_batch_predict(kafka_broker, new_topic, tmp_path):
    """--lookup=users=kafka:TOPIC at training; batch_predict (no --sql, no --lookup) reads the same topic."""
    from kafka import KafkaProducer

    from pipelines import batch_predict, train

    tx, users_csv, expected = _write_inputs(str(tmp_path / "data"))
    topic = new_topic(prefix="users")
    producer = KafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    with open(users_csv) as f:
        for row in list(csv.DictReader(f)):
            producer.send(topic, key=row["userid"].encode(),
                          value=json.dumps({"userid": int(row["userid"]), "CITY": row["CITY"]}).encode())
    producer.flush(10)
    producer.close()
    out = str(tmp_path / "out")
    run = train.run([f"--input={tx}", "--label=Class", f"--output_dir={out}", "--epochs=1", "--verbose=0",
                     "--runner=DirectRunner", f"--sql={STATEMENT}", f"--lookup=users=kafka:{topic}",
                     f"--bootstrap_servers={kafka_broker}"])
    assert run.counts["rows_filtered"] == expected["filtered"]
    assert DatasetSpec.load(os.path.join(out, "spec.json")).cleaning["lookup_sources"] == {"users": f"kafka:{topic}"}
    served = batch_predict.run([f"--model_dir={out}", f"--input={tx}", f"--output={tmp_path / 'p.jsonl'}",
                                "--runner=DirectRunner", f"--bootstrap_servers={kafka_broker}"])
    c = served.counts
    assert c["rows_filtered"] == expected["filtered"] and c["dead_letters"] == expected["dead"]
    assert c["predictions"] == expected["rows"] - expected["filtered"] - expected["dead"]


@pytest.mark.slow
def test_bench_sql_pipelines_preprocess_mode_runs_and_checks_its_counts(tmp_path):
    from benchmarks import bench_sql_pipelines

    out = bench_sql_pipelines.main(["--only=preprocess", "--rows=3000", "--repeats=1", f"--work_dir={tmp_path}"])
    pre = out["preprocess"]
    sql, plain = pre["counts"]["sql"], pre["counts"]["no_sql"]
    # The unlabelled rows: filtered with the statement, dead letters without it; the same rows are kept.
    assert sql["rows_good"] == plain["rows_good"] and sql["rows_filtered"] == plain["rows_dead"] > 0
    assert isinstance(pre["overhead"], float)
    assert os.path.exists(tmp_path / "bench_sql_pipelines.json")
