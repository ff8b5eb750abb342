"""parse_json_object's orjson fast path accepts, returns and refuses exactly what the json module does.

The reference is `_parse_with_json` (the standard library alone). Values are
compared by their repr, so an int that came back as a float (orjson's reading
of integers beyond 64 bits) or a NaN shows as a difference.
"""
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from beam_ml.formats.text import _parse_with_json, dumps_event, parse_json_object

# JSON values as a streamed event may hold them, including what orjson reads
# differently or refuses: integers beyond 64 bits, NaN/Infinity, lone surrogates,
# floats of every magnitude.
_scalars = (st.none() | st.booleans()
            | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
_objects = st.dictionaries(st.text(max_size=10), _values, max_size=8)


def _outcome(fn, data):
    try:
        return "ok", repr(fn(data))
    except ValueError as e:
        return "error", str(e)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_objects, ascii_only=st.booleans(), spaced=st.booleans())
def test_encoded_objects_parse_as_json_parses_them(obj, ascii_only, spaced):
    text = json.dumps(obj, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate with ensure_ascii=False: not UTF-8 at all
        data = text.encode("utf-8", "surrogatepass")
    assert _outcome(parse_json_object, data) == _outcome(_parse_with_json, data)


@settings(max_examples=400, deadline=None)
@given(obj=_objects, cut=st.integers(min_value=0, max_value=400), junk=st.binary(max_size=6))
def test_damaged_values_get_the_json_module_verdict_and_reason(obj, cut, junk):
    data = json.dumps(obj).encode("utf-8")
    cut = min(cut, len(data))
    damaged = data[:cut] + junk + data[cut:]
    assert _outcome(parse_json_object, damaged) == _outcome(_parse_with_json, damaged)


@pytest.mark.parametrize("data", [
    b'{"event_id": 123456789012345678901234567890}',   # orjson: a float; json: the int
    b'{"a": -9223372036854775809}',
    b'{"a": NaN, "b": Infinity}',                       # orjson refuses both
    b'{"a": 1e400}',
    b'{"a": "\\ud800"}',                                # a lone surrogate escape
    b'\xef\xbb\xbf{"a": 1}',                            # a byte-order mark
    b'[{"a": 1}]', b'"text"', b'{"a": 1', b"\xff{}", b"", b" ",
])
def test_values_orjson_reads_differently_follow_json(data):
    assert _outcome(parse_json_object, data) == _outcome(_parse_with_json, data)


def test_big_event_ids_stay_integers():
    assert parse_json_object(b'{"event_id": 123456789012345678901}')["event_id"] == 123456789012345678901


def test_output_events_are_compact_json_that_round_trips():
    event = {"event_id": "e-1", "score": 1e-05, "class": "fraud", "class_id": 1, "produce_ts": None,
             "key": "Zoë", "big": 2 ** 70}
    data = dumps_event(event)  # 2**70: orjson refuses it, json writes it
    assert json.loads(data) == event
    assert b", " not in data
    fast = dumps_event({k: v for k, v in event.items() if k != "big"})
    assert json.loads(fast) == {k: v for k, v in event.items() if k != "big"}
    assert json.loads(dumps_event({"score": math.nan})) == {"score": None}  # valid JSON, not NaN
