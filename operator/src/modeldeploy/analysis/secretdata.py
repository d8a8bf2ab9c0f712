"""Values of a Secret's ``data``, as the API server returns them (base64), for what the analysis sends: the caller
token of golden requests (``golden.caller_token``) and webhook headers (``webhooks.header_value``). Messages name
keys, never values."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping


def decoded(data: Mapping[str, object], key: str) -> bytes:
    """The value of ``key`` without surrounding whitespace (a trailing newline, as ``echo`` writes it);
    ``ValueError`` when it is not valid base64."""
    try:
        return base64.b64decode(str(data[key]), validate=True).strip()
    except (binascii.Error, ValueError):
        raise ValueError(f"key {key!r} is not valid base64") from None


def is_token(value: bytes) -> bool:
    """Whether ``value`` can be a bearer token: printable ASCII without spaces, as ``modelserve.auth`` accepts."""
    return bool(value) and all(0x21 <= c <= 0x7E for c in value)
