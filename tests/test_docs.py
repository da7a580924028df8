"""The README's and the docs' code runs as written, so it cannot rot.

Every `hyperpeft` command line in a shell block parses with that command's own parser (`parse_args`, which reads the
command line and runs nothing), and every flag of every command has help text. Every Python block of a page runs, in
page order, in one fresh process per page (like a notebook), in a folder holding the files the pages name: `ckpt`
(a checkpoint on the embedded SmolLM2), `users.jsonl`, and `adapters/` exported from them. A block that cannot run
here is marked in the Markdown with `<!-- not run: why -->` on the line before its fence.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_integration import has_embedded_models

from hyperpeft.cli import COMMANDS

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = "<!-- not run:"


def blocks(page: Path, languages: tuple[str, ...]) -> list[tuple[int, str, bool]]:
    """(line, code, marked not run) of every fenced block of `page` in one of `languages`."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) in languages:
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            found.append((text[: match.start()].count("\n") + 1, match.group(2), before.startswith(NOT_RUN)))
    return found


def command_lines(page: Path) -> list[tuple[int, list[str]]]:
    """Every `hyperpeft ...` command of the page's shell blocks, as its argv after `hyperpeft`."""
    found = []
    for line_number, code, _ in blocks(page, ("bash", "sh", "shell")):
        for offset, line in enumerate(code.replace("\\\n", " ").splitlines()):
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and Path(words[0]).name == "hyperpeft":
                    # `[--flag VALUE]` marks an optional part: it must parse too
                    found.append((line_number + 1 + offset, [w.strip("[]") for w in words[1:] if w.strip("[]")]))
    return found


COMMAND_LINES = [(page, line, argv) for page in PAGES for line, argv in command_lines(page)]


def test_the_docs_show_commands():
    assert len(COMMAND_LINES) >= 15 and {argv[0] for _, _, argv in COMMAND_LINES} == set(COMMANDS)


@pytest.mark.parametrize(
    "page, line, argv", COMMAND_LINES, ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in COMMAND_LINES]
)
def test_every_command_line_in_the_docs_parses(page, line, argv, monkeypatch):
    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        module.parse_args(argv[1:])
    except SystemExit as error:
        pytest.fail(f"{page.name}:{line}: `hyperpeft {shlex.join(argv)}` does not parse ({error})")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_has_help(command, monkeypatch, capsys):
    actions = []
    add_argument = argparse._ActionsContainer.add_argument

    def recording(self, *args, **kwargs):
        action = add_argument(self, *args, **kwargs)
        actions.append(action)
        return action

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument", recording)
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(COMMANDS[command][0]).parse_args(["--help"])
    assert exit.value.code == 0
    silent = [a.option_strings or a.dest for a in actions if not a.help and a.dest != "help"]
    assert len(actions) > 2 and not silent, f"`hyperpeft {command}` flags without help: {silent}"


# ---- Python blocks -------------------------------------------------------------------------------------------------

PYTHON_PAGES = [page for page in PAGES if blocks(page, ("python",))]


def script(page: Path) -> str:
    """The page's Python blocks as one script; `>>>` blocks run as their source lines."""
    parts = []
    for line, code, not_run in blocks(page, ("python",)):
        if not_run:
            continue
        if code.lstrip().startswith(">>>"):
            code = "\n".join(s[4:] for s in code.splitlines() if s.startswith((">>> ", "... ")))
        parts.append(f"# ---- {page.name}:{line}\n{textwrap.dedent(code)}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """`ckpt`, `users.jsonl` and `adapters/`, which the pages name, made on the embedded defaults."""
    folder = tmp_path_factory.mktemp("doc-files")
    setup = """
        import torch
        from hyperpeft import HyperLoraConfig, HyperPeftModel, load_base_model
        from hyperpeft.serving.export import export_adapters
        from hyperpeft.serving.users import read_user_profiles

        model = HyperPeftModel(load_base_model("smollm2-135m-instruct"), HyperLoraConfig())
        torch.manual_seed(0)
        with torch.no_grad():
            for head in model.hypernetwork.heads.values():
                head.weight.normal_(std=0.02)
        model.save_pretrained("ckpt")
        export_adapters(model, read_user_profiles("users.jsonl"), "adapters")
    """
    users = [{"user_id": "u1", "profile": "likes short answers"}, {"user_id": "u2", "profile": "writes formally"}]
    (folder / "users.jsonl").write_text("".join(json.dumps(u) + "\n" for u in users))
    run_python(textwrap.dedent(setup), folder)
    return folder


def run_python(code: str, cwd: Path) -> None:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.integration
@pytest.mark.skipif(not has_embedded_models(), reason="the embedded model packages are not installed")
@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(ROOT)) for p in PYTHON_PAGES])
def test_the_python_blocks_of_a_page_run_as_written(page, files, tmp_path):
    for name in ("ckpt", "adapters"):
        shutil.copytree(files / name, tmp_path / name)
    shutil.copy(files / "users.jsonl", tmp_path / "users.jsonl")
    run_python(script(page), tmp_path)
