"""Engine: rows in = rows out + filtered + dead, join semantics, failing rows become dead letters."""
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.clean import STAGE, Engine, Statement, latest_per_key

SCHEMA = pa.schema([("V1", pa.float64()), ("Class", pa.int64()), ("User", pa.string()), ("userid", pa.string()),
                    ("payload", pa.string()), ("__line__", pa.int64())])
USERS = pa.table({"userid": ["u1", "u2", "u3"], "CITY": ["Premium Berlin", "Basic Rome", "Premium Oslo"]})


def events(rows):
    """rows: (V1, Class, User, userid, payload); lines start at 2 (after the header)."""
    cols = list(zip(*rows)) if rows else [[]] * 5
    data = {f.name: list(c) for f, c in zip(SCHEMA, cols)}
    data["__line__"] = list(range(2, 2 + len(rows)))
    return pa.table(data, schema=SCHEMA)


def run(sql, batch, users=USERS, **kw):
    stmt = Statement.prepare(sql, SCHEMA, {"users": users.schema}, position_column="__line__")
    engine = Engine(stmt, {"users": users} if stmt.lookup_schemas else None)
    try:
        return engine.run(batch, **kw)
    finally:
        engine.close()


BATCH = events([
    (6.0, 1, "Hans", "u1", "{}"),       # line 2: Premium, V1 > 5
    (7.0, None, "Anna", "u2", "{}"),    # line 3: Basic
    (9.0, 0, "Li", "u9", "{}"),         # line 4: no such user
    (1.0, 0, "Olu", "u3", "{}"),        # line 5: V1 too small
    (8.0, None, None, "u3", "{}"),      # line 6: Premium, NULL user
])


def test_issue_cleaning_statement_counts_filtered_rows_exactly():
    r = run("SELECT c.V1, IFNULL(c.Class, -1) AS Class, MASK_LEFT(c.User, 2) AS User, u.CITY "
            "FROM events c INNER JOIN users u ON c.userid = u.userid "
            "WHERE c.V1 > 5 AND u.CITY LIKE 'Premium%'", BATCH)
    assert r.table.to_pylist() == [
        {"V1": 6.0, "Class": 1, "User": "Xxns", "CITY": "Premium Berlin", "__line__": 2},
        {"V1": 8.0, "Class": -1, "User": None, "CITY": "Premium Oslo", "__line__": 6}]
    assert (r.rows_in, r.rows_out, r.filtered, r.dead) == (5, 2, 3, [])


def test_inner_join_drops_unmatched_events_and_left_join_keeps_them_with_nulls():
    inner = run("SELECT c.User, u.CITY FROM events c INNER JOIN users u ON c.userid = u.userid", BATCH)
    left = run("SELECT c.User, u.CITY FROM events c LEFT JOIN users u ON c.userid = u.userid", BATCH)
    assert inner.table.column("__line__").to_pylist() == [2, 3, 5, 6] and inner.filtered == 1
    assert left.table.column("__line__").to_pylist() == [2, 3, 4, 5, 6] and left.filtered == 0
    assert left.table.to_pylist()[2] == {"User": "Li", "CITY": None, "__line__": 4}


@pytest.mark.parametrize("join", ["INNER", "LEFT"])
def test_arrow_lookup_joins_equal_duckdb_joins(join):
    """A column key is looked up in Arrow; an expression key makes DuckDB join: same rows either way."""
    by_column = Statement.prepare(f"SELECT c.User, u.CITY, UCASE(u.CITY) AS up FROM events c {join} JOIN users u "
                                  f"ON c.userid = u.userid WHERE u.CITY IS NULL OR u.CITY LIKE '%e%'", SCHEMA,
                                  {"users": USERS.schema}, position_column="__line__")
    by_expr = Statement.prepare(f"SELECT c.User, u.CITY, UCASE(u.CITY) AS up FROM events c {join} JOIN users u "
                                f"ON TRIM(c.userid) = u.userid WHERE u.CITY IS NULL OR u.CITY LIKE '%e%'", SCHEMA,
                                {"users": USERS.schema}, position_column="__line__")
    assert by_column.joins is not None and by_expr.joins is None
    a = Engine(by_column, {"users": USERS}).run(BATCH)
    b = Engine(by_expr, {"users": USERS}).run(BATCH)
    assert a.table == b.table and a.filtered == b.filtered
    assert a.table.column("__line__").to_pylist() == ([2, 3, 5, 6] if join == "INNER" else [2, 3, 4, 5, 6])


