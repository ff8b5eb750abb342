"""A persistent windowed query: ksqlDB's `CREATE TABLE t AS SELECT ... WINDOW ... GROUP BY k EMIT CHANGES`.

    query = WindowQuery.parse(sql)                        # fails fast naming --window_sql
    changes, late = query.add(source, key, t_ms, query.plan.values_of(row))
    # changes: [WindowChange(key, start, end, row or None)] -- None: a tombstone (a session merged away)

Semantics, as ksqlDB (Kafka Streams) runs it and its query-validation tests
check (tests/test_window_features_query.py replays them):

- stream time is per input partition (`source`): the largest event time read
  from it so far, this event included;
- TUMBLING / HOPPING: the event updates every window [s, s+SIZE) holding it
  (s a multiple of ADVANCE, s >= 0) that is still open: s + SIZE > stream
  time - GRACE; each updated window emits one row with its new aggregates;
- SESSION (gap G): the event joins (and merges) the key's open sessions within G
  of it; each session merged away emits a tombstone, then the merged session
  emits its row (WINDOWSTART = first event time, WINDOWEND = last). A session
  is closed once its end < stream time - G - GRACE;
- an event that updates no window is late: counted, it changes nothing;
- no GRACE PERIOD: ksqlDB's default of 24 hours (the tests' "no grace period" cases);
- aggregates: COUNT(*) / COUNT(col) (integers), SUM, MIN, MAX, AVG over the non-null
  numeric values (NULL when there are none).

Only EMIT CHANGES is supported (every change is emitted as it happens, so it
is live on any runner); closed windows are dropped from memory.
"""
from __future__ import annotations

import dataclasses
import heapq
import re
from typing import Any, NamedTuple, Optional, Sequence

from beam_ml.errors import UserError
from beam_ml.features.plan import FeaturePlan
from beam_ml.features.point_in_time import _empty, _fold

__all__ = ["WindowQuery", "WindowChange", "ROWTIME", "DEFAULT_GRACE_MS", "QUERY_FLAG"]

QUERY_FLAG = "--window_sql"
ROWTIME = "ROWTIME"  # --event_time_column default: the Kafka record's timestamp, as ksqlDB
DEFAULT_GRACE_MS = 24 * 3_600_000
_GRACE = re.compile(r"\bGRACE\s+PERIOD\b", re.IGNORECASE)
_FINAL = re.compile(r"\bEMIT\s+FINAL\b", re.IGNORECASE)


class WindowChange(NamedTuple):
    """One output row: `row` holds the key, the aggregates, WINDOWSTART and WINDOWEND; None is a tombstone."""

    key: Any
    start: int
    end: int
    row: Optional[dict]


@dataclasses.dataclass
class _Partition:
    stream: Optional[int] = None
    # key -> {start: [end, acc]}; for sessions several sessions per key, keyed by start
    windows: dict = dataclasses.field(default_factory=dict)
    closing: list = dataclasses.field(default_factory=list)  # heap of (close time, key, start, end)


