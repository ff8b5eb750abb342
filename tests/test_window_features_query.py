"""The persistent windowed query (ksqlDB CREATE TABLE ... WINDOW ... EMIT CHANGES): ksqlDB's test cases, then live."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from beam_ml.clean import conformance
from beam_ml.errors import UserError
from beam_ml.features.cards import card_events
from beam_ml.features.query import WindowChange, WindowQuery
from beam_ml.testing import read_topic
from pipelines import window_query

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QTT = os.path.join(conformance.DEFAULT_DIR, "qtt")
needs_data = pytest.mark.skipif(not os.path.isdir(QTT), reason=f"no ksqlDB tests at {QTT}")

# (file, test name): every windowed-aggregation case of ksqlDB's tests whose aggregate the query has
CASES = [("tumbling-windows.json", "out of order - no grace period"),
         ("tumbling-windows.json", "out of order - explicit grace period"),
         ("tumbling-windows.json", "min tumbling"),
         ("hopping-windows.json", "out of order - no grace period"),
         ("hopping-windows.json", "out of order - explicit grace period"),
         ("hopping-windows.json", "min hopping"),
         ("hopping-windows.json", "count"),
         ("session-windows.json", "out of order - no grace period"),
         ("session-windows.json", "out of order - explicit grace period")]
_STREAM = re.compile(r"CREATE STREAM \w+ \((.*?)\) WITH", re.IGNORECASE | re.DOTALL)


def _case(name: str, test: str) -> dict:
    with open(os.path.join(QTT, name)) as f:
        return next(t for t in json.load(f)["tests"] if t["name"] == test)


def _replay(case: dict) -> tuple[list, list]:
    """(what the query emits, what ksqlDB's test expects): (key, start, end, aggregate or None) per row."""
    create, select = case["statements"]
    columns = [c.split()[0].upper() for c in _STREAM.search(create).group(1).split(",")
               if " KEY" not in c.upper()]
    # upper case: the key is matched to the select list by name (ksqlDB ignores the case)
    query = WindowQuery.parse(select.upper().replace("COUNT(1)", "COUNT(*)"))
    [agg] = query.plan.aggregates
    got = []
    for record in case["inputs"]:
        value = record["value"]
        row = value if isinstance(value, dict) else dict(zip(columns, value.split(",")))
        row = {k.upper(): v for k, v in row.items()}
        key = record["key"] if query.plan.key.upper() != "ID" or "ID" not in row else row["ID"]
        changes, _ = query.add(0, key, record["timestamp"],
                               query.plan.values_of({(agg.column or ""): row.get((agg.column or "").upper())}))
        got += [(c.key, c.start, c.end, None if c.row is None else c.row[agg.name]) for c in changes]
    expected = []
    for out in case["outputs"]:
        value = out["value"]
        value = next(iter(value.values())) if isinstance(value, dict) else value
        expected.append((out["key"], out["window"]["start"], out["window"]["end"],
                         None if value is None else float(value)))
    return got, expected


@needs_data
@pytest.mark.parametrize("name,test", CASES)
def test_ksqldb_window_cases_agree(name, test):
    got, expected = _replay(_case(name, test))
    assert got == expected


def test_late_events_are_counted_and_change_nothing():
    q = WindowQuery.parse("SELECT k, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) "
                          "GROUP BY k")
    assert q.add("p0", "a", 5_000, (None,))[0] == [WindowChange("a", 0, 10_000, {"k": "a", "n": 1,
                                                                                  "WINDOWSTART": 0,
                                                                                  "WINDOWEND": 10_000})]
    assert q.add("p0", "b", 12_000, (None,))[0][0].row["n"] == 1  # stream time 12 s: [0, 10 s) closes
    assert q.add("p0", "a", 6_000, (None,)) == ([], True)
    assert q.add("p1", "a", 6_000, (None,))[0][0].row["n"] == 1  # stream time is per partition
    assert q.late == 1 and q.open_windows == 2  # the closed window was dropped


def test_memory_stays_bounded_over_a_long_stream():
    q = WindowQuery.parse("SELECT k, SUM(x) AS s FROM e WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 5 SECONDS, "
                          "GRACE PERIOD 1 SECOND) GROUP BY k")
    for t in range(0, 1_000_000, 100):
        q.add(0, f"k{t % 7}", t, (1.0,))
    assert q.open_windows <= 7 * 3


@pytest.mark.parametrize("sql,fragment", [
    ("SELECT k, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k EMIT FINAL", "EMIT FINAL"),
    ("SELECT k, COUNT(*) AS n FROM s GROUP BY k", "WINDOW"),
    ("", "empty")])
def test_bad_statements_fail_with_one_line_naming_the_flag(sql, fragment):
    with pytest.raises(UserError) as e:
        WindowQuery.parse(sql)
    assert str(e.value).startswith("--window_sql") and fragment in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ the pipeline, on Tansu
SQL = ("CREATE TABLE velocity AS SELECT card_id, COUNT(*) AS tx, SUM(Amount) AS total, MAX(Amount) AS biggest "
       "FROM events WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 5 MINUTES, GRACE PERIOD 1 MINUTE) GROUP BY card_id "
       "EMIT CHANGES")


BAD_VALUES = [b"{not json", b'{"card_id": [1, 2], "Amount": 2.0}', b"[1, 2]"]  # stages parse, window, parse


def _produce(broker: str, topic: str, rows: list, bad: bool = False) -> None:
    """Card events keyed by card, record timestamp = event time (ROWTIME), then (`bad`) BAD_VALUES."""
    producer = KafkaProducer(bootstrap_servers=broker)
    for r in rows:
        producer.send(topic, key=r["card_id"].encode(), value=json.dumps(r).encode(), timestamp_ms=r["ts"])
    for value in BAD_VALUES if bad else ():
        producer.send(topic, key=b"x", value=value, timestamp_ms=rows[-1]["ts"])
    producer.flush(30)
    producer.close()


def _events(n: int, seed: int) -> list:
    """card_events plus one event 2 hours late (beyond the grace period)."""
    rows = card_events(n, cards=15, seed=seed)
    late = dict(rows[n // 2], ts=rows[n // 2]["ts"] - 2 * 3_600_000)
    return rows[:n - n // 4] + [late] + rows[n - n // 4:]


def _expected(rows: list) -> tuple[list, int]:
    """The changelog the query state gives for these events (checked against ksqlDB above), and the late count."""
    query = WindowQuery.parse(SQL)
    out = []
    for r in rows:
        changes, _ = query.add("p", r["card_id"], r["ts"], query.plan.values_of(r))
        out += [({"card_id": c.key, "WINDOWSTART": c.start, "WINDOWEND": c.end}, c.row) for c in changes]
    return out, query.late


def _argv(broker, source, sink, dlq, *extra):
    return [f"--window_sql={SQL}", f"--input_topic={source}", f"--output_topic={sink}", f"--dead_letter_topic={dlq}",
            f"--bootstrap_servers={broker}", "--runner=DirectRunner", "--streaming", "--max_batch_size=50", *extra]


def _decode(record):
    return json.loads(record.key), None if record.value is None else json.loads(record.value)


@pytest.mark.integration
def test_the_query_writes_each_windows_changes_and_counts_late_events(kafka_broker, new_topic):
    rows = _events(400, seed=3)
    source, sink, dlq = new_topic(prefix="in"), new_topic(prefix="win"), new_topic(prefix="dlq")
    _produce(kafka_broker, source, rows, bad=True)
    n = len(rows) + len(BAD_VALUES)
    counts = window_query.run(_argv(kafka_broker, source, sink, dlq, f"--max_records={n}", "--max_read_time=120")
                              ).counts
    expected, late = _expected(rows)
    assert late == 1
    assert counts["records_in"] == n == counts["aggregated"] + counts["dead_letters"], counts
    assert counts["late_events"] == 1 and counts["dead_letters"] == 4 and counts["window_rows"] == len(expected)
    assert read_topic(kafka_broker, sink, len(expected), 60, decode=_decode) == expected
    dead = read_topic(kafka_broker, dlq, 4, 60, decode=lambda r: json.loads(r.value))
    assert sorted(d["stage"] for d in dead) == ["late", "parse", "parse", "window"]
    assert all(d["source"] == f"{source}/0" and isinstance(d["position"], int) for d in dead)


@pytest.mark.integration
def test_the_query_emits_live_while_the_read_runs(kafka_broker, new_topic):
    """A run with no stop condition in sight: rows appear on the output topic while it is still reading."""
    rows = card_events(60, cards=5, seed=4)
    source, sink, dlq = new_topic(prefix="in"), new_topic(prefix="win"), new_topic(prefix="dlq")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.window_query",
                             *_argv(kafka_broker, source, sink, dlq, "--max_read_time=300")],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        _produce(kafka_broker, source, rows)
        expected, _ = _expected(rows)
        got = read_topic(kafka_broker, sink, len(expected), 150, decode=_decode)
        assert proc.poll() is None  # still running: the rows did not wait for the read to end
        assert got == expected
    finally:
        proc.kill()
        proc.wait(30)


@pytest.mark.integration
def test_a_restarted_query_rebuilds_its_windows_and_continues_the_changelog(kafka_broker, new_topic):
    """Two runs of one --group_id: the second rebuilds the open windows (one span back); its rows go on from there."""
    rows = card_events(300, cards=6, seed=8)
    source, sink, dlq = new_topic(prefix="in"), new_topic(prefix="win"), new_topic(prefix="dlq")
    _produce(kafka_broker, source, rows)
    argv = _argv(kafka_broker, source, sink, dlq, "--group_id=velocity", "--max_read_time=120")
    first = window_query.run(argv + ["--max_records=170"]).counts
    second = window_query.run(argv + [f"--max_records={len(rows) - 170}"]).counts
    assert first["records_in"] == 170 and second["records_in"] == len(rows) - 170
    expected, _ = _expected(rows)
    assert read_topic(kafka_broker, sink, len(expected), 60, decode=_decode) == expected
    assert 0 < second["rebuild_records"] < 170  # one window span of record time, not the whole topic


# ------------------------------------------------------------------ the definition, brute force
def _final_rows_by_definition(query: WindowQuery, events: list) -> dict:
    """(partition, key, start) -> the aggregates of every event the window took, stated literally: an event
    of time t joins each time window [s, s+SIZE) holding it (s >= 0, a multiple of ADVANCE) whose end is
    above its partition's stream time (this event included) minus grace."""
    w, stream, members = query.plan.window, {}, {}
    for part, key, t, v in events:
        stream[part] = max(stream.get(part, t), t)
        for s in range(0, t + 1, w.advance_ms):
            if s <= t < s + w.size_ms and s + w.size_ms > stream[part] - query.grace_ms:
                members.setdefault((part, key, s), []).append(v)
    return {k: (len(vs), sum(vs), max(vs)) for k, vs in members.items()}


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["TUMBLING (SIZE 10 MILLISECONDS",
                             "HOPPING (SIZE 10 MILLISECONDS, ADVANCE BY 3 MILLISECONDS",
                             "HOPPING (SIZE 12 MILLISECONDS, ADVANCE BY 4 MILLISECONDS"]),
       grace=st.integers(0, 15),
       events=st.lists(st.tuples(st.integers(0, 1), st.sampled_from("ab"), st.integers(0, 80), st.integers(1, 9)),
                       max_size=60))
def test_time_windows_end_with_the_definitions_aggregates(kind, grace, events):
    """Each window's last row = its aggregates by the definition (closed windows dropped early lose nothing)."""
    query = WindowQuery.parse(f"SELECT k, COUNT(*) AS n, SUM(v) AS s, MAX(v) AS m FROM e WINDOW {kind}, "
                              f"GRACE PERIOD {grace} MILLISECONDS) GROUP BY k")
    last, late = {}, 0
    for part, key, t, v in events:
        changes, was_late = query.add(part, key, t, (None, float(v), float(v)))
        late += was_late
        for c in changes:
            last[(part, key, c.start)] = (c.row["n"], c.row["s"], c.row["m"])
    assert last == _final_rows_by_definition(query, events)
    assert late == query.late
