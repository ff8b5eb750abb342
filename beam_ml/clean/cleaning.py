"""The statement and lookups the cleaning flags (--sql, --lookup, --lookup_refresh) name, checked at launch.

    python -m pipelines.train --input=tx.csv --label=Class \\
        --sql=clean.sql --lookup=users=data/users.csv
    python -m pipelines.stream_predict ... --sql="SELECT ... FROM events c JOIN users u ON c.userid = u.userid" \\
        --lookup=users=kafka:users --lookup_refresh=30

    opts = options.view_as(CleanOptions)
    cleaning = prepare_cleaning(opts, events_schema, position_column="__line__",
                                kafka_client_config=kafka_opts.client_config())  # None without --sql
    clean, dead = (batches | "ApplySql" >> cleaning.transform(source=path)).values()

The flags themselves are declared in beam_ml.options (CleanOptions).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import pyarrow as pa

from beam_ml.clean.lookups import Lookup, lookup_from_flag
from beam_ml.clean.statement import Statement
from beam_ml.clean.transform import ApplySql
from beam_ml.errors import UserError

__all__ = ["Cleaning", "prepare_cleaning", "read_statement"]


@dataclasses.dataclass(frozen=True)
class Cleaning:
    """A prepared statement and the lookups it joins, ready to become a pipeline step."""

    statement: Statement
    lookups: Sequence[Lookup]
    refresh_seconds: Optional[float] = None

    def transform(self, source: str = "", source_column: Optional[str] = None,
                  mask_columns: Sequence[str] = ()) -> ApplySql:
        return ApplySql(self.statement, self.lookups, source=source, source_column=source_column,
                        refresh_seconds=self.refresh_seconds, mask_columns=mask_columns)


def prepare_cleaning(opts: Any, events_schema: pa.Schema, position_column: Optional[str] = None,
                     **lookup_options: Any) -> Optional[Cleaning]:
    """Builds the lookups the flags name and prepares the statement against their schemas.

    Args:
      opts: the cleaning flags (`beam_ml.options.CleanOptions`, or anything with
        `sql`, `lookup` and `lookup_refresh`).
      events_schema: the input's flat schema, as the reader types it.
      position_column: the input column giving each row's position.
      **lookup_options: passed to `lookup_from_flag` (e.g. ``bootstrap_servers=``,
        ``client_config=`` for kafka: lookups).

    Returns:
      None without --sql; else the Cleaning.

    Raises:
      UserError: a bad flag, file, lookup or statement, naming the flag.
    """
    if not opts.sql:
        if opts.lookup:
            raise UserError("--lookup: lookups are joined by a --sql statement; none was given")
        return None
    if opts.lookup_refresh is not None and opts.lookup_refresh <= 0:
        raise UserError(f"--lookup_refresh: expected seconds > 0, got {opts.lookup_refresh}")
    lookups = [lookup_from_flag(value, **lookup_options) for value in (opts.lookup or [])]
    names = [lk.name.lower() for lk in lookups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"--lookup: {', '.join(dupes)} given more than once")
    statement = Statement.prepare(read_statement(opts.sql), events_schema,
                                  {lk.name: lk.schema() for lk in lookups}, position_column=position_column)
    joined = {n.lower() for n in statement.lookup_schemas}
    return Cleaning(statement, [lk for lk in lookups if lk.name.lower() in joined], opts.lookup_refresh)


def read_statement(value: str, flag: str = "--sql") -> str:
    """The statement a --sql flag gives: its text, or the contents of a .sql file it names."""
    if value.strip().lower().endswith(".sql") and "\n" not in value and " " not in value.strip():
        if not os.path.isfile(value.strip()):
            raise UserError(f"{flag}: file not found: {value.strip()}")
        with open(value.strip(), encoding="utf-8") as f:
            return f.read()
    return value
