"""ksqlDB windowed aggregations (TUMBLING, HOPPING, SESSION; COUNT/SUM/MIN/MAX per key) on Beam windows.

    agg = WindowedAggregation.prepare(
        "SELECT userid, COUNT(*) AS tx_10m, SUM(Amount) AS amount_10m, MAX(Amount) AS max_10m "
        "FROM events WHERE Amount > 0 WINDOW TUMBLING (SIZE 10 MINUTES) GROUP BY userid EMIT CHANGES",
        events_schema, timestamp_column="event_ts")                   # epoch ms
    features, dead = (batches | "WindowedFeatures" >> WindowedAggregate(agg)).values()
    # features: {"userid": "u1", "tx_10m": 3, "amount_10m": 41.5, "max_10m": 20.0,
    #            "WINDOWSTART": 1700000400000, "WINDOWEND": 1700001000000}

How it runs without a row-by-row step: the statement's WHERE and the
columns it needs go through the cleaning engine (`ApplySql`: ksqlDB
functions, dead letters for rows it fails on, filtered rows counted); each
batch is then reduced in Arrow to one partial aggregate per key and window
(a hopping window repeats each row once per window it falls in; sessions
split where a key's consecutive events are a gap or more apart); Beam windows
each partial by the interval it carries (Sessions merging for SESSION) and a
CombineFn merges partials per key and window. Output rows carry ksqlDB's
WINDOWSTART/WINDOWEND (epoch ms); `GRACE PERIOD` becomes the allowed lateness.

As features for scoring, ksqlDB's pattern applies: write these rows to a
topic keyed by the key and join it as a lookup (`KafkaLookup`) in the scoring
statement. On the local runner a live Kafka source's watermark never advances
(see README, Limits), so event-time windows only fire at the end of a bounded
read there; on Dataflow they fire as the watermark passes.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import coders
from apache_beam.transforms.window import IntervalWindow, NonMergingWindowFn, Sessions, WindowFn
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_ml.clean.statement import EVENTS, Statement, connect, strip_ksql
from beam_ml.clean.transform import ApplySql
from beam_ml.errors import DEAD_TAG, UserError

__all__ = ["WindowSpec", "Aggregate", "WindowedAggregation", "WindowedAggregate", "partial_aggregates",
           "parse_windowed_select", "RowsAndDead"]

_UNITS_MS = {"MILLISECOND": 1, "SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
_DURATION = r"(\d+)\s+(MILLISECONDS?|SECONDS?|MINUTES?|HOURS?|DAYS?)"
_WINDOW = re.compile(r"\bWINDOW\s+(TUMBLING|HOPPING|SESSION)\s*\(", re.IGNORECASE)
_FUNCS = {"count_star": "count", "count": "count", "sum": "sum", "min": "min", "max": "max"}


def _ms(number: str, unit: str) -> int:
    return int(number) * _UNITS_MS[unit.upper().rstrip("S")]


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """kind: 'tumbling' | 'hopping' | 'session'; sizes in ms (advance = size for tumbling)."""

    kind: str
    size_ms: int = 0
    advance_ms: int = 0
    gap_ms: int = 0
    grace_ms: int = 0

    @classmethod
    def parse(cls, kind: str, body: str, flag: str = "--sql") -> "WindowSpec":
        text = " ".join(body.split()).upper()
        grace = re.search(r",?\s*GRACE PERIOD " + _DURATION, text)
        grace_ms = _ms(grace.group(1), grace.group(2)) if grace else 0
        text = (text[:grace.start()] + text[grace.end():]).strip() if grace else text
        text = re.sub(r",?\s*RETENTION " + _DURATION, "", text).strip()
        kind = kind.lower()
        m = {"tumbling": re.fullmatch(r"SIZE " + _DURATION, text),
             "hopping": re.fullmatch(r"SIZE " + _DURATION + r"\s*,\s*ADVANCE BY " + _DURATION, text),
             "session": re.fullmatch(_DURATION, text)}[kind]
        usage = {"tumbling": "TUMBLING (SIZE 10 MINUTES)",
                 "hopping": "HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE)",
                 "session": "SESSION (5 MINUTES)"}[kind]
        if not m:
            raise UserError(f"{flag}: cannot read WINDOW {kind.upper()} ({body.strip()}): expected e.g. "
                            f"WINDOW {usage}")
        if kind == "tumbling":
            size = _ms(m.group(1), m.group(2))
            spec = cls(kind, size, size, 0, grace_ms)
        elif kind == "hopping":
            size, advance = _ms(m.group(1), m.group(2)), _ms(m.group(3), m.group(4))
            if not 0 < advance <= size:
                raise UserError(f"{flag}: WINDOW HOPPING: ADVANCE BY must be > 0 and at most SIZE")
            spec = cls(kind, size, advance, 0, grace_ms)
        else:
            spec = cls(kind, 0, 0, _ms(m.group(1), m.group(2)), grace_ms)
        if (spec.size_ms or spec.gap_ms) <= 0:
            raise UserError(f"{flag}: WINDOW {kind.upper()}: the size must be positive")
        return spec


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """One output column: func in count/sum/min/max over `column` (None: COUNT(*))."""

    name: str
    func: str
    column: Optional[str]


@dataclasses.dataclass(frozen=True)
class WindowedAggregation:
    """A windowed aggregation statement, checked against the input schema before any data moves.

    Attributes:
      sql: as written.
      window: the window.
      key: the GROUP BY column (its output keeps the name).
      aggregates: the aggregate columns, in order.
      timestamp_column: the input column of event times, epoch ms.
      statement: the cleaning statement feeding the aggregation (WHERE, needed columns).
    """

    sql: str
    window: WindowSpec
    key: str
    aggregates: tuple
    timestamp_column: str
    statement: Statement

    @classmethod
    def prepare(cls, sql: str, events_schema: pa.Schema, timestamp_column: str,
                position_column: Optional[str] = None, lookups: Optional[Mapping[str, pa.Schema]] = None,
                flag: str = "--sql") -> "WindowedAggregation":
        """Parses `SELECT key, AGG(col) [AS name], ... FROM events [WHERE ...] WINDOW ... GROUP BY key`.

        Raises:
          UserError: one line naming `flag`.
        """
        if timestamp_column not in events_schema.names:
            raise UserError(f"{flag}: the timestamp column {timestamp_column!r} is not in the input")
        window, key, aggregates, rest = parse_windowed_select(sql, events_schema.names, flag)
        cols = [key, timestamp_column] + sorted({a.column for a in aggregates if a.column} - {key, timestamp_column})
        where = _where_text(rest)
        feed = Statement.prepare(
            f"SELECT {', '.join(_quote(c) for c in cols)} FROM {EVENTS}" + (f" WHERE {where}" if where else ""),
            events_schema, lookups, position_column=position_column, flag=flag)
        for a in aggregates:
            if a.func == "sum" and not pa.types.is_integer(feed.output_schema.field(a.column).type) and \
                    not pa.types.is_floating(feed.output_schema.field(a.column).type):
                raise UserError(f"{flag}: SUM({a.column}): the column is not numeric")
        return cls(sql, window, key, tuple(aggregates), timestamp_column, feed)


def parse_windowed_select(sql: str, columns: Optional[Iterable[str]], flag: str = "--sql",
                          functions: Mapping[str, str] = None) -> tuple:
    """Reads `SELECT key, AGG(col) [AS name], ... FROM events [WHERE ...] WINDOW ... GROUP BY key`.

    Args:
      sql: the statement.
      columns: the input's column names (key and aggregated columns are matched
        case-insensitively and returned as spelled here); None: no check, names as written.
      flag: named in errors.
      functions: DuckDB function name -> aggregate name (default COUNT/SUM/MIN/MAX).

    Returns:
      (WindowSpec, key column, tuple of Aggregate, the statement without its WINDOW clause).

    Raises:
      UserError: one line naming `flag`.
    """
    funcs = _FUNCS if functions is None else functions
    allowed = ", ".join(sorted({f.upper() + "(col)" for f in funcs.values()}))
    text = strip_ksql(sql.replace("\n", " "), flag) if not _WINDOW.search(sql) else _strip_outer(sql, flag)
    w = _WINDOW.search(text)
    if not w:
        raise UserError(f"{flag}: a windowed aggregation needs WINDOW TUMBLING|HOPPING|SESSION (...)")
    i = _closing(text, w.end() - 1)
    window = WindowSpec.parse(w.group(1), text[w.end():i], flag)
    rest = text[:w.start()] + " " + text[i + 1:]
    con = connect()
    try:
        res = json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [rest]).fetchall()[0][0])
        if res.get("error"):
            raise UserError(f"{flag}: {res.get('error_message', 'cannot parse')}")
        node = res["statements"][0]["node"]
    finally:
        con.close()
    groups = node.get("group_expressions") or []
    if len(groups) != 1 or groups[0].get("class") != "COLUMN_REF":
        raise UserError(f"{flag}: a windowed aggregation groups by one column: GROUP BY <key column>")
    names = {n.lower(): n for n in columns} if columns is not None else None
    key = _name(names, groups[0]["column_names"][-1])
    if key is None:
        raise UserError(f"{flag}: GROUP BY {groups[0]['column_names'][-1]}: no such column in the input")
    aggregates, generated = [], 0
    for item in node["select_list"]:
        if item.get("class") == "COLUMN_REF" and _name(names, item["column_names"][-1]) == key:
            continue
        func = item.get("function_name", "").lower() if item.get("class") == "FUNCTION" else ""
        if func not in funcs or item.get("distinct") or item.get("filter"):
            raise UserError(f"{flag}: a windowed aggregation selects its key and COUNT(*), {allowed}")
        args = [a["expression"] for a in item.get("arguments", [])]
        column = None
        if func != "count_star":
            if len(args) != 1 or args[0].get("class") != "COLUMN_REF":
                raise UserError(f"{flag}: {func.upper()} takes one input column")
            column = _name(names, args[0]["column_names"][-1])
            if column is None:
                raise UserError(f"{flag}: {func.upper()}({args[0]['column_names'][-1]}): no such column")
        name = item.get("alias") or f"KSQL_COL_{generated}"
        generated += 0 if item.get("alias") else 1
        aggregates.append(Aggregate(name, funcs[func], column))
    if not aggregates:
        raise UserError(f"{flag}: a windowed aggregation needs at least one aggregate")
    return window, key, tuple(aggregates), rest


def _name(names: Optional[dict], name: str) -> Optional[str]:
    return name if names is None else names.get(name.lower())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _closing(text: str, start: int) -> int:
    """The index of the parenthesis closing the one at `start` (len(text) if none)."""
    depth, i = 0, start
    while i < len(text):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    return i


def _strip_outer(sql: str, flag: str) -> str:
    # strip_ksql refuses WINDOW clauses (they are not per-batch); take the
    # WINDOW clause out, strip, and put it back where it was.
    m = _WINDOW.search(sql)
    marker = " __BM_WINDOW__ "
    i = _closing(sql, m.end() - 1)
    stripped = strip_ksql(sql[:m.start()] + marker + sql[i + 1:], flag)
    return stripped.replace(marker.strip(), sql[m.start():i + 1])


def _where_text(select_sql: str) -> Optional[str]:
    """The WHERE condition's text between WHERE and GROUP BY (outside quotes)."""
    upper = select_sql.upper()
    w = re.search(r"\bWHERE\b", upper)
    g = re.search(r"\bGROUP\s+BY\b", upper)
    if not w:
        return None
    return select_sql[w.end():g.start() if g else len(select_sql)].strip()


