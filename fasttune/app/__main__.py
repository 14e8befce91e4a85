"""`python -m fasttune.app [RUN_OR_MODEL ...] [--reports ...] [--port 7860]`: the options are AppConfig's fields."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import typing

from fasttune.app.config import AppConfig
from fasttune.app.launch import run_app
from fasttune.errors import FasttuneError


def field_help(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), by field name."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {node.target.id: " ".join(body[i + 1].value.value.split())
            for i, node in enumerate(body[:-1]) if isinstance(node, ast.AnnAssign)
            and isinstance(body[i + 1], ast.Expr) and isinstance(body[i + 1].value, ast.Constant)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fasttune.app", description=AppConfig.__doc__)
    helps, types = field_help(AppConfig), typing.get_type_hints(AppConfig)
    for field in dataclasses.fields(AppConfig):
        if field.name == "models":
            parser.add_argument("models", nargs="*", metavar="RUN_OR_MODEL", help=helps["models"])
        elif typing.get_origin(types[field.name]) is list:
            parser.add_argument(f"--{field.name}", nargs="+", default=[], help=helps[field.name])
        else:
            kind = int if types[field.name] is int else str
            parser.add_argument(f"--{field.name}", type=kind, default=field.default,
                                help=f"{helps[field.name]} (default: {field.default})")
    return parser


def main(argv: list[str] | None = None) -> None:
    try:
        run_app(AppConfig(**vars(parser().parse_args(argv))))
    except FasttuneError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
