"""Shared pytest fixtures: a real Kafka-compatible broker for the whole session.

    python -m pytest tests -q            # everything
    python -m pytest tests -q -m "not slow"
"""
import uuid

import pytest

from beam_ml.testing import TansuBroker, create_topic

# A real GCS API on 127.0.0.1: local_gcs, gcs_environ, gcs_bucket, gcs_root.
pytest_plugins = ["tests.gcs_fixtures"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes several seconds (deselect with -m 'not slow')")
    config.addinivalue_line(
        "markers", "integration: talks to a real server started by a fixture")


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
