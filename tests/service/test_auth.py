"""Bearer-token access: every request, routed or not, needs the engine's token."""

from __future__ import annotations

import pytest
import requests

from panst3r_engine.service.auth import MIN_TOKEN_LENGTH, TokenError, bearer_matches, generate_token, read_token_file
from tests.service.conftest import TOKEN


@pytest.mark.parametrize(
    "header, ok",
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        (None, False),
    ],
)
def test_bearer_header(header, ok):
    assert bearer_matches(header, TOKEN) is ok


def test_generated_tokens_are_long_and_fresh():
    a, b = generate_token(), generate_token()
    assert a != b and len(a) >= 40


def test_token_file_is_stripped(tmp_path):
    path = tmp_path / "token.txt"
    path.write_text(f"  {TOKEN}\n")
    assert read_token_file(path) == TOKEN


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("\n  \n", "empty"),
        ("short", "too short"),
        ("two tokens-on-one-line-here", "whitespace"),
    ],
)
def test_unusable_token_file_is_refused(tmp_path, content, message):
    path = tmp_path / "token.txt"
    path.write_text(content)
    with pytest.raises(TokenError, match=message):
        read_token_file(path)
    assert MIN_TOKEN_LENGTH >= 16


def test_missing_token_file_is_named(tmp_path):
    with pytest.raises(TokenError, match="nope.txt"):
        read_token_file(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"}]
)
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/health"),
        ("GET", "/v1/jobs"),
        ("POST", "/v1/shutdown"),
        ("GET", "/v1/no-such-route"),
        ("DELETE", "/v1/jobs/x"),
    ],
)
def test_requests_without_the_token_get_401(engine, headers, method, path):
    response = requests.request(method, engine.url + path, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "Bearer" in response.json()["error"]["message"]


def test_the_token_opens_the_api(engine):
    assert engine.get("/v1/health").status_code == 200
    assert engine.get("/v1/no-such-route").status_code == 404
