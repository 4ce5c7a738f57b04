"""Bearer-token access control: one check for every request, in a before-request hook.

The token is generated per engine start (printed once on the start-up line) or
read from a file for remote use; comparison is constant-time so response
timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from flask import Flask, request

from panst3r_engine.errors import PanSt3RError
from panst3r_engine.service.errors import ApiError

MIN_TOKEN_LENGTH = 16
UNAUTHORISED = (
    "this engine needs 'Authorization: Bearer <token>' with the token it printed on start (or the one "
    "in its --token-file)"
)
log = logging.getLogger(__name__)


class TokenError(PanSt3RError):
    """A service token (or token file) that cannot be used."""

    code = "bad_options"


def generate_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def read_token_file(path: str | os.PathLike) -> str:
    """The token in ``path`` (surrounding whitespace stripped); refuses a missing, empty or short one, and
    (POSIX) one that users other than its owner may change: they could replace the token with their own."""
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
        token = file.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the token file {path}: {exc}") from exc
    if os.name == "posix" and mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TokenError(
            f"the token file {path} can be changed by other users (mode {stat.filemode(mode)}); "
            f"run chmod 600 {path} and start the engine again"
        )
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "the token file %s can be read by other users (mode %s); run chmod 600 %s", path, stat.filemode(mode), path
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(
            f"the token in {path} is {'empty' if not token else 'too short'}; use at least "
            f'{MIN_TOKEN_LENGTH} random characters (e.g. python -c "import secrets; '
            'print(secrets.token_urlsafe(32))")'
        )
    if any(ch.isspace() for ch in token):
        raise TokenError(f"the token in {path} contains whitespace; put one token on one line")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries exactly ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def install(app: Flask, token: str) -> None:
    """Require the token on every request, routed or not, before any view runs."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"the service token must have at least {MIN_TOKEN_LENGTH} characters")

    @app.before_request
    def _require_token() -> None:
        if not bearer_matches(request.headers.get("Authorization"), token):
            raise ApiError(401, "unauthorized", UNAUTHORISED)