# --------------------------------------------------------------------------
# Per batch: partial aggregates per key and window, in Arrow.


def partial_aggregates(agg: WindowedAggregation, table: pa.Table) -> list[tuple[Any, int, int, int, tuple]]:
    """One partial per (key, window) of a batch of the feed statement's rows.

    Returns:
      (key, window start ms, window end ms, latest event ms, partial) tuples;
      a partial holds per aggregate: count -> n, sum -> (sum, n non-null),
      min/max -> value or None. Rows with a NULL key or time are left out
      (ksqlDB drops them too).
    """
    w = agg.window
    t = table.filter(pc.and_(pc.is_valid(table.column(agg.key)), pc.is_valid(table.column(agg.timestamp_column))))
    if t.num_rows == 0:
        return []
    ts = t.column(agg.timestamp_column).to_numpy(zero_copy_only=False).astype(np.int64)
    if w.kind == "session":
        order = pc.sort_indices(pa.table({"k": t.column(agg.key), "t": pa.array(ts)}),
                                sort_keys=[("k", "ascending"), ("t", "ascending")]).to_numpy()
        t, ts = t.take(pa.array(order)), ts[order]
        keys = t.column(agg.key)
        new_key = np.ones(len(ts), dtype=bool)
        new_key[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(ts) - 1)).to_numpy(zero_copy_only=False)
        # ksqlDB (Kafka Streams) keeps records at most the gap apart in one session.
        new_session = new_key | np.concatenate([[True], np.diff(ts) > w.gap_ms])
        group = np.cumsum(new_session)
    else:
        first = np.floor_divide(ts - w.size_ms, w.advance_ms) + 1
        last = np.floor_divide(ts, w.advance_ms)
        copies = (last - first + 1).astype(np.int64)
        rows = np.repeat(np.arange(len(ts)), copies)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(copies) - copies, copies)
        group = (np.repeat(first, copies) + offsets) * w.advance_ms  # window start
        t, ts = t.take(pa.array(rows)), ts[rows]
    work = {"k": t.column(agg.key), "g": pa.array(group), "ts": pa.array(ts)}
    specs = [("ts", "max"), ("ts", "min")]
    for i, a in enumerate(agg.aggregates):
        if a.column is None:
            work[f"a{i}"] = pa.array(np.ones(t.num_rows, dtype=np.int64))
            specs.append((f"a{i}", "sum"))
        else:
            work[f"a{i}"] = t.column(a.column)
            specs += {"count": [(f"a{i}", "count")], "sum": [(f"a{i}", "sum"), (f"a{i}", "count")],
                      "min": [(f"a{i}", "min")], "max": [(f"a{i}", "max")]}[a.func]
    grouped = pa.table(work).group_by(["k", "g"], use_threads=False).aggregate(specs).to_pydict()
    out = []
    for j in range(len(grouped["k"])):
        parts = []
        for i, a in enumerate(agg.aggregates):
            if a.column is None:
                parts.append(grouped[f"a{i}_sum"][j])
            elif a.func == "count":
                parts.append(grouped[f"a{i}_count"][j])
            elif a.func == "sum":
                parts.append((grouped[f"a{i}_sum"][j], grouped[f"a{i}_count"][j]))
            else:
                parts.append(grouped[f"a{i}_{a.func}"][j])
        if w.kind == "session":
            # Beam merges overlapping windows; one ms more makes "exactly the gap apart" overlap.
            start, end = grouped["ts_min"][j], grouped["ts_max"][j] + w.gap_ms + 1
        else:
            start, end = grouped["g"][j], grouped["g"][j] + w.size_ms
        out.append((grouped["k"][j], int(start), int(end), int(grouped["ts_max"][j]), tuple(parts)))
    return out


