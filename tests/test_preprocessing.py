"""preprocessing_fn tested in tf.Transform style: raw rows in, expected transformed rows out."""
import tempfile

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow_transform.beam as tft_beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from beam_ml.spec import ColumnSpec, DatasetSpec
from transforms.preprocessing import (LABEL_KEY, NUMERIC_XF, StatsAndVocabularies, make_preprocessing_fn,
                                      tensor_adapter_config, to_transform_batch, transformed_feature_names)


def _spec(default_income=None, default_city=None):
    return DatasetSpec(columns=[ColumnSpec("age", "numeric"), ColumnSpec("income", "numeric", default=default_income),
                                ColumnSpec("city", "categorical", default=default_city, max_categories=3),
                                ColumnSpec("y", "label")],
                       task="binary", label="y", label_classes=["no", "yes"]).validate()


def _batch(spec, ages, incomes, cities, labels):
    """A batch as the reader emits it (one list column per feature), in the transform's layout."""
    columns = {"age": (ages, pa.float32()), "income": (incomes, pa.float32()), "city": (cities, pa.binary()),
               "y": (labels, pa.binary())}
    reader = pa.RecordBatch.from_arrays([pa.array([[v] for v in values], pa.list_(t))
                                         for values, t in columns.values()], names=list(columns))
    return to_transform_batch(reader, spec)


def _analyze_and_transform(spec, train_batch, eval_batch, check):
    """Runs AnalyzeAndTransform on train and Transform on eval; `check`s the eval columns.

    The check runs inside the pipeline's matcher (elements are not visible outside
    the runner), and its assertion errors fail the pipeline.
    """
    with TestPipeline() as p, tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        cfg = tensor_adapter_config(spec)
        train = p | "Train" >> beam.Create([train_batch])
        evals = p | "Eval" >> beam.Create([eval_batch])
        _, transform_fn = (train, cfg) | tft_beam.AnalyzeAndTransformDataset(
            make_preprocessing_fn(spec), output_record_batches=True)
        out, _ = ((evals, cfg), transform_fn) | tft_beam.TransformDataset(output_record_batches=True)

        def matcher(batches):
            assert len(batches) == 1
            check(batches[0][0].to_pydict())
        assert_that(out, matcher)


@pytest.mark.slow
def test_zscore_mean_imputation_onehot_oov_and_label_encoding():
    spec = _spec()
    train = _batch(spec, [10., 20., 30., np.nan], [1., 2., 3., 4.], [b"a", b"a", b"b", b""], [b"no", b"yes", b"no", b"no"])
    # Eval: a missing age (→ train mean → 0), an unseen city (→ OOV) and a missing city (→ OOV).
    evals = _batch(spec, [np.nan, 30., 20.], [2.5, 4., 1.], [b"zzz", b"a", b""], [b"yes", b"no", b"no"])

    def check(out):
        _check_first(spec, out)
    _analyze_and_transform(spec, train, evals, check)


def _check_first(spec, out):
    numeric = np.asarray(out[NUMERIC_XF], dtype=np.float32).reshape(3, 2)  # [age, income] per row
    # age: statistics over present train values 10, 20, 30 (NaN ignored); missing → mean → 0.
    std = np.std([10., 20., 30.])
    np.testing.assert_allclose(numeric[:, 0], [0.0, 10 / std, 0.0], atol=1e-5)
    np.testing.assert_allclose(numeric[:, 1], [0.0, 1.5 / np.std([1, 2, 3, 4]), -1.5 / np.std([1, 2, 3, 4])],
                               atol=1e-5)
    onehot = np.asarray(out["city_xf"], dtype=np.float32).reshape(3, -1)
    assert onehot.shape == (3, 4)  # max_categories 3 + 1 OOV
    vocab_a = [1., 0., 0., 0.]  # 'a' is the most frequent train value → index 0
    np.testing.assert_array_equal(onehot[1], vocab_a)
    oov = [0., 0., 0., 1.]  # the OOV bucket is always last (the vocabulary [a, b] leaves slot 2 empty)
    np.testing.assert_array_equal(onehot[0], oov)
    np.testing.assert_array_equal(onehot[2], oov)
    assert list(np.ravel(out[LABEL_KEY])) == [1, 0, 0]
    assert transformed_feature_names(spec) == ["numeric_xf", "city_xf"]


