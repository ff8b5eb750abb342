"""Following a Kafka topic from its start on a daemon thread (the label join and the live dashboard).

    follower = TopicFollower(client_kwargs, "labels", on_value=lambda value: ...)   # bytes of each record
    follower.stop()

Manual partition assignment (no consumer group: Tansu takes ~20 s to join one), every partition
from its beginning; a topic that does not exist yet is waited for.
"""
from __future__ import annotations

import threading
from typing import Callable

from kafka import KafkaConsumer, TopicPartition

__all__ = ["TopicFollower"]


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
