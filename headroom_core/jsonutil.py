"""Parsing JSON the way the providers do: fast with orjson, exact where orjson refuses.

orjson rejects lone surrogates (`"\\ud800"`), which the providers' parsers accept; such documents
fall back to the standard library, so a body or event with one is still understood.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse a JSON document; raises ValueError (or RecursionError) when it is not one."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