@pytest.mark.slow
def test_spec_defaults_override_mean_and_oov():
    spec = _spec(default_income=100.0, default_city="b")
    train = _batch(spec, [1., 2., 3., 4.], [0., 100., np.nan, 100.], [b"a", b"b", b"", b"a"], [b"no"] * 4)
    evals = _batch(spec, [1.], [np.nan], [b""], [b"no"])
    _analyze_and_transform(spec, train, evals, _check_defaults)


def _check_defaults(out):
    filled = np.array([0., 100., 100., 100.])  # the NaN became the default 100, not the mean
    income = np.asarray(out[NUMERIC_XF], dtype=np.float32).reshape(1, 2)[:, 1]
    np.testing.assert_allclose(income, [(100 - filled.mean()) / filled.std()], atol=1e-5)
    onehot = np.asarray(out["city_xf"], dtype=np.float32).reshape(1, -1)
    # train after defaults: a, b, b, a → a tie, broken like tf.Transform (higher value first): [b, a].
    np.testing.assert_array_equal(onehot[0], [1., 0., 0., 0.])


def test_reader_batches_become_row_major_blocks():
    spec = _spec()
    out = _batch(spec, [1., np.nan], [10., 20.], [b"a", b""], [b"no", b"yes"]).to_pydict()
    assert out["__numeric__"][0] == [1.0, 10.0] and np.isnan(out["__numeric__"][1][0])
    assert out["__categorical__"] == [[b"a"], [b""]] and out["y"] == [[b"no"], [b"yes"]]
    assert [f.name for f in tensor_adapter_config(spec).arrow_schema] == ["__numeric__", "__categorical__", "y"]


def test_one_pass_statistics_match_numpy_across_bundles():
    """The analyzer's combine, fed in uneven batches and merged, gives numpy's numbers and tft's vocab order."""
    rng = np.random.default_rng(7)
    x = rng.normal(1e5, 3.0, size=(1000, 3))  # large values: a naive sum of squares loses the variance
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:, 2] = 5.0                              # a constant column: std 0
    cats = rng.choice([b"a", b"b", b"c", b"d", b""], p=[0.4, 0.3, 0.2, 0.05, 0.05], size=(1000, 2)).astype(object)
    with TestPipeline() as p:
        batches = p | beam.Create([(x[i:i + n], cats[i:i + n]) for i, n in ((0, 10), (10, 600), (610, 390))])
        mean, std, vocab = batches | StatsAndVocabularies(3, [2, 10])

        def check(name, expected):
            def matcher(values):
                assert len(values) == 1, values
                if name == "vocab":
                    assert values[0].tolist() == expected, values[0]
                else:
                    np.testing.assert_allclose(values[0], expected, rtol=1e-5, atol=1e-6)
            return matcher

        assert_that(mean, check("mean", np.nanmean(x, axis=0)), label="Mean")
        assert_that(std, check("std", np.nanstd(x, axis=0)), label="Std")
        # Top 2 of column 0, all 4 of column 1 ("" is missing, never a value), padded to the widest.
        counts = [{v: int((cats[:, i] == v).sum()) for v in (b"a", b"b", b"c", b"d")} for i in range(2)]
        ranked = [sorted(((n, v) for v, n in c.items()), reverse=True) for c in counts]
        expected = [[v for _, v in ranked[0][:2]] + [b""] * 8, [v for _, v in ranked[1]] + [b""] * 6]
        assert_that(vocab, check("vocab", expected), label="Vocab")
