"""--features_sql: the statement's plan, the point-in-time definition, and the live state agreeing with it."""
import pytest
from hypothesis import given, settings, strategies as st

from beam_ml.errors import UserError
from beam_ml.features import FeaturePlan, KeyState, LiveFeatures, event_time_ms, reference_features

SQL = ("SELECT card_id, COUNT(*) AS tx_10m, SUM(Amount) AS amount_10m, MAX(Amount) AS max_10m FROM events "
       "WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY card_id")
MIN = 60_000


def _plan(window: str, aggs: str = "COUNT(*) AS n, SUM(Amount) AS s, MIN(Amount) AS lo, MAX(Amount) AS hi, "
                                   "AVG(Amount) AS av, COUNT(Amount) AS c") -> FeaturePlan:
    return FeaturePlan.parse(f"SELECT card_id, {aggs} FROM events WINDOW {window} GROUP BY card_id", "ts")


def test_plan_of_the_issue_statement():
    plan = FeaturePlan.parse(SQL, "ts", columns=["Card_Id", "amount", "ts", "Class"])
    assert plan.key == "Card_Id"
    assert [(a.name, a.func, a.column) for a in plan.aggregates] == [
        ("tx_10m", "count", None), ("amount_10m", "sum", "amount"), ("max_10m", "max", "amount")]
    assert (plan.window.kind, plan.window.size_ms, plan.window.advance_ms, plan.window.grace_ms) == \
        ("hopping", 10 * MIN, MIN, 0)
    assert FeaturePlan.from_dict(plan.to_dict(), ["Card_Id", "amount", "ts", "Class"]) == plan


def test_plan_windows_and_grace():
    t = _plan("TUMBLING (SIZE 5 MINUTES, GRACE PERIOD 30 SECONDS)").window
    assert (t.kind, t.size_ms, t.advance_ms, t.grace_ms) == ("tumbling", 5 * MIN, 5 * MIN, 30_000)
    s = _plan("SESSION (2 MINUTES)").window
    assert (s.kind, s.gap_ms) == ("session", 2 * MIN)
    assert [a.func for a in _plan("SESSION (2 MINUTES)").aggregates] == ["count", "sum", "min", "max", "avg", "count"]


@pytest.mark.parametrize("sql,message", [
    ("SELECT card_id, COUNT(*) AS n FROM events GROUP BY card_id", "needs WINDOW"),
    ("SELECT card_id, COUNT(*) AS n FROM events WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 2 MINUTES) "
     "GROUP BY card_id", "ADVANCE BY"),
    ("SELECT card_id, STDDEV(Amount) AS n FROM events WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY card_id",
     "AVG(col)"),
    ("SELECT card_id, COUNT(*) AS n FROM events WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY nope", "nope"),
    ("SELECT card_id, SUM(nope) AS n FROM events WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY card_id", "nope"),
    ("SELECT card_id, COUNT(*) AS Amount FROM events WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY card_id",
     "already a column"),
    ("SELECT card_id, COUNT(*) AS n FROM events WHERE Amount > 0 WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY card_id",
     "WHERE"),
    ("SELECT card_id, COUNT(*) AS n FROM events WINDOW TUMBLING (SIZE 0 MINUTES) GROUP BY card_id", "positive"),
    ("", "empty"),
])
def test_bad_statements_fail_fast_naming_the_flag(sql, message):
    with pytest.raises(UserError) as e:
        FeaturePlan.parse(sql, "ts", columns=["card_id", "Amount", "ts"])
    assert str(e.value).startswith("--features_sql") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_event_time_column_must_exist():
    with pytest.raises(UserError, match="^--event_time_column"):
        FeaturePlan.parse(SQL, "when", columns=["card_id", "Amount", "ts"])


def test_event_time_values():
    assert event_time_ms(1700000000123) == 1700000000123
    assert event_time_ms("1700000000123") == 1700000000123
    assert event_time_ms("2023-11-14T22:13:20Z") == 1700000000000
    assert event_time_ms("2023-11-14T22:13:20.5+00:00") == 1700000000500
    assert event_time_ms("2023-11-14 22:13:20") == 1700000000000  # no offset: UTC
    assert event_time_ms("yesterday") is None and event_time_ms(None) is None and event_time_ms("") is None


def test_hopping_point_in_time_by_hand():
    plan = FeaturePlan.parse(SQL, "ts")
    events = [(0, (10.0,)), (30_000, (5.0,)), (30_000, (7.0,)), (9 * MIN, (1.0,)), (10 * MIN + 1, (2.0,))]
    events = [(t, (None,) + v * 2) for t, v in events]
    got = [f for f, _ in reference_features(plan, events)]
    # the row itself and events at the same time never count; at 10m+1ms the oldest window holding it starts at 1m
    assert got == [(0.0, 0.0, 0.0), (1.0, 10.0, 10.0), (1.0, 10.0, 10.0), (3.0, 22.0, 10.0), (1.0, 1.0, 1.0)]


