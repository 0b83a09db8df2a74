"""JSON from outside, read strictly: every request body PEFM parses goes through ``loads``.

The standard parser takes what JSON allows and more, and some of it breaks code further on: NaN
and Infinity, integers of thousands of digits (``math.isfinite`` and ``float`` overflow on them),
numbers beyond a double (1e400 becomes inf), duplicate keys (the last silently wins), nesting deep
enough to exhaust the recursion limit, a ``\\ud800`` escape that leaves a lone surrogate (no text
can be encoded from it: the database refuses it). ``loads`` refuses each with a ValidationError naming the
body, so a caller answers 400 with a reason rather than a 500 from an exception further on.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pefm.data.validation import Issue, ValidationError

MAX_DEPTH = 32
"""Deepest nesting accepted: PEFM's documents need 4 (a payload, its series, their observations)."""
MAX_INT_DIGITS = 64


class _Refused(ValueError):
    pass


def loads(raw: bytes | str) -> Any:
    """The decoded document, or ValidationError("malformed JSON") saying what is wrong with it."""
    try:
        if isinstance(raw, bytes):  # json.loads took UTF-16 and UTF-32 bodies too
            raw = raw.decode("utf-8-sig")
        data = json.loads(
            raw,
            parse_int=_integer,
            parse_float=_number,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise _malformed(f"nested deeper than {MAX_DEPTH} levels") from None
    except _Refused as exc:
        raise _malformed(str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _malformed(str(exc)) from None
    if _too_deep(data):
        raise _malformed(f"nested deeper than {MAX_DEPTH} levels")
    if ("\\u" in raw if isinstance(raw, str) else b"\\u" in raw) and _lone_surrogate(data):
        raise _malformed("a \\u escape that is a lone surrogate: not text")
    return data


def _malformed(message: str) -> ValidationError:
    return ValidationError("malformed JSON", [Issue(field="body", message=message)])


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text[:24]} is beyond the range of a number")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not valid JSON: values must be finite numbers")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _Refused(f"duplicate key {duplicate[:64]!r}")
    return data


def _lone_surrogate(data: Any) -> bool:
    """Whether any string in ``data``, key or value, holds a lone surrogate (only a ``\\u`` escape
    can make one: decoded bytes cannot)."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _too_deep(data: Any) -> bool:
    """Whether containers nest deeper than MAX_DEPTH (a walk with its own stack, not recursion)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False
