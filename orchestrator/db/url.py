"""Telling a PostgreSQL URL from a SQLite path, and showing one without its password."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# user:password@ in the authority, and password=... among the query parameters
_AUTH_PASSWORD = re.compile(r"^(?P<scheme>[a-z]+://)(?P<user>[^:@/?#]*):(?P<pw>[^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)[^&#]*", re.IGNORECASE)


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.lower().startswith(POSTGRES_SCHEMES)


def redact(target: str | Path) -> str:
    """The target as it may be shown or logged: a URL's password replaced by ***."""
    if not is_postgres_url(target):
        return str(target)
    text = _AUTH_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["pw"] else m[0], str(target))
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}***", text)


def scrub(text: str, target: str | Path) -> str:
    """A message about `target` (a driver's error, say) with the URL's password removed wherever it appears."""
    if not is_postgres_url(target):
        return text
    url = str(target)
    text = text.replace(url, redact(url))
    auth = _AUTH_PASSWORD.match(url)
    secrets = [auth["pw"]] if auth else []
    secrets += [m[0].split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(url)]
    for secret in filter(None, secrets):
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text
