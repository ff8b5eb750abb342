"""The persistent windowed query (ksqlDB CREATE TABLE ... WINDOW ... EMIT CHANGES): ksqlDB's own test cases, then live."""
from __future__ import annotations

import json
import os
import re

import pytest

from beam_ml.clean import conformance
from beam_ml.errors import UserError
from beam_ml.features.query import WindowChange, WindowQuery

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
