"""ApplySql in a TestPipeline: cleaned batches, dead letters and counters that add up."""
import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.clean import ApplySql, ArrowLookup, Statement
from beam_ml.metrics import SQL
from beam_ml.errors import DEAD_TAG
from beam_ml.metrics import query_counter

EVENTS = pa.schema([("V1", pa.float64()), ("Class", pa.int64()), ("User", pa.string()), ("userid", pa.string()),
                    ("payload", pa.string()), ("__line__", pa.int64())])
USERS = pa.table({"userid": ["u1", "u2"], "CITY": ["Premium Berlin", "Basic Rome"]})
SQL_TEXT = ("SELECT c.V1, IFNULL(c.Class, -1) AS Class, MASK_LEFT(c.User, 2) AS User, u.CITY, "
            "CAST(EXTRACTJSONFIELD(c.payload, '$.n') AS INTEGER) AS n "
            "FROM events c INNER JOIN users u ON c.userid = u.userid WHERE c.V1 > 5")


def _batch(rows, first_line):
    cols = list(zip(*rows))
    data = {f.name: list(c) for f, c in zip(EVENTS, cols)}
    data["__line__"] = list(range(first_line, first_line + len(rows)))
    return pa.RecordBatch.from_pydict(data, schema=EVENTS)


BATCHES = [
    _batch([(6.0, 1, "Hans", "u1", '{"n": 1}'),      # kept
            (7.0, None, "Anna", "u2", '{"n": 2}'),   # kept, Class -> -1
            (1.0, 0, "Li", "u1", '{"n": 3}'),        # filtered by WHERE
            (9.0, 0, "Olu", "u7", '{"n": 4}')], 2),  # filtered by the INNER JOIN
    _batch([(8.0, 0, "Mia", "u2", '{"n": "x"}'),     # dead: 'x' is not an INTEGER
            (9.5, 1, "Noa", "u1", '{"n": 6}')], 6),  # kept
]


def test_apply_sql_in_a_pipeline():
    stmt = Statement.prepare(SQL_TEXT, EVENTS, {"users": USERS.schema}, position_column="__line__")
    p = TestPipeline()
    outputs = (p | beam.Create(BATCHES) | "ApplySql" >> ApplySql(stmt, [ArrowLookup("users", USERS)],
                                                                 source="data/events.csv"))
    rows = outputs.rows | "Rows" >> beam.FlatMap(lambda b: b.to_pylist())
    dead = outputs[DEAD_TAG] | "Dead" >> beam.Map(lambda d: (d.source, d.position, d.stage, d.reason.split(":")[1]))
    assert_that(rows, equal_to([
        {"V1": 6.0, "Class": 1, "User": "Xxns", "CITY": "Premium Berlin", "n": 1, "__line__": 2},
        {"V1": 7.0, "Class": -1, "User": "Xxna", "CITY": "Basic Rome", "n": 2, "__line__": 3},
        {"V1": 9.5, "Class": 1, "User": "Xxa", "CITY": "Premium Berlin", "n": 6, "__line__": 7}]), label="CheckRows")
    assert_that(dead, equal_to([("data/events.csv", 6, "sql", " Conversion Error")]), label="CheckDead")
    result = p.run()
    result.wait_until_finish()
    counts = {name: query_counter(result, SQL, name) for name in ("rows_in", "rows_out", "rows_filtered", "dead")}
    assert counts == {"rows_in": 6, "rows_out": 3, "rows_filtered": 2, "dead": 1}


def test_apply_sql_needs_every_joined_lookup():
    stmt = Statement.prepare(SQL_TEXT, EVENTS, {"users": USERS.schema}, position_column="__line__")
    with pytest.raises(ValueError, match=r"joins \['users'\]"):
        ApplySql(stmt, [])
