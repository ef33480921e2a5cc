"""Arbitrary input into the accounts validators, the public sign-in routes and Meta's
callback (whose query comes from the internet): an answer naming the field or a redirect
back to the console, never a 5xx, and nothing created from a callback nobody started."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_admin_fuzz import _Server, json_values

from mtdesk.core.errors import ValidationError
from mtdesk.core.users import validate_password, validate_role


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_password_and_role_validators_accept_or_name_the_field(value: object) -> None:
    for check, field in ((validate_password, "password"), (validate_role, "role")):
        try:
            check(value)
        except ValidationError as exc:
            assert exc.field == field


@pytest.fixture(scope="module")
def redis_url() -> str:  # the module-scoped server needs a module-scoped URL
    return os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[_Server]:
    with _Server(redis_url) as srv:
        yield srv


def _send(srv: _Server, method: str, path: str, body: bytes | None) -> tuple[int, Any, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", data=body,
                                 method=method, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None, resp.headers.get("Location", "")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
        return err.code, data, err.headers.get("Location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


FIELDS = ["name", "email", "password", "company", "token", "role", "extra"]
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.emails() | st.text(max_size=40),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=40),
)


@given(st.sampled_from(["signup", "login", "logout", "forgot", "reset", "accept"]), bodies)
@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_body_to_the_public_routes_gets_an_answer_naming_what_is_wrong(
        server: _Server, route: str, body: bytes) -> None:
    status, answer, _ = _send(server, "POST", f"/admin/api/v1/auth/{route}", body)
    assert status < 500, answer
    if status >= 400:
        assert set(answer["error"]) == {"field", "message"} and answer["error"]["message"]


queries = st.dictionaries(
    st.sampled_from(["code", "state", "error", "error_reason", "error_description", "x"]),
    st.text(max_size=60), max_size=5)


@given(st.sampled_from(["facebook", "instagram", "whatsapp"]), queries)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_callback_query_is_sent_back_to_the_console_with_nothing_connected(
        server: _Server, flow: str, query: dict[str, str]) -> None:
    status, _, location = _send(server, "GET",
                                f"/admin/connect/{flow}/callback?{urlencode(query)}", None)
    assert status == 303 and location.startswith("/admin/#")
    assert "connected=0" in location