@pytest.mark.parametrize("key", ["c.userid", "TRIM(c.userid)"])
def test_set_lookup_replaces_the_rows_later_batches_join(key):
    stmt = Statement.prepare(f"SELECT u.CITY FROM events c LEFT JOIN users u ON {key} = u.userid", SCHEMA,
                             {"users": USERS.schema}, position_column="__line__")
    engine = Engine(stmt, {"users": USERS})
    assert engine.run(BATCH).table.column("CITY").to_pylist()[:2] == ["Premium Berlin", "Basic Rome"]
    engine.set_lookup("users", pa.table({"userid": ["u2"], "CITY": ["Premium Rome"]}))
    assert engine.run(BATCH).table.column("CITY").to_pylist() == [None, "Premium Rome", None, None, None]
    engine.close()


def test_chained_lookups_join_on_a_column_of_an_earlier_lookup():
    users = pa.table({"userid": ["u1", "u2"], "city_id": [10, 20]})
    cities = pa.table({"city_id": [10, 20], "name": ["Berlin", "Rome"], "premium": [True, False]})
    stmt = Statement.prepare("SELECT c.userid, ci.* FROM events c JOIN users u ON c.userid = u.userid "
                             "LEFT JOIN cities ci ON u.city_id = ci.city_id WHERE ci.premium OR c.V1 > 6",
                             SCHEMA, {"users": users.schema, "cities": cities.schema}, position_column="__line__")
    assert stmt.joins is not None and stmt.columns == ["userid", "city_id", "name", "premium"]
    r = Engine(stmt, {"users": users, "cities": cities}).run(BATCH)
    assert r.table.to_pylist() == [
        {"userid": "u1", "city_id": 10, "name": "Berlin", "premium": True, "__line__": 2},
        {"userid": "u2", "city_id": 20, "name": "Rome", "premium": False, "__line__": 3}]
    assert r.filtered == 3


def test_a_lookup_keeps_the_latest_row_per_key_so_events_never_fan_out():
    users = pa.table({"userid": ["u1", "u1", None, "u2"], "CITY": ["old", "new", "nobody", "Rome"]})
    r = run("SELECT c.User, u.CITY FROM events c LEFT JOIN users u ON c.userid = u.userid", BATCH, users=users)
    assert r.table.column("CITY").to_pylist() == ["new", "Rome", None, None, None]
    table, dropped = latest_per_key(users, "userid")
    assert table.to_pylist() == [{"userid": "u1", "CITY": "new"}, {"userid": "u2", "CITY": "Rome"}]
    assert dropped == 2


def test_only_the_failing_rows_become_dead_letters_with_the_engine_message():
    rows = [(float(i), 0, "x", "u1", json.dumps({"a": i})) for i in range(1000)]
    rows[17] = (17.0, 0, "x", "u1", "not json")
    rows[640] = (640.0, 0, "x", "u1", "{broken")
    batch = events(rows)
    r = run("SELECT V1, EXTRACTJSONFIELD(payload, '$.a') AS a FROM events WHERE V1 >= 10", batch,
            source="data/tx.csv")
    assert r.rows_in == 1000 and r.rows_out == 988 and r.filtered == 10 and len(r.dead) == 2
    assert [d.position for d in r.dead] == [19, 642]  # the rows' own lines
    assert all(d.stage == STAGE and d.source == "data/tx.csv" for d in r.dead)
    assert r.dead[0].reason.startswith("sql: Invalid Input Error: Malformed JSON")
    assert json.loads(r.dead[0].raw)["payload"] == "not json"
    assert r.table.column("a").to_pylist() == [str(i) for i in range(10, 1000) if i not in (17, 640)]


