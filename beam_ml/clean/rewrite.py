"""The syntax tree of a cleaning statement: DuckDB's own parse, checked and rewritten.

`Statement.prepare` (beam_ml.clean.statement) drives it: `parse` (DuckDB's
json_serialize_sql), `Rewriter.select` (the rules, ksqlDB function renames,
KSQL_COL naming, the plan of what DuckDB computes and what the engine
assembles, lookup joins made in Arrow), `typed_rewrites`, and
`deserialize` back to SQL text.
"""
from __future__ import annotations

import copy
import dataclasses
import decimal
import functools
import json
from typing import Any, Iterator, Mapping, Optional

import pyarrow as pa

from beam_ml.clean.duck import EVENTS, ROW_COLUMN, hidden_column
from beam_ml.clean.functions import (FUNCTIONS, OPERATORS, SAME_NAME, TIME_UNITS, URL_PARTS, java_parse_format,
                                     java_pattern_parts, json_pointer, literal_string)
from beam_ml.errors import UserError

__all__ = ["parse", "Rewriter", "deserialize", "check_join_types", "check_types", "typed_rewrites", "query_input_schema",
           "kind_of"]

_JOINS = {"INNER", "LEFT"}



def parse(con, sql: str, flag: str) -> dict:
    res = json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchall()[0][0])
    if res.get("error"):
        msg = res.get("error_message", "cannot parse")
        if res.get("error_type") == "not implemented" and "Only SELECT" in msg:
            msg = "only a SELECT over events (and lookups) is allowed here"
        elif res.get("error_type") == "parser":
            msg = f"Parser Error: {msg}"
        raise UserError(f"{flag}: {msg}")
    statements = res["statements"]
    if len(statements) != 1:
        raise UserError(f"{flag}: expected one SELECT statement, got {len(statements)}")
    if statements[0].get("named_param_map"):
        raise UserError(f"{flag}: parameters ($1, ?) are not supported; write the values in the statement")
    return statements[0]["node"]


def _walk(node: Any) -> Iterator[dict]:
    """Every dict in an AST subtree."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _expressions(node: Any) -> Iterator[dict]:
    for d in _walk(node):
        if "class" in d:
            yield d


class _Templates:
    """AST nodes made by DuckDB's own serializer, copied and filled in (robust to its format)."""

    def __init__(self, con):
        sel = parse(con, "SELECT f(1) AS a, 'x', t.c, false, 1, CAST(1 AS INTEGER), CAST('1' AS DECIMAL(10, 2)) FROM t",
                    "internal")["select_list"]
        self.function, self.string, self.column, self.false, self.integer, self.cast, self.decimal_cast = sel
        for node in sel:
            node["alias"] = ""

    def number(self, n: int) -> dict:
        node = copy.deepcopy(self.integer)
        node["literal"]["text"] = str(n)
        return node

    def cast_to(self, expr: dict, type_node: dict) -> dict:
        """CAST(expr AS <type>) with the cast_type of `type_node` (another CAST node)."""
        node = copy.deepcopy(self.cast)
        node["child"] = expr
        node["type_expr"] = copy.deepcopy(type_node["type_expr"])
        return node

    def call(self, name: str, *args: dict, alias: str = "") -> dict:
        node = copy.deepcopy(self.function)
        node["function_name"] = name
        if "qualified_name" in node:
            node["qualified_name"] = {"path": [name]}
        template_arg = node["arguments"][0]
        node["arguments"] = [dict(copy.deepcopy(template_arg), expression=a) for a in args]
        node["alias"] = alias
        return node

    def text(self, s: str) -> dict:
        node = copy.deepcopy(self.string)
        node["literal"]["text"] = s
        return node

    def ref(self, *names: str, alias: str = "") -> dict:
        node = copy.deepcopy(self.column)
        node["column_names"] = list(names)
        node["alias"] = alias
        return node


def _args(node: dict) -> list[dict]:
    return [a["expression"] for a in node.get("arguments", [])]


def _set_args(node: dict, args: list[dict]) -> None:
    for a, e in zip(node["arguments"], args):
        a["expression"] = e


def _names(schema: pa.Schema) -> dict[str, str]:
    """lower-case name -> name as in the schema."""
    return {f.name.lower(): f.name for f in schema}


@functools.lru_cache(maxsize=1)
def _aggregate_names_cached() -> frozenset:
    import duckdb  # pylint: disable=import-outside-toplevel

    con = duckdb.connect(config={"threads": 1})
    try:
        rows = con.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                           "WHERE function_type = 'aggregate'").fetchall()
    finally:
        con.close()
    return frozenset(r[0].lower() for r in rows)


def _aggregate_names(con) -> set[str]:
    """DuckDB's aggregate functions (a fixed list per DuckDB version; listing it costs ~100 ms)."""
    del con
    return set(_aggregate_names_cached())


@dataclasses.dataclass(frozen=True)
class _Table:
    name: str   # canonical (events, or the lookup's name as given)
    alias: str  # how the statement refers to it
    join: Optional[str] = None  # INNER / LEFT for lookups
    key: Optional[str] = None  # the lookup's key column


