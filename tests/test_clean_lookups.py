"""Lookup tables: CSV files, --lookup flags, and a Kafka topic read as a table while a stream runs."""
import json
import os
import time

import pyarrow as pa
import pytest

from beam_ml.clean import ApplySqlFn, CsvLookup, KafkaLookup, Statement, lookup_from_flag, register_scheme
from beam_ml.clean.lookups import ArrowLookup
from beam_ml.errors import DEAD_TAG, UserError

EVENTS = pa.schema([("V1", pa.float64()), ("userid", pa.string()), ("__line__", pa.int64())])
SQL_INNER = "SELECT c.V1, u.CITY FROM events c INNER JOIN users u ON c.userid = u.userid"
SQL_LEFT = "SELECT c.V1, u.CITY FROM events c LEFT JOIN users u ON c.userid = u.userid"


def batch(*userids):
    return pa.RecordBatch.from_pydict({"V1": [float(i) for i in range(len(userids))], "userid": list(userids),
                                       "__line__": list(range(2, 2 + len(userids)))}, schema=EVENTS)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def outputs(fn, b):
    """(rows as dicts, dead letters) of one process() call."""
    rows, dead = [], []
    for out in fn.process(b):
        if isinstance(out, pa.RecordBatch):
            rows += out.to_pylist()
        else:
            assert out.tag == DEAD_TAG
            dead.append(out.value)
    return rows, dead


