"""The local GCS (beam_ml.testing.gcs) as Beam and TensorFlow see it: real reads and writes, no mocks.

- the emulator and the TLS proxy themselves (what they accept and refuse);
- TensorFlow's own gs:// filesystem through the proxy: tf.io.gfile, tf.data,
  tf.saved_model, tf.train.Checkpoint;
- a Beam pipeline on --direct_running_mode=multi_processing with 2 workers
  reading and writing gs:// (text and TFRecords), read back by tf.data.
"""
import http.client
import json
import socket
import ssl

import pytest

from beam_ml import fs
from beam_ml.testing.gcs import GCS_HOSTS, GcsEmulator

pytestmark = pytest.mark.integration


def _tunnel(local_gcs, host="www.googleapis.com"):
    """An HTTPSConnection to `host` through the test proxy, trusting only the throwaway CA."""
    context = ssl.create_default_context(cafile=local_gcs.environ["CURL_CA_BUNDLE"])
    conn = http.client.HTTPSConnection(local_gcs.proxy.host, local_gcs.proxy.port, timeout=10, context=context)
    conn.set_tunnel(host, 443)
    return conn


def _request(port, method, path, body=None):
    """(status, body) of one plain HTTP request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_emulator_starts_on_a_free_port_with_its_bucket_and_stops():
    with GcsEmulator(bucket="b1") as emulator:
        port = emulator.port
        assert emulator.endpoint == f"http://127.0.0.1:{port}"
        assert json.loads(_request(port, "GET", "/storage/v1/b/b1")[1])["name"] == "b1"
        emulator.create_bucket("b2")
        assert {b["name"] for b in json.loads(_request(port, "GET", "/storage/v1/b")[1])["items"]} == {"b1", "b2"}
    assert emulator.port is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_empty_media_upload_is_an_empty_object(gcs_bucket, local_gcs):
    # What TF sends for makedirs and empty files; the unpatched emulator crashed on it.
    status, body = _request(local_gcs.emulator.port, "POST",
                            f"/upload/storage/v1/b/{gcs_bucket}/o?uploadType=media&name=empty", b"")
    assert status == 200, body
    assert fs.is_file(f"gs://{gcs_bucket}/empty") and fs.read_bytes(f"gs://{gcs_bucket}/empty") == b""


def test_proxy_refuses_every_other_host_and_plain_requests(local_gcs):
    conn = _tunnel(local_gcs, "example.com")
    with pytest.raises(OSError, match="403"):
        conn.request("GET", "/")
    assert _request(local_gcs.proxy.port, "GET", "http://www.googleapis.com/storage/v1/b")[0] == 403


def test_proxy_dechunks_bodies_and_answers_expect_100_continue(gcs_bucket, local_gcs):
    """An upload shaped like TF's: chunked body AND Content-Length, Expect: 100-continue, keep-alive."""
    body = b"x" * 70000 + b"end"
    conn = _tunnel(local_gcs)
    conn.putrequest("POST", f"/upload/storage/v1/b/{gcs_bucket}/o?uploadType=media&name=chunked.bin")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    for i in range(0, len(body), 30000):
        part = body[i:i + 30000]
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert json.loads(response.read())["size"] == str(len(body))
    # Same tunnel, next request (keep-alive), read through the storage host.
    conn.request("GET", f"/storage/v1/b/{gcs_bucket}/o/chunked.bin")
    assert json.loads(conn.getresponse().read())["name"] == "chunked.bin"
    conn.close()
    download = _tunnel(local_gcs, GCS_HOSTS[1])
    download.request("GET", f"/{gcs_bucket}/chunked.bin", headers={"Range": "bytes=69998-"})
    assert download.getresponse().read() == b"xxend"
    download.close()
    assert fs.read_bytes(f"gs://{gcs_bucket}/chunked.bin") == body


