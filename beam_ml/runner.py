"""Running a built pipeline: wait for it when it runs here, return after submission when it runs elsewhere.

    outcome = run_pipeline(pipeline)
    if outcome.finished:
        counts = batch_counts(outcome.result, plan)     # counters of a job that ran to its end here
    else:
        log(outcome.describe())                        # submitted (Dataflow) or written as a template

On DataflowRunner the launching machine only submits: a Flex Template launch
must return once the job is submitted (or, with --template_location, once the
job is staged), and the counts then live on the job's page and in its output
files, not in this process.
"""
from __future__ import annotations

from typing import NamedTuple

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

__all__ = ["LocalRunner", "RunOutcome", "new_pipeline", "run_pipeline", "runs_remotely"]

# Runners whose jobs run in this process or its worker subprocesses.
_LOCAL_RUNNERS = (None, "", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner",
                  "TestDirectRunner", "PrismRunner", "LocalRunner")


def runs_remotely(options: PipelineOptions) -> bool:
    """Whether the job runs somewhere else (Dataflow, a portable job server) or is only staged as a template."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name not in _LOCAL_RUNNERS or bool(options.view_as(GoogleCloudOptions).template_location)


# What Beam's DirectRunner picks the bundle-based runner for (the FnApiRunner cannot run them).
_NEEDS_BUNDLE_BASED = ("TestStream", "ReadFromPubSub", "WriteToPubSub")


class LocalRunner(PipelineRunner):
    """--runner=DirectRunner without its first attempt at Prism: Beam's FnApiRunner, as the DirectRunner uses.

    Beam's DirectRunner (SwitchingDirectRunner) first tries to start Prism, a Go
    runner it downloads from GitHub; offline that fails and it falls back to the
    FnApiRunner, after translating the pipeline once more (1-2 s per run, more
    for wide pipelines). beam_ml's local runs use the FnApiRunner directly,
    online or offline, so a laptop runs the engine the tests run, with the same
    options (--direct_num_workers, --direct_running_mode). A pipeline holding a
    transform only the bundle-based DirectRunner runs (TestStream, Pub/Sub) goes
    to Beam's DirectRunner unchanged.
    """

    def is_fnapi_compatible(self) -> bool:
        return True  # no runner-API round trip before running: the FnApiRunner translates the pipeline itself

    def run_pipeline(self, pipeline, options):
        from apache_beam.pipeline import PipelineVisitor

        class _Find(PipelineVisitor):
            found = False

            def enter_composite_transform(self, applied):
                self.visit_transform(applied)

            def visit_transform(self, applied):
                self.found = self.found or type(applied.transform).__name__ in _NEEDS_BUNDLE_BASED

        finder = _Find()
        pipeline.visit(finder)
        if finder.found:
            from apache_beam.runners.direct.direct_runner import DirectRunner

            return DirectRunner().run_pipeline(pipeline, options)
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        # As Beam's DirectRunner builds its FnApiRunner (direct_runner.py), so workers see the options.
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=provision).run_pipeline(pipeline, options)


def new_pipeline(options: PipelineOptions):
    """A Pipeline for `options`: on --runner=DirectRunner (or none), one that runs on `LocalRunner`."""
    import apache_beam as beam

    # Worker processes import beam_ml before any DoFn loads TensorFlow, so its __init__ sets the
    # log level they inherit (beam_ml.logs): trials in other processes are as quiet as the launcher.
    setup = options.view_as(SetupOptions)
    setup.beam_plugins = list(dict.fromkeys([*(setup.beam_plugins or []), "beam_ml"]))
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "", "DirectRunner", "SwitchingDirectRunner"):
        return beam.Pipeline(runner=LocalRunner(), options=options)
    return beam.Pipeline(options=options)


class RunOutcome(NamedTuple):
    """result: the PipelineResult; finished: the job ran to its end here (its counters can be read)."""

    result: object
    finished: bool
    remote: str = ""

    def describe(self) -> str:
        """One line naming where the job went, for a run that did not finish here."""
        try:
            job_id = self.result.job_id()
        except Exception:  # a template creation has no job; other runners may not say
            job_id = None
        where = f"submitted to {self.remote}: job {job_id}" if job_id else f"staged for {self.remote} (no job yet)"
        return f"[beam_ml] {where}; counts are on the job's page and in its outputs"


def run_pipeline(pipeline) -> RunOutcome:
    """Runs `pipeline`; waits for it only when it runs here."""
    result = pipeline.run()
    if runs_remotely(pipeline.options):
        return RunOutcome(result, False, pipeline.options.view_as(StandardOptions).runner or "")
    result.wait_until_finish()
    return RunOutcome(result, True)
