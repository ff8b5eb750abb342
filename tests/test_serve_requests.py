"""The model server's request parser: junk bodies never raise anything but a 4xx RequestError (property-based)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_ml.server.requests import RequestError, columnar_outputs, json_bytes, parse_predict_body

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=20)
_CONTENT_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", "text/plain",
                                  "application/x-www-form-urlencoded", "multipart/form-data", ""])


def _check(body: bytes, content_type=None):
    try:
        parsed = parse_predict_body(body, content_type, max_instances=1000)
    except RequestError as e:
        assert 400 <= e.status < 500 and "\n" not in e.message and len(e.message) <= 500
        return None
    assert parsed.instances and all(isinstance(i, dict) for i in parsed.instances)
    return parsed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), _CONTENT_TYPES)
def test_random_bytes_never_crash(body, content_type):
    _check(body, content_type)


@settings(max_examples=300, deadline=None)
@given(_JSON, _CONTENT_TYPES)
def test_random_json_never_crashes(doc, content_type):
    _check(json.dumps(doc).encode(), content_type)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.lists(_JSON, max_size=5), _JSON), st.dictionaries(st.text(max_size=5), _JSON, max_size=3))
def test_predict_shaped_junk_never_crashes(instances, inputs):
    _check(json.dumps({"instances": instances}).encode())
    _check(json.dumps({"inputs": inputs}).encode())


def test_row_and_columnar_forms():
    p = parse_predict_body(b'{"instances": [{"a": 1}, {"a": 2}]}', "application/json")
    assert p.instances == [{"a": 1}, {"a": 2}] and not p.columnar and p.signature_name == "serve_dict"
    p = parse_predict_body(b'{"inputs": {"a": [1, 2], "b": ["x", "y"]}, "signature_name": "serve_dict"}')
    assert p.instances == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}] and p.columnar
    assert parse_predict_body(b'{"inputs": {"a": 1}}').instances == [{"a": 1}]
    assert parse_predict_body(b'{"instances": [{}], "parameters": {"k": 1}}').parameters == {"k": 1}


@pytest.mark.parametrize("body,status", [
    (b"", 400), (b"[]", 400), (b'{"instances": [1]}', 400), (b'{"instances": [{}], "signature_name": 3}', 400),
    (b'{"instances": [{"a": NaN}]}', 400), (b"[" * 100000, 400),
    (b'{"instances": [' + b"{}," * 1000 + b"{}]}", 413),
])
def test_refusals(body, status):
    with pytest.raises(RequestError) as e:
        parse_predict_body(body, "application/json", max_instances=1000)
    assert e.value.status == status


def test_wrong_content_type_is_415():
    with pytest.raises(RequestError) as e:
        parse_predict_body(b"{}", "text/plain")
    assert e.value.status == 415


def test_outputs_are_strict_json():
    assert json.loads(json_bytes({"predictions": [{"score": float("nan"), "p": [float("inf"), 1.0]}]})) == \
        {"predictions": [{"score": None, "p": [None, 1.0]}]}
    assert columnar_outputs([{"a": 1, "b": 2}, {"a": 3, "filtered": True}]) == \
        {"a": [1, 3], "b": [2, None], "filtered": [None, True]}
