"""`hyperpeft save-base`: write a base model as an ordinary transformers folder, with a model card of where its weights
come from: the folder to serve with vLLM and to load anywhere (for the embedded default: the dequantized GGUF).

    hyperpeft save-base [smollm2-135m-instruct] --out models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperpeft save-base", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("name", nargs="?", default="smollm2-135m-instruct", help="the base model: a name or a path")
    parser.add_argument("--out", required=True, help="the new folder to write")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..embedded import save_base_model

    try:
        print(f"wrote {save_base_model(args.name, args.out)}")
    except ValueError as error:
        _parser().error(str(error))
    return 0
