"""DuckDB set-up shared by the cleaning modules: names, one configured connection, one-line messages.

    con = connect()          # threads=1, UTC, ksqlDB macros and the MASK UDF, no file access
    engine_message(error)    # DuckDB's message on one line, macro names turned back into ksqlDB's
"""
from __future__ import annotations

import re

from beam_ml.clean.functions import MACROS_SQL
from beam_ml.clean.masking import register_udf

__all__ = ["EVENTS", "ROW_COLUMN", "hidden_column", "connect", "engine_message"]

# The input's table name in a statement.
EVENTS = "events"
# The hidden row number carried through a query (input row index within the batch).
ROW_COLUMN = "__bm_row__"


def hidden_column(join: int, column: str) -> str:
    """The name under which a lookup column joins `events` when the join is made in Arrow."""
    return f"__bm_j{join}__{column}"


def connect():
    """A DuckDB connection set up for statements: 1 thread, UTC, ksqlDB macros, no file access.

    One per DoFn instance (a connection is not thread-safe and does not pickle).
    """
    import duckdb  # pylint: disable=import-outside-toplevel

    con = duckdb.connect(config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")
    register_udf(con)
    con.execute(MACROS_SQL)
    # Statements only ever read the registered tables: no files, no network,
    # no extension downloads, and nothing a statement could switch back on.
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


def engine_message(e: BaseException) -> str:
    """DuckDB's error message on one line, with beam_ml's macro names turned back into ksqlDB's."""
    lines = []
    for line in str(e).splitlines():
        s = line.strip()
        # LINE n / caret lines point into the rewritten query, not the user's text.
        if not s or s.startswith("LINE ") or set(s) <= {"^", " "}:
            continue
        lines.append(s)
    msg = ""
    for line in lines:
        msg += line if not msg else (" " if msg.endswith(":") else "; ") + line
    msg = msg or type(e).__name__
    msg = re.sub(r"\bbm_(ts_guard|ts_strftime|ts_offset)\b", "TIMESTAMPTOSTRING", msg)
    msg = re.sub(r"\bbm_(\w+)", lambda m: m.group(1).upper(), msg)
    return msg.replace(ROW_COLUMN, "<row number>")
