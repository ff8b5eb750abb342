"""pipelines.serve's flags and Vertex AI's variables -> ServerConfig; bad values fail fast naming the flag."""
from __future__ import annotations

import pytest

from beam_ml.errors import UserError
from beam_ml.jobs.serve import server_config
from beam_ml.options import CleanOptions, KafkaOptions, ServeOptions, parse_pipeline_options
from pipelines import serve


def _config(argv, env=None):
    return server_config(parse_pipeline_options(argv, ServeOptions, CleanOptions, KafkaOptions), env or {})


def test_help_prints_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve.run(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipelines.serve") and "--batch_timeout_micros" in out


def test_defaults(tmp_path):
    c = _config([f"--model_dir={tmp_path}"])
    assert (c.model_dir, c.model_name, c.host, c.port) == (str(tmp_path), "model", "127.0.0.1", 8501)
    assert (c.max_batch_size, c.batch_timeout, c.health_route, c.predict_route) == (256, 0.0, None, None)
    assert _config([f"--model_dir={tmp_path}", "--batch_timeout_micros=1500"]).batch_timeout == 0.0015


def test_vertex_variables_fill_in_what_flags_leave_out(tmp_path):
    env = {"AIP_HTTP_PORT": "8080", "AIP_HEALTH_ROUTE": "/h", "AIP_PREDICT_ROUTE": "/p", "AIP_STORAGE_URI": str(tmp_path)}
    c = _config([], env)
    assert (c.model_dir, c.host, c.port, c.health_route, c.predict_route) == (str(tmp_path), "0.0.0.0", 8080, "/h", "/p")
    c = _config(["--host=127.0.0.1", "--port=9000", f"--model_dir={tmp_path}"], env)
    assert (c.host, c.port) == ("127.0.0.1", 9000)


@pytest.mark.parametrize("argv,env,message", [
    ([], {}, "--model_dir: required"),
    (["--model_dir=/no/such/dir"], {}, "--model_dir: not found"),
    (["--port=70000"], {}, "--port"),
    (["--model_name=a/b"], {}, "--model_name"),
    (["--max_batch_size=0"], {}, "--max_batch_size"),
    (["--batch_timeout_micros=-1"], {}, "--batch_timeout_micros"),
    (["--drain_timeout=0"], {}, "--drain_timeout"),
    ([], {"AIP_HTTP_PORT": "http"}, "AIP_HTTP_PORT"),
])
def test_bad_values_name_the_flag(tmp_path, argv, env, message):
    if not any(a.startswith("--model_dir") for a in argv) and message != "--model_dir: required":
        argv = argv + [f"--model_dir={tmp_path}"]
    with pytest.raises(UserError, match=message.replace("-", r"\-")):
        _config(argv, env)
