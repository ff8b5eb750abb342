"""WriteToKafka: elements to a Kafka topic, at least once, with one idempotent producer per DoFn.

    (predictions | 'WriteToKafka' >> WriteToKafka('broker:9092', 'predictions'))
    (message_lists | WriteToKafka('broker:9092', 'predictions', producer_config={'compression_type': 'lz4'}))
"""
import logging
from typing import Any, Callable, Mapping, Optional

import apache_beam as beam
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import DefaultPartitioner

from beam_ml.io.kafka.config import KafkaClientConfig, check_client_overrides, resolve_client_config
from beam_ml.io.kafka.records import iter_key_values

__all__ = ["WriteToKafka", "close_producer"]

_LOGGER = logging.getLogger(__name__)


# kafka-python's defaults (linger_ms=0, batch_size=16 KB) start a new record
# batch, and wake the sender thread, every few sends; waiting 5 ms for more
# records and allowing 64 KB batches halved the cost of a send here (20k
# ~400-byte sends: 1.6-2.0 s -> 0.6-0.8 s). 20 ms and 256 KB cut stream_predict's
# CPU per event by another ~14% (bench_stream, 2026-12-04: 98 -> 80-87 ms per
# 1000 events; p99 406 ms at 5,400 events/s): the sender thread, pure Python,
# was a third of the worker's CPU. A record waits at most 20 ms more, and none
# waits past its bundle's end (finish_bundle flushes). producer_config overrides them.
_THROUGHPUT_DEFAULTS = {"linger_ms": 20, "batch_size": 256 * 1024}


def close_producer(producer: KafkaProducer, timeout: float) -> Optional[KafkaError]:
    """Closes a kafka-python producer for certain; returns the flush error if records were left unsent.

    kafka-python's ``close()`` flushes first and, when the flush times out (the
    broker is gone), raises before it stops the producer's network thread,
    which then retries the dead broker for the rest of the process, logging
    ``Connection failed: ... ECONNREFUSED`` into whatever runs next. Here a
    failed flush is followed by a forced close (pending records dropped:
    their bundle has already failed, or the caller reports the error).
    """
    try:
        producer.close(timeout=timeout)
        return None
    except KafkaError as e:
        sender = getattr(producer, "_sender", None)  # kafka-python 3.0's network thread
        if sender is not None:
            sender.force_close()
            sender.join(timeout)
        producer.close(timeout=0)  # nothing pending any more: releases the rest
        return e


