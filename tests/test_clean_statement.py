"""Statement preparation: what a statement becomes, and the one-line errors of bad ones."""
import pickle

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.clean import Statement, read_statement, strip_ksql
from beam_ml.errors import UserError

EVENTS = pa.schema([("Time", pa.float64()), ("V1", pa.float64()), ("V2", pa.float64()), ("Amount", pa.float64()),
                    ("Class", pa.int64()), ("User", pa.string()), ("userid", pa.string()), ("ts", pa.int64()),
                    ("__line__", pa.int64())])
USERS = pa.schema([("userid", pa.string()), ("CITY", pa.string()), ("tier", pa.int64())])
ISSUE_SQL = ("CREATE STREAM creditcardfraud_clean WITH (KAFKA_TOPIC='clean', VALUE_FORMAT='JSON') AS "
             "SELECT c.Time, c.V1, c.V2, c.Amount, IFNULL(c.Class, -1) AS Class, MASK_LEFT(c.User, 2) AS User, "
             "u.CITY FROM events c INNER JOIN USERS u ON c.userid = u.userid "
             "WHERE c.V1 > 5 AND c.V2 IS NOT NULL AND u.CITY LIKE 'Premium%' EMIT CHANGES;")


def prepare(sql, lookups=None, **kw):
    return Statement.prepare(sql, EVENTS, {"users": USERS} if lookups is None else lookups,
                             position_column="__line__", **kw)


def test_issue_statement_output_schema_is_what_spec_inference_sees():
    stmt = prepare(ISSUE_SQL)
    assert stmt.output_schema == pa.schema([
        ("Time", pa.float64()), ("V1", pa.float64()), ("V2", pa.float64()), ("Amount", pa.float64()),
        ("Class", pa.int64()), ("User", pa.string()), ("CITY", pa.string()), ("__line__", pa.int64())])
    assert stmt.columns == ["Time", "V1", "V2", "Amount", "Class", "User", "CITY"]
    assert stmt.lookup_keys == {"users": "userid"} and stmt.lookup_joins == {"users": "INNER"}


def test_computed_columns_are_named_like_ksqldb_and_keep_the_input_case():
    stmt = prepare("SELECT v1, ROUND(Amount, 1), UCASE(User), MASK(User) AS masked, "
                   "TIMESTAMPTOSTRING(ts, 'yyyy-MM-dd') FROM events")
    assert stmt.columns == ["V1", "KSQL_COL_0", "KSQL_COL_1", "masked", "KSQL_COL_2"]
    assert [f.type for f in stmt.output_schema][:5] == [pa.float64(), pa.float64(), pa.string(), pa.string(),
                                                        pa.string()]


def test_plus_concatenates_strings_as_in_ksqldb():
    stmt = prepare("SELECT User + ' (' + u.CITY + ')' AS who, V1 + 1 AS v FROM events c "
                   "LEFT JOIN users u ON c.userid = u.userid WHERE 'x' + User = 'xHans'")
    assert stmt.output_schema.field("who").type == pa.string()
    assert stmt.output_schema.field("v").type == pa.float64()
    assert "||" in stmt.query


def test_star_hides_the_position_column_and_left_join_star_adds_lookup_columns():
    assert prepare("SELECT * FROM events").columns == EVENTS.names[:-1]
    stmt = prepare("SELECT e.*, u.CITY, u.tier FROM events e LEFT JOIN users u ON e.userid = u.userid")
    assert stmt.columns == EVENTS.names[:-1] + ["CITY", "tier"]
    assert stmt.lookup_joins == {"users": "LEFT"}
    stmt = prepare("SELECT * EXCLUDE (Time, ts) FROM events")  # DuckDB computes every column then
    assert stmt.plan is None and stmt.columns == ["V1", "V2", "Amount", "Class", "User", "userid"]


@pytest.mark.parametrize("suffix", ["", ";", " EMIT CHANGES", " emit changes ;", " EMIT FINAL; -- done",
                                    "\n/* note */ EMIT CHANGES;\n"])
@pytest.mark.parametrize("prefix", ["", "CREATE STREAM clean AS ", "create or replace stream \"Clean\" AS\n",
                                    "CREATE TABLE t WITH (kafka_topic='a;b)', partitions=1) AS "])
def test_ksql_spellings_are_accepted(prefix, suffix):
    stmt = prepare(f"{prefix}SELECT V1 FROM events WHERE V1 > 0{suffix}")
    assert stmt.columns == ["V1"]


@given(where=st.sampled_from(["V1 > 0", "User = 'EMIT CHANGES'", "User LIKE '%;'", "Class IS NULL"]))
def test_strip_ksql_keeps_the_select_whole(where):
    select = f"SELECT V1, User FROM events WHERE {where}"
    assert strip_ksql(f"CREATE STREAM s AS {select} EMIT CHANGES;") == select
    assert strip_ksql(select) == select


