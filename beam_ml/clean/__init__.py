"""KSQL-style cleaning: ksqlDB statements run on Arrow batches with DuckDB, inside Beam.

Users coming from ksqlDB write the statement they know; it runs per batch of
rows (never row by row in Python), in one DuckDB connection per DoFn
instance, with exact accounting (rows in = out + filtered + dead)::

    from beam_ml.clean import ApplySql, CsvLookup, Statement

    users = CsvLookup("users", "data/users.csv")
    stmt = Statement.prepare(
        "SELECT c.Time, c.V1, IFNULL(c.Class, -1) AS Class, MASK_LEFT(c.User, 2) AS User, u.CITY "
        "FROM events c INNER JOIN users u ON c.userid = u.userid "
        "WHERE c.V1 > 5 AND u.CITY LIKE 'Premium%'",
        events_schema, {"users": users.schema()}, position_column="__line__")   # fails fast: UserError
    clean, dead = (batches | "ApplySql" >> ApplySql(stmt, [users], source=path)).values()

Pieces: `statement` (parse, check, rewrite, bind -> output schema; with
`ksql_text` for ksqlDB spellings, `rewrite` for the syntax tree, `duck` for the
configured connection),
`functions` (ksqlDB's scalar functions as DuckDB macros), `engine` (one
connection; a batch -> CleanResult with bisecting retry of failing rows),
`lookups` (CSV, Arrow, Kafka-topic-as-table; `--lookup=NAME=SOURCE`),
`transform` (the Beam step and its counters), `options` (--sql, --lookup,
--lookup_refresh and `prepare_cleaning`, which checks them all at launch),
`windows` (ksqlDB's WINDOW TUMBLING/HOPPING/SESSION aggregations on Beam windows).
"""
from beam_ml.clean.cleaning import Cleaning, prepare_cleaning, read_statement
from beam_ml.clean.engine import STAGE, CleanResult, Engine, latest_per_key
from beam_ml.clean.lookups import (ArrowLookup, CsvLookup, KafkaLookup, Lookup, lookup_from_flag,
                                   parse_lookup_flag, register_scheme)
from beam_ml.clean.statement import EVENTS, Statement, strip_ksql
from beam_ml.clean.transform import ApplySql, ApplySqlFn
from beam_ml.clean.windows import WindowedAggregate, WindowedAggregation

__all__ = [
    "ApplySql", "ApplySqlFn", "ArrowLookup", "CleanResult", "Cleaning", "CsvLookup", "EVENTS", "Engine", "KafkaLookup", "Lookup",
    "STAGE", "Statement", "latest_per_key", "lookup_from_flag", "parse_lookup_flag", "prepare_cleaning",
    "read_statement", "register_scheme", "strip_ksql", "WindowedAggregate", "WindowedAggregation",
]
