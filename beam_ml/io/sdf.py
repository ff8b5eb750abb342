"""Pieces shared by beam_ml's splittable DoFns (the Kafka read, the model-version watch).

    watermark_estimator=beam.DoFn.WatermarkEstimatorParam(MinTimestampWatermarkProvider())
"""
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP

__all__ = ["MinTimestampWatermarkProvider"]


class MinTimestampWatermarkProvider(WatermarkEstimatorProvider):
    """A ManualWatermarkEstimator that starts at MIN_TIMESTAMP.

    Not Beam's `ManualWatermarkEstimator.default_provider()`: Beam 2.77 starts
    it (and MonotonicWatermarkEstimator's) at None, which breaks on the first
    record; starting at MIN_TIMESTAMP means the estimator always reports a
    real Timestamp. The DoFn moves it with `set_watermark`.
    """

    def initial_estimator_state(self, element, restriction):
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state or MIN_TIMESTAMP)