def _merge(agg: WindowedAggregation, a: Optional[tuple], b: tuple) -> tuple:
    if a is None:
        return b
    merged = []
    for spec, x, y in zip(agg.aggregates, a, b):
        if spec.column is None or spec.func == "count":
            merged.append(x + y)
        elif spec.func == "sum":
            merged.append(((x[0] or 0) + (y[0] or 0) if (x[1] or y[1]) else None, x[1] + y[1]))
        else:
            vals = [v for v in (x, y) if v is not None]
            merged.append((min if spec.func == "min" else max)(vals) if vals else None)
    return tuple(merged)


class _MergePartials(beam.CombineFn):
    def __init__(self, agg: WindowedAggregation):
        self._agg = agg

    def create_accumulator(self):
        return None

    def add_input(self, acc, partial):
        return _merge(self._agg, acc, partial)

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if acc is not None:
                out = _merge(self._agg, out, acc)
        return out

    def extract_output(self, acc):
        return acc


def _ms_timestamp(ms: int) -> Timestamp:
    return Timestamp(micros=int(ms) * 1000)


class _CarriedWindows(NonMergingWindowFn):
    """Each partial's window is the (tumbling or hopping) interval it was computed for."""

    def assign(self, context):
        _, (start, end, _) = context.element
        return [IntervalWindow(_ms_timestamp(start), _ms_timestamp(end))]

    def get_window_coder(self):
        return coders.IntervalWindowCoder()


