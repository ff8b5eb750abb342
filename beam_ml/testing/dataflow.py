"""Translate and stage a pipeline with the real DataflowRunner, offline, and read back what was staged.

    from beam_ml.testing.dataflow import stage_on_dataflow, launch_flex_template
    # with the environment of a beam_ml.testing.gcs.LocalGcs applied (the gcs_root fixture does it):
    staged = stage_on_dataflow("pipelines.batch_predict", ["--model_dir=gs://b/m", ...], bucket="b")
    assert {"ReadCsv", "RunInference"} <= staged.job.step_labels
    assert "beam_ml/fs.py" in staged.job.package_modules

    launched = launch_flex_template("batch_predict", {"model_dir": "gs://b/m", ...}, bucket="b")

Classic-template creation (``--template_location``) makes the DataflowRunner
do everything a submission does — runner overrides, translation to the runner
API proto, staging of ``pipeline.pb``, the package built from ``--setup_file``
(``workflow.tar.gz``) and the pickled main session — and then write the job
description instead of calling the Dataflow API. Against the GCS emulator
(`beam_ml.testing.gcs`) that needs no cloud at all; ``--dataflow_endpoint`` is
``http://127.0.0.1`` (nothing listens on port 80), so an accidental API call
fails at once instead of leaving the machine.

A Flex Template launch is the same route: the launcher runs the image's Python
file with the template's parameters as ``--name=value`` and its own flags
(runner, project, region, staging, ``--template_location=.../job_object``).
`launch_flex_template` runs ``templates/launcher.py`` exactly that way, in a
subprocess.

This proves Beam's DataflowRunner accepts the graph and that workers would get
the package; only the Dataflow service itself can validate more.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from beam_ml import fs

__all__ = ["StagedJob", "StagedRun", "FlexLaunch", "dataflow_flags", "read_staged", "stage_on_dataflow",
           "flex_launcher_flags", "launch_flex_template", "repo_root", "PROJECT", "REGION"]

PROJECT = "test-proj"
REGION = "us-central1"
# What the staging directory of one job is named: <job_name>.<timestamp>.
_JOB_DIR = re.compile(r"^[a-z0-9-]+\.\d+\.\d+$")


def repo_root() -> str:
    """The checkout this package runs from (holding setup.py, pipelines/, templates/)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class StagedJob:
    """One job as the DataflowRunner staged it.

    Attributes:
      staging_dir: ``gs://.../<job_name>.<timestamp>``.
      staged_files: names of the files in it (pipeline.pb, workflow.tar.gz, pickled_main_session...).
      pipeline: the runner-API ``Pipeline`` proto from pipeline.pb.
      step_labels: every transform's ``unique_name`` (``"ReadCsv"``, ``"ReadCsv/Read"``...),
        without the runner's own root wrapper.
      package_files: the paths inside workflow.tar.gz (the sdist of --setup_file), without
        the leading ``<name>-<version>/``; empty when no package was staged.
    """

    staging_dir: str
    staged_files: list[str]
    pipeline: Any
    step_labels: set[str]
    package_files: list[str]

    @property
    def top_level_labels(self) -> list[str]:
        """Labels of the pipeline's top-level steps, in order: what the Dataflow UI shows first."""
        components = self.pipeline.components.transforms
        roots = list(self.pipeline.root_transform_ids)
        # The runner wraps the whole graph in one root composite of its own.
        if len(roots) == 1:
            roots = list(components[roots[0]].subtransforms)
        return [components[t].unique_name for t in roots]

    @property
    def package_modules(self) -> set[str]:
        """The ``.py`` files of the staged package (``"beam_ml/fs.py"``, ``"pipelines/train.py"``...)."""
        return {p for p in self.package_files if p.endswith(".py")}


@dataclasses.dataclass
class StagedRun:
    """What one call of a pipeline's ``run(argv)`` staged.

    Attributes:
      jobs: one StagedJob per pipeline that reached the runner, in staging order.
      template: the template JSON written to --template_location (the last job's), or None.
      template_location: where it was written.
      error: what ``run`` raised after (or before) staging, when the caller allowed it.
      result: what ``run`` returned.
    """

    jobs: list[StagedJob]
    template: Optional[dict]
    template_location: str
    error: Optional[BaseException] = None
    result: Any = None

    @property
    def job(self) -> StagedJob:
        """The only staged job.

        Raises:
          AssertionError: none or several were staged.
        """
        if len(self.jobs) != 1:
            raise AssertionError(f"expected exactly one staged job, found {len(self.jobs)}: "
                                 f"{[j.staging_dir for j in self.jobs]} (error: {self.error!r})")
        return self.jobs[0]


