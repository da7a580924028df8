"""Imports flow one way: no module imports a later layer's module (every import, found with `ast`, lazy ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "hyperpeft"

# Lower layers first. A module may import its own package's modules and any module of an earlier layer.
LAYERS = [
    "_version", "_validation", "registry", "config", "embedded", "encoder", "hypernetwork", "layer", "guidance",
    "adapter_cache", "cards", "checkpoint", "llm", "tuner", "peft_model",
    "data", "profiles", "training", "evaluation", "serving", "integrations", "cli",
]  # fmt: skip


def _layer(module: str) -> str:
    """`hyperpeft.data.loaders.lamp` -> `data`; the package facade `hyperpeft` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    module = "hyperpeft." + ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "hyperpeft"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "hyperpeft":
                found.append((node.lineno, name))
    return found


def test_no_module_imports_a_later_layer():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        own = _layer("hyperpeft." + ".".join(path.relative_to(SRC).with_suffix("").parts))
        if own == "__init__":  # the package facade imports its public names lazily, from every layer
            continue
        for line, name in _imports(path):
            target = _layer(name)
            # the facade (`import hyperpeft`) imports nothing eagerly; `config` asks it to finish the PEFT registration
            if target in ("__init__", own):
                continue
            if LAYERS.index(target) > LAYERS.index(own):
                problems.append(f"{path.relative_to(SRC)}:{line} ({own}) imports {name} ({target})")
    assert not problems, "imports that run back up:\n" + "\n".join(problems)


def test_every_module_is_in_a_layer():
    names = {_layer("hyperpeft." + ".".join(p.relative_to(SRC).with_suffix("").parts)) for p in SRC.rglob("*.py")}
    assert names - {"__init__"} <= set(LAYERS), names - set(LAYERS)