def test_tf_gfile_through_the_proxy_sees_what_beam_writes(gcs_root):
    import tensorflow as tf

    gfile = tf.io.gfile
    path = gcs_root + "/dir/a.txt"
    with gfile.GFile(path, "w") as f:
        f.write("from tf " * 1000)
    assert fs.read_text(path) == "from tf " * 1000
    assert gfile.exists(path) and gfile.stat(path).length == 8000
    gfile.makedirs(gcs_root + "/empty/sub")
    assert gfile.isdir(gcs_root + "/empty/sub")
    with gfile.GFile(gcs_root + "/dir/zero", "w") as f:
        f.write("")  # GFile opens lazily: without a write, nothing is created
    assert fs.read_bytes(gcs_root + "/dir/zero") == b""
    fs.write_text(gcs_root + "/dir/b.txt", "from beam")
    assert sorted(gfile.glob(gcs_root + "/dir/*.txt")) == [path, gcs_root + "/dir/b.txt"]
    assert sorted(gfile.listdir(gcs_root + "/dir")) == ["a.txt", "b.txt", "zero"]
    gfile.rename(path, gcs_root + "/dir/c.txt")
    assert not fs.exists(path) and fs.read_text(gcs_root + "/dir/c.txt").startswith("from tf")
    gfile.copy(gcs_root + "/dir/b.txt", gcs_root + "/dir/d.txt")
    # TF must see a rewrite at once (its stat/match caches are off).
    assert gfile.GFile(gcs_root + "/dir/b.txt").read() == "from beam"
    fs.write_text(gcs_root + "/dir/b.txt", "rewritten by beam")
    assert gfile.GFile(gcs_root + "/dir/b.txt").read() == "rewritten by beam"
    gfile.rmtree(gcs_root + "/dir")
    assert fs.list_files(gcs_root + "/dir") == []


def test_tf_saved_model_and_checkpoint_on_gcs(gcs_root):
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.w

    module = Scale()
    export = gcs_root + "/model/1"
    tf.saved_model.save(module, export)
    assert "saved_model.pb" in fs.list_dir(export) and "variables" in fs.list_dir(export)
    loaded = tf.saved_model.load(export)
    assert loaded(tf.constant([1.0, 2.0])).numpy().tolist() == [3.0, 6.0]

    checkpoint = tf.train.Checkpoint(module=module)
    saved = checkpoint.save(gcs_root + "/ckpt/step")
    module.w.assign(-1.0)
    tf.train.Checkpoint(module=module).restore(saved).assert_consumed()
    assert module.w.numpy() == 3.0
    assert tf.train.latest_checkpoint(gcs_root + "/ckpt") == saved


@pytest.mark.slow
def test_beam_multi_processing_reads_and_writes_gcs_and_tf_reads_its_tfrecords(gcs_root):
    import apache_beam as beam
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

    for part in range(3):
        fs.write_text(f"{gcs_root}/in/part-{part}.txt", "".join(f"{part * 100 + i}\n" for i in range(100)))
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                               "--direct_num_workers=2"])
    with beam.Pipeline(options=options) as p:
        numbers = (p | "ReadText" >> beam.io.ReadFromText(f"{gcs_root}/in/*.txt")
                   | "Parse" >> beam.Map(int))
        _ = (numbers | "Square" >> beam.Map(lambda n: f"{n},{n * n}")
             | "WriteText" >> beam.io.WriteToText(f"{gcs_root}/out/squares", file_name_suffix=".csv"))
        # Plain bytes records: the workers need no TensorFlow to write them.
        _ = (numbers | "ToRecord" >> beam.Map(lambda n: b"%d" % n)
             | "WriteTFRecord" >> beam.io.WriteToTFRecord(f"{gcs_root}/out/records", file_name_suffix=".tfrecord"))

    lines = [line for path in fs.match(f"{gcs_root}/out/squares*.csv") for line in fs.read_text(path).split()]
    assert sorted(lines, key=lambda s: int(s.split(",")[0])) == [f"{n},{n * n}" for n in range(300)]
    # No temporary files left by the sinks' finalization.
    assert all(not name.startswith((".", "beam-temp")) for name in fs.list_dir(f"{gcs_root}/out"))

    records = tf.io.gfile.glob(f"{gcs_root}/out/records*.tfrecord")
    assert records and records == fs.match(f"{gcs_root}/out/records*.tfrecord")
    assert sorted(int(r) for r in tf.data.TFRecordDataset(records).as_numpy_iterator()) == list(range(300))
