"""One way to configure a command: dataclasses, filled from a YAML file and then from ordinary `--flags`.

Every field of every section dataclass is a flag (`HfArgumentParser`), so names are unique across sections. A YAML
file (`--config FILE`) gives the defaults that flags override; it groups fields in sections (`training:`, `data:`,
...) or lists them at the top level, and inside a section a field may drop the section's prefix (a dataclass's
`prefix` attribute: `p2p: {checkpoint: x}` is `--p2p_checkpoint x`). An unknown key or flag is refused with its
nearest valid spelling, and every dataclass checks its values, all before any data is generated or model loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml

Sections = dict[str | None, type]


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def read_yaml(path: str | Path, sections: Sections) -> dict[str, Any]:
    """The file's settings as `{field name: value}`, every key checked against the sections' fields."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"No config file at {str(path)!r}; see examples/configs/ for examples.") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    return read_settings(data, str(path), sections)


def read_settings(data: Any, where: str, sections: Sections) -> dict[str, Any]:
    """Settings given as sections (or top-level fields) as `{field name: value}`; `where` names them in errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} should hold a mapping of settings, not {type(data).__name__}.")
    owner = {name: section for section, cls in sections.items() for name in _fields(cls)}
    settings: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in settings:
            raise ValueError(f"{where}: `{name}` is set twice.")
        settings[name] = value

    for key, value in data.items():
        if key in sections and key is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: the section `{key}` should be a mapping of settings, not {value!r}.")
            cls = sections[key]
            prefix = getattr(cls, "prefix", "")
            names = _fields(cls)
            for inner, inner_value in value.items():
                name = inner if inner in names else prefix + inner
                if name not in names:
                    spellings = names + [n.removeprefix(prefix) for n in names if prefix and n.startswith(prefix)]
                    hint = _suggest(inner, spellings)
                    raise ValueError(f"{where}: `{key}.{inner}` is not a setting of the `{key}` section.{hint}")
                put(name, inner_value)
        elif key in owner:
            put(key, value)
        else:
            known = [s for s in sections if s is not None] + list(owner)
            raise ValueError(f"{where}: unknown setting `{key}`.{_suggest(key, known)}")
    return settings


def parse_config(
    sections: Sections, argv: list[str] | None, prog: str, description: str, preset: dict | None = None
) -> dict[str | None, Any]:
    """
    Parse `[--config FILE] [--field value ...]` into one instance per section.

    Args:
        sections (`dict`): YAML section name (`None`: the top level) -> dataclass.
        argv (`list[str]`): the command line after the command's name.
        prog, description (`str`): for `--help`.
        preset (`dict`, *optional*): settings laid out as a YAML file's, under the file's and the flags'.

    Returns:
        `dict`: section name -> the dataclass instance, checked by its own `__post_init__`.

    Raises:
        `SystemExit`: `--help`, or a bad file, key, flag or value (the message names it and a fix).
    """
    from transformers import HfArgumentParser

    # no abbreviations: `--max_step` is a typo to name, not a way to write `--max_steps`
    parser = HfArgumentParser(list(sections.values()), prog=prog, description=description, allow_abbrev=False)
    config_help = "a YAML file of settings; flags override it"
    parser.add_argument("--config", default=None, help=config_help)
    path = argparse.ArgumentParser(add_help=False)  # reads only the file's path, before the file sets defaults
    path.add_argument("--config", default=None, help=config_help)
    config_path = path.parse_known_args(argv)[0].config
    try:
        settings = read_settings(preset, "the preset", sections) if preset else {}
        settings.update(read_yaml(config_path, sections) if config_path else {})
    except ValueError as error:
        parser.error(str(error))
    for action in parser._actions:  # file values become defaults, and a field the file sets is no longer required
        if action.dest in settings:
            action.default = settings.pop(action.dest)
            action.required = False
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [option for action in parser._actions for option in action.option_strings]
        word = next((u for u in unknown if u.startswith("--")), unknown[0])
        parser.error(f"unknown argument `{word}`.{_suggest(word.split('=')[0], flags)}")
    values = vars(namespace)
    parsed: dict[str | None, Any] = {}
    for section, cls in sections.items():
        kwargs = {name: values[name] for name in _fields(cls) if name in values}
        try:
            parsed[section] = cls(**kwargs)
        except (TypeError, ValueError) as error:
            where = f"the `{section}` section" if section else "the settings"
            parser.error(f"{where}: {error}")
    return parsed
