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

import pytest
from kafka import KafkaProducer

from beam_ml.io.kafka.write import close_producer
from beam_ml.producer import send_events
from beam_ml.testing import TansuBroker


def kafka_threads() -> set:
    """The kafka-python client threads alive now."""
    return {t for t in threading.enumerate() if t.name.startswith(("kafka-python-", "kafka-io-"))}


def _producer(broker) -> KafkaProducer:
    """A producer of topic "t" that holds records 2 s and gives up on them after 3 s."""
    broker.create_topic("t")
    return KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2000, request_timeout_ms=1000,
                         delivery_timeout_ms=3000)


def wait_for_no_new_kafka_threads(before: set, timeout: float = 10.0) -> set:
    """Kafka client threads alive now that were not in `before`, once they had `timeout` s to end."""
    deadline = time.monotonic() + timeout
    while (kafka_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return kafka_threads() - before


@pytest.mark.integration
def test_a_producer_whose_broker_died_is_closed_for_certain():
    before = kafka_threads()
    with TansuBroker() as broker:
        producer = _producer(broker)
        producer.send("t", b"never acknowledged")
        os.kill(broker.pid, signal.SIGKILL)
        error = close_producer(producer, timeout=1)
    assert error is not None  # the unsent record is reported...
    assert wait_for_no_new_kafka_threads(before) == set()  # ...and nothing keeps retrying the dead broker


@pytest.mark.integration
def test_send_events_closes_its_producer_when_the_broker_dies():
    before = kafka_threads()
    with TansuBroker() as broker:
        producer = _producer(broker)

        def events():
            yield "e1", {"a": 1}
            os.kill(broker.pid, signal.SIGKILL)

        with pytest.raises(Exception):
            send_events(producer, "t", events(), flush_timeout=2)
    assert wait_for_no_new_kafka_threads(before) == set()