def test_dead_letters_mask_pii_columns_and_take_their_source_from_a_column():
    schema = SCHEMA.append(pa.field("src", pa.string()))
    batch = events([(1.0, 0, "Hansi Huber", "u1", "bad")]).append_column("src", pa.array(["tx/3"]))
    stmt = Statement.prepare("SELECT EXTRACTJSONFIELD(payload, '$.a') AS a FROM events", schema,
                             position_column="__line__")
    r = Engine(stmt, mask_columns=["User"]).run(batch, source_column="src")
    (d,) = r.dead
    assert d.source == "tx/3" and d.position == 2
    assert "Hansi Huber" not in d.raw


def test_empty_and_fully_filtered_batches_keep_the_output_schema():
    sql = "SELECT V1, UCASE(User) AS U FROM events WHERE V1 > 100"
    empty = run(sql, events([]))
    assert empty.table.schema.names == ["V1", "U", "__line__"] and empty.rows_in == 0
    none = run(sql, BATCH)
    assert none.table.num_rows == 0 and none.filtered == 5
    assert none.table.schema == empty.table.schema


def test_output_keeps_input_order_even_when_the_lookup_is_larger_than_the_batch():
    users = pa.table({"userid": [f"u{i}" for i in range(20000)], "CITY": [f"c{i}" for i in range(20000)]})
    rng = np.random.default_rng(1)
    ids = [f"u{i}" for i in rng.integers(0, 20000, 3000)]
    batch = events([(float(i), 0, "x", uid, "{}") for i, uid in enumerate(ids)])
    r = run("SELECT V1, u.CITY FROM events c JOIN users u ON c.userid = u.userid", batch, users=users)
    assert r.table.column("V1").to_pylist() == [float(i) for i in range(3000)]
    assert r.table.column("CITY").to_pylist() == [f"c{uid[1:]}" for uid in ids]


_ENGINES = {}


def _accounting_engine(join: str, key: str) -> Engine:
    if (join, key) not in _ENGINES:
        stmt = Statement.prepare(f"SELECT V1, u.CITY, EXTRACTJSONFIELD(payload, '$.a') AS a FROM events c {join} "
                                 f"JOIN users u ON {key} = u.userid WHERE V1 > 0", SCHEMA, {"users": USERS.schema},
                                 position_column="__line__")
        _ENGINES[join, key] = Engine(stmt, {"users": USERS})
    return _ENGINES[join, key]


@pytest.fixture(scope="module", autouse=True)
def _close_engines():
    yield
    for engine in _ENGINES.values():
        engine.close()


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.tuples(st.one_of(st.none(), st.floats(-10, 10)), st.sampled_from(["u1", "u2", "u7", None]),
                               st.sampled_from(["{}", '{"a": 1}', "oops"])), max_size=60),
       join=st.sampled_from(["INNER", "LEFT"]), key=st.sampled_from(["c.userid", "TRIM(c.userid)"]))
def test_accounting_always_adds_up(data, join, key):
    batch = events([(v, 1, "x", uid, p) for v, uid, p in data])
    r = _accounting_engine(join, key).run(batch)
    assert r.rows_in == len(data) == r.rows_out + r.filtered + len(r.dead)
    bad = {i + 2 for i, (v, uid, p) in enumerate(data) if p == "oops"}
    assert {d.position for d in r.dead} <= bad  # only rows with bad JSON can die (filtered ones may not)
    kept = r.table.column("__line__").to_pylist()
    assert kept == sorted(kept) and not set(kept) & bad


def test_engine_refuses_a_batch_without_the_statement_columns():
    stmt = Statement.prepare("SELECT V1 FROM events", SCHEMA, position_column="__line__")
    with pytest.raises(ValueError, match="lacks column"):
        Engine(stmt).run(pa.table({"V1": [1.0]}))