def test_csv_lookup_infers_its_schema_and_refreshes_when_the_file_changes(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("userid,CITY,tier\nu1,Premium Berlin,1\nu2,Basic Rome,2\n")
    users = CsvLookup("users", str(path))
    assert users.schema() == pa.schema([("userid", pa.string()), ("CITY", pa.string()), ("tier", pa.int64())])
    stmt = Statement.prepare(SQL_LEFT, EVENTS, {"users": users.schema()}, position_column="__line__")
    clock = FakeClock()
    fn = ApplySqlFn(stmt, [users], "events.csv", None, 10.0, (), clock)
    fn.setup()
    try:
        assert outputs(fn, batch("u1", "u2"))[0] == [{"V1": 0.0, "CITY": "Premium Berlin", "__line__": 2},
                                                     {"V1": 1.0, "CITY": "Basic Rome", "__line__": 3}]
        tmp = tmp_path / "users.tmp"
        tmp.write_text("userid,CITY,tier\nu1,Premium Paris,1\n")
        os.replace(tmp, path)  # replaced atomically, as a job updating the file would
        assert outputs(fn, batch("u1"))[0][0]["CITY"] == "Premium Berlin"  # not yet: refresh is every 10 s
        clock.now += 11
        assert outputs(fn, batch("u1", "u2"))[0] == [{"V1": 0.0, "CITY": "Premium Paris", "__line__": 2},
                                                     {"V1": 1.0, "CITY": None, "__line__": 3}]
        path.write_text("userid,CITY,tier\nu1,Premium Oslo,not a number\n")  # no longer fits the schema
        clock.now += 11
        assert outputs(fn, batch("u1"))[0][0]["CITY"] == "Premium Paris"  # the stream goes on with the last rows
    finally:
        fn.teardown()


def test_lookup_flags(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("userid,CITY\nu1,x\n")
    lk = lookup_from_flag(f"users={path}")
    assert isinstance(lk, CsvLookup) and lk.name == "users" and lk.path == str(path)
    for bad, msg in [("users", "expected NAME=SOURCE"), ("=x.csv", "expected NAME=SOURCE"),
                     (f"users={tmp_path}/nope.csv", "file not found"),
                     ("users=bq:just-a-name", "users: expected"), ("users=s3://bucket/u.csv", "unsupported source")]:
        with pytest.raises(UserError, match=f"^--lookup.*{msg}"):
            lookup_from_flag(bad)
    with pytest.raises(UserError, match="--lookup users: .*bootstrap_servers is required"):
        lookup_from_flag("users=kafka:users-topic")
    register_scheme("memory", lambda name, rest, **kw: ArrowLookup(name, pa.table({"userid": [rest]})))
    assert lookup_from_flag("users=memory:u7").load().to_pylist() == [{"userid": "u7"}]


def _produce(bootstrap, topic, records):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for key, value in records:
            producer.send(topic, key=key.encode(), value=None if value is None else json.dumps(value).encode())
        producer.flush(timeout=10)
    finally:
        producer.close()


@pytest.mark.integration
def test_kafka_lookup_updates_and_deletes_keys_while_the_stream_runs(kafka_broker, new_topic):
    topic = new_topic(partitions=2)
    _produce(kafka_broker, topic, [("u1", {"userid": "u1", "CITY": "Premium Berlin"}),
                                   ("u2", {"userid": "u2", "CITY": "Premium Rome"}),
                                   ("u3", {"userid": "u3", "CITY": "Basic Oslo"}),
                                   ("u3", {"userid": "u3", "CITY": "Premium Oslo"})])  # later value wins
    users = KafkaLookup("users", topic, bootstrap_servers=kafka_broker, refresh_budget=3.0)
    schema = users.schema()  # read on the launcher: the topic's current values
    assert schema == pa.schema([("userid", pa.string()), ("CITY", pa.string())])
    clock = FakeClock()
    inner = ApplySqlFn(Statement.prepare(SQL_INNER, EVENTS, {"users": schema}, position_column="__line__"),
                       [users], "tx/0", None, 5.0, (), clock)
    left = ApplySqlFn(Statement.prepare(SQL_LEFT, EVENTS, {"users": schema}, position_column="__line__"),
                      [KafkaLookup("users", topic, bootstrap_servers=kafka_broker, refresh_budget=3.0)],
                      "tx/0", None, 5.0, (), clock)
    inner.setup()
    left.setup()
    try:
        events = batch("u1", "u2", "u3", "u9")
        assert [r["CITY"] for r in outputs(inner, events)[0]] == ["Premium Berlin", "Premium Rome", "Premium Oslo"]
        assert [r["CITY"] for r in outputs(left, events)[0]] == ["Premium Berlin", "Premium Rome", "Premium Oslo",
                                                                 None]
        # While the stream runs: u1 moves, u2 is deleted (a tombstone), u9 appears, one bad value.
        _produce(kafka_broker, topic, [("u1", {"userid": "u1", "CITY": "Premium Paris"}), ("u2", None),
                                       ("u9", {"userid": "u9", "CITY": "Basic Lima"})])
        from kafka import KafkaProducer
        p = KafkaProducer(bootstrap_servers=kafka_broker)
        p.send(topic, key=b"u4", value=b"not json")
        p.flush(timeout=10)
        p.close()
        assert [r["CITY"] for r in outputs(inner, events)[0]][:1] == ["Premium Berlin"]  # before the refresh
        clock.now += 6
        deadline = time.monotonic() + 20
        while True:  # the records may take a moment to become fetchable on the broker
            rows_inner, dead = outputs(inner, events)
            rows_left, _ = outputs(left, events)
            if [r["CITY"] for r in rows_left] == ["Premium Paris", None, "Premium Oslo", "Basic Lima"] \
                    or time.monotonic() > deadline:
                break
            clock.now += 6
        assert [(r["__line__"], r["CITY"]) for r in rows_inner] == [(2, "Premium Paris"), (4, "Premium Oslo"),
                                                                    (5, "Basic Lima")]
        assert [r["CITY"] for r in rows_left] == ["Premium Paris", None, "Premium Oslo", "Basic Lima"]
        assert dead == []
        assert users.bad_records == 1
    finally:
        inner.teardown()
        left.teardown()


@pytest.mark.integration
def test_kafka_lookup_of_an_empty_topic_needs_a_schema(kafka_broker, new_topic):
    topic = new_topic()
    with pytest.raises(UserError, match=f"--lookup users: topic '{topic}' is empty"):
        KafkaLookup("users", topic, bootstrap_servers=kafka_broker, load_timeout=5).schema()
    schema = pa.schema([("userid", pa.string()), ("CITY", pa.string())])
    lk = KafkaLookup("users", topic, bootstrap_servers=kafka_broker, schema=schema, key_column="userid",
                     load_timeout=5)
    lk.open()
    try:
        assert lk.load().num_rows == 0
        _produce(kafka_broker, topic, [("u5", {"CITY": "Premium Kyiv"})])
        deadline = time.monotonic() + 20
        table = None
        while table is None and time.monotonic() < deadline:
            table = lk.refresh()
        assert table.to_pylist() == [{"userid": "u5", "CITY": "Premium Kyiv"}]  # key from the message key
    finally:
        lk.close()
    with pytest.raises(UserError, match="--lookup users: Kafka topic 'no-such-topic' not found"):
        KafkaLookup("users", "no-such-topic", bootstrap_servers=kafka_broker, schema=schema, load_timeout=2).open()
