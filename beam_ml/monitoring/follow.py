"""Following a Kafka topic from its start on a daemon thread (the label join and the live dashboard).

    follower = TopicFollower(client_kwargs, "labels", on_value=lambda value: ...)   # bytes of each record
    follower.stop()
    labels = LabelReader(client_kwargs, "labels", "label")   # {"event_id": ..., "label": ...} events
    labels.drain()                                           # [(event id, label), ...] since the last drain

Manual partition assignment (no consumer group: Tansu takes ~20 s to join one), every partition
from its beginning; a topic that does not exist yet is waited for.
"""
from __future__ import annotations

import json
import queue
import threading
from typing import Callable

from kafka import KafkaConsumer, TopicPartition

__all__ = ["TopicFollower", "LabelReader"]


class TopicFollower:
    def __init__(self, client_kwargs: dict, topic: str, on_value: Callable[[bytes], None], name: str = "follow"):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client_kwargs, topic, on_value), daemon=True,
                                        name=f"monitor-{name}")
        self._thread.start()

    def _run(self, client_kwargs, topic, on_value):
        consumer = KafkaConsumer(**client_kwargs, enable_auto_commit=False, fetch_max_wait_ms=200)
        try:
            partitions = None
            while not self._stop.is_set() and not partitions:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    self._stop.wait(0.5)
            if not partitions:
                return
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=300).values():
                    for r in records:
                        on_value(r.value)
        finally:
            consumer.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


class LabelReader:
    """`{"event_id": ..., "label": ...}` JSON events of a topic into a queue (a TopicFollower thread)."""

    def __init__(self, client_kwargs: dict, topic: str, label_field: str):
        self._queue: queue.Queue = queue.Queue(maxsize=100_000)
        self._field = label_field
        self.bad = 0
        self._follower = TopicFollower(client_kwargs, topic, self._add, name="labels")

    def _add(self, value: bytes) -> None:
        try:
            event = json.loads(value)
            item = (event["event_id"], event[self._field])
        except Exception:  # pylint: disable=broad-except  # counted, never raised
            self.bad += 1
            return
        self._queue.put(item)

    def drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def stop(self):
        self._follower.stop()
