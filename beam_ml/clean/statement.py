"""A ksqlDB-style cleaning statement, parsed and checked once, before any data moves.

    stmt = Statement.prepare(
        "CREATE STREAM clean AS SELECT c.Time, c.V1, IFNULL(c.Class, -1) AS Class, "
        "MASK_LEFT(c.User, 2) AS User, u.CITY FROM events c "
        "INNER JOIN users u ON c.userid = u.userid WHERE c.V1 > 5 AND u.CITY LIKE 'Premium%' EMIT CHANGES;",
        events_schema=batch.schema, lookups={"users": users_table.schema}, position_column="__line__")
    stmt.output_schema      # what spec inference sees: Time, V1, Class, User, CITY, __line__

`events` is the input as the reader typed it; every other table must be a
lookup, joined INNER or LEFT on its key, ksqlDB's stream-table join. The
statement is parsed by DuckDB itself (`json_serialize_sql`), checked and
rewritten on its syntax tree (ksqlDB functions -> `beam_ml.clean.functions`
macros, a hidden row number carried through so that each output row names
the input row it came from), and bound against empty tables of the given
schemas, so a syntax error, an unknown column, function or lookup, or a type
error fails here as a one-line `UserError` naming the flag, with DuckDB's
message.

What is refused, and why: anything but one SELECT (DDL/DML, UNION, WITH);
GROUP BY, aggregates, DISTINCT, ORDER BY, LIMIT, window functions and
subqueries, since a per-batch query cannot give them streaming semantics (one
output row per input row at most is what makes the accounting exact); RIGHT,
FULL, CROSS, NATURAL, ASOF and USING joins, and join conditions other than
`<events expression> = <lookup>.<key>`.

The plan (`Statement.plan`) keeps DuckDB's work to what only it can do:
input and lookup columns selected as they are, and MASK functions of an
input column with literal arguments, are assembled by the engine; lookup
joins on a key column are made in Arrow before the query (`Statement.joins`).

ksqlDB spellings accepted: a `CREATE STREAM|TABLE name [WITH (...)] AS`
prefix, `EMIT CHANGES`/`EMIT FINAL`, a trailing `;`. Unaliased expressions
are named KSQL_COL_0, KSQL_COL_1, ... as in ksqlDB; other names keep the case
of the input's columns.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional

import pyarrow as pa

from beam_ml.clean.duck import EVENTS, ROW_COLUMN, connect, engine_message, hidden_column
from beam_ml.clean.ksql_text import strip_ksql
from beam_ml.clean.rewrite import (Rewriter, check_join_types, check_types, deserialize, kind_of,
                                   null_comparisons_false, parse, query_input_schema, typed_rewrites)
from beam_ml.errors import UserError

__all__ = ["Statement", "EVENTS", "ROW_COLUMN", "connect", "engine_message", "hidden_column", "schema_to_json",
           "schema_from_json", "strip_ksql"]


def schema_to_json(schema: pa.Schema) -> list[dict[str, str]]:
    """A schema as [{"name", "type"}] with Arrow's type names (flat columns)."""
    return [{"name": f.name, "type": str(f.type)} for f in schema]


_TS_TYPE = re.compile(r"timestamp\[(s|ms|us|ns)(?:, tz=(.+))?\]")


def schema_from_json(fields: list[dict[str, str]]) -> pa.Schema:
    """Inverse of `schema_to_json` for the flat types readers produce."""
    out = []
    for f in fields:
        t = f["type"]
        m = _TS_TYPE.fullmatch(t)
        if m:
            typ = pa.timestamp(m.group(1), tz=m.group(2))
        else:
            try:
                typ = pa.type_for_alias(t)
            except ValueError as e:
                raise UserError(f"unsupported column type {t!r} for column {f['name']!r}") from e
        out.append(pa.field(f["name"], typ))
    return pa.schema(out)


def _empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


