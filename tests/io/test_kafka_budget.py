"""Pure pieces of ReadFromKafka: the max_records split, the shared budget, record timestamps.

    python -m pytest tests/io/test_kafka_budget.py -q
"""
import multiprocessing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.io.kafka.budget import SharedRecordBudget, even_shares, split_budget
from beam_ml.io.kafka.records import (CREATE_TIME, LOG_APPEND_TIME, PROCESSING_TIME, KafkaRecord,
                                      iter_key_values, record_timestamp)


@given(st.integers(0, 10_000), st.lists(st.integers(0, 5_000), max_size=12))
@settings(max_examples=300, deadline=None)
def test_split_budget_is_complete_capped_and_fair(total, backlogs):
    shares = split_budget(total, backlogs)
    assert len(shares) == len(backlogs)
    assert sum(shares) == min(total, sum(backlogs))
    assert all(0 <= s <= b for s, b in zip(shares, backlogs))
    # Water-filling: a partition that could take more never has less than another's share - 1.
    top = max(shares, default=0)
    assert all(s >= top - 1 for s, b in zip(shares, backlogs) if s < b)


def test_split_budget_examples():
    assert split_budget(1000, [700, 10, 0, 400]) == [590, 10, 0, 400]
    assert split_budget(8, [10, 10]) == [4, 4]
    assert split_budget(3, [0, 0]) == [0, 0]
    with pytest.raises(ValueError):
        split_budget(-1, [1])


@given(st.integers(0, 1000), st.integers(1, 9))
def test_even_shares(total, parts):
    shares = even_shares(total, parts)
    assert sum(shares) == total and max(shares) - min(shares) <= 1


def _drain(budget, out):
    got = 0
    while True:
        n = budget.take(3)
        if n == 0:
            break
        got += n
    out.put(got)


def test_shared_budget_grants_exactly_its_capacity_across_processes(tmp_path):
    budget = SharedRecordBudget.create(1000, directory=str(tmp_path))
    out = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_drain, args=(budget, out)) for _ in range(4)]
    for p in procs:
        p.start()
    granted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(granted) == 1000 and budget.left() == 0 and budget.take(5) == 0


@pytest.mark.parametrize("policy, timestamp, kind, expected", [
    (CREATE_TIME, 1_700_000_000_000, 0, (1_700_000_000_000, CREATE_TIME)),
    (LOG_APPEND_TIME, 1_700_000_000_000, 1, (1_700_000_000_000, LOG_APPEND_TIME)),
    (PROCESSING_TIME, 1_700_000_000_000, 0, (42, PROCESSING_TIME)),
    # No timestamp (old message format): the processing time, marked as such.
    (CREATE_TIME, -1, None, (42, PROCESSING_TIME)),
    (CREATE_TIME, None, None, (42, PROCESSING_TIME)),
    # The other kind of timestamp than the policy asks for is not passed off as it.
    (CREATE_TIME, 1_700_000_000_000, 1, (42, PROCESSING_TIME)),
    (LOG_APPEND_TIME, 1_700_000_000_000, 0, (42, PROCESSING_TIME)),
])
def test_record_timestamp(policy, timestamp, kind, expected):
    assert record_timestamp(policy, timestamp, kind, now_ms=42) == expected


def test_record_timestamp_rejects_unknown_policies():
    with pytest.raises(ValueError, match="timestamp policy"):
        record_timestamp("event_time", 1, 0, 42)


def test_write_elements_may_be_lists():
    record = KafkaRecord(b"k", b"v", "t", 0, 1, 2)
    assert list(iter_key_values([(b"a", b"1"), b"2", record])) == [(b"a", b"1"), (None, b"2"), (b"k", b"v")]
    assert list(iter_key_values((b"a", b"1"))) == [(b"a", b"1")]
    with pytest.raises(TypeError):
        list(iter_key_values([(b"a", b"1"), "text"]))