class Rewriter:
    """Checks and rewrites one parsed SELECT; see the module docstring for the rules."""

    def __init__(self, con, flag: str, events_schema: pa.Schema, lookups: Mapping[str, pa.Schema],
                 position_column: Optional[str]):
        self.con = con
        self.flag = flag
        self.events_schema = events_schema
        self.lookups = {name.lower(): (name, schema) for name, schema in lookups.items()}
        self.position_column = position_column
        self.t = _Templates(con)
        self.aggregates = _aggregate_names(con)
        # (lookup alias, key column, key type, the events-side expression) per join.
        self.join_exprs: list[tuple[str, str, pa.DataType, dict]] = []

    def fail(self, msg: str) -> UserError:
        return UserError(f"{self.flag}: {msg}")

    # -- FROM ---------------------------------------------------------------

    def _base_table(self, ref: dict) -> tuple[str, str]:
        if ref.get("type") != "BASE_TABLE":
            kind = {"TABLE_FUNCTION": "a table function", "SUBQUERY": "a subquery",
                    "EXPRESSION_LIST": "VALUES", "JOIN": "a parenthesised join"}.get(ref.get("type"), ref.get("type"))
            raise self.fail(f"FROM may name only events and lookups, not {kind}")
        if ref.get("schema_name") or ref.get("catalog_name"):
            raise self.fail(f"unknown table {ref.get('schema_name')}.{ref['table_name']}: "
                            f"tables are events and the lookups")
        if ref.get("sample") or ref.get("at_clause") or ref.get("column_name_alias"):
            raise self.fail(f"table {ref['table_name']}: TABLESAMPLE, AT and column aliases are not supported")
        return ref["table_name"], ref.get("alias") or ref["table_name"]

    def tables(self, from_table: dict) -> list[_Table]:
        joins = []
        node = from_table
        while node.get("type") == "JOIN":
            joins.append(node)
            node = node["left"]
        if node.get("type") == "EMPTY":
            raise self.fail("the statement must read FROM events")
        name, alias = self._base_table(node)
        if name.lower() != EVENTS:
            raise self.fail(f"the first table must be {EVENTS} (the input as read), not {name}")
        tables = [_Table(EVENTS, alias)]
        for j in reversed(joins):
            kind = j.get("join_type")
            ref_type = j.get("ref_type", "REGULAR")
            if ref_type != "REGULAR" or kind not in _JOINS:
                what = ref_type if ref_type != "REGULAR" else kind
                raise self.fail(f"{what} JOIN is not supported: a stream joins a lookup table with "
                                "INNER JOIN or LEFT JOIN ... ON <events expression> = <lookup>.<key>")
            if j.get("using_columns"):
                raise self.fail("JOIN ... USING is not supported: write ON <events expression> = <lookup>.<key>")
            lname, lalias = self._base_table(j["right"])
            if lname.lower() == EVENTS:
                raise self.fail(f"{EVENTS} may be read only once")
            if lname.lower() not in self.lookups:
                known = ", ".join(sorted(n for n, _ in self.lookups.values())) or "none"
                raise self.fail(f"unknown lookup table {lname!r} (lookups given: {known}; "
                                f"name one with --lookup={lname}=PATH)")
            canonical, schema = self.lookups[lname.lower()]
            key = self._join_key(j["condition"], lalias, schema, tables)
            tables.append(_Table(canonical, lalias, kind, key))
        aliases = [t.alias.lower() for t in tables]
        if len(set(aliases)) != len(aliases):
            raise self.fail(f"a table name or alias is used twice: {', '.join(t.alias for t in tables)}")
        keys: dict[str, str] = {}
        for t in tables[1:]:
            if keys.setdefault(t.name, t.key) != t.key:
                raise self.fail(f"lookup {t.name} is joined on two different keys ({keys[t.name]}, {t.key})")
        return tables

    def _join_key(self, cond: Optional[dict], alias: str, schema: pa.Schema, left: list[_Table]) -> str:
        usage = (f"JOIN {alias} must be ON <events expression> = {alias}.<key column> "
                 "(a stream joins a table on the table's key)")
        if not cond or cond.get("type") != "COMPARE_EQUAL":
            raise self.fail(usage)
        lower = alias.lower()

        def lookup_side(e: dict) -> Optional[str]:
            if e.get("class") == "COLUMN_REF" and len(e["column_names"]) == 2 and \
                    e["column_names"][0].lower() == lower:
                return e["column_names"][1]
            return None

        def touches_lookup(e: dict) -> bool:
            left_names = set(_names(self.events_schema))
            for t in left[1:]:
                left_names |= set(_names(self.lookups[t.name.lower()][1]))
            for d in _expressions(e):
                if d.get("class") != "COLUMN_REF":
                    continue
                names = d["column_names"]
                if len(names) >= 2 and names[0].lower() == lower:
                    return True
                if len(names) == 1 and names[0].lower() in _names(schema) and names[0].lower() not in left_names:
                    return True
            return False

        for mine, other in ((cond["right"], cond["left"]), (cond["left"], cond["right"])):
            col = lookup_side(mine)
            if col is not None and not touches_lookup(other):
                found = _names(schema).get(col.lower())
                if found is None:
                    raise self.fail(f"lookup {alias} has no column {col!r} to join on "
                                    f"(its columns: {', '.join(schema.names)})")
                self.join_exprs.append((alias, found, schema.field(found).type, copy.deepcopy(other)))
                return found
        raise self.fail(usage)

    # -- expressions --------------------------------------------------------

    def expression(self, node: dict) -> dict:
        """Checks an expression tree and returns it rewritten (functions renamed, literals converted)."""
        cls = node.get("class")
        if cls == "SUBQUERY":
            raise self.fail("subqueries are not supported (join a lookup instead)")
        if cls == "WINDOW":
            raise self.fail(f"window function {node.get('function_name', '').upper()}() OVER is not supported: "
                            "a statement sees one batch, not the stream")
        if cls == "PARAMETER":
            raise self.fail("parameters ($1, ?) are not supported; write the values in the statement")
        if cls == "COLUMN_REF" and node["column_names"][-1].lower() == ROW_COLUMN:
            raise self.fail(f"{ROW_COLUMN} is reserved")
        if cls == "FUNCTION":
            return self.function(node)
        if cls == "CAST" and str((node.get("type_expr") or {}).get("type_name", "")).upper() in ("DECIMAL", "NUMERIC"):
            node["try_cast"] = True  # ksqlDB: a value that does not fit the DECIMAL is NULL
        for key, value in list(node.items()):
            if isinstance(value, dict) and "class" in value:
                node[key] = self.expression(value)
            elif isinstance(value, list):
                node[key] = [self.expression(v) if isinstance(v, dict) and "class" in v else self._nested(v)
                             for v in value]
            elif isinstance(value, dict):
                node[key] = self._nested(value)
        return node

    def _nested(self, value: Any) -> Any:
        # Containers that are not expressions themselves (CASE checks, function
        # arguments, ORDER BY inside list functions...) may hold expressions.
        if isinstance(value, dict):
            for k, v in list(value.items()):
                if isinstance(v, dict) and "class" in v:
                    value[k] = self.expression(v)
                elif isinstance(v, (dict, list)):
                    value[k] = self._nested(v)
            return value
        if isinstance(value, list):
            return [self.expression(v) if isinstance(v, dict) and "class" in v else self._nested(v) for v in value]
        return value

    def function(self, node: dict) -> dict:
        name = node["function_name"].lower()
        shown = "COUNT(*)" if name == "count_star" else f"{name.upper()}()"
        if node.get("schema") or node.get("catalog"):
            raise self.fail(f"unknown function {node.get('schema')}.{name}")
        if name in self.aggregates or node.get("distinct") or node.get("filter"):
            raise self.fail(f"aggregate function {shown} is not supported: a statement maps each event "
                            "to at most one row (windowed aggregations: beam_ml.clean.WindowedAggregation)")
        if name in ("unnest", "generate_subscripts"):
            raise self.fail(f"{name.upper()}() is not supported: it would turn one event into many rows")
        if name in ("dateadd", "datesub", "timestampadd", "timestampsub") and len(node["arguments"]) == 3:
            return self._add_interval(node, name)
        node["arguments"] = [dict(a, expression=self.expression(a["expression"])) for a in node["arguments"]]
        if node.get("is_operator"):
            if name not in OPERATORS:
                raise self.fail(f"operator {name} is not supported")
            return node
        if name in SAME_NAME:
            return node
        if name not in FUNCTIONS:
            raise self.fail(f"function {name.upper()} is not supported: beam_ml runs only the ksqlDB functions it "
                            "gives ksqlDB's meaning (docs/SQL.md lists them)")
        args = _args(node)
        target = FUNCTIONS[name].get(len(args), FUNCTIONS[name].get(None))
        if target is None:
            counts = " or ".join(str(k) for k in sorted(FUNCTIONS[name]))
            raise self.fail(f"{name.upper()} takes {counts} arguments, got {len(args)}")
        if name in ("timestamptostring", "format_timestamp", "format_date", "datetostring", "format_time"):
            return self._timestamp_to_string(node, args, name)
        if name in ("stringtotimestamp", "parse_timestamp", "parse_date"):
            return self._parse_time(node, args, name)
        if name == "elt":
            if not args:
                raise self.fail("ELT takes at least 1 argument")
            return self.t.call("bm_elt", args[0], self.t.call("list_value", *args[1:]), alias=node.get("alias", ""))
        if name == "field":
            if not args:
                raise self.fail("FIELD takes at least 1 argument")
            return self.t.call("bm_field", args[0], self.t.call("list_value", *args[1:]), alias=node.get("alias", ""))
        if name in URL_PARTS:
            return self.t.call("bm_url_part", args[0], self.t.number(URL_PARTS[name]), alias=node.get("alias", ""))
        if name.startswith("mask"):
            # ksqlDB's checks, made at preparation when the arguments are literals.
            for m in args[-4:] if len(args) in (5, 6) else ():
                text = literal_string(m)
                if text is not None and len(text) != 1:
                    raise self.fail(f"{name.upper()}: Invalid mask character. Must be only single character, "
                                    f"but was '{text}'")
            count = args[1] if name != "mask" else None
            if count is not None and count.get("class") == "CONSTANT" and \
                    str(count.get("literal", {}).get("text", "0")).lstrip().startswith("-"):
                raise self.fail(f"{name.upper()}: function {name} requires a non-negative number of "
                                "characters to mask or skip")
        if name == "extractjsonfield":
            path = literal_string(args[1])
            if path is None:
                raise self.fail("EXTRACTJSONFIELD: the JSON path must be a string literal such as '$.a.b'")
            try:
                args[1] = self.t.text(json_pointer(path))
            except UserError as e:
                raise self.fail(str(e)) from None
            _set_args(node, args)
        node["function_name"] = target
        if "qualified_name" in node:
            node["qualified_name"] = {"path": [target]}
        return node

    def _add_interval(self, node: dict, name: str) -> dict:
        """DATEADD(DAYS, n, d), TIMESTAMPSUB(HOURS, n, ts)...: the unit is a bare word, not a column."""
        unit_node, n, value = _args(node)
        unit = unit_node["column_names"][-1].lower() if unit_node.get("class") == "COLUMN_REF" \
            and len(unit_node["column_names"]) == 1 else None
        if unit not in TIME_UNITS or (name.startswith("date") and unit != "days"):
            allowed = "DAYS" if name.startswith("date") else ", ".join(u.upper() for u in TIME_UNITS)
            raise self.fail(f"{name.upper()}: the first argument must be a time unit ({allowed})")
        n, value = self.expression(n), self.expression(value)
        interval = self.t.call(f"to_{TIME_UNITS[unit]}s", self.t.cast_to(n, self._bigint()))
        call = self.t.call("+" if name.endswith("add") else "-", value, interval, alias=node.get("alias", ""))
        if name.startswith("date"):
            return self.t.call("bm_as_date", call, alias=node.get("alias", ""))
        return call

    def _bigint(self) -> dict:
        node = parse(self.con, "SELECT CAST(1 AS BIGINT)", "internal")["select_list"][0]
        return node

    def _parse_time(self, node: dict, args: list[dict], name: str) -> dict:
        shown = name.upper()
        pattern = literal_string(args[1])
        if pattern is None:
            raise self.fail(f"{shown}: the format must be a string literal such as 'yyyy-MM-dd HH:mm:ss.SSS'")
        try:
            fmt, has_offset, has_date = java_parse_format(pattern, shown)
        except UserError as e:
            raise self.fail(str(e)) from None
        text = args[0]
        if has_offset:
            text = self.t.call("regexp_replace", text, self.t.text("Z$"), self.t.text("+00"))
        if not has_date:
            text = self.t.call("||", self.t.text("1970-01-01 "), text)
            fmt = "%Y-%m-%d " + fmt
        parsed = self.t.call("try_strptime", text, self.t.text(fmt))
        if name == "parse_date":
            value = self.t.call("bm_as_date", parsed)
        else:
            if not has_offset:
                tz = args[2] if len(args) == 3 else self.t.text("UTC")
                parsed = self.t.call("timezone", tz, parsed)
            ms = self.t.call("epoch_ms", parsed)
            value = ms if name == "stringtotimestamp" else self.t.call("bm_ms_to_ts", ms)
        return self.t.call("bm_parse_guard", copy.deepcopy(args[0]), args[1], value, alias=node.get("alias", ""))

    def _timestamp_to_string(self, node: dict, args: list[dict], name: str = "timestamptostring") -> dict:
        shown = name.upper()
        pattern = literal_string(args[1])
        if pattern is None:
            # A pattern from a column: translated per row (the common letters only; others are an error).
            if name not in ("format_date", "datetostring", "format_time", "timestamptostring", "format_timestamp"):
                raise self.fail(f"{shown}: the format must be a string literal such as 'yyyy-MM-dd HH:mm:ss.SSS'")
            parts = [("runtime", "")]
        else:
            try:
                parts = java_pattern_parts(pattern, shown)
            except UserError as e:
                raise self.fail(str(e)) from None
        ts = args[0]
        if name == "format_timestamp":
            ts = self.t.call("epoch_ms", ts)
        elif name == "format_date":
            ts = self.t.call("epoch_ms", self.t.call("bm_date_ts", ts))
        elif name == "format_time":
            ts = self.t.call("epoch_ms", self.t.call("bm_time_ts", ts))
        elif name == "datetostring":
            ts = self.t.call("*", self.t.cast_to(ts, self._bigint()), self.t.number(86_400_000))
        tz = args[2] if len(args) == 3 else self.t.text("UTC")
        pieces = [self.t.call("bm_ts_runtime", copy.deepcopy(ts), copy.deepcopy(tz), copy.deepcopy(args[1]))
                  if kind == "runtime" else
                  self.t.call("bm_ts_strftime" if kind == "strftime" else "bm_ts_offset",
                              copy.deepcopy(ts), copy.deepcopy(tz), self.t.text(text))
                  for kind, text in parts]
        if not pieces:
            value = self.t.text("")
        elif len(pieces) == 1:
            value = pieces[0]
        else:
            value = self.t.call("concat", *pieces)
        return self.t.call("bm_ts_guard", ts, tz, value, alias=node.get("alias", ""))

    # -- the whole SELECT ---------------------------------------------------

    def select(self, root: dict) -> tuple[dict, list[_Table]]:
        if root.get("type") != "SELECT_NODE":
            raise self.fail(f"expected one SELECT, got {root.get('type', '?').replace('_NODE', '')} "
                            "(UNION, INTERSECT and EXCEPT are not supported)")
        for m in root.get("modifiers", []):
            what = {"ORDER_MODIFIER": "ORDER BY", "LIMIT_MODIFIER": "LIMIT", "LIMIT_PERCENT_MODIFIER": "LIMIT",
                    "DISTINCT_MODIFIER": "DISTINCT"}.get(m.get("type"), m.get("type"))
            raise self.fail(f"{what} is not supported: a statement maps each event on its own")
        if root.get("cte_map", {}).get("map"):
            raise self.fail("WITH (common table expressions) is not supported")
        if root.get("group_expressions") or root.get("group_sets") or \
                root.get("aggregate_handling", "STANDARD_HANDLING") != "STANDARD_HANDLING":
            raise self.fail("GROUP BY is not supported: a statement maps each event to at most one row "
                            "(windowed aggregations: beam_ml.clean.WindowedAggregation)")
        for clause in ("having", "qualify", "sample"):
            if root.get(clause):
                raise self.fail(f"{clause.upper()} is not supported")
        tables = self.tables(root["from_table"])
        events_alias = tables[0].alias
        node = root["from_table"]
        while node.get("type") == "JOIN":
            node = node["left"]
        self._events_ref = node
        # Join conditions and WHERE are checked like any expression.
        node = root["from_table"]
        while node.get("type") == "JOIN":
            node["condition"] = self.expression(node["condition"])
            node = node["left"]
        if root.get("where_clause"):
            root["where_clause"] = self.expression(root["where_clause"])
        used = {n.lower() for n in self.events_schema.names}
        for _, schema in self.lookups.values():
            used |= {n.lower() for n in schema.names}
        generated = 0
        items = []
        for item in root["select_list"]:
            if item.get("class") == "STAR":
                if item.get("expr") is not None:
                    item["expr"] = self.expression(item["expr"])
                items.append(item)
                continue
            if not item.get("alias") and item.get("class") != "COLUMN_REF":
                while f"ksql_col_{generated}" in used:
                    generated += 1
                item["alias"] = f"KSQL_COL_{generated}"
                used.add(f"ksql_col_{generated}")
                generated += 1
            items.append(self.expression(item))
        inline = self._inline_joins(root, items, tables) if len(tables) > 1 else None
        if inline is not None:
            plan, select_list, joins, hidden = inline
            root["from_table"] = self._events_ref
        else:
            plan, select_list = self._plan(items, tables)
            joins, hidden = None, ()
        select_list.append(self.t.ref(events_alias, ROW_COLUMN, alias=ROW_COLUMN))
        root["select_list"] = select_list
        return root, tables, plan, joins, hidden

    def _mask_entry(self, item: dict, input_column) -> Optional[tuple]:
        """A plan entry that masks an input column outside DuckDB, or None.

        `MASK_LEFT(c.User, 2) AS User` -- a MASK function of an input column
        with literal arguments, as a select item -- is computed by the engine
        on the whole column in one numpy call; in the query, DuckDB would call
        the UDF per 2,048 rows with every literal repeated per row.
        """
        kinds = {"bm_mask": "all", "bm_mask_left": "left", "bm_mask_right": "right",
                 "bm_mask_keep_left": "keep_left", "bm_mask_keep_right": "keep_right"}
        if item.get("class") != "FUNCTION" or item.get("function_name") not in kinds:
            return None
        kind = kinds[item["function_name"]]
        args = _args(item)
        col = input_column(args[0]) if args[0].get("class") == "COLUMN_REF" else None
        if col is None:
            return None
        n = 0
        rest = args[1:]
        if kind != "all":
            lit = rest[0].get("literal", {}) if rest[0].get("class") == "CONSTANT" else {}
            if lit.get("kind") not in ("INTEGER", "BIGINT") or int(lit["text"]) < 0:
                return None
            n, rest = int(lit["text"]), rest[1:]
        masks = ["X", "x", "n", "-"]
        if rest:
            masks = []
            for m in rest:
                if m.get("class") == "CONSTANT" and m.get("literal", {}).get("kind") == "NULL_LITERAL":
                    masks.append(None)
                elif literal_string(m) is not None and len(literal_string(m)) == 1:
                    masks.append(literal_string(m))
                else:
                    return None
        return ("mask", item["alias"], col, kind, n, tuple(masks))

    def _inline_joins(self, root: dict, items: list[dict], tables: list[_Table]):
        """Turns lookup joins into Arrow lookups made before the query, when every join key is a column.

        A stream-table join is a key lookup: `pyarrow.compute.index_in` of the
        event's key in the lookup's (latest-per-key) keys gives each event's
        lookup row, about 1.5 ms per 10k events where a DuckDB hash join
        rebuilt per batch costs 5-10 ms. Lookup columns the query computes
        with are added to `events` under hidden names; those selected as they
        are are taken from the lookup by the engine, like input columns.

        Returns:
          (plan, DuckDB select list, joins, hidden columns), or None to leave
          the joins to DuckDB (a key that is an expression, a star with modifiers).
        """
        star_keys = ("exclude_list", "qualified_exclude_list", "replace_list", "rename_list", "expr", "columns")
        if any(i.get("class") == "STAR" and any(i.get(k) for k in star_keys) for i in items):
            return None
        events_alias = tables[0].alias
        ev_names = _names(self.events_schema)
        lookups = [(t, self.lookups[t.name.lower()][1]) for t in tables[1:]]
        by_alias = {t.alias.lower(): i for i, (t, _) in enumerate(lookups)}
        hidden_input = {ROW_COLUMN.lower()} | ({self.position_column.lower()} if self.position_column else set())

        def resolve(names: list[str], upto: int) -> Optional[tuple]:
            """('events', col) / ('lookup', i, col) / None (left to DuckDB) for a column reference."""
            if len(names) == 2:
                rel, col = names[0].lower(), names[1].lower()
                if rel == events_alias.lower():
                    return ("events", ev_names[col]) if col in ev_names else None
                if rel in by_alias and by_alias[rel] < upto:
                    i = by_alias[rel]
                    found = _names(lookups[i][1]).get(col)
                    if found is None:
                        raise self.fail(f"lookup {lookups[i][0].alias} has no column {names[1]!r} "
                                        f"(its columns: {', '.join(lookups[i][1].names)})")
                    return ("lookup", i, found)
                return None
            if len(names) != 1:
                return None
            col = names[0].lower()
            hits = [i for i, (_, schema) in enumerate(lookups[:upto]) if col in _names(schema)]
            if (hits and col in ev_names) or len(hits) > 1:
                raise self.fail(f'Binder Error: Ambiguous reference to column name "{names[0]}": '
                                "qualify it with its table")
            if hits:
                return ("lookup", hits[0], _names(lookups[hits[0]][1])[col])
            return ("events", ev_names[col]) if col in ev_names else None

        joins = []
        for i, (alias, key, key_type, expr) in enumerate(self.join_exprs):
            if expr.get("class") != "COLUMN_REF":
                return None
            ref = resolve(expr["column_names"], i)
            if ref is None:
                return None
            t = lookups[i][0]
            joins.append((t.name, t.alias, t.join, ref, key))
        hidden: list[tuple[int, str]] = []

        def hidden_ref(i: int, col: str) -> dict:
            if (i, col) not in hidden:
                hidden.append((i, col))
            return self.t.ref(events_alias, hidden_column(i, col))

        def rewrite(node: Any) -> Any:
            if isinstance(node, dict):
                if node.get("class") == "COLUMN_REF":
                    ref = resolve(node["column_names"], len(lookups))
                    if ref is not None and ref[0] == "lookup":
                        return hidden_ref(ref[1], ref[2])
                    return node
                return {k: rewrite(v) for k, v in node.items()}
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        plan: list[tuple] = []
        select_list: list[dict] = []
        for item in items:
            cls = item.get("class")
            if cls == "STAR":
                rel = (item.get("relation_name") or "").lower()
                if rel in ("", events_alias.lower()):
                    plan += [("input", f.name, f.name) for f in self.events_schema
                             if f.name.lower() not in hidden_input]
                if rel == "":
                    for i, (_, schema) in enumerate(lookups):
                        plan += [("lookup", f.name, i, f.name) for f in schema]
                elif rel in by_alias:
                    i = by_alias[rel]
                    plan += [("lookup", f.name, i, f.name) for f in lookups[i][1]]
                elif rel != events_alias.lower():
                    raise self.fail(f'Binder Error: Referenced table "{item.get("relation_name")}" not found')
                continue
            if cls == "COLUMN_REF":
                ref = resolve(item["column_names"], len(lookups))
                if ref is not None and ref[0] == "lookup":
                    plan.append(("lookup", item.get("alias") or ref[2], ref[1], ref[2]))
                    continue
                if ref is not None and ref[1].lower() != ROW_COLUMN.lower():
                    plan.append(("input", item.get("alias") or ref[1], ref[1]))
                    continue

            def input_column(node: dict) -> Optional[str]:
                ref = resolve(node["column_names"], len(lookups))
                return ref[1] if ref is not None and ref[0] == "events" else None

            entry = self._mask_entry(item, input_column)
            if entry is not None:
                plan.append(entry)
                continue
            alias = item.get("alias", "")
            node = rewrite(item)
            node["alias"] = alias
            select_list.append(node)
            plan.append(("query", 1))
        if root.get("where_clause"):
            root["where_clause"] = rewrite(root["where_clause"])
        return plan, select_list, tuple(joins), tuple(hidden)

    def _plan(self, items: list[dict], tables: list[_Table]) -> tuple[Optional[list[tuple]], list[dict]]:
        """Splits the select list into columns copied from the input and columns DuckDB computes.

        Moving a column through DuckDB costs a copy in and a copy out (about
        0.25 ms per column per 10k rows), so input columns selected as they are
        never enter the query: the engine takes them from the input batch by
        row number. Returns the plan -- ("input", output name, input column) or
        ("query", number of query columns) per entry, in output order -- and
        the query's select list; the plan is None when a star has modifiers
        (EXCLUDE, REPLACE, COLUMNS...), and then DuckDB computes everything.
        """
        events = tables[0].alias.lower()
        hidden = {ROW_COLUMN.lower()} | ({self.position_column.lower()} if self.position_column else set())
        ev_names = _names(self.events_schema)
        lookup_names: set[str] = set()
        by_alias = {}
        for t in tables[1:]:
            schema = self.lookups[t.name.lower()][1]
            lookup_names |= set(_names(schema))
            by_alias[t.alias.lower()] = (t, schema)
        star_keys = ("exclude_list", "qualified_exclude_list", "replace_list", "rename_list", "expr", "columns")
        plain = all(not any(i.get(k) for k in star_keys) for i in items if i.get("class") == "STAR")
        if not plain:
            for item in items:
                rel = (item.get("relation_name") or "").lower()
                if item.get("class") == "STAR" and rel in ("", events) and not item.get("columns"):
                    excluded = {e.get("column", "").lower() if isinstance(e, dict) else str(e).lower()
                                for e in item.get("qualified_exclude_list", []) + item.get("exclude_list", [])}
                    for h in sorted(hidden - excluded):
                        item.setdefault("qualified_exclude_list", []).append(
                            {"catalog": "", "schema": "", "table": tables[0].alias, "column": ev_names.get(h, h)})
            return None, items
        plan: list[tuple] = []
        select_list: list[dict] = []

        def input_columns():
            for f in self.events_schema:
                if f.name.lower() not in hidden:
                    plan.append(("input", f.name, f.name))

        def lookup_star(alias: str):
            t, schema = by_alias[alias]
            star = copy.deepcopy(item)
            star["relation_name"] = t.alias
            select_list.append(star)
            plan.append(("query", len(schema)))

        for item in items:
            cls = item.get("class")
            if cls == "STAR":
                rel = (item.get("relation_name") or "").lower()
                if rel == "":
                    input_columns()
                    for alias in by_alias:
                        lookup_star(alias)
                    continue
                if rel == events:
                    input_columns()
                    continue
                if rel in by_alias:
                    lookup_star(rel)
                    continue
            elif cls == "COLUMN_REF":
                names = item["column_names"]
                col = None
                if len(names) == 2 and names[0].lower() == events:
                    col = names[1].lower()
                elif len(names) == 1 and names[0].lower() not in lookup_names:
                    col = names[0].lower()
                if col in ev_names and col != ROW_COLUMN.lower():
                    plan.append(("input", item.get("alias") or ev_names[col], ev_names[col]))
                    continue

            def input_column(node: dict) -> Optional[str]:
                names = node["column_names"]
                if len(names) == 2 and names[0].lower() == events:
                    return ev_names.get(names[1].lower())
                if len(names) == 1 and names[0].lower() not in lookup_names:
                    return ev_names.get(names[0].lower())
                return None

            entry = self._mask_entry(item, input_column)
            if entry is not None:
                plan.append(entry)
                continue
            select_list.append(item)
            plan.append(("query", 1))
        return plan, select_list


