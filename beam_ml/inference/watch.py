"""WatchModelVersions: each newer model version under a root, once, as ModelMetadata.

    versions = p | WatchModelVersions("gs://bucket/fraud/model", interval=10)
    results = rows | RunInference(handler, model_metadata_pcoll=versions)

For runners with streaming side inputs (Dataflow). Not usable as a live side
input on the local FnApiRunner: a stage whose side input comes from a
never-ending splittable DoFn is only scheduled once that DoFn finishes, and
Beam's own `WatchFilePattern` needs a processing-time trigger, which crashes
there. Use the handler's in-band polling locally (`beam_ml.inference.handler`).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.ml.inference.base import ModelMetadata
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_ml.io.sdf import MinTimestampWatermarkProvider
from beam_ml.model_store import list_versions

__all__ = ["WatchModelVersions"]


class _VersionRestrictionProvider(RestrictionProvider):
    """The restriction is the range of version numbers not yet announced."""

    def initial_restriction(self, element) -> OffsetRange:
        return OffsetRange(1, sys.maxsize)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> float:
        return 1.0  # unknown and unbounded: never let a runner read it as 2**63


class _WatchVersionsDoFn(beam.DoFn):
    """Polls `list_versions(model_root)`; claims and announces each newer complete version.

    Claiming version n in the offset tracker moves the restriction to
    [n + 1, ...), so a resumed or checkpointed watch never announces a version
    twice without needing state. Between polls it checkpoints with
    `defer_remainder` (ProcessContinuation.resume breaks on the FnApiRunner).
    """

    def __init__(self, interval: float, stop_after: Optional[float]):
        self._interval = interval
        self._stop_after = stop_after

    @beam.DoFn.unbounded_per_element()
    def process(self, element: tuple[str, float],
                tracker=beam.DoFn.RestrictionParam(_VersionRestrictionProvider()),
                watermark_estimator=beam.DoFn.WatermarkEstimatorParam(MinTimestampWatermarkProvider())):
        model_root, started = element
        restriction = tracker.current_restriction()
        if self._stop_after is not None and time.time() >= started + self._stop_after:
            tracker.try_claim(restriction.stop)  # done: no residual
            return
        versions = [v for v in list_versions(model_root) if v >= restriction.start]
        if versions:
            latest = versions[-1]
            if not tracker.try_claim(latest):
                return
            now = Timestamp.now()
            watermark_estimator.set_watermark(now)
            yield beam.window.TimestampedValue(
                ModelMetadata(model_id=os.path.join(model_root, str(latest)), model_name=str(latest)), now)
        tracker.defer_remainder(Duration(seconds=self._interval))


class WatchModelVersions(beam.PTransform):
    """PBegin -> PCollection[ModelMetadata]: each newer version under a model root, once.

    Meant as RunInference's `model_metadata_pcoll` on runners with streaming
    side inputs (Dataflow). The output is in the global window with a
    data-driven trigger (every element fires; no processing-time trigger).
    Not usable as a live side input on the local FnApiRunner: see the module
    docstring.
    """

    def __init__(self, model_root: str, interval: float = 10.0, stop_after: Optional[float] = None):
        """Args:
          model_root: the directory holding version directories.
          interval: seconds between polls.
          stop_after: stop watching after this many seconds (None: never).
        """
        super().__init__()
        self._model_root = model_root
        self._interval = interval
        self._stop_after = stop_after

    def expand(self, pbegin):
        root = self._model_root
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "StartWatch" >> beam.Map(lambda _: (root, time.time()))
                | "PollVersions" >> beam.ParDo(_WatchVersionsDoFn(self._interval, self._stop_after))
                | "GlobalWindow" >> beam.WindowInto(
                    window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING))