def dataflow_flags(bucket: str, name: str, setup_file: Optional[str] = None, project: str = PROJECT,
                   region: str = REGION) -> list[str]:
    """The DataflowRunner flags that create a classic template on ``gs://bucket`` instead of submitting.

    Args:
      bucket: a bucket on the GCS emulator.
      name: a unique name for this run (staging, temp and template paths use it).
      setup_file: the package's setup.py (default: this checkout's).
      project: the (fake) GCP project.
      region: the Dataflow region.
    """
    setup_file = setup_file or os.path.join(repo_root(), "setup.py")
    return ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
            f"--temp_location=gs://{bucket}/{name}/tmp", f"--staging_location=gs://{bucket}/{name}/staging",
            f"--template_location=gs://{bucket}/{name}/templates/{name}.json",
            # No port (the validator refuses one), and nothing listens on :80.
            "--dataflow_endpoint=http://127.0.0.1", f"--setup_file={setup_file}"]


def _package_files(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    # Strip the sdist's "<name>-<version>/" top directory.
    return sorted(n.split("/", 1)[1] if "/" in n else n for n in names)


def read_staged(staging_location: str) -> list[StagedJob]:
    """Reads every job staged under a --staging_location, oldest first.

    Args:
      staging_location: the flag's value (``gs://...`` or a local directory).
    """
    from apache_beam.portability.api import beam_runner_api_pb2  # pylint: disable=import-outside-toplevel

    job_dirs = sorted((n for n in fs.list_dir(staging_location) if _JOB_DIR.match(n)),
                      key=lambda n: float(n.split(".", 1)[1]))
    jobs = []
    for name in job_dirs:
        staging_dir = fs.join(staging_location, name)
        files = fs.list_dir(staging_dir)
        pipeline = beam_runner_api_pb2.Pipeline.FromString(fs.read_bytes(fs.join(staging_dir, "pipeline.pb")))
        roots = set(pipeline.root_transform_ids)
        labels = {t.unique_name for tid, t in pipeline.components.transforms.items()
                  if t.unique_name and not (len(roots) == 1 and tid in roots)}
        package = (_package_files(fs.read_bytes(fs.join(staging_dir, "workflow.tar.gz")))
                   if "workflow.tar.gz" in files else [])
        jobs.append(StagedJob(staging_dir, files, pipeline, labels, package))
    return jobs


def _resolve_run(run: Union[str, Callable[[Sequence[str]], Any]]) -> Callable[[Sequence[str]], Any]:
    if callable(run):
        return run
    return importlib.import_module(run).run


def stage_on_dataflow(run: Union[str, Callable[[Sequence[str]], Any]], argv: Sequence[str], bucket: str,
                      name: Optional[str] = None, setup_file: Optional[str] = None,
                      raise_errors: bool = True) -> StagedRun:
    """Runs a pipeline's ``run(argv)`` on the DataflowRunner in template mode and returns what it staged.

    The process's environment must point Google clients at the GCS emulator
    (`beam_ml.testing.gcs.gcs_environ`; the ``gcs_root`` test fixture sets it).

    Args:
      run: a ``run(argv)`` callable, or the name of a module that has one ("pipelines.batch_predict").
      argv: the pipeline's own flags; the Dataflow flags (`dataflow_flags`) are appended.
      bucket: a bucket on the emulator for staging, temp files and the template.
      name: a unique name for this run (default: random).
      setup_file: the package's setup.py (default: this checkout's).
      raise_errors: re-raise what ``run`` raises; when False it is returned in ``error``.

    Returns:
      A StagedRun: the staged jobs (pipeline.pb, package files) and the template JSON.
    """
    name = name or f"run-{uuid.uuid4().hex[:10]}"
    flags = dataflow_flags(bucket, name, setup_file)
    result = error = None
    try:
        result = _resolve_run(run)(list(argv) + flags)
    except BaseException as e:  # pylint: disable=broad-except
        if raise_errors or not isinstance(e, Exception):
            raise
        error = e
    return _collect(flags, result, error)


def _flag(flags: Sequence[str], name: str) -> str:
    return next(f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}="))


def _collect(flags: Sequence[str], result: Any, error: Optional[BaseException]) -> StagedRun:
    template_location = _flag(flags, "template_location")
    template = fs.read_json(template_location) if fs.is_file(template_location) else None
    return StagedRun(read_staged(_flag(flags, "staging_location")), template, template_location, error, result)


# --------------------------------------------------------------------------------------------
# Flex Templates.


@dataclasses.dataclass
class FlexLaunch:
    """A Flex Template launch run the way the launcher runs it.

    Attributes:
      argv: the flags the launcher passed (parameters, then its own).
      returncode: the launcher program's exit status (0: it submitted and returned).
      output: its stdout and stderr.
      staged: what it staged (jobs, and the job object at --template_location).
    """

    argv: list[str]
    returncode: int
    output: str
    staged: StagedRun


def flex_launcher_flags(pipeline: str, bucket: str, launch_id: Optional[str] = None,
                        setup_file: Optional[str] = None, project: str = PROJECT,
                        region: str = REGION) -> list[str]:
    """The flags the Flex Template launcher adds to the template's parameters.

    The real launcher stages under the template's staging bucket and writes the
    job to ``.../template_launches/<id>/job_object``, which the service then
    runs; ``--setup_file`` comes from the image's FLEX_TEMPLATE_PYTHON_SETUP_FILE.
    """
    launch_id = launch_id or f"{pipeline.replace('_', '-')}-{uuid.uuid4().hex[:10]}"
    root = f"gs://{bucket}/{launch_id}"
    return ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
            f"--job_name={launch_id}", f"--staging_location={root}/staging", f"--temp_location={root}/tmp",
            f"--sdk_container_image={region}-docker.pkg.dev/{project}/beam-ml/{pipeline}:test",
            f"--template_location={root}/staging/template_launches/{launch_id}/job_object",
            "--dataflow_endpoint=http://127.0.0.1",
            f"--setup_file={setup_file or os.path.join(repo_root(), 'setup.py')}"]


