"""Training's point-in-time step in pieces (split per batch, shuffled chunks, scored per key, joined by row index)
equals the literal definition `reference_features`, event by event, whatever the batching and shuffle order."""
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from beam_ml.features import FeaturePlan, reference_features
from beam_ml.features.beam import features_of_table, score_chunks, split_batch, with_features
from beam_ml.features.plan import event_times_ms

AGGS = "COUNT(*) AS n, SUM(Amount) AS s, MIN(Amount) AS lo, MAX(Amount) AS hi, AVG(Amount) AS av, COUNT(Amount) AS c"
WINDOWS = st.sampled_from([
    "TUMBLING (SIZE 5 SECONDS)", "TUMBLING (SIZE 4 SECONDS, GRACE PERIOD 3 SECONDS)",
    "HOPPING (SIZE 6 SECONDS, ADVANCE BY 2 SECONDS)", "HOPPING (SIZE 6 SECONDS, ADVANCE BY 3 SECONDS, GRACE PERIOD 5 SECONDS)",
    "SESSION (3 SECONDS)", "SESSION (2 SECONDS, GRACE PERIOD 4 SECONDS)"])
EVENT = st.tuples(st.sampled_from(["a", "b", "c", None]),
                  st.one_of(st.integers(0, 30_000), st.none()),
                  st.one_of(st.floats(-100, 100, allow_nan=False), st.none(), st.just(float("nan"))))


def _table(events):
    return pa.Table.from_pylist(
        [{"card_id": k, "ts": t, "Amount": v, "__line__": i + 2} for i, (k, t, v) in enumerate(events)],
        schema=pa.schema([("card_id", pa.string()), ("ts", pa.int64()), ("Amount", pa.float64()),
                          ("__line__", pa.int64())]))


def _expected(plan, events):
    """Per row kept (key and time present), in row order: the definition's features of that row."""
    per_key: dict = {}
    for i, (k, t, v) in enumerate(events):
        if k is not None and t is not None:
            per_key.setdefault(k, []).append((i, t, plan.values_of({"Amount": v})))
    out = {}
    for rows in per_key.values():
        for (i, _, _), (features, _) in zip(rows, reference_features(plan, [(t, vals) for _, t, vals in rows])):
            out[i] = features
    return [out[i] for i in sorted(out)]


@settings(max_examples=150, deadline=None)
@given(WINDOWS, st.lists(EVENT, max_size=60), st.lists(st.integers(1, 20), min_size=1, max_size=8), st.randoms())
def test_split_shuffle_score_join_equals_the_definition(window, events, sizes, rnd):
    plan = FeaturePlan.parse(f"SELECT card_id, {AGGS} FROM events WINDOW {window} GROUP BY card_id", "ts")
    table = _table(events)
    batches, start, b = [], 0, 0
    while start < table.num_rows:  # random batch boundaries
        size = sizes[b % len(sizes)]
        batches.append(table.slice(start, size).combine_chunks().to_batches()[0])
        start, b = start + size, b + 1
    kept, per_key, dead = {}, {}, 0
    for batch_id, batch in enumerate(batches):
        k, chunks, bad = split_batch(plan, batch, "__line__", batch_id)
        kept[batch_id], dead = k, dead + len(bad)
        for key, chunk in chunks:
            per_key.setdefault(key, []).append(chunk)
    scored: dict = {}
    for chunks in per_key.values():
        rnd.shuffle(chunks)  # a shuffle delivers a key's chunks in any order
        out, _ = score_chunks(plan, chunks)
        for batch_id, piece in out:
            scored.setdefault(batch_id, []).append(piece)
    got = []
    for batch_id in sorted(kept):
        got += with_features(plan, kept[batch_id], scored.get(batch_id, [])).select(plan.names).to_pylist()
    assert [tuple(r[n] for n in plan.names) for r in got] == _expected(plan, events)
    assert len(got) + dead == len(events)  # every row kept or dead-lettered


def test_event_times_of_columns_equal_the_per_value_rule():
    from beam_ml.features import event_time_ms
    cases = [pa.array([1.7e12 + 0.9, None, float("nan"), float("inf"), -3.5]),
             pa.array([1, None, 2 ** 60]),
             pa.array(["1700000000123", "2023-11-14T22:13:20Z", "nope", None])]
    for col in cases:
        assert event_times_ms(col) == [event_time_ms(v) for v in col.to_pylist()]


def test_values_matrix_equals_values_of_each_row():
    plan = FeaturePlan.parse(f"SELECT card_id, {AGGS} FROM events WINDOW SESSION (1 SECOND) GROUP BY card_id", "ts")
    for col in (pa.array([1.5, None, float("nan"), float("-inf")]), pa.array([1, None, 3, 4]),
                pa.array(["2.5", "x", None, "inf"])):
        table = pa.table({"Amount": col})
        got = [tuple(None if v != v else v for v in row) for row in plan.values_matrix(table).tolist()]
        assert got == [plan.values_of(r) for r in table.to_pylist()]


def test_features_of_table_keeps_row_order_and_reports_rows_without_key():
    plan = FeaturePlan.parse("SELECT card_id, COUNT(*) AS n FROM events WINDOW TUMBLING (SIZE 1 MINUTE) "
                             "GROUP BY card_id", "ts")
    table = _table([("a", 1, 1.0), (None, 2, 1.0), ("a", 3, 1.0), ("b", None, 1.0), ("a", 2, 1.0)])
    out, bad = features_of_table(plan, table)
    assert out.column("__line__").to_pylist() == [2, 4, 6] and out.column("n").to_pylist() == [0.0, 1.0, 0.0]  # line 6 is late
    assert [i for i, _ in bad] == [1, 3] and "card_id" in bad[0][1] and "ts" in bad[1][1]
