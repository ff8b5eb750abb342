"""Windowed features computed the same way in training and live (--features_sql).

    plan = FeaturePlan.parse(sql, event_time_column="ts")      # once, fails fast naming --features_sql
    state = KeyState(plan)                                      # one key's live state
    features, late = state.score(event_ms, plan.values_of(row)) # point-in-time values, then the event is added

`point_in_time.py` defines the value (docs/WINDOWED_FEATURES.md); `beam.py`
computes it in a Beam pipeline (grouped per key, in arrival order).
"""
from beam_ml.features.plan import FeaturePlan, event_time_ms
from beam_ml.features.point_in_time import KeyState, LiveFeatures, reference_features
from beam_ml.features.beam import PointInTimeFeatures

__all__ = ["FeaturePlan", "event_time_ms", "KeyState", "LiveFeatures", "reference_features", "PointInTimeFeatures"]