class WindowQuery:
    """The state of one running query: per input partition, its stream time and each key's open windows."""

    def __init__(self, plan: FeaturePlan, grace_ms: int):
        self.plan = plan
        self.grace_ms = grace_ms
        self._parts: dict[Any, _Partition] = {}
        self.late = 0

    @classmethod
    def parse(cls, sql: str, event_time_column: str = ROWTIME, flag: str = QUERY_FLAG) -> "WindowQuery":
        """Parses `[CREATE TABLE t AS] SELECT key, AGG(col) AS name, ... FROM s WINDOW ... GROUP BY key [EMIT CHANGES]`.

        Raises:
          UserError: one line naming `flag`.
        """
        if sql and _FINAL.search(sql):
            raise UserError(f"{flag}: EMIT FINAL is not supported; the query emits every change (EMIT CHANGES)")
        plan = FeaturePlan.parse(sql, event_time_column or ROWTIME, flag=flag)
        grace = plan.window.grace_ms if _GRACE.search(sql) else DEFAULT_GRACE_MS
        return cls(plan, grace)

    def stream_time(self, source: Any) -> Optional[int]:
        part = self._parts.get(source)
        return None if part is None else part.stream

    @property
    def open_windows(self) -> int:
        return sum(len(w) for p in self._parts.values() for w in p.windows.values())

    def add(self, source: Any, key: Any, t: int, values: Sequence) -> tuple[list[WindowChange], bool]:
        """Adds one event of partition `source`; returns (the rows it changes, in ksqlDB's order; late)."""
        part = self._parts.get(source)
        if part is None:
            part = self._parts[source] = _Partition()
        part.stream = t if part.stream is None or t > part.stream else part.stream
        self._close(part)
        if self.plan.window.kind == "session":
            changes = self._add_session(part, key, t, values)
        else:
            changes = self._add_timed(part, key, t, values)
        late = not changes
        self.late += late
        return changes, late

    # ------------------------------------------------------------------ windows
    def _add_timed(self, part: _Partition, key, t: int, values) -> list[WindowChange]:
        w = self.plan.window
        close = part.stream - self.grace_ms
        first = max(0, ((t - w.size_ms) // w.advance_ms) * w.advance_ms + w.advance_ms)
        windows = part.windows.setdefault(key, {})
        changes = []
        for start in range(first, t + 1, w.advance_ms):
            end = start + w.size_ms
            if end <= close:
                continue
            entry = windows.get(start)
            if entry is None:
                entry = windows[start] = [end, _empty(self.plan)]
                heapq.heappush(part.closing, (end + self.grace_ms, key, start, end))
            _fold(self.plan, entry[1], values)
            changes.append(WindowChange(key, start, end, self._row(key, start, end, entry[1])))
        if not windows:
            del part.windows[key]
        return changes

    def _add_session(self, part: _Partition, key, t: int, values) -> list[WindowChange]:
        gap = self.plan.window.gap_ms
        close = part.stream - gap - self.grace_ms
        sessions = part.windows.setdefault(key, {})
        start, end, acc, merged = t, t, _empty(self.plan), []
        for s, (e, a) in sorted(sessions.items()):
            if e >= t - gap and s <= t + gap and e >= close:
                merged.append((s, e))
                start, end = min(start, s), max(end, e)
                _merge(self.plan, acc, a)
        if end < close:
            if not sessions:
                del part.windows[key]
            return []
        changes = []
        for s, e in merged:
            del sessions[s]
            if (s, e) != (start, end):
                changes.append(WindowChange(key, s, e, None))
        _fold(self.plan, acc, values)
        sessions[start] = [end, acc]
        heapq.heappush(part.closing, (end + gap + self.grace_ms + 1, key, start, end))
        changes.append(WindowChange(key, start, end, self._row(key, start, end, acc)))
        return changes

    def _close(self, part: _Partition) -> None:
        """Drops the windows closed at the partition's stream time (bounded memory)."""
        heap, stream = part.closing, part.stream
        while heap and heap[0][0] <= stream:
            _, key, start, end = heapq.heappop(heap)
            windows = part.windows.get(key)
            if windows is not None and start in windows and windows[start][0] == end:
                del windows[start]
                if not windows:
                    del part.windows[key]

    def _row(self, key, start: int, end: int, acc: list) -> dict:
        row = {self.plan.key: key}
        for a, x in zip(self.plan.aggregates, acc):
            if a.func == "count":
                row[a.name] = x or 0
            elif x is None:
                row[a.name] = None
            elif a.func == "sum":
                row[a.name] = x[0]
            elif a.func == "avg":
                row[a.name] = x[0] / x[1]
            else:
                row[a.name] = x
        row["WINDOWSTART"], row["WINDOWEND"] = start, end
        return row


def _merge(plan: FeaturePlan, acc: list, other: list) -> None:
    """Folds another partial aggregate into `acc` (merging sessions)."""
    for i, (a, x) in enumerate(zip(plan.aggregates, other)):
        if x is None:
            continue
        if acc[i] is None:
            acc[i] = x
        elif a.func == "count":
            acc[i] += x
        elif a.func in ("sum", "avg"):
            acc[i] = (acc[i][0] + x[0], acc[i][1] + x[1])
        elif a.func == "min":
            acc[i] = min(acc[i], x)
        else:
            acc[i] = max(acc[i], x)
