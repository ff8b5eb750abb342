"""The real DataflowRunner translates and stages our pipelines, offline, against the GCS emulator.

Template creation (--template_location) runs everything a submission does up to
the Dataflow API call: translation to pipeline.pb, the package built from
setup.py (workflow.tar.gz), the pickled main session. beam_ml.testing.dataflow
reads back what was staged. The Flex Template path runs templates/launcher.py
the way the launcher does, in a subprocess.
"""
import argparse

import pytest
from apache_beam.internal import pickler
from apache_beam.portability.api import beam_runner_api_pb2

from beam_ml import fs
from beam_ml.features.cards import card_events, write_card_csv
from beam_ml.features.live import FeatureEventBatchesFn
from beam_ml.testing.dataflow import launch_flex_template, stage_on_dataflow
from tests.test_window_features_stream import _train

pytestmark = pytest.mark.integration

# What the workers must get: the three packages of setup.py.
PACKAGE_MODULES = {"beam_ml/__init__.py", "beam_ml/fs.py", "beam_ml/io/csv.py", "beam_ml/io/bigquery/read.py",
                   "beam_ml/jobs/batch_predict.py", "beam_ml/jobs/train.py", "pipelines/batch_predict.py",
                   "pipelines/train.py", "transforms/preprocessing.py"}
# In the order build_batch_predict() and run() apply them.
BATCH_PREDICT_STEPS = ["ReadCsv", "ToRows", "RunInference", "FormatPredictions", "FlattenDeadLetters",
                       "CountDeadLetters", "ToJson", "WritePredictions", "DeadLetterJson", "WriteDeadLetters"]


def run_upper(argv):
    """A small pipeline with a run(argv) like the pipelines': gs:// text in, upper-cased text out."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args(argv)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    _ = (pipeline | "ReadText" >> beam.io.ReadFromText(args.input)
         | "Upper" >> beam.Map(str.upper)
         | "WriteText" >> beam.io.WriteToText(args.output))
    return pipeline.run()


def test_small_pipeline_is_translated_and_staged_not_run(gcs_root, gcs_bucket):
    fs.write_text(f"{gcs_root}/in/a.txt", "a\nb\n")
    staged = stage_on_dataflow(run_upper, [f"--input={gcs_root}/in/*.txt", f"--output={gcs_root}/out/upper"],
                               bucket=gcs_bucket, name="upper")
    job = staged.job
    assert job.top_level_labels == ["ReadText", "Upper", "WriteText"]
    assert {"ReadText/Read", "WriteText/Write/WriteImpl/FinalizeWrite"} <= job.step_labels
    assert {"pipeline.pb", "workflow.tar.gz", "pickled_main_session"} <= set(job.staged_files)
    assert job.staging_dir.startswith(f"{gcs_root}/upper/staging/")
    assert PACKAGE_MODULES <= job.package_modules and "setup.py" in job.package_files
    # The template names the staged package for the workers and carries the options.
    pool = staged.template["environment"]["workerPools"][0]
    assert {"workflow.tar.gz", "pickled_main_session"} <= {p["name"] for p in pool["packages"]}
    options = staged.template["environment"]["sdkPipelineOptions"]["options"]
    assert options["runner"] == "DataflowRunner" and options["project"] == "test-proj"
    assert options["pipelineUrl"] == f"{job.staging_dir}/pipeline.pb"
    # Created, not run: nothing was read or written by the pipeline.
    assert fs.list_files(f"{gcs_root}/out") == []


@pytest.fixture(scope="module")
def gcs_module_root(local_gcs):
    """A bucket for this module's shared runs, and the environment applied while they run."""
    return local_gcs, f"gs://{local_gcs.new_bucket('dataflow')}"


@pytest.fixture(scope="module")
def batch_predict_staged(gcs_module_root, fraud):
    """batch_predict on the DataflowRunner: local model and input (read when the graph is built), gs:// output."""
    local_gcs, root = gcs_module_root
    model_root, csv_path = fraud
    with local_gcs.environ_applied():
        staged = stage_on_dataflow(
            "pipelines.batch_predict",
            [f"--model_dir={model_root}", f"--input={csv_path}", f"--output={root}/preds/p.jsonl"],
            bucket=root[len("gs://"):], name="bp", raise_errors=False)
        yield staged, root


