"""The point-in-time value of a windowed feature for one event, and the live state that computes it.

Definition (per key, events taken in ARRIVAL order: file line / topic offset):

- stream time before event i: the largest event time among the key's earlier arrivals.
- event i is LATE when its time is more than GRACE PERIOD below that stream time
  (no GRACE PERIOD: grace 0). A late event changes no state and is scored with
  empty aggregates; it is counted.
- the events that may feed event i's features: earlier arrivals of the key that
  were not late, with an event time STRICTLY below event i's (never the event
  itself, never one at the same or a later time).
- TUMBLING (SIZE S) / HOPPING (SIZE S, ADVANCE BY A): of the windows
  [k*A, k*A + S) holding event i's time t, the oldest one, start = floor((t-S)/A)*A + A
  (for tumbling: floor(t/S)*S). It is the window with the longest history
  before t, and its value is what ksqlDB's EMIT CHANGES row for that window
  held just before the event. Features aggregate feeding events with start <= time < t.
- SESSION (GAP G): the session event i joins: walking down from t through the
  feeding events at or below t, consecutive times at most G apart (ksqlDB's
  inactivity gap); features aggregate the ones below t.
- aggregates: COUNT(*) counts events; COUNT(col) non-null values; SUM, MIN,
  MAX, AVG over non-null values, summed in event-time order; an empty
  aggregate is 0.0 (a model feature has no NULL).

`reference_features` states this literally (quadratic, for tests);
`KeyState` computes it incrementally with bounded memory (training runs
it per key over the key's events sorted by arrival; live keeps one per key).
"""
from __future__ import annotations

import bisect
from typing import Iterable, Optional, Sequence

from beam_ml.features.plan import FeaturePlan

__all__ = ["KeyState", "LiveFeatures", "reference_features", "window_start"]


def window_start(plan: FeaturePlan, t: int) -> int:
    """Start of the oldest tumbling/hopping window holding time t."""
    w = plan.window
    return ((t - w.size_ms) // w.advance_ms) * w.advance_ms + w.advance_ms


def _empty(plan: FeaturePlan) -> list:
    return [None] * len(plan.aggregates)


def _fold(plan: FeaturePlan, acc: list, values: Sequence) -> None:
    for i, (a, v) in enumerate(zip(plan.aggregates, values)):
        if a.column is None:
            acc[i] = (acc[i] or 0) + 1
        elif v is None:
            continue
        elif a.func == "count":
            acc[i] = (acc[i] or 0) + 1
        elif a.func in ("sum", "avg"):
            s, n = acc[i] or (0.0, 0)
            acc[i] = (s + v, n + 1)
        elif a.func == "min":
            acc[i] = v if acc[i] is None or v < acc[i] else acc[i]
        else:
            acc[i] = v if acc[i] is None or v > acc[i] else acc[i]


def _finish(plan: FeaturePlan, acc: list) -> tuple:
    out = []
    for a, x in zip(plan.aggregates, acc):
        if x is None:
            out.append(0.0)
        elif a.func == "sum":
            out.append(float(x[0]))
        elif a.func == "avg":
            out.append(float(x[0] / x[1]))
        else:
            out.append(float(x))
    return tuple(out)


def reference_features(plan: FeaturePlan, events: Iterable[tuple]) -> list[tuple]:
    """The definition, literally: (features, late) for each of one key's events, given in arrival order.

    Args:
      events: (event time ms, values) pairs, values as `FeaturePlan.values_of` gives them.
    """
    w = plan.window
    fed: list[tuple] = []  # (time, arrival, values) of non-late events so far
    stream = None
    out = []
    for arrival, (t, values) in enumerate(events):
        late = stream is not None and t < stream - w.grace_ms
        acc = _empty(plan)
        if not late:
            if w.kind == "session":
                chain, current = [], t
                for ft, fa, fv in sorted(fed, reverse=True):
                    if ft > t:
                        continue
                    if current - ft > w.gap_ms:
                        break
                    if ft < t:
                        chain.append((ft, fa, fv))
                    current = ft
                members = sorted(chain)
            else:
                start = window_start(plan, t)
                members = sorted(e for e in fed if start <= e[0] < t)
            for _, _, fv in members:
                _fold(plan, acc, fv)
            fed.append((t, arrival, tuple(values)))
        out.append((_finish(plan, acc), late))
        stream = t if stream is None else max(stream, t)
    return out


class KeyState:
    """One key's live window state: `score(t, values)` gives (features, late), then adds the event.

    Keeps the events a later, non-late event can still need (event time within
    grace + window size / gap of the stream time); for sessions, what falls out
    is folded into one partial of the session run it closes.
    """

    __slots__ = ("_plan", "_events", "_arrivals", "_stream", "_summary", "_summary_max")

    def __init__(self, plan: FeaturePlan):
        self._plan = plan
        self._events: list[tuple] = []  # sorted (time, arrival, values)
        self._arrivals = 0
        self._stream: Optional[int] = None
        self._summary: Optional[list] = None  # session: partial of the newest run of evicted events
        self._summary_max = 0

    @property
    def stream_time(self) -> Optional[int]:
        return self._stream

    def __len__(self) -> int:
        return len(self._events)

    def score(self, t: int, values: Sequence) -> tuple[tuple, bool]:
        plan, w = self._plan, self._plan.window
        stream = self._stream
        if stream is not None and t < stream - w.grace_ms:
            return _finish(plan, _empty(plan)), True
        if stream is not None:
            self._evict(stream - w.grace_ms - (w.gap_ms if w.kind == "session" else w.size_ms))
        acc = _empty(plan)
        events = self._events
        hi = bisect.bisect_left(events, (t,))
        if w.kind == "session":
            lo, current = hi, t
            while lo > 0 and current - events[lo - 1][0] <= w.gap_ms:
                lo -= 1
                current = events[lo][0]
            if lo == 0 and self._summary is not None and current - self._summary_max <= w.gap_ms:
                acc = list(self._summary)
        else:
            lo = bisect.bisect_left(events, (window_start(plan, t),))
        for i in range(lo, hi):
            _fold(plan, acc, events[i][2])
        features = _finish(plan, acc)
        bisect.insort(events, (t, self._arrivals, tuple(values)))
        self._arrivals += 1
        self._stream = t if stream is None or t > stream else stream
        return features, False

    def _evict(self, cutoff: int) -> None:
        events = self._events
        n = bisect.bisect_left(events, (cutoff,))
        if not n:
            return
        if self._plan.window.kind == "session":
            gap = self._plan.window.gap_ms
            for t, _, values in events[:n]:
                if self._summary is None or t - self._summary_max > gap:
                    self._summary = _empty(self._plan)
                _fold(self._plan, self._summary, values)
                self._summary_max = t
        del events[:n]


class LiveFeatures:
    """Per-process keyed state for the live path: one KeyState per key, late events counted."""

    def __init__(self, plan: FeaturePlan):
        self.plan = plan
        self._states: dict = {}
        self.late = 0

    def score(self, key, t: int, values: Sequence) -> tuple[tuple, bool]:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = KeyState(self.plan)
        features, late = state.score(t, values)
        self.late += late
        return features, late

    def __len__(self) -> int:
        return len(self._states)
