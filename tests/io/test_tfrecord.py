"""WriteSplitTFRecordBatches: every split's records, once, in its own shards, from one sink."""
import glob
import os

import apache_beam as beam
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from beam_ml.io.tfrecord import WriteSplitTFRecordBatches


def _records(pattern):
    return sorted(r.numpy() for f in sorted(glob.glob(pattern)) for r in tf.data.TFRecordDataset(f))


def test_each_split_gets_its_records_and_an_empty_split_one_empty_shard(tmp_path):
    out = tmp_path / "data"
    os.makedirs(out)
    (out / "fold-0-00000-of-00009.tfrecord").write_bytes(b"stale")  # an earlier run's shard
    batches = [("fold0", [b"a", b"b"]), ("test", [b"c"]), ("fold0", [b"d"]), ("fold1", [b"e", b"f", b"g"])] * 3
    prefixes = {"fold0": str(out / "fold-0"), "fold1": str(out / "fold-1"), "fold2": str(out / "fold-2"),
                "test": str(out / "test")}
    with TestPipeline() as p:
        names = (p | beam.Create(batches, reshuffle=False)
                 | WriteSplitTFRecordBatches(prefixes, temp_dir=str(tmp_path / "tmp" / "tfrecords")))
        names | beam.combiners.ToList() | beam.Map(
            lambda n: (tmp_path / "names.txt").write_text("\n".join(sorted(n))))
    # The names it returns are exactly the files there now.
    assert (tmp_path / "names.txt").read_text().split("\n") == sorted(glob.glob(str(out / "*.tfrecord")))
    assert _records(str(out / "fold-0-*.tfrecord")) == sorted([b"a", b"b", b"d"] * 3)
    assert _records(str(out / "fold-1-*.tfrecord")) == sorted([b"e", b"f", b"g"] * 3)
    assert _records(str(out / "test-*.tfrecord")) == [b"c"] * 3
    assert glob.glob(str(out / "fold-2-*.tfrecord")) == [str(out / "fold-2-00000-of-00001.tfrecord")]
    assert _records(str(out / "fold-2-*.tfrecord")) == []
    assert not (out / "fold-0-00000-of-00009.tfrecord").exists()  # replaced, not mixed in
    assert not (tmp_path / "tmp" / "tfrecords").exists()          # temporary files gone
    for name in glob.glob(str(out / "*.tfrecord")):
        shard, _, total = os.path.basename(name).rsplit(".", 1)[0].split("-")[-3:]
        assert int(shard) < int(total)