@dataclasses.dataclass(frozen=True)
class Statement:
    """A cleaning statement, checked against the input's and the lookups' schemas.

    Build it with `Statement.prepare`; it is immutable and pickles (it holds
    text and Arrow schemas only), so a pipeline prepares it at launch and
    ships it to workers, where `beam_ml.clean.Engine` runs it.

    Attributes:
      sql: the statement as the user wrote it.
      query: the DuckDB query it became (over `events` with the hidden row column).
      events_schema: the input's schema (as the reader typed it).
      lookup_schemas: name -> schema of each lookup the statement joins.
      lookup_keys: name -> the column each lookup is joined on (its key).
      lookup_joins: name -> 'INNER' or 'LEFT'.
      position_column: the input column naming each row's position (line,
        offset), carried to the output and into dead letters; None if none.
      output_schema: the columns `Engine.run` returns: the query's, then the
        position column. What spec inference sees.
      flag: the flag the statement came from, for messages.
      plan: how output columns are assembled: ("input", name, input column)
        entries are copied from the batch, ("lookup", name, join, column) from
        the join's lookup row, ("mask", name, input column, kind, n, masks) are
        MASK functions the engine applies to an input column, ("query", k) entries are the next k columns of
        the query; None when the query computes every column.
      joins: lookup joins made in Arrow before the query, in order:
        (lookup name, alias, 'INNER'|'LEFT', key reference, lookup key) where
        the key reference is ("events", column) or ("lookup", join, column);
        None when DuckDB joins (a key that is an expression).
      hidden_columns: (join, column) pairs the query reads from `events`
        under `hidden_column(join, column)`.
      query_input_schema: the schema of `events` as the query reads it.
    """

    sql: str
    query: str
    events_schema: pa.Schema
    lookup_schemas: Mapping[str, pa.Schema]
    lookup_keys: Mapping[str, str]
    lookup_joins: Mapping[str, str]
    position_column: Optional[str]
    output_schema: pa.Schema
    flag: str = "--sql"
    plan: Optional[tuple] = None
    joins: Optional[tuple] = None
    hidden_columns: tuple = ()
    query_input_schema: Optional[pa.Schema] = None

    @classmethod
    def prepare(cls, sql: str, events_schema: pa.Schema, lookups: Optional[Mapping[str, pa.Schema]] = None,
                position_column: Optional[str] = None, flag: str = "--sql") -> "Statement":
        """Parses, checks, rewrites and binds a statement; nothing else touches data.

        Args:
          sql: the statement (ksqlDB spellings accepted), or the text of a .sql file.
          events_schema: the input's schema, flat columns as the reader typed them.
          lookups: name -> schema of each lookup table that may be joined.
          position_column: a column of `events_schema` holding each row's
            position; hidden from `SELECT *` and appended to every output.
          flag: names the statement's origin in errors.

        Returns:
          The prepared Statement.

        Raises:
          UserError: one line naming `flag`, with DuckDB's message or the rule broken.
        """
        lookups = dict(lookups or {})
        for name in lookups:
            if name.lower() == EVENTS or not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise UserError(f"--lookup: {name!r} cannot name a lookup (use letters, digits, _; not {EVENTS})")
        lower_names = [n.lower() for n in events_schema.names]
        if ROW_COLUMN in lower_names:
            raise UserError(f"{flag}: the input has a column named {ROW_COLUMN}, which beam_ml reserves")
        if len(set(lower_names)) != len(lower_names):
            raise UserError(f"{flag}: the input has columns whose names differ only in case: {events_schema.names}")
        if position_column is not None and position_column not in events_schema.names:
            raise ValueError(f"position column {position_column!r} is not in the input schema")
        con = connect()
        try:
            text = strip_ksql(sql, flag)
            root = parse(con, text, flag)
            rewriter = Rewriter(con, flag, events_schema, lookups, position_column)
            root, tables, plan, joins, hidden = rewriter.select(root)
            used = {t.name: t for t in tables[1:]}
            query_input = query_input_schema(events_schema, lookups, joins, hidden)
            con.register(EVENTS, _empty(query_input))
            if joins is None:
                for name in used:
                    con.register(name, _empty(lookups[name]))
            root["select_list"] = null_comparisons_false(root["select_list"], rewriter.t)
            if root.get("where_clause"):
                root["where_clause"] = null_comparisons_false(root["where_clause"], rewriter.t, top=True)
            typed_rewrites(con, root, rewriter.t, flag)
            query = deserialize(con, root)
            try:
                result = con.sql(query).to_arrow_table()
            except Exception as e:  # duckdb.Error: binder, catalog, conversion...
                raise UserError(f"{flag}: {engine_message(e)}") from None
            check_types(con, root, result.schema, flag)
            if joins is None:
                check_join_types(con, root, rewriter, flag)
            else:
                for (alias, key, key_type, _), join in zip(rewriter.join_exprs, joins):
                    ref = join[3]
                    t = (events_schema.field(ref[1]).type if ref[0] == "events"
                         else lookups[joins[ref[1]][0]].field(ref[2]).type)
                    if kind_of(t) != kind_of(key_type):
                        raise UserError(f"{flag}: JOIN {alias}: the events side is {t} but {alias}.{key} is "
                                        f"{key_type}; CAST one side so they match")
        finally:
            con.close()
        query_fields = [f for f in result.schema if f.name != ROW_COLUMN]
        if plan is None:
            fields = query_fields
        else:
            fields, it = [], iter(query_fields)
            for entry in plan:
                if entry[0] == "input":
                    fields.append(pa.field(entry[1], events_schema.field(entry[2]).type))
                elif entry[0] == "lookup":
                    fields.append(pa.field(entry[1], lookups[joins[entry[2]][0]].field(entry[3]).type))
                elif entry[0] == "mask":
                    fields.append(pa.field(entry[1], pa.string()))
                else:
                    fields.extend(next(it) for _ in range(entry[1]))
        names = [f.name for f in fields]
        if position_column and position_column in names:
            raise UserError(f"{flag}: {position_column!r} is the row position beam_ml carries to the output; "
                            "do not select it")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UserError(f"{flag}: the output has more than one column named {', '.join(dupes)}: "
                            "name them apart with AS (SELECT * over a join repeats the key)")
        if position_column:
            fields.append(events_schema.field(position_column))
        return cls(
            sql=sql, query=query, events_schema=events_schema,
            lookup_schemas={n: lookups[n] for n in used},
            lookup_keys={n: t.key for n, t in used.items()},
            lookup_joins={n: t.join for n, t in used.items()},
            position_column=position_column, output_schema=pa.schema(fields), flag=flag,
            plan=None if plan is None else tuple(plan), joins=joins, hidden_columns=tuple(hidden),
            query_input_schema=query_input)

    @property
    def columns(self) -> list[str]:
        """The output columns the statement computes (without the position column)."""
        names = self.output_schema.names
        return names[:-1] if self.position_column else names

    def to_dict(self) -> dict[str, Any]:
        """What training stores with the dataset spec and the model: the text, lookups' names/keys/schemas."""
        return {
            "sql": self.sql,
            "position_column": self.position_column,
            "events_schema": schema_to_json(self.events_schema),
            "lookups": {n: {"key": self.lookup_keys[n], "join": self.lookup_joins[n],
                            "schema": schema_to_json(s)} for n, s in self.lookup_schemas.items()},
            "output_schema": schema_to_json(self.output_schema),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], events_schema: Optional[pa.Schema] = None,
                  lookups: Optional[Mapping[str, pa.Schema]] = None, flag: str = "--sql") -> "Statement":
        """Re-prepares a stored statement (against new schemas if given, e.g. serving input).

        Raises:
          UserError: the statement no longer fits the given schemas.
        """
        stored = {n: schema_from_json(v["schema"]) for n, v in d.get("lookups", {}).items()}
        stored.update(lookups or {})
        return cls.prepare(d["sql"], events_schema or schema_from_json(d["events_schema"]), stored,
                           position_column=d.get("position_column"), flag=flag)
