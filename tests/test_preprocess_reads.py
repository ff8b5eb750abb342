"""Small inputs are read once, large ones twice (the transform pass re-reads them): both give the same output."""
import glob
import json
import os
import re

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from beam_ml.preprocess import COMPRESSED_RATIO, PreprocessConfig, build_preprocess, reads_once
from beam_ml.spec import infer_spec


def _csv(path, rows=600, seed=3):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": np.round(rng.normal(size=rows), 4), "z": rng.integers(0, 50, rows),
                          "dept": [f"d{v}" for v in rng.integers(0, 6, rows)],
                          "y": np.where(rng.random(rows) < 0.3, "yes", "no")})
    frame.to_csv(path, index=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write("oops,1,d1,no\n")  # a dead letter: counted once whichever way the file is read
    return str(path)


def test_the_read_once_threshold_counts_compressed_files_at_their_expanded_size(tmp_path):
    plain = tmp_path / "a.csv"
    plain.write_bytes(b"x,y\n" + b"1,2\n" * 250)  # 1,004 bytes
    gz = tmp_path / "b.csv.gz"
    gz.write_bytes(b"\x1f\x8b" + b"\0" * 98)  # 100 bytes, counted as 100 x COMPRESSED_RATIO
    assert reads_once(str(plain), 1_004) and not reads_once(str(plain), 1_003)
    assert reads_once(str(gz), 100 * COMPRESSED_RATIO) and not reads_once(str(gz), 100 * COMPRESSED_RATIO - 1)
    assert reads_once(str(tmp_path / "*.csv*"), 1_004 + 100 * COMPRESSED_RATIO)
    assert not reads_once(str(tmp_path / "missing-*.csv"), 1 << 30)  # the read names the bad pattern, not this


def _records(output_dir):
    """Every split's rows (label, one-hot, z-scores as one float vector), sorted, per split prefix."""
    out = {}
    for path in glob.glob(os.path.join(output_dir, "data", "*.tfrecord")):
        split = re.sub(r"-\d{5}-of-\d{5}\.tfrecord$", "", os.path.basename(path))
        for r in tf.data.TFRecordDataset(path):
            f = tf.train.Example.FromString(r.numpy()).features.feature
            out.setdefault(split, []).append(list(f["label"].int64_list.value) + list(f["dept_xf"].float_list.value)
                                             + list(f["numeric_xf"].float_list.value))
    return {k: np.array(sorted(v, key=lambda row: tuple(np.round(row, 4)))) for k, v in out.items()}


@pytest.mark.slow
def test_one_read_and_two_reads_write_the_same_splits_and_counts(tmp_path):
    path = _csv(tmp_path / "data.csv")
    spec = infer_spec(path, "y")
    results = {}
    for name, limit in (("once", 1 << 30), ("twice", 0)):
        assert reads_once(path, limit) == (name == "once")
        out = str(tmp_path / name)
        with beam.Pipeline() as p:
            pre = build_preprocess(p, spec, PreprocessConfig(input_pattern=path, output_dir=out, cv_folds=3,
                                                             read_once_bytes=limit))
            _ = pre.split_counts | beam.Map(lambda c, o=out: json.dump(c, open(os.path.join(o, "splits.json"), "w")))
        with open(os.path.join(out, "splits.json")) as f:
            splits = json.load(f)
        dead = [json.loads(line) for p in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")) for line in open(p)]
        results[name] = (_records(out), splits, [(d["position"], d["reason"]) for d in dead])
    once, twice = results["once"], results["twice"]
    assert sum(len(v) for v in once[0].values()) == 600  # every good row, in some split
    assert set(once[0]) == set(twice[0]) == {"fold-0", "fold-1", "fold-2", "test"}
    for split, rows in once[0].items():  # the same rows in each split; statistics merged in another order
        np.testing.assert_allclose(rows, twice[0][split], rtol=0, atol=1e-5)  # may differ in the last bits
    assert once[1:] == twice[1:]  # the same split counts and dead letters
    assert sum(n for by_class in once[1].values() for n in by_class.values()) == 600
    assert [p for p, _ in once[2]] == [602] and "expected a number" in once[2][0][1]


def test_fold_hashes_reach_the_quantile_combiner_as_python_floats(tmp_path):
    # The per-class quantile combiner keeps its elements one by one and Beam pickles its
    # accumulator between stages and to sample its size: numpy scalars there cost 1.5 s of a 200k-row run.
    import pickle

    from beam_ml.io.csv import read_csv_file
    from beam_ml.preprocess import _SplitDoFn

    path = _csv(tmp_path / "data.csv", rows=400)
    spec = infer_spec(path, "y")
    batch = next(chunk.batch for chunk in read_csv_file(path, spec) if chunk.batch is not None)
    out = list(_SplitDoFn(spec, 0.2, 42, spec.feature_columns + [spec.label]).process(batch))
    hashes = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == "fold_hashes"]
    marked = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
    assert {c for c, _ in hashes} == {0, 1} and len(marked) == 1
    n_train = sum(len(h) for _, h in hashes)
    assert 0.7 * batch.num_rows < n_train < 0.9 * batch.num_rows
    for _, h in hashes:
        assert type(h) is list and all(type(v) is float and 0.0 <= v < 1.0 for v in h)
        assert len(pickle.dumps(h, pickle.HIGHEST_PROTOCOL)) < 10 * len(h) + 64
