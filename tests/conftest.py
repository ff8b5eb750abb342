"""Shared pytest fixtures: a real Kafka-compatible broker for the whole session.

    python -m pytest tests -q            # everything
    python -m pytest tests -q -m "not slow"
"""
import threading
import uuid

import pytest

from beam_ml.testing import TansuBroker, create_topic

# Real servers on 127.0.0.1: a GCS API (local_gcs, gcs_environ, gcs_bucket, gcs_root) and
# the BigQuery emulator (bigquery_emulator, bq_endpoint, bq_dataset).
pytest_plugins = ["tests.gcs_fixtures", "tests.bq_fixtures"]


# Fixtures that make a test heavy, and the mark such a test must carry, so that
# `make test-fast` (-m "not slow and not integration") stays fast and server-free.
HEAVY_FIXTURES = {
    "kafka_broker": "integration",
    "new_topic": "integration",
    "local_gcs": "integration",
    "gcs_environ": "integration",
    "gcs_bucket": "integration",
    "gcs_root": "integration",
    "bigquery_emulator": "integration",
    "bq_endpoint": "integration",
    "bq_dataset": "integration",
    "secure_kafka": "integration",
    "fraud": "slow",        # trains a model (once per session)
    "model_root": "slow",
}


def pytest_collection_modifyitems(config, items):
    unmarked = [f"{item.nodeid} uses {fixture} but is not marked {mark}"
                for item in items for fixture, mark in HEAVY_FIXTURES.items()
                if fixture in item.fixturenames and item.get_closest_marker(mark) is None]
    if unmarked:
        raise pytest.UsageError("heavy tests must be marked:\n  " + "\n  ".join(unmarked))


def own_messages(caplog, prefix: str = "beam_ml") -> list:
    """The messages caplog caught from this test's thread and beam_ml's loggers.

    caplog sees every thread's records: a Kafka client of another test (or a
    runner's worker thread) logging meanwhile must not change what a test sees.
    """
    me = threading.get_ident()
    return [r.getMessage() for r in caplog.records if r.thread == me and r.name.startswith(prefix)]


@pytest.fixture(scope="session")
def kafka_broker():
    """Bootstrap address ("127.0.0.1:PORT") of an in-memory Tansu broker."""
    with TansuBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def new_topic(kafka_broker):
    """Creates a uniquely named topic: ``new_topic(partitions=1) -> name``.

    The broker is shared by the session, so every test gets fresh topics.
    """
    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topic(kafka_broker, name, partitions)
        return name

    return make


# The SASL users of the secured listeners; tests search every output for these passwords.
SECURE_USERS = {"alice": "alice-pw-Q7zv9-never-shown", "bob": "bob-pw-K2xw4-never-shown"}


@pytest.fixture(scope="session")
def secure_certs(tmp_path_factory):
    """A test PKI (beam_ml.testing.kafka_secure.Certificates): CA, server and client certs, keys."""
    from beam_ml.testing.kafka_secure import make_certificates

    return make_certificates(str(tmp_path_factory.mktemp("pki")), key_password="key-pw-M4pq-never-shown")


@pytest.fixture(scope="session")
def secure_kafka(secure_certs):
    """``secure_kafka(protocol) -> SecureKafka``: a Tansu broker behind stunnel and/or the SASL
    front (SSL, MTLS, SASL_PLAINTEXT, SASL_SSL), started on first use, shared by the session."""
    from beam_ml.testing.kafka_secure import SecureKafka

    started: dict = {}

    def get(protocol: str):
        if protocol not in started:
            started[protocol] = SecureKafka(protocol, secure_certs, users=SECURE_USERS).start()
        return started[protocol]

    yield get
    for kafka in started.values():
        kafka.stop()


@pytest.fixture(scope="module")
def fraud(tmp_path_factory):
    """(model root, ...) of a small fraud model trained once per session (tests/model_fixture.py)."""
    from tests.model_fixture import trained_fraud_model

    return trained_fraud_model(str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def model_root(fraud, tmp_path):
    """A private copy of the model root, so a test may add versions."""
    import shutil

    root = tmp_path / "model"
    shutil.copytree(fraud[0], root)
    return str(root)