def test_session_and_tumbling_by_hand():
    plan = _plan("SESSION (1 MINUTE)", "COUNT(*) AS n")
    times = [0, 50_000, 100_000, 200_000, 230_000]
    assert [f[0] for f, _ in reference_features(plan, [(t, (None,)) for t in times])] == [0, 1, 2, 0, 1]
    plan = _plan("TUMBLING (SIZE 1 MINUTE)", "COUNT(*) AS n")
    assert [f[0] for f, _ in reference_features(plan, [(t, (None,)) for t in times])] == [0, 1, 0, 0, 1]


def test_late_events_are_flagged_scored_empty_and_change_nothing():
    plan = _plan("TUMBLING (SIZE 10 MINUTES, GRACE PERIOD 1 MINUTE)", "COUNT(*) AS n")
    events = [(5 * MIN, (None,)), (4 * MIN + 30_000, (None,)), (2 * MIN, (None,)), (6 * MIN, (None,))]
    assert reference_features(plan, events) == [((0.0,), False), ((0.0,), False), ((0.0,), True), ((2.0,), False)]
    live = LiveFeatures(plan)
    assert [live.score("k", t, v) for t, v in events] == reference_features(plan, events)
    assert live.late == 1


_WINDOWS = st.one_of(
    st.builds(lambda s, g: f"TUMBLING (SIZE {s} SECONDS, GRACE PERIOD {g} SECONDS)",
              st.integers(1, 50), st.integers(0, 30)),
    st.builds(lambda a, k, g: f"HOPPING (SIZE {a * k} SECONDS, ADVANCE BY {a} SECONDS, GRACE PERIOD {g} SECONDS)",
              st.integers(1, 20), st.integers(1, 5), st.integers(0, 30)),
    st.builds(lambda s, g: f"SESSION ({s} SECONDS, GRACE PERIOD {g} SECONDS)", st.integers(1, 30),
              st.integers(0, 30)),
    st.builds(lambda s: f"SESSION ({s} SECONDS)", st.integers(1, 30)),
)
_AMOUNT = st.one_of(st.none(), st.integers(-50, 500).map(float), st.floats(-1e3, 1e3, allow_nan=False))


@st.composite
def _streams(draw):
    """One key's events in arrival order: mostly increasing time, with jitter (out of order) and gaps."""
    n = draw(st.integers(0, 60))
    t, out = draw(st.integers(0, 10**6)), []
    for _ in range(n):
        t += draw(st.integers(0, 40_000))
        jitter = draw(st.one_of(st.just(0), st.integers(0, 45_000)))
        out.append((t - jitter, draw(_AMOUNT)))
    return out


@settings(max_examples=300, deadline=None)
@given(window=_WINDOWS, events=_streams())
def test_live_state_equals_the_definition_event_by_event(window, events):
    plan = _plan(window)
    rows = [(t, (None,) + (a,) * 5) for t, a in events]
    expected = reference_features(plan, rows)
    state = KeyState(plan)
    assert [state.score(t, v) for t, v in rows] == expected  # exact: same events summed in the same order


@settings(max_examples=100, deadline=None)
@given(window=_WINDOWS, events=st.lists(st.tuples(st.sampled_from("abc"), _streams()), max_size=3))
def test_keys_are_independent(window, events):
    plan = _plan(window, "COUNT(*) AS n, SUM(Amount) AS s")
    live = LiveFeatures(plan)
    merged = []
    for key, stream in events:  # interleave keys: round robin
        merged += [(i, key, t, a) for i, (t, a) in enumerate(stream)]
    merged.sort(key=lambda e: e[0])
    got = {}
    for _, key, t, a in merged:
        got.setdefault(key, []).append(live.score(key, t, (None, a)))
    for key in got:
        per_key = [(t, (None, a)) for _, k, t, a in merged if k == key]
        assert got[key] == reference_features(plan, per_key)
    assert live.late == sum(late for outs in got.values() for _, late in outs)


def test_state_stays_bounded():
    plan = _plan("HOPPING (SIZE 10 SECONDS, ADVANCE BY 1 SECOND)", "COUNT(*) AS n")
    state = KeyState(plan)
    for i in range(10_000):
        state.score(i * 1000, (None,))
    assert len(state) <= 12  # the window's 11 past seconds + the event just added
    plan = _plan("SESSION (2 SECONDS)", "COUNT(*) AS n")
    state = KeyState(plan)
    for i in range(10_000):
        features, _ = state.score(i * 1000, (None,))
    assert features == (9999.0,) and len(state) <= 4
