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

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

__all__ = ["RunOutcome", "run_pipeline", "runs_remotely"]

# Runners whose jobs run in this process or its worker subprocesses.
_LOCAL_RUNNERS = (None, "", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner",
                  "TestDirectRunner", "PrismRunner")


def runs_remotely(options: PipelineOptions) -> bool:
    """Whether the job runs somewhere else (Dataflow, a portable job server) or is only staged as a template."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name not in _LOCAL_RUNNERS or bool(options.view_as(GoogleCloudOptions).template_location)


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