def _check_parameters(pipeline: str, parameters: Mapping[str, str]) -> None:
    """Refuses parameters the template's metadata does not declare, or values its regexes reject."""
    with open(os.path.join(repo_root(), "templates", pipeline, "metadata.json")) as f:
        declared = {p["name"]: p for p in json.load(f)["parameters"]}
    for key, value in parameters.items():
        if key not in declared:
            raise ValueError(f"parameter {key!r} is not in templates/{pipeline}/metadata.json")
        for regex in declared[key].get("regexes", []):
            if not re.fullmatch(regex, str(value)):
                raise ValueError(f"parameter {key}={value!r} does not match {regex}")


def launch_flex_template(pipeline: str, parameters: Mapping[str, str], bucket: str,
                         env: Optional[Mapping[str, str]] = None, timeout: float = 300.0,
                         setup_file: Optional[str] = None) -> FlexLaunch:
    """Runs ``templates/launcher.py`` as the Flex Template launcher would, in a subprocess.

    Args:
      pipeline: the template (``train``, ``batch_predict``, ``stream_predict``): BEAM_ML_PIPELINE.
      parameters: the launch parameters (checked against templates/<pipeline>/metadata.json),
        passed as ``--name=value``.
      bucket: a bucket on the GCS emulator.
      env: the subprocess's environment (default: os.environ, which must point at the emulator).
      timeout: seconds before the launch is killed (it must return after submitting).
      setup_file: the package's setup.py (default: this checkout's).

    Returns:
      A FlexLaunch with the exit status, output and what was staged.

    Raises:
      ValueError: a parameter the template does not declare.
      subprocess.TimeoutExpired: the program did not return.
    """
    _check_parameters(pipeline, parameters)
    flags = flex_launcher_flags(pipeline, bucket, setup_file=setup_file)
    argv = [f"--{k}={v}" for k, v in parameters.items()] + flags
    environ = dict(os.environ if env is None else env)
    environ["BEAM_ML_PIPELINE"] = pipeline
    root = repo_root()
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, os.path.join(root, "templates", "launcher.py"), *argv],
                          cwd=root, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout, check=False)
    output = done.stdout.decode("utf-8", "replace")
    return FlexLaunch(argv, done.returncode, output, _collect(flags, None, None))
