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
from transforms.preprocessing import (LABEL_KEY, make_preprocessing_fn, tensor_adapter_config,
                                      transformed_feature_names)


def _spec(default_income=None, default_city=None):
    return DatasetSpec(columns=[ColumnSpec("age", "numeric"), ColumnSpec("income", "numeric", default=default_income),
                                ColumnSpec("city", "categorical", default=default_city, max_categories=3),
                                ColumnSpec("y", "label")],
                       task="binary", label="y", label_classes=["no", "yes"]).validate()


def _batch(spec, ages, incomes, cities, labels):
    cfg = tensor_adapter_config(spec)
    arrays = []
    for f in cfg.arrow_schema:
        values = {"age": ages, "income": incomes, "city": cities, "y": labels}[f.name]
        arrays.append(pa.array([[v] for v in values], f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=cfg.arrow_schema)


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
    # age: statistics over present train values 10, 20, 30 (NaN ignored); missing → mean → 0.
    std = np.std([10., 20., 30.])
    np.testing.assert_allclose(np.ravel(out["age_xf"]), [0.0, 10 / std, 0.0], atol=1e-5)
    np.testing.assert_allclose(np.ravel(out["income_xf"]), [0.0, 1.5 / np.std([1, 2, 3, 4]), -1.5 / np.std([1, 2, 3, 4])],
                               atol=1e-5)
    onehot = np.asarray(out["city_xf"], dtype=np.float32).reshape(3, -1)
    assert onehot.shape == (3, 4)  # max_categories 3 + 1 OOV
    vocab_a = [1., 0., 0., 0.]  # 'a' is the most frequent train value → index 0
    np.testing.assert_array_equal(onehot[1], vocab_a)
    oov = [0., 0., 1., 0.]  # vocab is [a, b], so the OOV bucket is index 2
    np.testing.assert_array_equal(onehot[0], oov)
    np.testing.assert_array_equal(onehot[2], oov)
    assert list(np.ravel(out[LABEL_KEY])) == [1, 0, 0]
    assert transformed_feature_names(spec) == ["age_xf", "income_xf", "city_xf"]


@pytest.mark.slow
def test_spec_defaults_override_mean_and_oov():
    spec = _spec(default_income=100.0, default_city="b")
    train = _batch(spec, [1., 2., 3., 4.], [0., 100., np.nan, 100.], [b"a", b"b", b"", b"a"], [b"no"] * 4)
    evals = _batch(spec, [1.], [np.nan], [b""], [b"no"])
    _analyze_and_transform(spec, train, evals, _check_defaults)


def _check_defaults(out):
    filled = np.array([0., 100., 100., 100.])  # the NaN became the default 100, not the mean
    np.testing.assert_allclose(np.ravel(out["income_xf"]), [(100 - filled.mean()) / filled.std()], atol=1e-5)
    onehot = np.asarray(out["city_xf"], dtype=np.float32).reshape(1, -1)
    # train after defaults: a, b, b, a → a tie broken by tf.Transform's order; 'b' is a real slot, not OOV.
    assert onehot[0][:2].sum() == 1.0 and onehot[0][2] == 0.0