@pytest.mark.slow
def test_batch_predict_is_translated_and_staged(batch_predict_staged, gcs_environ):
    staged, root = batch_predict_staged
    job = staged.job
    assert job.top_level_labels == BATCH_PREDICT_STEPS
    assert {"ReadCsv/MatchFiles", "ReadCsv/CountLines", "ReadCsv/ParseChunks", "RunInference/RunInference", "RunInference/SplitFailures",
            "WritePredictions/Write/WriteImpl/FinalizeWrite"} <= job.step_labels
    assert PACKAGE_MODULES <= job.package_modules
    assert staged.template["environment"]["sdkPipelineOptions"]["options"]["setup_file"].endswith("setup.py")
    assert fs.list_files(f"{root}/preds") == []  # created, not run


@pytest.mark.slow
def test_batch_predict_run_returns_after_staging(batch_predict_staged):
    staged, _ = batch_predict_staged
    assert staged.error is None, repr(staged.error)


@pytest.mark.slow
def test_batch_predict_with_every_path_on_gcs(gcs_root, gcs_bucket, fraud):
    model_root, csv_path = fraud
    fs.copy_tree(model_root, f"{gcs_root}/model")
    fs.copy(csv_path, f"{gcs_root}/in/rows.csv")
    staged = stage_on_dataflow(
        "pipelines.batch_predict",
        [f"--model_dir={gcs_root}/model", f"--input={gcs_root}/in/*.csv", f"--output={gcs_root}/p.jsonl"],
        bucket=gcs_bucket)
    assert staged.job.top_level_labels == BATCH_PREDICT_STEPS


@pytest.mark.slow
def test_batch_and_stream_predict_to_bigquery_are_translated_with_the_write_steps(gcs_environ, gcs_bucket, fraud):
    """--output_table: the staged pipeline.pb holds the BigQuery writes (Beam's file loads for batch,
    streaming inserts in the read's bundle for the stream) and no --bigquery_endpoint redirect."""
    model_root, csv_path = fraud
    batch = stage_on_dataflow(
        "pipelines.batch_predict",
        [f"--model_dir={model_root}", f"--input={csv_path}", "--output_table=test-proj:ds.preds"],
        bucket=gcs_bucket)
    assert batch.job.top_level_labels == BATCH_PREDICT_STEPS[:6] + ["WriteToBigQuery"]
    labels = batch.job.step_labels
    assert {"WriteToBigQuery/WriteRows/WriteToBigQuery", "WriteToBigQuery/WriteDeadLetters/WriteDeadLetters"} <= {
        "/".join(label.split("/")[:3]) for label in labels}
    assert any("BigQueryBatchFileLoads" in label for label in labels)
    stream = stage_on_dataflow(
        "pipelines.stream_predict",
        [f"--model_dir={model_root}", "--input_topic=tx", "--output_table=test-proj:ds.scores",
         "--bootstrap_servers=127.0.0.1:9", "--model_reload=none", "--streaming"],
        bucket=gcs_bucket)
    assert stream.job.top_level_labels == ["ReadFromKafka", "ParseAndValidate", "RunInference", "FormatPredictions",
                                           "WriteToBigQuery"]
    assert {"WriteToBigQuery/ToInsertBatches", "WriteToBigQuery/InsertRows/StreamingInserts",
            "WriteToBigQuery/WriteRejected/StreamingInserts", "WriteToBigQuery/WriteUnfit/StreamingInserts",
            "WriteToBigQuery/WriteDead0/StreamingInserts"} <= stream.job.step_labels


@pytest.fixture(scope="module")
def flex_launch(gcs_module_root, fraud):
    """templates/launcher.py run as the Flex launcher runs it, for batch_predict."""
    local_gcs, root = gcs_module_root
    model_root, csv_path = fraud
    with local_gcs.environ_applied():
        launch = launch_flex_template("batch_predict", {"model_dir": model_root, "input": csv_path,
                                                        "output": f"{root}/flex/p.jsonl"},
                                      bucket=root[len("gs://"):])
        yield launch, root