class _CarriedSessions(WindowFn):
    """A partial session spans [first event, last event + gap + 1 ms); Beam merges sessions that overlap.

    Not a subclass of Sessions: runners rebuild a Sessions from its URN and
    would assign windows by timestamp, losing the span each partial carries.
    """

    def assign(self, context):
        _, (start, end, _) = context.element
        return [IntervalWindow(_ms_timestamp(start), _ms_timestamp(end))]

    def get_window_coder(self):
        return coders.IntervalWindowCoder()

    merge = Sessions.merge


def _to_row(element, agg: WindowedAggregation, window=beam.DoFn.WindowParam) -> dict:
    key, parts = element
    row = {agg.key: key}
    for spec, p in zip(agg.aggregates, parts):
        row[spec.name] = p[0] if spec.func == "sum" and spec.column is not None else p
    row["WINDOWSTART"] = window.start.micros // 1000
    # ksqlDB ends a session window at its last event; Beam's runs a gap (+1 ms) past it.
    gap = agg.window.gap_ms + 1 if agg.window.kind == "session" else 0
    row["WINDOWEND"] = window.end.micros // 1000 - gap
    return row


def _partials(batch: pa.RecordBatch, agg: WindowedAggregation) -> Iterable:
    for key, start, end, latest, parts in partial_aggregates(agg, pa.Table.from_batches([batch])):
        yield beam.window.TimestampedValue((key, (start, end, parts)), latest / 1000.0)


