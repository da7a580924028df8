"""Checks of user-given numbers, with the message every hyperpeft entry point gives for them."""

from __future__ import annotations

import json


def check_int(name: str, value: object, minimum: int = 1, hint: str = "") -> int:
    """
    Return `value` if it is an `int` (not a `bool`) of at least `minimum`, else raise a `ValueError` that names it.

    Example:

    ```python
    >>> check_int("r", 8)
    8
    >>> check_int("k", -1, minimum=0)
    Traceback (most recent call last):
    ValueError: `k` should be a non-negative integer but the value passed is -1.
    ```
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"`{name}` should be {kind}{hint} but the value passed is {value!r}.")
    return value


def json_mapping(value: object, name: str) -> dict | None:
    """`value` as a dict: a mapping as it is, JSON object text (a command-line flag) parsed, `None` kept."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"`{name}` should be a JSON object but is {value!r} ({error.msg}).") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"`{name}` should be a mapping (JSON object) but is {value!r}.")
    return value


def check_text(value: object, name: str, max_chars: int | None = None) -> str:
    """
    Return `value` if it is text every part of hyperpeft can handle: a `str` that is valid Unicode (no lone surrogate,
    which UTF-8 cannot encode and tokenizers refuse), without NUL characters, and at most `max_chars` long. Text is
    checked where it enters (a request, a users file, a data file, a Python call), so that no bad character reaches a
    batch shared with other users.

    Example:

    ```python
    >>> check_text("likes jazz", "profile")
    'likes jazz'
    >>> check_text("likes jazz \\udfff", "profile")
    Traceback (most recent call last):
    ValueError: `profile` holds a lone surrogate (U+DFFF at character 11), which is not valid Unicode text; send UTF-8.
    ```
    """
    if not isinstance(value, str):
        raise TypeError(f"`{name}` should be a string, not {type(value).__name__}.")
    if max_chars is not None and len(value) > max_chars:
        raise ValueError(f"`{name}` has {len(value)} characters; at most {max_chars} are accepted here.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(value[error.start])
        raise ValueError(
            f"`{name}` holds a lone surrogate (U+{code:04X} at character {error.start}), which is not valid Unicode "
            "text; send UTF-8."
        ) from None
    if "\x00" in value:
        raise ValueError(f"`{name}` holds a NUL character (at character {value.index(chr(0))}); remove it.")
    return value
