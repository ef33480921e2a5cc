"""One table decides which Graph errors are retried; any answer body maps to a GraphError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.actors.graph_errors import classify, graph_error_from_response
from mtdesk.core.errors import GraphError
from mtdesk.fakes.graph import graph_error_body


@pytest.mark.parametrize("code", [1, 2, 4, 17, 32, 613, 1200, 130429, 131056])
def test_throttling_and_transient_codes_are_retried(code: int) -> None:
    assert classify(code, 400).retriable


@pytest.mark.parametrize("code", [190, 10, 200, 250, 299, 100, 551, 131047, 131026])
def test_permanent_codes_are_never_retried_even_on_5xx(code: int) -> None:
    assert not classify(code, 500).retriable


def test_only_190_disconnects_the_channel() -> None:
    assert classify(190, 401).disconnect
    assert not any(classify(c, 400).disconnect for c in (10, 100, 613, 131047))


def test_unknown_codes_follow_the_http_status() -> None:
    assert classify(0, 502).retriable and classify(987654, 503).retriable
    assert classify(0, 429).retriable
    assert not classify(987654, 400).retriable


def test_real_error_json_is_parsed() -> None:
    err = graph_error_from_response(400, graph_error_body(613, 2018022))
    assert (err.code, err.subcode, err.http_status, err.retriable) == (613, 2018022, 400, True)
    assert err.fbtrace_id
    err = graph_error_from_response(400, graph_error_body(131047))
    assert err.code == 131047 and not err.retriable


def test_meta_transient_hint_counts_only_for_unknown_codes() -> None:
    def body(code: int) -> bytes:
        return json.dumps({"error": {"message": "m", "code": code, "is_transient": True}}).encode()

    assert graph_error_from_response(400, body(4242)).retriable
    assert not graph_error_from_response(400, body(131047)).retriable
    assert not graph_error_from_response(400, body(190)).retriable


def test_a_proxy_page_on_502_is_a_retriable_error_without_code() -> None:
    err = graph_error_from_response(502, b"<html>Bad Gateway</html>")
    assert err.code == 0 and err.retriable and "Bad Gateway" in str(err)


@given(status=st.integers(100, 599), body=st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                 max_leaves=8).map(lambda v: json.dumps({"error": v}).encode())))
def test_any_body_gives_a_graph_error(status: int, body: bytes) -> None:
    assert isinstance(graph_error_from_response(status, body), GraphError)
