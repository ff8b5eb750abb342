"""--features_sql parsed once: key column, aggregates (COUNT/SUM/MIN/MAX/AVG), window, event-time column."""
from __future__ import annotations

import dataclasses
import datetime
import math
import re
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pyarrow as pa

from beam_ml.clean.windows import Aggregate, WindowSpec, parse_windowed_select
from beam_ml.errors import UserError

__all__ = ["FeaturePlan", "event_time_ms", "event_times_ms", "unusable_column", "FLAG"]

FLAG = "--features_sql"
_FUNCTIONS = {"count_star": "count", "count": "count", "sum": "sum", "min": "min", "max": "max", "avg": "avg"}
_INFINITE = (float("inf"), float("-inf"))
_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?$")


def unusable_column(key: Any, key_column: str, t: Optional[int], time_column: str) -> Optional[str]:
    """The column that keeps an event out of the windows (a missing or list/object key, an unreadable event time
    `t`), or None when both are usable."""
    if key is None or isinstance(key, (list, dict)):
        return key_column if key is None or t is not None else time_column
    return time_column if t is None else None


def event_time_ms(value: Any) -> Optional[int]:
    """An event time as epoch milliseconds: a number (epoch ms) or an ISO-8601 timestamp (UTC when no offset).

    Returns:
      None for a missing or unreadable value (the caller dead-letters it).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return int(round(stamp.timestamp() * 1000))
    text = str(value).strip()
    if not text:
        return None
    if _NUMBER.match(text):
        return int(float(text))
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return event_time_ms(stamp)


def event_times_ms(column: pa.Array) -> list:
    """`event_time_ms` of every value of an Arrow column (None where missing or unreadable), numbers vectorised."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_integer(column.type):
        return column.to_pylist()
    if pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        good = np.isfinite(values)  # a null is NaN here
        out = np.trunc(np.where(good, values, 0.0)).astype(np.int64).tolist()
        if good.all():
            return out
        return [t if ok else None for t, ok in zip(out, good.tolist())]
    return [event_time_ms(v) for v in column.to_pylist()]


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
    """A windowed feature statement, parsed.

    Attributes:
      sql: as written.
      key: the GROUP BY column.
      aggregates: Aggregate(name, func in count/sum/min/max/avg, column or None for COUNT(*)).
      window: the WindowSpec (kind, size/advance/gap and grace in ms).
      event_time_column: the column of event times (epoch ms or ISO timestamps).
    """

    sql: str
    key: str
    aggregates: tuple
    window: WindowSpec
    event_time_column: str

    @classmethod
    def parse(cls, sql: str, event_time_column: str, columns: Optional[Iterable[str]] = None,
              flag: str = FLAG) -> "FeaturePlan":
        """Parses the statement; with `columns`, checks the key, aggregated and event-time columns exist.

        Raises:
          UserError: one line naming `flag`.
        """
        if not sql or not sql.strip():
            raise UserError(f"{flag}: empty statement")
        if not event_time_column:
            raise UserError(f"{flag}: needs --event_time_column (the column of event times, epoch ms or ISO)")
        window, key, aggregates, rest = parse_windowed_select(sql, columns, flag, _FUNCTIONS)
        if re.search(r"\bWHERE\b", rest, re.IGNORECASE):
            raise UserError(f"{flag}: WHERE is not supported in a feature statement (filter with --sql)")
        if columns is not None:
            names = {c.lower(): c for c in columns}
            if event_time_column.lower() not in names:
                raise UserError(f"--event_time_column: {event_time_column!r} is not in the input")
            event_time_column = names[event_time_column.lower()]
        taken = {c.lower() for c in columns or ()}
        seen = set()
        for a in aggregates:
            if a.name.lower() in taken or a.name.lower() in seen:
                raise UserError(f"{flag}: the feature name {a.name} is already a column; choose another AS name")
            seen.add(a.name.lower())
        return cls(sql, key, aggregates, window, event_time_column)

    @property
    def names(self) -> list[str]:
        """The feature columns, in statement order."""
        return [a.name for a in self.aggregates]

    @property
    def value_columns(self) -> list[Optional[str]]:
        return [a.column for a in self.aggregates]

    def values_of(self, row: Mapping[str, Any]) -> tuple:
        """The aggregated columns' values of one event (None for COUNT(*) and for missing/non-numeric values)."""
        out = []
        for a in self.aggregates:
            if a.column is None:
                out.append(None)
                continue
            v = row.get(a.column)
            # the common case (a JSON or Arrow float) without a call
            out.append(v if v.__class__ is float and v == v and v not in _INFINITE else _number(v))
        return tuple(out)

    def values_matrix(self, batch) -> np.ndarray:
        """`values_of` for every row of a RecordBatch/Table at once: float64 (rows x aggregates), NaN for None."""
        out = np.full((batch.num_rows, len(self.aggregates)), np.nan)
        for j, a in enumerate(self.aggregates):
            if a.column is None:
                continue
            col = batch.column(a.column)
            if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
                values = col.to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                values = np.array([_number(v) for v in col.to_pylist()], dtype=np.float64)  # None -> NaN
            out[:, j] = np.where(np.isfinite(values), values, np.nan)
        return out

    def to_dict(self) -> dict:
        """What is stored with the model (spec.json `features`, beam_ml.json)."""
        return {"sql": self.sql, "event_time_column": self.event_time_column}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], columns: Optional[Iterable[str]] = None) -> "FeaturePlan":
        return cls.parse(record["sql"], record["event_time_column"], columns,
                         flag="the model's stored --features_sql")


def _number(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
