"""--sql / --lookup / --lookup_refresh: the statement and lookups they build, and their one-line errors."""
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml.clean import CsvLookup, prepare_cleaning
from beam_ml.options import CleanOptions
from beam_ml.errors import UserError

EVENTS = pa.schema([("V1", pa.float64()), ("userid", pa.string()), ("__line__", pa.int64())])


def opts(*argv):
    return PipelineOptions(list(argv)).view_as(CleanOptions)


@pytest.fixture
def files(tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("userid,CITY\nu1,Premium Berlin\n")
    sql = tmp_path / "clean.sql"
    sql.write_text("-- the fraud cleaning\nCREATE STREAM clean AS SELECT c.V1, u.CITY FROM events c\n"
                   "LEFT JOIN users u ON c.userid = u.userid WHERE c.V1 > 0 EMIT CHANGES;\n")
    return str(sql), str(users)


def test_flags_build_a_checked_statement_and_its_lookups(files):
    sql, users = files
    cleaning = prepare_cleaning(opts(f"--sql={sql}", f"--lookup=users={users}", "--lookup=unused=" + users,
                                     "--lookup_refresh=30"), EVENTS, position_column="__line__")
    assert cleaning.statement.columns == ["V1", "CITY"]
    assert [type(lk) for lk in cleaning.lookups] == [CsvLookup] and cleaning.refresh_seconds == 30.0
    assert cleaning.transform(source="tx.csv").label == "ApplySql"
    assert prepare_cleaning(opts(), EVENTS) is None


@pytest.mark.parametrize("argv, message", [
    (["--sql=SELECT V1 FROM events c JOIN users u ON c.userid = u.userid"],
     "--sql: unknown lookup table 'users' (lookups given: none; name one with --lookup=users=PATH)"),
    (["--sql=missing.sql"], "--sql: file not found: missing.sql"),
    (["--sql=SELECT nope FROM events"], '--sql: Binder Error: Referenced column "nope" not found'),
    (["--lookup=users=x.csv"], "--lookup: lookups are joined by a --sql statement; none was given"),
    (["--sql=SELECT V1 FROM events", "--lookup=users"], "--lookup: expected NAME=SOURCE"),
    (["--sql=SELECT V1 FROM events", "--lookup=users=nowhere.csv"], "--lookup users: file not found: nowhere.csv"),
    (["--sql=SELECT V1 FROM events", "--lookup_refresh=0"], "--lookup_refresh: expected seconds > 0"),
])
def test_bad_flags_fail_at_launch_with_one_line(argv, message):
    with pytest.raises(UserError) as e:
        prepare_cleaning(opts(*argv), EVENTS, position_column="__line__")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_lookup_given_twice_is_an_error(files):
    _, users = files
    with pytest.raises(UserError, match="--lookup: users given more than once"):
        prepare_cleaning(opts("--sql=SELECT V1 FROM events", f"--lookup=users={users}", f"--lookup=Users={users}"),
                         EVENTS)
