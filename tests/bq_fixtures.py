"""BigQuery emulator fixtures (loaded by tests/conftest.py through `pytest_plugins`).

    def test_x(bq_dataset, bq_endpoint):     # marked @pytest.mark.integration
        client = bq_dataset.client
        ReadFromBigQueryBatches(spec, table=bq_dataset.table("t"), endpoint=bq_endpoint)

The emulator runs from its own virtualenv: `make bqemulator` (which `make test`
runs) creates it; without it the fixture fails with a message naming the target.
"""
import dataclasses
import uuid

import pytest

from beam_ml.io.bigquery import BigQueryEndpoint, clear_endpoint
from beam_ml.testing.bigquery import BigQueryEmulator

# A test using these fixtures must be marked integration (conftest.HEAVY_FIXTURES enforces it).


@pytest.fixture(scope="session")
def bigquery_emulator():
    """A running in-memory BigQueryEmulator (project 'test') shared by the session."""
    with BigQueryEmulator(project="test") as emulator:
        yield emulator
    # Pipelines run with the endpoint redirected Beam's read clients in this process.
    clear_endpoint()


@pytest.fixture(scope="session")
def bq_endpoint(bigquery_emulator):
    """The emulator as a BigQueryEndpoint (REST + Storage Read gRPC), what --bigquery_endpoint gives."""
    return BigQueryEndpoint(bigquery_emulator.endpoint, bigquery_emulator.grpc_endpoint)


@dataclasses.dataclass
class Dataset:
    """A fresh dataset in the emulator: `table(name)` is its "project:dataset.name" spec."""

    project: str
    dataset: str
    client: object

    def table(self, name: str) -> str:
        return f"{self.project}:{self.dataset}.{name}"

    def table_id(self, name: str) -> str:
        """The "project.dataset.name" form google-cloud-bigquery takes."""
        return f"{self.project}.{self.dataset}.{name}"

    def rows(self, name: str) -> list:
        return [dict(r) for r in self.client.list_rows(self.table_id(name))]


@pytest.fixture
def bq_dataset(bigquery_emulator):
    """A uniquely named dataset per test (the emulator is shared by the session)."""
    client = bigquery_emulator.client()
    name = f"ds_{uuid.uuid4().hex[:10]}"
    client.create_dataset(f"{bigquery_emulator.project}.{name}")
    yield Dataset(bigquery_emulator.project, name, client)
    client.delete_dataset(f"{bigquery_emulator.project}.{name}", delete_contents=True, not_found_ok=True)
    client.close()
