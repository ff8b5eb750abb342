"""No Kafka client outlives its pipeline, even when its broker is gone (issue 20).

    python -m pytest tests/test_kafka_leaks.py -q

kafka-python's KafkaProducer.close() flushes first and, when the broker is gone,
raises before stopping its network thread, which then retries the dead broker for
the rest of the process (a test's caplog caught its `Connection failed: ...
ECONNREFUSED` records). beam_ml closes producers with `close_producer`.
"""
import os
import signal
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from kafka import KafkaProducer

from beam_ml.io.kafka import WriteToKafka
from beam_ml.io.kafka.write import close_producer
from beam_ml.producer import send_events
from beam_ml.testing import TansuBroker


def _kafka_threads() -> set:
    return {t for t in threading.enumerate() if t.name.startswith(("kafka-python-", "kafka-io-"))}


def _wait_gone(before: set, timeout: float = 10.0) -> set:
    deadline = time.monotonic() + timeout
    while (_kafka_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _kafka_threads() - before


@pytest.mark.integration
def test_a_producer_whose_broker_died_is_closed_for_certain():
    before = _kafka_threads()
    with TansuBroker() as broker:
        broker.create_topic("t")
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2000,
                                 request_timeout_ms=1000, delivery_timeout_ms=3000)
        producer.send("t", b"never acknowledged")
        os.kill(broker.pid, signal.SIGKILL)
        error = close_producer(producer, timeout=1)
    assert error is not None  # the unsent record is reported...
    assert _wait_gone(before) == set()  # ...and nothing keeps retrying the dead broker


@pytest.mark.integration
def test_send_events_closes_its_producer_when_the_broker_dies():
    before = _kafka_threads()
    with TansuBroker() as broker:
        broker.create_topic("t")
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2000,
                                 request_timeout_ms=1000, delivery_timeout_ms=3000)

        def events():
            yield "e1", {"a": 1}
            os.kill(broker.pid, signal.SIGKILL)

        with pytest.raises(Exception):
            send_events(producer, "t", events(), flush_timeout=2)
    assert _wait_gone(before) == set()


@pytest.mark.integration
@pytest.mark.slow
def test_write_to_kafka_leaves_no_client_behind_after_its_broker_died():
    before = _kafka_threads()
    with TansuBroker() as broker:
        bootstrap, pid = broker.bootstrap_servers, broker.pid
        broker.create_topic("doomed", 1)

        def kill_broker_after(unused):
            yield from (b"record %d" % i for i in range(3))
            os.kill(pid, signal.SIGKILL)

        with pytest.raises(Exception, match="a send failed"):
            with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
                _ = (p | beam.Create([None]) | beam.FlatMap(kill_broker_after)
                     | WriteToKafka(bootstrap, "doomed", producer_config={
                         "linger_ms": 2000, "request_timeout_ms": 1000, "delivery_timeout_ms": 4000,
                         "reconnect_backoff_max_ms": 200}))
    assert _wait_gone(before) == set()