@pytest.mark.slow
def test_flex_template_launch_of_batch_predict(flex_launch):
    """The parameters as --name=value plus the launcher's flags: the job is translated and staged."""
    launch, root = flex_launch
    assert launch.argv[2] == f"--output={root}/flex/p.jsonl" and launch.argv[3] == "--runner=DataflowRunner"
    job = launch.staged.job
    assert job.top_level_labels == BATCH_PREDICT_STEPS, launch.output[-3000:]
    assert PACKAGE_MODULES <= job.package_modules
    # The job object the service would run, where the launcher asked for it.
    assert "/template_launches/" in launch.staged.template_location
    options = launch.staged.template["environment"]["sdkPipelineOptions"]["options"]
    assert options["sdk_container_image"].endswith("/beam-ml/batch_predict:test")
    assert options["job_name"] == job.staging_dir.rsplit("/", 1)[1].split(".")[0]


@pytest.mark.slow
def test_flex_template_launch_exits_zero(flex_launch):
    launch, _ = flex_launch
    assert launch.returncode == 0, launch.output[-3000:]


def test_flex_launch_refuses_parameters_the_template_does_not_declare(gcs_bucket):
    with pytest.raises(ValueError, match="not_a_flag"):
        launch_flex_template("batch_predict", {"not_a_flag": "1"}, bucket=gcs_bucket)
    with pytest.raises(ValueError, match="value_format"):
        launch_flex_template("batch_predict", {"value_format": "xml"}, bucket=gcs_bucket)


@pytest.mark.slow
def test_stream_predict_is_translated_and_staged_with_a_gcs_model_root(gcs_root, gcs_bucket, fraud):
    """A streaming job: the Kafka read, the hot-reloading model on gs://, the Kafka sinks; created, not run."""
    model_root, _ = fraud
    fs.copy_tree(model_root, f"{gcs_root}/models")
    staged = stage_on_dataflow(
        "pipelines.stream_predict",
        [f"--model_dir={gcs_root}/models", "--input_topic=transactions", "--output_topic=scores",
         "--dead_letter_topic=scores-dlq", "--bootstrap_servers=127.0.0.1:9", "--group_id=scorer", "--streaming"],
        bucket=gcs_bucket, name="sp", raise_errors=False)
    assert staged.error is None, repr(staged.error)
    job = staged.job
    assert job.top_level_labels == ["ReadFromKafka", "ParseAndValidate", "RunInference", "FormatPredictions",
                                    "WriteToKafka", "WriteDeadLetters"]
    assert {"ReadFromKafka/DiscoverPartitions", "RunInference/RunInference"} <= job.step_labels, sorted(job.step_labels)
    assert PACKAGE_MODULES <= job.package_modules
    options = staged.template["environment"]["sdkPipelineOptions"]["options"]
    assert options["streaming"] is True and options["model_dir"] == f"{gcs_root}/models"


@pytest.mark.slow
def test_stream_predict_with_windowed_features_is_staged_with_the_feature_step(gcs_root, gcs_bucket, tmp_path):
    """A model trained with --features_sql: the staged streaming job's parse step is the keyed-state feature step,
    carrying the model's statement and a restart rebuild for its --group_id (what the Dataflow workers run)."""
    path = write_card_csv(str(tmp_path / "cards.csv"), card_events(400, cards=10, seed=3))
    model_dir = _train(path, tmp_path / "out")
    fs.copy_tree(model_dir, f"{gcs_root}/cards")
    staged = stage_on_dataflow(
        "pipelines.stream_predict",
        [f"--model_dir={gcs_root}/cards", "--input_topic=cards", "--output_topic=scores",
         "--dead_letter_topic=scores-dlq", "--bootstrap_servers=127.0.0.1:9", "--group_id=scorer", "--streaming"],
        bucket=gcs_bucket, name="spf", raise_errors=False)
    assert staged.error is None, repr(staged.error)
    job = staged.job
    assert job.top_level_labels[:3] == ["ReadFromKafka", "ParseAndValidate", "RunInference"]
    transforms = job.pipeline.components.transforms
    pardo = next(t for t in transforms.values() if t.unique_name.startswith("ParseAndValidate/")
                 and t.spec.urn == "beam:transform:pardo:v1")
    payload = beam_runner_api_pb2.ParDoPayload.FromString(pardo.spec.payload)
    fn = pickler.loads(payload.do_fn.payload)[0]
    assert isinstance(fn, FeatureEventBatchesFn)
    assert fn._plan.names == ["tx_10m", "amount_10m", "max_10m"] and fn._rebuild is not None
