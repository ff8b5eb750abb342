"""How ReadFromKafka's `max_records` (a total over every partition) is shared between partition readers.

    shares = split_budget(1000, backlogs=[700, 10, 0, 400])      # [590, 10, 0, 400]
    budget = SharedRecordBudget.create(capacity=250)             # records not yet in the topic
    granted = budget.take(40)                                    # 0..40, atomically, across processes

Semantics (what a bounded run with ``max_records=N`` reads):

1. At partition discovery each partition's backlog (its start offset to its
   log end, probed) is known. The first ``min(N, total backlog)`` offsets are
   split over the partitions by water-filling: every partition gets an equal
   share, a partition with less backlog than its share gives the rest to the
   others (`split_budget`). A partition's share is part of its restriction,
   so this needs no coordination and works on every runner. When the topic
   already holds N records the read therefore ends as soon as it has read
   them, whatever their spread over partitions.
2. What the backlog cannot cover (records that do not exist yet) is
   claimed record by record as they arrive, from one shared counter:
   `SharedRecordBudget`, a file locked with ``flock``, so readers in
   threads or processes of one machine (the local runner, in any
   ``--direct_running_mode``) never read more than N in total, and all
   stop as soon as the counter is used up. Runners whose workers share no
   file system (Dataflow) cannot use it; there the rest is split evenly
   over the partitions at discovery, as Beam's Java KafkaIO splits
   ``withMaxNumRecords`` over its readers (`even_shares`), and the read
   ends when every partition has produced its share.

Shares count offsets; a topic with gaps in its offsets (compaction,
transaction markers) yields fewer records than offsets.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import uuid
from typing import NamedTuple, Sequence

__all__ = ["split_budget", "even_shares", "SharedRecordBudget"]


def split_budget(total: int, backlogs: Sequence[int]) -> list[int]:
    """Splits `total` records over partitions with these backlogs, fairly (water-filling).

    Args:
      total: records to read in all.
      backlogs: records each partition holds now (>= 0).

    Returns:
      Each partition's share, never more than its backlog; the shares add up
      to min(total, sum(backlogs)).
    """
    if total < 0 or any(b < 0 for b in backlogs):
        raise ValueError(f"split_budget: expected counts >= 0, got {total}, {list(backlogs)}")
    shares = [0] * len(backlogs)
    remaining = min(total, sum(backlogs))
    open_ = [i for i, b in enumerate(backlogs) if b > 0]
    while remaining > 0:
        share = max(1, remaining // len(open_))
        for i in list(open_):
            take = min(share, backlogs[i] - shares[i], remaining)
            shares[i] += take
            remaining -= take
            if shares[i] == backlogs[i]:
                open_.remove(i)
            if remaining == 0:
                break
    return shares


def even_shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` shares differing by at most one (the first ones larger)."""
    if parts <= 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class SharedRecordBudget(NamedTuple):
    """A record count shared by every reader on one machine: a small file updated under `flock`.

    Picklable (a path and a capacity), so it travels inside a restriction's
    element to whichever worker process reads the partition. The file is
    removed once the budget is used up (a missing file reads as used up); a
    run that ends otherwise (max_read_time) leaves a few bytes in the temp
    directory.
    """

    path: str
    capacity: int

    @classmethod
    def create(cls, capacity: int, directory: str | None = None) -> "SharedRecordBudget":
        """A new budget of `capacity` records, none taken yet (a file in the temp directory)."""
        path = os.path.join(directory or tempfile.gettempdir(), f"beam_ml-kafka-budget-{uuid.uuid4().hex}")
        with open(path, "w") as f:
            f.write("0")
        return cls(path, int(capacity))

    def _update(self, want: int) -> int:
        try:
            f = open(self.path, "r+")
        except FileNotFoundError:
            return 0  # removed once used up (see below)
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                used = int(f.read() or 0)
                granted = max(0, min(want, self.capacity - used))
                if granted:
                    f.seek(0)
                    f.write(str(used + granted))
                    f.truncate()
                if used + granted >= self.capacity:
                    # Used up: nothing will change any more, and a missing
                    # file reads as used up, so the file need not outlive this.
                    # Another process that opened it before may unlink it too.
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                return granted if want else self.capacity - used
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def take(self, want: int) -> int:
        """Takes up to `want` records from the budget; returns how many were granted (0 when used up)."""
        return self._update(want) if want > 0 else 0

    def left(self) -> int:
        """Records not yet taken."""
        return self._update(0)
