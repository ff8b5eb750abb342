"""beam_ml.flags: the flag table and the checks a pipeline makes before importing Beam."""
import subprocess
import sys

import pytest

from beam_ml import flags
from beam_ml.errors import UserError


def test_beam_flags_are_the_ones_the_installed_beams_parser_defines():
    import apache_beam

    assert flags.BEAM_VERSION == apache_beam.__version__, "run `python -m beam_ml.flags` and paste its output"
    assert flags.BEAM_FLAGS == flags.beam_option_names()


def test_the_flag_table_imports_no_beam():
    code = "import sys, beam_ml.flags, pipelines.train, pipelines.predict; print('apache_beam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_check_flags_names_a_typo_and_a_bad_value_and_passes_beams_flags():
    groups = [flags.TRAIN]
    with pytest.raises(UserError, match="unknown flag --epoch "):
        flags.check_flags(["--epoch=5"], groups, prog="p")
    with pytest.raises(UserError, match="argument --epochs: invalid int value: 'five'"):
        flags.check_flags(["--epochs=five"], groups, prog="p")
    argv = ["--label=y", "--runner=DirectRunner", "--direct_num_workers", "2", "--epochs=3"]
    assert flags.check_flags(argv, groups, prog="p") == ["--label_column=y", *argv[1:]]
    assert flags.check_flags(["--help_all"], groups, prog="p") == ["--help"]  # Beam's parser prints it all


def test_help_lists_our_groups_and_points_at_beams(capsys):
    with pytest.raises(SystemExit) as exit_info:
        flags.check_flags(["--help"], [flags.TRAIN, flags.KAFKA], prog="python -m pipelines.train")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipelines.train")
    assert out.index("beam_ml training:") < out.index("beam_ml Kafka connection:") < out.index("--help_all")
    assert "(default: None)" not in out


def test_parse_flags_returns_the_values_and_ignores_beams_flags():
    args = flags.parse_flags(["--model_dir=m", "--json={}", "--runner", "DirectRunner", "--verbose=1"],
                             [flags.PREDICT], prog="p")
    assert (args.model_dir, args.json_records, args.verbose) == ("m", "{}", 1)
    with pytest.raises(UserError, match="unexpected argument 'x.csv'"):
        flags.parse_flags(["--model_dir=m", "x.csv"], [flags.PREDICT], prog="p")
    with pytest.raises(UserError, match="give exactly one of --json or --input"):
        flags.check_predict_flags(flags.parse_flags(["--model_dir=m"], [flags.PREDICT], prog="p"))
