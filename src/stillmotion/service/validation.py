"""Pydantic validation errors as one line a user can act on: the field, the rule and the value given."""

from __future__ import annotations

from typing import Any

from stillmotion.service.field_limits import PROMPT_PATTERN

# pydantic states a pattern rule as the regex itself; say what it means instead.
_PATTERN_RULES = {PROMPT_PATTERN: "contains a control character; only tab and newline are allowed"}


def field_from_loc(loc: tuple[int | str, ...]) -> str | None:
    """('body', 'seed') -> 'seed'; ('query', 'limit') -> 'limit'."""
    names = [str(part) for part in loc if part not in ("body", "query", "path", "header", "form")]
    return ".".join(names) or None


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """First pydantic error as 'field: rule (got value)', plus the field name."""
    first = errors[0]
    field = field_from_loc(tuple(first.get("loc", ())))
    rule = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        rule = "unknown field (not part of the API; see /openapi.json)"
    elif first.get("type") == "string_pattern_mismatch":
        pattern = str((first.get("ctx") or {}).get("pattern", ""))
        rule = _PATTERN_RULES.get(pattern, rule)
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {str(value)[:80]!r})"
    return f"{field or 'request'}: {rule}{shown}.", field