class _KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's DefaultPartitioner (murmur2 of the key, as Java's), minus the hash when there is one partition.

    murmur2 is pure Python in kafka-python, run for every keyed record; on a
    one-partition topic its result is always that partition.
    """

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic)
        if partitions is not None and len(partitions) == 1:
            return next(iter(partitions))
        return super().partition(topic, key, serialized_key, value, serialized_value, cluster)


class _KafkaWriteDoFn(beam.DoFn):
    """Sends each element with one idempotent producer per DoFn instance."""

    def __init__(self, config: KafkaClientConfig, topic: Optional[str],
                 topic_fn: Optional[Callable[[Any], str]],
                 producer_config: Mapping[str, Any], flush_timeout: float):
        self._config = config
        self._topic = topic
        self._topic_fn = topic_fn
        self._producer_config = dict(producer_config)
        # The producer itself gives up on a record after delivery_timeout_ms
        # (kafka-python's default: 120 s); waiting longer for a flush cannot
        # bring an acknowledgement, only delay the bundle's failure.
        delivery_ms = self._producer_config.get("delivery_timeout_ms")
        self._flush_timeout = (flush_timeout if delivery_ms is None
                               else min(flush_timeout, delivery_ms / 1000.0 + 1.0))

    def setup(self):
        kwargs = dict(self._config.client_kwargs())
        # Idempotence (verified against Tansu 0.6.0 too) keeps producer
        # retries from duplicating records; acks='all' waits for replicas.
        kwargs.update(acks="all", enable_idempotence=True)
        kwargs.update(_THROUGHPUT_DEFAULTS, partitioner=_KeyHashPartitioner())
        kwargs.update(self._producer_config)
        try:
            self._producer = KafkaProducer(**kwargs)
        except KafkaError as e:
            raise RuntimeError(
                f"WriteToKafka: cannot connect to Kafka at "
                f"{self._config.bootstrap_servers}: {e}") from e
        self._error: Optional[BaseException] = None

    def start_bundle(self):
        self._pending = []

    def _on_error(self, exc: BaseException) -> None:
        # Runs on the producer's I/O thread; the first error fails the bundle.
        if self._error is None:
            self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"WriteToKafka: a send failed: {error!r}") from error

    def process(self, element: Any) -> None:
        topic = self._topic_fn(element) if self._topic_fn else self._topic
        self._raise_if_failed()
        send, pending, on_error = self._producer.send, self._pending, self._on_error
        for key, value in iter_key_values(element):
            try:
                future = send(topic, key=key, value=value)
            except KafkaError as e:
                raise RuntimeError(
                    f"WriteToKafka: cannot send to topic {topic!r}: {e!r}") from e
            future.add_errback(on_error)
            pending.append(future)

    def finish_bundle(self):
        # The bundle only succeeds once every record is acknowledged; a failed
        # bundle is retried by the runner, so records may repeat, never vanish.
        if not self._pending:
            # Nothing sent in this bundle (earlier bundles were flushed at their end). A flush
            # would still wake the producer's I/O thread: with a dead-letter or a monitor writer
            # idle beside the main one, that was a wake-up per writer per poll.
            self._raise_if_failed()
            return
        try:
            self._producer.flush(timeout=self._flush_timeout)
        except KafkaError as e:
            # Unacknowledged at the deadline is a failed send, reported the same way.
            if self._error is None:
                self._error = e
        failed = next((f for f in self._pending if f.failed()), None)
        self._pending = []
        if failed is not None and self._error is None:
            self._error = failed.exception
        self._raise_if_failed()

    def teardown(self):
        producer = getattr(self, "_producer", None)
        if producer is not None:
            self._producer = None
            error = close_producer(producer, timeout=5)
            if error is not None:
                # Records still unacknowledged here belong to a bundle that
                # already failed (finish_bundle raised), so raising again would
                # only replace that bundle's error with this one.
                _LOGGER.warning("WriteToKafka: producer closed with unacknowledged records: %r", error)


class WriteToKafka(beam.PTransform):
    """Writes elements to a Kafka topic, at least once.

    Elements are ``value`` bytes or ``(key, value)`` pairs (bytes or None);
    `KafkaRecord`s are accepted too, and so is a ``list`` of any of these
    (sent in order; with `topic_fn`, the list's topic is
    ``topic_fn(list)``): a pipeline that works on batches unbatches only
    here. A bundle fails, and is retried by the runner, if any of its
    records is not acknowledged.
    """

    def __init__(self,
                 bootstrap_servers: Optional[str],
                 topic: Optional[str] = None,
                 *,
                 topic_fn: Optional[Callable[[Any], str]] = None,
                 client_config: Optional[KafkaClientConfig] = None,
                 producer_config: Optional[Mapping[str, Any]] = None,
                 flush_timeout: float = 120.0):
        """Configures the write; nothing connects until the pipeline runs.

        Args:
          bootstrap_servers: ``host:port[,host:port]``; may be None when
            `client_config` has it.
          topic: Destination topic (unless `topic_fn` is given).
          topic_fn: Picks each element's topic, e.g. for dead letters.
          client_config: Security and connection settings (TLS, SASL).
          producer_config: Extra kafka-python KafkaProducer settings, e.g.
            ``linger_ms``, ``compression_type`` (gzip, snappy, lz4, zstd: the
            codec packages are dependencies of beam_ml), or short
            ``bootstrap_timeout_ms``/``max_block_ms``/``request_timeout_ms``
            to fail fast.
          flush_timeout: Seconds `finish_bundle` waits for acknowledgements;
            capped at the producer's ``delivery_timeout_ms`` + 1 s when set.
            Records still unacknowledged then fail the bundle ("a send failed").
        """
        super().__init__()
        if (topic is None) == (topic_fn is None):
            raise ValueError("give exactly one of topic and topic_fn")
        if topic is not None and not isinstance(topic, str):
            raise ValueError(f"topic: expected a name, got {topic!r}")
        self._config = resolve_client_config(bootstrap_servers, client_config)
        self._topic = topic
        self._topic_fn = topic_fn
        self._producer_config = check_client_overrides(
            "producer_config", producer_config, KafkaProducer.DEFAULT_CONFIG,
            ("bootstrap_servers", "key_serializer", "value_serializer"))
        self._flush_timeout = flush_timeout

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "SendToKafka" >> beam.ParDo(
            _KafkaWriteDoFn(self._config, self._topic, self._topic_fn,
                            self._producer_config, self._flush_timeout))

    def display_data(self):
        return {
            "bootstrap_servers": self._config.bootstrap_servers,
            "topic": self._topic or "(per element)",
        }
