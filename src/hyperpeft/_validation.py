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
