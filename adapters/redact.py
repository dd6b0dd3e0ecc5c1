"""Database URLs in messages: never with a password (SPEC: nothing prints a secret)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMETERS = frozenset({"password", "sslpassword", "passfile_password"})
MASK = "***"


def redact(url: str) -> str:
    """The URL with its password, in the user part or as a `?password=` parameter, replaced by ***."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:  # not a URL we can read: show its scheme only
        return url.split(":", 1)[0] + "://" + MASK if "://" in url else MASK
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(key.lower() in SECRET_PARAMETERS for key, _ in pairs)
    if not has_password and not secret_query:
        return url  # untouched: urlunsplit would rewrite sqlite:/// URLs
    netloc = parts.netloc
    if has_password:
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        netloc = f"{user}:{MASK}@{parts.netloc.rsplit('@', 1)[-1]}"
    query = parts.query
    if secret_query:
        query = urlencode([(k, MASK if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_USER_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+):[^@\s/]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&\s'\"]*", re.IGNORECASE)


def redact_text(text: str) -> str:
    """A message with the password of every URL in it replaced by *** (an error quoting a URL)."""
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", _USER_PASSWORD.sub(rf"\1:{MASK}@", text))