class WindowedAggregate(beam.PTransform):
    """Flat RecordBatches -> one row per key and window ({key, aggregates, WINDOWSTART, WINDOWEND}).

    Returns a DoOutputsTuple: 'rows' (dicts) and DEAD_TAG (rows the feed
    statement failed on). Counters: the SQL namespace of `ApplySql`.
    """

    def __init__(self, agg: WindowedAggregation, lookups=(), *, source: str = "", source_column=None):
        super().__init__()
        self._agg = agg
        self._apply = ApplySql(agg.statement, lookups, source=source, source_column=source_column)

    def expand(self, batches):
        agg = self._agg
        fed = batches | "Feed" >> self._apply
        window_fn = _CarriedSessions() if agg.window.kind == "session" else _CarriedWindows()
        rows = (fed.rows
                | "Partials" >> beam.FlatMap(_partials, agg)
                | "Window" >> beam.WindowInto(window_fn, allowed_lateness=Duration(micros=agg.window.grace_ms * 1000))
                | "KeyPartials" >> beam.Map(lambda kv: (kv[0], kv[1][2]))
                | "Merge" >> beam.CombinePerKey(_MergePartials(agg))
                | "ToRows" >> beam.Map(_to_row, agg))
        return RowsAndDead(rows, fed[DEAD_TAG])


class RowsAndDead(dict):
    """`.rows` and `[DEAD_TAG]`, like the other transforms' DoOutputsTuple."""

    def __init__(self, rows, dead):
        super().__init__({"rows": rows, DEAD_TAG: dead})
        self.rows = rows
