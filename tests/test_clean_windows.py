"""Windowed aggregations: TUMBLING, HOPPING and SESSION windows with COUNT/SUM/MIN/MAX per key."""
import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.clean.windows import WindowedAggregate, WindowedAggregation, partial_aggregates
from beam_ml.errors import DEAD_TAG, UserError

SCHEMA = pa.schema([("userid", pa.string()), ("Amount", pa.float64()), ("ts", pa.int64()), ("note", pa.string()),
                    ("__line__", pa.int64())])
MIN = 60_000
T0 = 1_700_000_400_000  # a multiple of 10 minutes


def batch(rows, first_line=2):
    cols = list(zip(*rows))
    return pa.RecordBatch.from_pydict({"userid": list(cols[0]), "Amount": list(cols[1]), "ts": list(cols[2]),
                                       "note": list(cols[3]),
                                       "__line__": list(range(first_line, first_line + len(rows)))}, schema=SCHEMA)


EVENTS = [
    [("u1", 10.0, T0 + 1 * MIN, "{}"), ("u1", 5.0, T0 + 2 * MIN, "{}"), ("u2", 7.0, T0 + 3 * MIN, "{}"),
     ("u1", None, T0 + 4 * MIN, "{}")],
    [("u1", 20.0, T0 + 12 * MIN, "{}"), ("u2", -1.0, T0 + 13 * MIN, "{}"), ("u1", 1.0, T0 + 9 * MIN, "bad")],
]


def prepare(sql):
    return WindowedAggregation.prepare(sql, SCHEMA, timestamp_column="ts", position_column="__line__")


def run(agg):
    p = TestPipeline()
    outputs = (p | beam.Create([batch(rows, 2 + 10 * i) for i, rows in enumerate(EVENTS)])
               | WindowedAggregate(agg, source="tx"))
    return p, outputs


def test_tumbling_window_counts_sums_and_extremes_per_key():
    agg = prepare("CREATE TABLE per_user AS SELECT userid, COUNT(*) AS n, COUNT(Amount) AS n_amount, "
                  "SUM(Amount) AS total, MIN(Amount), MAX(Amount) AS biggest FROM events "
                  "WHERE Amount IS NULL OR Amount > 0 WINDOW TUMBLING (SIZE 10 MINUTES) GROUP BY userid EMIT CHANGES;")
    assert [a.name for a in agg.aggregates] == ["n", "n_amount", "total", "KSQL_COL_0", "biggest"]
    p, outputs = run(agg)
    assert_that(outputs["rows"], equal_to([
        {"userid": "u1", "n": 4, "n_amount": 3, "total": 16.0, "KSQL_COL_0": 1.0, "biggest": 10.0,
         "WINDOWSTART": T0, "WINDOWEND": T0 + 10 * MIN},
        {"userid": "u2", "n": 1, "n_amount": 1, "total": 7.0, "KSQL_COL_0": 7.0, "biggest": 7.0,
         "WINDOWSTART": T0, "WINDOWEND": T0 + 10 * MIN},
        {"userid": "u1", "n": 1, "n_amount": 1, "total": 20.0, "KSQL_COL_0": 20.0, "biggest": 20.0,
         "WINDOWSTART": T0 + 10 * MIN, "WINDOWEND": T0 + 20 * MIN}]))
    p.run().wait_until_finish()


def test_hopping_windows_count_each_event_in_every_window_it_falls_in():
    agg = prepare("SELECT userid, COUNT(*) AS n FROM events WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 5 MINUTES) "
                  "GROUP BY userid")
    table = pa.Table.from_batches([batch(EVENTS[0])])
    got = sorted((k, (s - T0) // MIN, (e - T0) // MIN, parts) for k, s, e, _, parts in partial_aggregates(agg, table))
    assert got == [("u1", -5, 5, (3,)), ("u1", 0, 10, (3,)), ("u2", -5, 5, (1,)), ("u2", 0, 10, (1,))]


def test_session_windows_merge_across_batches_and_split_at_the_gap():
    agg = prepare("SELECT userid, COUNT(*) AS n, SUM(Amount) AS total FROM events WINDOW SESSION (5 MINUTES) "
                  "GROUP BY userid")
    p, outputs = run(agg)
    # u1: 1, 2, 4 in the first batch, 9 and 12 in the second: 9 - 4 is exactly the gap, which ksqlDB
    # keeps in one session, so the partials merge into one session 1..12. u2: 3 and 13 are 10 apart.
    assert_that(outputs["rows"], equal_to([
        {"userid": "u1", "n": 5, "total": 36.0, "WINDOWSTART": T0 + 1 * MIN, "WINDOWEND": T0 + 12 * MIN},
        {"userid": "u2", "n": 1, "total": 7.0, "WINDOWSTART": T0 + 3 * MIN, "WINDOWEND": T0 + 3 * MIN},
        {"userid": "u2", "n": 1, "total": -1.0, "WINDOWSTART": T0 + 13 * MIN, "WINDOWEND": T0 + 13 * MIN}]))
    p.run().wait_until_finish()


def test_sessions_split_when_events_are_more_than_the_gap_apart():
    agg = prepare("SELECT userid, COUNT(*) AS n FROM events WINDOW SESSION (4 MINUTES) GROUP BY userid")
    table = pa.Table.from_batches([batch(EVENTS[0]), batch(EVENTS[1])])
    got = sorted((k, (s - T0) // MIN, parts) for k, s, _, _, parts in partial_aggregates(agg, table))
    assert got == [("u1", 1, (3,)), ("u1", 9, (2,)), ("u2", 3, (1,)), ("u2", 13, (1,))]


def test_rows_the_feed_fails_on_are_dead_letters_not_counted():
    agg = prepare("SELECT userid, COUNT(*) AS n FROM events WHERE EXTRACTJSONFIELD(note, '$.x') IS NULL "
                  "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY userid")
    p, outputs = run(agg)
    assert_that(outputs[DEAD_TAG] | beam.Map(lambda d: (d.source, d.position)), equal_to([("tx", 14)]),
                label="Dead")
    assert_that(outputs["rows"] | beam.Map(lambda r: (r["userid"], r["n"])), equal_to([("u1", 4), ("u2", 2)]),
                label="Rows")
    p.run().wait_until_finish()


@pytest.mark.parametrize("sql, message", [
    ("SELECT userid, COUNT(*) FROM events GROUP BY userid", "needs WINDOW TUMBLING|HOPPING|SESSION"),
    ("SELECT userid, COUNT(*) FROM events WINDOW TUMBLING (10 MINUTES) GROUP BY userid", "expected e.g. WINDOW"),
    ("SELECT userid, COUNT(*) FROM events WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 2 MINUTES) GROUP BY userid",
     "ADVANCE BY must be > 0 and at most SIZE"),
    ("SELECT userid, AVG(Amount) FROM events WINDOW SESSION (5 MINUTES) GROUP BY userid", "COUNT(*), COUNT(col)"),
    ("SELECT userid, SUM(note) FROM events WINDOW SESSION (5 MINUTES) GROUP BY userid", "is not numeric"),
    ("SELECT userid, COUNT(*) FROM events WINDOW SESSION (5 MINUTES) GROUP BY nope", "no such column"),
    ("SELECT userid, COUNT(*) FROM events WHERE nope > 1 WINDOW SESSION (5 MINUTES) GROUP BY userid",
     'Referenced column "nope" not found'),
])
def test_bad_windowed_statements_fail_at_start(sql, message):
    with pytest.raises(UserError) as e:
        prepare(sql)
    assert str(e.value).startswith("--sql: ") and message in str(e.value) and "\n" not in str(e.value)
