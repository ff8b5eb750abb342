"""beam_ml.runner: --runner=DirectRunner runs on Beam's FnApiRunner without the Prism attempt."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.runner import LocalRunner, new_pipeline, runs_remotely


def test_direct_runner_pipelines_run_on_the_fnapi_runner_with_their_options():
    options = PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1"])
    p = new_pipeline(options)
    assert isinstance(p.runner, LocalRunner) and not runs_remotely(options)
    assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    result = p.run()
    result.wait_until_finish()
    assert type(result).__module__.endswith("fn_api_runner.fn_runner")  # the FnApiRunner's RunnerResult


def test_a_test_stream_still_goes_to_beams_bundle_based_direct_runner():
    p = new_pipeline(PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    events = p | TestStream().add_elements(["a", "b"]).advance_watermark_to_infinity()
    assert_that(events | beam.Map(str.upper), equal_to(["A", "B"]))
    result = p.run()
    result.wait_until_finish()
    assert "direct" in type(result).__module__ and "fn_api_runner" not in type(result).__module__


def test_other_runners_are_left_to_beam():
    p = new_pipeline(PipelineOptions(["--runner=BundleBasedDirectRunner"]))
    assert type(p.runner).__name__ == "BundleBasedDirectRunner"  # as named; DataflowRunner alike (Dataflow tests)