BAD = [
    ("SELEC V1 FROM events", 'Parser Error: syntax error at or near "SELEC"'),
    ("SELECT nosuch FROM events", 'Referenced column "nosuch" not found'),
    ("SELECT V1 FROM transactions", "the first table must be events"),
    ("SELECT V1 FROM events JOIN people p ON p.id = userid", "unknown lookup table 'people'"),
    ("DROP TABLE events", "only a SELECT over events"),
    ("INSERT INTO events VALUES (1)", "only a SELECT over events"),
    ("SELECT 1; SELECT 2", "expected one SELECT statement, got 2"),
    ("SELECT V1 FROM events UNION ALL SELECT V2 FROM events", "UNION, INTERSECT and EXCEPT are not supported"),
    ("WITH x AS (SELECT V1 FROM events) SELECT * FROM x", "WITH"),
    ("SELECT COUNT(*) FROM events", "aggregate function COUNT(*) is not supported"),
    ("SELECT User, SUM(Amount) FROM events GROUP BY User", "not supported"),
    ("SELECT V1 FROM events ORDER BY V1", "ORDER BY is not supported"),
    ("SELECT V1 FROM events LIMIT 3", "LIMIT is not supported"),
    ("SELECT DISTINCT User FROM events", "DISTINCT is not supported"),
    ("SELECT row_number() OVER () FROM events", "window function ROW_NUMBER() OVER is not supported"),
    ("SELECT V1 FROM events WHERE userid IN (SELECT userid FROM users)", "subqueries are not supported"),
    ("SELECT * FROM read_csv('/etc/passwd')", "not a table function"),
    ("SELECT V1 FROM events e, users u", "CROSS JOIN is not supported"),
    ("SELECT V1 FROM events e RIGHT JOIN users u ON e.userid = u.userid", "RIGHT JOIN is not supported"),
    ("SELECT V1 FROM events e JOIN users u USING (userid)", "USING is not supported"),
    ("SELECT V1 FROM events e JOIN users u ON u.CITY = e.User || u.userid", "must be ON <events expression> = u."),
    ("SELECT V1 FROM events e JOIN users u ON e.V1 > u.tier", "must be ON <events expression> = u."),
    ("SELECT V1 FROM events e JOIN users u ON e.Class = u.userid", "events side is int64 but u.userid is string"),
    ("SELECT * FROM events e JOIN users u ON e.userid = u.userid", "more than one column named userid"),
    ("SELECT __line__ FROM events", "'__line__' is the row position beam_ml carries"),
    ("SELECT V1 FROM events WINDOW TUMBLING (SIZE 10 MINUTES)", "WINDOW TUMBLING is not supported"),
    ("SELECT V1 FROM events PARTITION BY User", "PARTITION BY is not supported"),
    ("SELECT upper(V1) FROM events", "function UPPER is not supported"),
    ("SELECT UCASE(V1) FROM events", "No function matches"),
    ("SELECT V1 FROM events WHERE V1 > $1", "parameters"),
    ("   ;  ", "the statement is empty"),
]


@pytest.mark.parametrize("sql, message", BAD)
def test_bad_statements_fail_at_start_with_one_line_naming_the_flag(sql, message):
    with pytest.raises(UserError) as e:
        prepare(sql, flag="--sql")
    text = str(e.value)
    assert text.startswith("--sql: ") and "\n" not in text
    assert message in text


def test_lookup_flag_names_are_checked():
    with pytest.raises(UserError, match="--lookup: 'events' cannot name a lookup"):
        Statement.prepare("SELECT V1 FROM events", EVENTS, {"events": USERS})


def test_statement_round_trips_through_dict_and_pickle_and_rebinds_to_new_input():
    stmt = prepare(ISSUE_SQL)
    d = stmt.to_dict()
    assert d["lookups"]["users"]["key"] == "userid"
    again = Statement.from_dict(d)
    assert again.output_schema == stmt.output_schema and again.query == stmt.query
    assert pickle.loads(pickle.dumps(stmt)) == stmt
    # Serving input without the label: the stored statement no longer fits, and says why.
    serving = pa.schema([f for f in EVENTS if f.name != "Class"])
    with pytest.raises(UserError, match='--sql: .*"Class"'):
        Statement.from_dict(d, events_schema=serving)


def test_read_statement_reads_sql_files(tmp_path):
    path = tmp_path / "clean.sql"
    path.write_text(ISSUE_SQL)
    assert read_statement(str(path)) == ISSUE_SQL
    assert read_statement("SELECT V1 FROM events") == "SELECT V1 FROM events"
    with pytest.raises(UserError, match="--sql: file not found"):
        read_statement(str(tmp_path / "missing.sql"))


def test_statements_cannot_read_files(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(UserError, match="not a table function"):
        prepare(f"SELECT V1 FROM events JOIN read_csv('{secret}') t ON t.a = V1")
    with pytest.raises(UserError, match="unknown lookup table"):
        prepare(f"SELECT V1 FROM events e JOIN '{secret}' t ON t.a = e.V1")


_TOKENS = ["SELECT", "*", "V1", "c.V1", "u.CITY", "FROM", "events", "c", "users", "u", "JOIN", "LEFT", "INNER",
           "ON", "c.userid", "=", "u.userid", "WHERE", "AND", "OR", ">", "5", "'x'", "(", ")", ",", "AS", "IFNULL",
           "MASK_LEFT", "User", "2", "CASE", "WHEN", "THEN", "ELSE", "END", "GROUP", "BY", "EMIT", "CHANGES", ";",
           "CREATE", "STREAM", "s", "NULL", "IS", "NOT", "LIKE", "'%'", "ROUND", "COUNT", "--", "/*", "*/", "\"",
           "`", "TIMESTAMPTOSTRING", "'yyyy'", "EXTRACTJSONFIELD", "'$.a'", "UNION", "LIMIT", "1"]


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.sampled_from(_TOKENS), max_size=25))
def test_any_statement_text_is_prepared_or_refused_with_a_user_error(words):
    sql = " ".join(words)
    try:
        stmt = prepare(sql)
    except UserError as e:
        assert str(e).startswith("--sql: ") and "\n" not in str(e)
        return
    assert stmt.output_schema.names[-1] == "__line__"


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=60))
def test_arbitrary_text_never_escapes_as_another_exception(text):
    try:
        prepare(text)
    except UserError:
        pass
