"""Merging requests from many clients into one model call, as TF Serving's batching does.

    batcher = Batcher(registry, max_batch_size=256, batch_timeout=0.0)
    task = asyncio.ensure_future(batcher.run())
    version, results = await batcher.score(instances)          # from any request handler

One scoring thread runs the model; the event loop only queues and answers.
A request arriving while the model is idle is scored at once (never held
back). Requests arriving while it is busy queue up, and when it frees up it
takes them all (up to `max_batch_size` instances; a request is never split)
as one call; with `batch_timeout` > 0 it first waits up to that long for the
batch to fill, TF Serving's `batch_timeout_micros`, but only right after a
busy spell, never for a request that found the model idle.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from typing import Any, Callable, NamedTuple, Optional, Sequence

from beam_ml.server.models import LoadedModel, ModelRegistry

__all__ = ["Batcher", "BatchListener"]

_LOGGER = logging.getLogger(__name__)

# (model version, instances, results) of each scored batch; called in the scoring thread.
BatchListener = Callable[[int, Sequence[dict], Sequence[dict]], None]


class _Pending(NamedTuple):
    instances: list
    loaded: Optional[LoadedModel]  # a pinned version (acquired), or None: the newest at dispatch
    future: asyncio.Future


class Batcher:
    """Queues requests, merges them into batches, scores each batch in one thread."""

    def __init__(self, registry: ModelRegistry, max_batch_size: int = 256, batch_timeout: float = 0.0,
                 on_batch_size: Optional[Callable[[int], None]] = None):
        """Args:
          registry: where the versions come from.
          max_batch_size: the most instances merged into one model call.
          batch_timeout: seconds to wait for a batch to fill after a busy spell (0: never wait).
          on_batch_size: called with each batch's instance count (metrics).
        """
        self._registry = registry
        self._max = max_batch_size
        self._timeout = batch_timeout
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-scoring")
        self._listeners: list[BatchListener] = []
        self._on_batch_size = on_batch_size

    def add_listener(self, listener: BatchListener) -> None:
        """Calls `listener(version, instances, results)` after every scored batch, in the scoring thread.

        The hook prediction monitoring uses; an exception in it is logged and
        does not affect the responses.
        """
        self._listeners.append(listener)

    async def score(self, instances: list, loaded: Optional[LoadedModel] = None) -> tuple[int, list]:
        """Scores one request's instances with `loaded` (None: the newest version when its batch starts).

        Returns:
          (the version that scored them, one result per instance).
        """
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(instances, loaded, future))
        self._queued_rows += len(instances)
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        """The dispatch loop, until `close()` and the queue is empty."""
        loop = asyncio.get_running_loop()
        busy = False
        while True:
            if not self._queue:
                if self._closed:
                    return
                busy = False
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if busy and self._timeout > 0 and self._queued_rows < self._max:
                deadline = loop.time() + self._timeout
                while self._queued_rows < self._max and not self._closed:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
            batch = self._take()
            busy = True
            await self._dispatch(batch)

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].instances)
        while self._queue and rows + len(self._queue[0].instances) <= self._max:
            item = self._queue.popleft()
            rows += len(item.instances)
            batch.append(item)
        self._queued_rows -= rows
        return batch

    async def _dispatch(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[int, tuple[LoadedModel, list[_Pending]]] = {}
        for item in batch:
            if item.future.cancelled():
                if item.loaded is not None:
                    self._registry.release(item.loaded)
                continue
            loaded = item.loaded
            if loaded is None:
                try:
                    loaded = await self._registry.get()
                except Exception as e:  # pylint: disable=broad-except
                    item.future.set_exception(e)
                    continue
            groups.setdefault(id(loaded), (loaded, []))[1].append(item)
        for loaded, items in groups.values():
            try:
                outcomes = await loop.run_in_executor(self._executor, self._score_group, loaded, items)
            finally:
                for _ in items:
                    self._registry.release(loaded)
            for item, outcome in zip(items, outcomes):
                if item.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result((loaded.version, outcome))

    def _score_group(self, loaded: LoadedModel, items: list[_Pending]) -> list[Any]:
        """In the scoring thread: one model call for all items; each item alone if that call fails.

        Returns one outcome per item: its results, or the exception that failed it alone.
        """
        instances = [inst for item in items for inst in item.instances]
        try:
            results = loaded.score(instances)
            outcomes: list[Any] = []
            start = 0
            for item in items:
                outcomes.append(results[start:start + len(item.instances)])
                start += len(item.instances)
        except Exception:  # pylint: disable=broad-except  # one bad request must not fail the others
            outcomes = [self._score_alone(loaded, item) for item in items]
            scored = [(item, o) for item, o in zip(items, outcomes) if not isinstance(o, BaseException)]
            instances = [inst for item, _ in scored for inst in item.instances]
            results = [r for _, o in scored for r in o]
        if self._on_batch_size is not None and instances:
            self._on_batch_size(len(instances))
        for listener in self._listeners:
            try:
                listener(loaded.version, instances, results)
            except Exception:  # pylint: disable=broad-except
                _LOGGER.exception("batch listener %r failed", listener)
        return outcomes

    @staticmethod
    def _score_alone(loaded: LoadedModel, item: _Pending) -> Any:
        try:
            return loaded.score(item.instances)
        except Exception as e:  # pylint: disable=broad-except
            _LOGGER.exception("scoring %d instances with version %d failed", len(item.instances), loaded.version)
            return e

    def close(self) -> None:
        """Stops taking new work once the queue is empty; `run()` then returns."""
        self._closed = True
        self._wakeup.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