def query_input_schema(events_schema: pa.Schema, lookups: Mapping[str, pa.Schema], joins: Optional[tuple],
                        hidden: tuple) -> pa.Schema:
    schema = events_schema.append(pa.field(ROW_COLUMN, pa.int64()))
    for i, col in hidden:
        schema = schema.append(pa.field(hidden_column(i, col), lookups[joins[i][0]].field(col).type))
    return schema


def kind_of(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    return str(t)


def check_join_types(con, root: dict, rewriter: "Rewriter", flag: str) -> None:
    """Refuses a join whose two sides only meet through an implicit cast.

    DuckDB would cast e.g. a VARCHAR key to BIGINT row by row, so one
    non-numeric key in a lookup would fail every batch at run time.
    """
    for alias, key, key_type, expr in rewriter.join_exprs:
        probe = copy.deepcopy(root)
        probe["select_list"] = [dict(copy.deepcopy(expr), alias="k")]
        probe["where_clause"] = None
        t = con.sql(deserialize(con, probe)).to_arrow_table().schema.field("k").type
        if kind_of(t) != kind_of(key_type):
            raise UserError(f"{flag}: JOIN {alias}: the events side is {t} but {alias}.{key} is {key_type}; "
                            f"CAST one side so they match")


def _post_order(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _post_order(v)
        yield node
    elif isinstance(node, list):
        for v in node:
            yield from _post_order(v)


def _probe_type(con, root: dict, expr: dict) -> Optional[pa.DataType]:
    """The type `expr` binds to against the (empty) registered tables; None if it does not bind."""
    probe = copy.deepcopy(root)
    probe["select_list"] = [dict(copy.deepcopy(expr), alias="k")]
    probe["where_clause"] = None
    try:
        return con.sql(deserialize(con, probe)).to_arrow_table().schema.field("k").type
    except Exception:  # pylint: disable=broad-except
        return None  # the final bind reports what is wrong


def _rename(node: dict, name: str) -> None:
    node["function_name"] = name
    if "qualified_name" in node:
        node["qualified_name"] = {"path": [name]}


def _decimal_literal(t: _Templates, text: str, precision: int, scale: int) -> dict:
    node = _decimal_cast(t, precision, scale)
    node["child"] = t.text(text)
    return node


def _decimal_cast(t: _Templates, precision: int, scale: int) -> dict:
    node = copy.deepcopy(t.decimal_cast)
    width, scale_node = node["type_expr"]["children"]
    width["literal"]["text"], scale_node["literal"]["text"] = str(precision), str(scale)
    return node


def _power_of_ten(t: _Templates, k: int) -> dict:
    """10^k as an exact DECIMAL literal."""
    text = format(decimal.Decimal(1).scaleb(k), "f")
    return _decimal_literal(t, text, k + 1, 0) if k >= 0 else _decimal_literal(t, text, -k + 1, -k)


def _round_decimal(t: _Templates, node: dict, x: dict, p: int, s: int) -> dict:
    """ksqlDB's ROUND of a DECIMAL(p, s): exact, halves towards +inf, a DECIMAL.

    ROUND(x) is DECIMAL(p - s + 1, 0); ROUND(x, d) keeps the scale s (digits
    past d become zeros), DECIMAL(p + 1, s). `d` must be a literal (or NULL).
    """
    args = _args(node)
    alias = node.get("alias", "")
    if len(args) == 1:
        d = 0
    else:
        lit = args[1].get("literal", {}) if args[1].get("class") == "CONSTANT" else {}
        if lit.get("kind") == "NULL_LITERAL" or args[1].get("class") == "CAST" and \
                args[1]["child"].get("literal", {}).get("kind") == "NULL_LITERAL":
            return dict(_decimal_cast(t, min(p + 1, 38), s), child=t.text(""), alias=alias) | {"try_cast": True}
        if args[1].get("class") == "CAST":
            lit = args[1]["child"].get("literal", {}) if args[1]["child"].get("class") == "CONSTANT" else {}
        try:
            d = int(lit.get("text"))
        except (TypeError, ValueError):
            return None
    if len(args) == 1:
        precision, scale = min(p - s + 1, 38), 0
    else:
        precision, scale = min(p + 1, 38), s
    if d >= s:
        return dict(_decimal_cast(t, precision, scale), child=x, alias=alias)
    wide = _decimal_cast(t, 38, s)
    wide["child"] = x
    # floor(x * 10^d + 0.5) * 10^-d, exactly, in DECIMAL arithmetic.
    up, down = _power_of_ten(t, d), _power_of_ten(t, -d)
    half = _decimal_literal(t, "0.5", 1, 1)
    shifted = t.call("floor", t.call("+", t.call("*", wide, up), half))
    return dict(_decimal_cast(t, precision, scale), child=t.call("*", shifted, down), alias=alias)


def typed_rewrites(con, root: dict, templates: Optional[_Templates] = None, flag: str = "--sql") -> None:
    """Rewrites that depend on operand types, bound against the (empty) registered tables.

    - `a + b` with a string operand is `a || b` (ksqlDB concatenates with `+`);
    - `a / b` of two integers is integer division, as in Java (DuckDB's `/` gives a DOUBLE);
    - ROUND of a DECIMAL stays DECIMAL, computed exactly (the macro goes through DOUBLE);
    - comparing a string with a number or a boolean is refused, as ksqlDB does;
    - CHR of a string ('\\u0041') reads the UTF-16 code it spells.
    Innermost first, so 'a' + b + 'c' works.
    """
    t = templates or _Templates(con)
    for node in _post_order(root.get("select_list", []) + [root.get("where_clause")]):
        if node.get("class") == "COMPARISON" and node.get("type") in _NULLABLE_COMPARISONS:
            _check_comparable(con, root, node, flag)
        elif node.get("class") == "OPERATOR" and node.get("type") in ("COMPARE_IN", "COMPARE_NOT_IN"):
            _check_in_list(con, root, node, t, flag)
        if node.get("class") != "FUNCTION":
            continue
        name, args = node.get("function_name"), _args(node)
        if name == "+" and len(args) == 2:
            for arg in args:
                typ = _probe_type(con, root, arg)
                if typ is not None and (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
                    _rename(node, "||")
                    break
        elif name == "/" and len(args) == 2:
            types = [_probe_type(con, root, a) for a in args]
            if all(typ is not None and pa.types.is_integer(typ) for typ in types):
                _rename(node, "//")
        elif name == "bm_round":
            typ = _probe_type(con, root, args[0])
            if typ is not None and pa.types.is_decimal(typ):
                new = _round_decimal(t, node, args[0], typ.precision, typ.scale)
                if new is not None:
                    node.clear()
                    node.update(new)
        elif name in ("greatest", "least"):
            types = [_probe_type(con, root, a) for a in args]
            known = [typ for typ in types if typ is not None]
            if known and all(pa.types.is_null(typ) for typ in known):
                raise UserError(f"{flag}: Function '{name}' cannot be resolved: all its arguments are NULL")
            widths = {typ for typ in known if pa.types.is_integer(typ)}
            wider = any(pa.types.is_floating(typ) or pa.types.is_decimal(typ) for typ in known)
            if len(widths) > 1 and not wider:  # INT with BIGINT is ambiguous in ksqlDB; a DOUBLE resolves it
                raise UserError(f"{flag}: Function '{name}' cannot be resolved due to ambiguous method parameters "
                                f"({', '.join(str(typ) for typ in known)}); CAST them to one type")
        elif name == "bm_geo_distance":
            types = [_probe_type(con, root, a) for a in args[:4]]
            if any(typ is not None and (pa.types.is_string(typ) or pa.types.is_large_string(typ)) for typ in types):
                raise UserError(f"{flag}: Function 'geo_distance' does not accept parameters "
                                f"({', '.join(str(typ) for typ in types)})")
        elif name == "bm_to_json_string":
            typ = _probe_type(con, root, args[0])
            if typ is not None and pa.types.is_timestamp(typ):  # Jackson writes ksqlDB's ISO form
                _rename(node, "bm_to_json_timestamp")
        elif name == "bm_chr_code":
            typ = _probe_type(con, root, args[0])
            if typ is not None and pa.types.is_string(typ):
                _rename(node, "bm_chr_text")


def _value_kind(typ: pa.DataType) -> str:
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    if pa.types.is_boolean(typ):
        return "boolean"
    return "number" if kind_of(typ) == "number" else "other"


# ksqlDB's SqlBooleans: any prefix of true/yes or false/no, ignoring case.
def _ksql_boolean(text: str) -> Optional[bool]:
    t = text.strip().lower()
    if t and ("true".startswith(t) or "yes".startswith(t)):
        return True
    if t and ("false".startswith(t) or "no".startswith(t)):
        return False
    return None


def _check_in_list(con, root: dict, node: dict, t: _Templates, flag: str) -> None:
    """ksqlDB's IN: string literals must read as the value's type; other kinds must match it."""
    value, *items = node["children"]
    vt = _probe_type(con, root, value)
    if vt is None or pa.types.is_null(vt):
        return
    kind = _value_kind(vt)
    for i, item in enumerate(items, start=1):
        text = literal_string(item)
        if kind == "string" and item.get("class") == "CONSTANT":
            lit = item.get("literal", {})
            if text is None and lit.get("kind") != "NULL_LITERAL":  # ksqlDB compares the literal's text
                node["children"][i] = t.text(str(lit.get("text", lit.get("value", ""))).lower()
                                             if lit.get("kind") == "BOOLEAN" else str(lit.get("text", "")))
            continue
        if text is not None and kind in ("number", "boolean"):
            if kind == "boolean":
                b = _ksql_boolean(text)
                if b is None:
                    raise UserError(f'{flag}: Invalid Predicate: invalid input syntax for type BOOLEAN: "{text}"')
                node["children"][i] = parse(con, f"SELECT {'true' if b else 'false'}", "internal")["select_list"][0]
                continue
            try:
                number = decimal.Decimal(text.strip())
                if pa.types.is_integer(vt) and number != number.to_integral_value():
                    raise ValueError(text)
            except (ValueError, decimal.InvalidOperation):
                raise UserError(f'{flag}: Invalid Predicate: invalid input syntax for type {vt}: "{text}"') from None
            continue
        lit = item.get("literal", {}) if item.get("class") == "CONSTANT" else {}
        if pa.types.is_integer(vt) and vt.bit_width < 64 and lit.get("kind") in ("INTEGER", "BIGINT", "HUGEINT") \
                and not -(1 << (vt.bit_width - 1)) <= int(lit.get("text", 0)) < (1 << (vt.bit_width - 1)):
            # A literal wider than the column: compare as BIGINT (DuckDB would cast the literal down and fail).
            bigint = parse(con, "SELECT CAST(1 AS BIGINT)", "internal")["select_list"][0]
            node["children"][0] = t.cast_to(node["children"][0], bigint)
            vt = pa.int64()
        it = _probe_type(con, root, item)
        if it is None or pa.types.is_null(it):
            continue
        if _value_kind(it) != kind and "other" not in (kind, _value_kind(it)):
            raise UserError(f"{flag}: Invalid Predicate: operator does not exist: {vt} = {it}")


def _check_comparable(con, root: dict, node: dict, flag: str) -> None:
    """ksqlDB refuses to compare a string with a number or a boolean, or NULL with anything."""
    types = [_probe_type(con, root, node[side]) for side in ("left", "right")]
    if any(typ is None for typ in types):
        return
    if all(pa.types.is_null(typ) for typ in types):
        raise UserError(f"{flag}: Comparison with NULL not supported")
    kinds = {_value_kind(typ) for typ in types if not pa.types.is_null(typ)}
    if len(kinds) == 2 and "other" not in kinds:
        a, b = (deserialize_expression(con, root, node[side]) for side in ("left", "right"))
        raise UserError(f"{flag}: Cannot compare {a} ({types[0]}) to {b} ({types[1]})")


def deserialize_expression(con, root: dict, expr: dict) -> str:
    """An expression's SQL text (for messages)."""
    probe = copy.deepcopy(root)
    probe["select_list"] = [dict(copy.deepcopy(expr), alias="")]
    probe["where_clause"] = None
    text = deserialize(con, probe)
    return text[len("SELECT "):text.upper().rfind(" FROM ")].strip()


def check_types(con, root: dict, output: pa.Schema, flag: str) -> None:
    """ksqlDB's type rules DuckDB is lenient about: WHERE is a BOOLEAN; no column is an untyped NULL."""
    del output
    for item in root.get("select_list", []):
        if item.get("class") == "CONSTANT" and item.get("literal", {}).get("kind") == "NULL_LITERAL":
            raise UserError(f"{flag}: Can't infer a type of null for column {item.get('alias') or 'NULL'}. Please "
                            "explicitly cast it to a required type, e.g. CAST(null AS VARCHAR)")
    where = root.get("where_clause")
    if where is not None:
        typ = _probe_type(con, root, where)
        if typ is not None and not pa.types.is_boolean(typ):
            raise UserError(f"{flag}: Type error in WHERE expression: Should evaluate to boolean but is {typ} instead")


def null_comparisons_false(node: Any, t: _Templates, top: bool = False) -> Any:
    """ksqlDB compares with NULL to false, not NULL: `x = 5` -> ifnull(x = 5, false).

    So `WHERE NOT (x = 5)` keeps a row whose x is NULL, as in ksqlDB. A
    comparison that is the whole WHERE clause or one of its top-level AND
    terms is left as it is (there NULL and false both drop the row).
    """
    if isinstance(node, list):
        return [null_comparisons_false(v, t) for v in node]
    if not isinstance(node, dict):
        return node
    cls = node.get("class")
    if cls == "CONJUNCTION" and node.get("type") == "CONJUNCTION_AND" and top:
        node["children"] = [null_comparisons_false(c, t, top=True) for c in node["children"]]
        return node
    for k, v in list(node.items()):
        if isinstance(v, (dict, list)):
            node[k] = null_comparisons_false(v, t)
    if cls == "COMPARISON" and node.get("type") in _NULLABLE_COMPARISONS and not top:
        alias = node.get("alias", "")
        node["alias"] = ""
        return t.call("ifnull", node, copy.deepcopy(t.false), alias=alias)
    return node


_NULLABLE_COMPARISONS = {"COMPARE_EQUAL", "COMPARE_NOTEQUAL", "COMPARE_LESSTHAN", "COMPARE_GREATERTHAN",
                         "COMPARE_LESSTHANOREQUALTO", "COMPARE_GREATERTHANOREQUALTO"}


def deserialize(con, root: dict) -> str:
    doc = {"error": False, "statements": [{"node": root, "named_param_map": []}]}
    return con.execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(doc)]).fetchall()[0][0]
