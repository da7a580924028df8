"""Users files: JSONL lines `{"user_id": ..., "profile": ...}`, read with clear errors for bad lines and ids."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .._validation import check_text

# Safe as a folder name on every file system and as a vLLM LoRA module name.
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_user_id(user_id: object) -> str:
    """Return `user_id` if it is a safe id (letters, digits, `.`, `_`, `-`; at most 128), else raise."""
    if not isinstance(user_id, str):
        raise TypeError(f"`user_id` should be a string, not {type(user_id).__name__}: {user_id!r}.")
    if not USER_ID_PATTERN.fullmatch(user_id) or user_id in (".", ".."):
        raise ValueError(
            f"`user_id` {user_id!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it becomes a folder name)."
        )
    return user_id


# A profile longer than this is refused where it enters: the encoder reads only its first few hundred tokens
# anyway (MiniLM: 256), and tokenizing megabytes would hold up every other user's request.
MAX_PROFILE_CHARS = 20_000


def check_profile_text(profile: object, where: str = "profile", max_chars: int | None = MAX_PROFILE_CHARS) -> str:
    """Return `profile` if it is non-empty, valid text (see `check_text`) of at most `max_chars`, else raise."""
    check_text(profile, where, max_chars)
    if not profile.strip():
        raise ValueError(f"`{where}` is empty; every user needs a non-empty profile text.")
    return profile


def read_user_profiles(path: str | os.PathLike) -> dict[str, str]:
    """
    Read a users file: one JSON object per line with a `user_id` and a `profile` text (other keys are ignored).

    Returns:
        `dict[str, str]`: user id -> profile text, in file order.

    Raises:
        `ValueError`: a missing file, a line that is not such an object, an invalid id, or a repeated id (also ids
            that differ only in letter case, which would share a folder on case-insensitive file systems).
    """
    path = Path(path)
    try:
        # split on "\n" only: str.splitlines would also split inside a JSON string holding U+2028 or U+0085
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise ValueError(
            f"No users file at {str(path)!r}; pass a JSONL file of {{'user_id', 'profile'}} lines."
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    users: dict[str, str] = {}
    folded: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not valid JSON ({error.msg}).") from None
        if not isinstance(row, dict) or "user_id" not in row or "profile" not in row:
            raise ValueError(f"{where} should be an object with `user_id` and `profile`, e.g. " + _EXAMPLE)
        try:
            user_id = check_user_id(row["user_id"])
            profile = check_profile_text(row["profile"], "profile")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None
        if user_id.lower() in folded:
            raise ValueError(
                f"{where}: user id {user_id!r} repeats {folded[user_id.lower()]!r} (ids must be unique, ignoring "
                "case); give every user one line."
            )
        folded[user_id.lower()] = user_id
        users[user_id] = profile
    if not users:
        raise ValueError(f"{path} holds no users; add lines like " + _EXAMPLE)
    return users


_EXAMPLE = '{"user_id": "u1", "profile": "likes short answers"}.'
