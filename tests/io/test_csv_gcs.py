"""gs:// inputs: spec inference and ReadCsvBatches against a real GCS API on 127.0.0.1.

The server is gcp-storage-emulator (in memory); Beam's GcsIO reaches it through
STORAGE_EMULATOR_HOST, with a fake authorized-user credential file so no
default-credentials lookup or metadata probe happens (shared/DATAFLOW.md).
"""
import gzip
import json
import socket

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.errors import DEAD_TAG, UserError
from beam_ml.io.csv import ReadCsvBatches, expand_input
from beam_ml.metrics import READ, query_counter
from beam_ml.spec import infer_spec

pytestmark = [pytest.mark.integration]

ROWS = "".join(f"{i};{i % 50};{'ab'[i % 2]};{'yes' if i % 3 else 'no'}\n" for i in range(3000))


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """A bucket 'b' on an in-memory GCS emulator, with a gzipped and a plain semicolon CSV."""
    server_mod = pytest.importorskip("gcp_storage_emulator.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cred = tmp_path_factory.mktemp("gcs") / "credentials.json"
    cred.write_text(json.dumps({"type": "authorized_user", "client_id": "x", "client_secret": "x",
                                "refresh_token": "x", "token": "fake", "expiry": "2099-01-01T00:00:00Z"}))
    mp = pytest.MonkeyPatch()
    for k, v in {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GOOGLE_APPLICATION_CREDENTIALS": str(cred),
                 "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}.items():
        mp.setenv(k, v)
    server = server_mod.create_server("127.0.0.1", port, in_memory=True, default_bucket="b")
    server.start()
    try:
        from google.cloud import storage

        b = storage.Client(project="test").bucket("b")
        b.blob("in/part1.csv.gz").upload_from_string(gzip.compress(("id;x;cat;label\n" + ROWS).encode()))
        b.blob("in/part2.csv").upload_from_string("id;x;cat;label\n" + ROWS + '"9999;1;a;yes\n')
        yield "gs://b"
    finally:
        server.stop()
        mp.undo()


def test_gs_paths_are_matched_inferred_split_and_read(bucket):
    assert expand_input(f"{bucket}/in/*") == [f"{bucket}/in/part1.csv.gz", f"{bucket}/in/part2.csv"]
    spec = infer_spec(f"{bucket}/in/part1.csv.gz", "label")
    assert spec.dialect.delimiter == ";" and [c.role for c in spec.columns] == ["key", "numeric", "categorical",
                                                                                 "label"]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = pipeline | ReadCsvBatches(f"{bucket}/in/*", spec, range_bytes=10_000)  # part2 in several ranges
    dead = out[DEAD_TAG] | beam.Map(lambda d: (d.source, d.position))
    assert_that(dead, equal_to([(f"{bucket}/in/part2.csv", 3002)]))
    result = pipeline.run()
    result.wait_until_finish()
    assert {k: query_counter(result, READ, k) for k in ("lines_in", "rows_good", "rows_dead")} == \
        {"lines_in": 6001, "rows_good": 6000, "rows_dead": 1}
    with pytest.raises(UserError, match="no file matches"):
        expand_input(f"{bucket}/nothing/*.csv")
