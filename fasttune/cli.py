"""`fasttune <command>` (or `python -m fasttune`): train, eval, export, merge, suite, bench, serve, app and more.

    fasttune train --config run.yaml --lora.r 32
    fasttune eval --model.name_or_path runs/x/adapter --task.name larger_number --limit 50

Every option is a field of a config dataclass and its docstring is the help text; the fields of a nested config or
of a section are options under a dotted prefix (--lora.r, --model.max_seq_length, --task.data_dir). `--config FILE`
(YAML or JSON) holds the same keys, a section or nested config as a mapping; flags override the file, the file
overrides the defaults, and an unknown key is an error. A run's config.json is a valid --config of `fasttune train`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union

import yaml

import fasttune
from fasttune import bench, distributed, exporting, gguf, merging, serve, suite
from fasttune.app.config import AppConfig
from fasttune.app.launch import run_app
from fasttune.backend import LoadConfig
from fasttune.bench import BenchConfig
from fasttune.configs import TrainConfig
from fasttune.errors import FasttuneError, read_json, unknown_name
from fasttune.evaluation import EvalConfig
from fasttune.exporting import ExportConfig
from fasttune.merging import MergeConfig
from fasttune.methods import METHODS
from fasttune.progress import console
from fasttune.serve import ServeConfig
from fasttune.suite import SuiteConfig
from fasttune.task import Task


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only true and false, so that labels such as [yes, no] or
    [on, off] stay text (YAML 1.1 reads them as booleans)."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


@dataclass
class TaskChoice:
    """The task, built by fasttune.tasks.get(name, **options)."""

    name: str
    """Task name (fasttune.tasks.list()); the task's own options sit beside it, e.g. task.data_dir."""


@dataclass
class RunChoice:
    """Whether a training run starts fresh, continues an interrupted one, or replaces a finished one."""

    resume: bool = False
    """Continue the interrupted run in output_dir from its latest checkpoint (the settings must be the same)."""
    overwrite: bool = False
    """Replace the adapter of a finished run in output_dir when this run finishes."""


@dataclass
class Devices:
    """How many processes run the command data-parallel."""

    devices: int = 1
    """Processes on this machine, one per GPU, started by torchrun (each trains or scores its share); 1: this one."""


@dataclass
class ReportFolder:
    """Where an evaluation report goes."""

    out: str | None = None
    """Folder of the report <task>.json and its <task>.predictions.jsonl (default runs/eval-<task>-<time>)."""


@dataclass
class ExportPaths:
    """What `fasttune export` exports, and where to."""

    source: str
    """An adapter folder (e.g. runs/x/adapter) or a model folder."""
    out_dir: str
    """The export folder (it must not exist unless overwrite)."""


@dataclass
class ConverterSource:
    """Where `fasttune fetch-converter` takes llama.cpp's GGUF converter from."""

    sdist: str | None = None
    """A downloaded llama_cpp_python-*.tar.gz (default: pip downloads the installed version's source package)."""


def train_command(config: TrainConfig, run_choice: RunChoice, devices: Devices, model: LoadConfig, task: Task,
                  eval: EvalConfig | None, export: ExportConfig | None) -> dict:  # noqa: A002 - the section names
    """Train a LoRA adapter on a task; then evaluate it and export it where the eval and export sections are set."""
    run = fasttune.train(fasttune.load(**asdict(model)), task, config=config, **asdict(run_choice))
    main_process = distributed.is_main_process()  # under torchrun every rank trains and scores; rank 0 reports
    if main_process:
        console.print(f"{config.method} on {task.name}: {run.seconds:.0f}s ({run.tokens_per_second:.0f} tok/s); "
                      f"adapter in {run.adapter_dir}")
    done = {"run": run, "eval": None, "export": None}
    if eval is not None:
        done["eval"] = fasttune.evaluate(run.model, task, config=eval)
        if main_process:
            done["eval"].save(run.output_dir, "eval")
            console.print(done["eval"])
    if export is not None and main_process:
        reports = [done["eval"]] if done["eval"] is not None else []
        done["export"] = fasttune.export(run, run.output_dir / "export", reports=reports, **asdict(export))
    return done


def eval_command(config: EvalConfig, output: ReportFolder, devices: Devices, model: LoadConfig, task: Task):
    """Evaluate a model (a folder, an adapter folder, a .gguf file, or the embedded default) on a task split."""
    gguf_file = model.name_or_path is not None and model.name_or_path.endswith(".gguf")
    report = fasttune.evaluate(model.name_or_path if gguf_file else fasttune.load(**asdict(model)), task,
                               config=config)
    if distributed.is_main_process():  # every rank gets the whole report
        report.save(output.out or f"runs/eval-{task.name}-{datetime.now():%Y%m%d-%H%M%S}", task.name)
        console.print(report)
    return report


def export_command(paths: ExportPaths, config: ExportConfig):
    """Export an adapter or model folder: the adapter, merged 16-bit weights and GGUF files, each checked."""
    return exporting.export(paths.source, paths.out_dir, **asdict(config))


def fetch_converter_command(source: ConverterSource) -> Path:
    """Fetch llama.cpp's GGUF converter into fasttune's cache once after installing; export then runs offline."""
    folder = gguf.fetch_converter(source.sdist)
    console.print(f"llama.cpp converter in {folder}")
    return folder


def merge_command(config: MergeConfig) -> Path:
    """Merge LoRA adapters of one base model into a new adapter folder."""
    out_dir = merging.merge_adapters(**asdict(config))
    console.print(f"merged adapter in {out_dir}")
    return out_dir


def suite_command(config: SuiteConfig, model: LoadConfig) -> dict:
    """Evaluate a model on every task of a suite, in one table."""
    out = config.out or f"runs/suite-{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return suite.run_suite(**{**asdict(config), "out": out}, model=fasttune.load(**asdict(model)))


def bench_command(config: BenchConfig) -> dict:
    """The main job: base eval -> LoRA SFT -> tuned eval, side by side (as python -m fasttune.bench)."""
    return bench.run_bench(config)


def app_command(config: AppConfig) -> None:
    """Open the local web app (chat, side by side, evaluation reports) until interrupted."""
    run_app(config)


def serve_command(config: ServeConfig) -> None:
    """Serve a model with an OpenAI-compatible chat-completions endpoint until interrupted."""
    serve.serve(config.model, host=config.host, port=config.port)


@dataclass(frozen=True)
class Command:
    """A subcommand: the function it runs and the configs its options come from."""

    run: Callable[..., Any]
    """Called with one keyword per config: each of `top` by its key, then one per section."""
    top: dict[str, type]
    """Configs whose fields are top-level options (keyword of `run` -> config class)."""
    sections: dict[str, type] = field(default_factory=dict)
    """Configs whose fields are options under the section's name (a TaskChoice: the task's options beside it)."""
    optional: tuple[str, ...] = ()
    """Sections that take part only when the file or a flag sets them (`run` gets None otherwise)."""
    variants: dict[str, type] | None = None
    """Choices of the `method` option: each gives the class of the first config of `top`."""
    recorded: tuple[str, ...] = ()
    """Top-level keys of a run's config.json that record a result, not a setting (read, then decided again)."""


COMMANDS: dict[str, Command] = {
    "train": Command(train_command, {"config": TrainConfig, "run_choice": RunChoice, "devices": Devices},
                     {"model": LoadConfig, "task": TaskChoice, "eval": EvalConfig, "export": ExportConfig},
                     optional=("eval", "export"), variants={name: method.config for name, method in METHODS.items()},
                     recorded=("plan",)),
    "eval": Command(eval_command, {"config": EvalConfig, "output": ReportFolder, "devices": Devices},
                    {"model": LoadConfig, "task": TaskChoice}),
    "export": Command(export_command, {"paths": ExportPaths, "config": ExportConfig}),
    "fetch-converter": Command(fetch_converter_command, {"source": ConverterSource}),
    "merge": Command(merge_command, {"config": MergeConfig}),
    "suite": Command(suite_command, {"config": SuiteConfig}, {"model": LoadConfig}),
    "bench": Command(bench_command, {"config": BenchConfig}),
    "serve": Command(serve_command, {"config": ServeConfig}),
    "app": Command(app_command, {"config": AppConfig}),
}


@dataclass
class Option:
    """One option: its dotted key (the flag without dashes, the path of keys in a file), type, default and help."""

    key: str
    annotation: Any
    default: Any
    help: str


@dataclass
class Schema:
    """Every option of a command, the dotted keys that are mappings (sections, nested configs), and what is read
    and not used."""

    options: dict[str, Option] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    recorded: tuple[str, ...] = ()
    open_groups: set[str] = field(default_factory=set)
    """Groups that take any key (a task whose constructor takes **kwargs)."""

    def add(self, other: Schema) -> None:
        clash = sorted(self.options.keys() & other.options.keys())
        if clash:
            raise ValueError(f"two configs of one command define the options {clash}")
        self.options.update(other.options)
        self.groups |= other.groups
        self.open_groups |= other.open_groups


def field_docs(config_class: type) -> dict[str, str]:
    """The docstring of each field of a dataclass (the string right below it in the class body), inherited from
    the base classes where a subclass redefines a field without one."""
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for statement, following in zip(body, body[1:]):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def config_schema(config_class: type, prefix: str = "") -> Schema:
    """The options of a config dataclass, those of a nested config under its field's name."""
    schema, hints, docs = Schema(), typing.get_type_hints(config_class), field_docs(config_class)
    for item in dataclasses.fields(config_class):
        key, annotation = prefix + item.name, hints[item.name]
        if dataclasses.is_dataclass(annotation):
            schema.groups.add(key)
            schema.add(config_schema(annotation, key + "."))
            continue
        default = (item.default if item.default is not MISSING else
                   item.default_factory() if item.default_factory is not MISSING else MISSING)
        schema.options[key] = Option(key, annotation, default, docs.get(item.name, ""))
    return schema


def task_schema(name: str, prefix: str = "task.") -> Schema:
    """The options of task `name`: its constructor's arguments (typed by their annotations or defaults). A
    constructor that takes a config dataclass and **options takes that config's fields as keywords: they are its
    options then, documented by the config's docstrings."""
    task_class = fasttune.tasks.task_class(name)
    schema, hints = Schema(), typing.get_type_hints(task_class.__init__)
    parameters = inspect.signature(task_class).parameters.values()
    configs = [_without_none(hints[p.name])[0] for p in parameters if p.name in hints
               and dataclasses.is_dataclass(_without_none(hints[p.name])[0])]
    takes_keywords = any(p.kind is p.VAR_KEYWORD for p in parameters)
    for parameter in parameters:
        if parameter.kind is parameter.VAR_KEYWORD:
            if configs:
                schema.add(config_schema(configs[0], prefix))
            else:
                schema.open_groups.add(prefix.rstrip("."))
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or (
                takes_keywords and _without_none(hints.get(parameter.name))[0] in configs):
            continue
        default = MISSING if parameter.default is parameter.empty else parameter.default
        annotation = hints.get(parameter.name, str if default in (None, MISSING) else type(default))
        if default is None:
            annotation = annotation | None
        schema.options[prefix + parameter.name] = Option(
            prefix + parameter.name, annotation, default, f"Argument '{parameter.name}' of task {name}'s constructor.")
    return schema


def command_schema(command: Command, method: str | None, task_name: str | None) -> Schema:
    """Every option of `command`, with the config class `method` picks and the options of task `task_name`."""
    schema = Schema(recorded=command.recorded)
    for index, config_class in enumerate(command.top.values()):
        if index == 0 and command.variants:
            schema.options["method"] = Option("method", Literal[tuple(command.variants)], "sft",
                                              field_docs(TrainConfig)["method"])
            config_class = command.variants[method]
        schema.add(config_schema(config_class))
    for name, config_class in command.sections.items():
        schema.groups.add(name)
        schema.add(config_schema(config_class, name + "."))
        if config_class is TaskChoice and task_name is not None:
            schema.add(task_schema(task_name, name + "."))
    return schema


def parse(command: Command, argv: list[str], prog: str = "fasttune") -> dict[str, Any]:
    """The keyword arguments of `command.run` from `argv`: defaults, then the --config file, then the flags."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False, argument_default=argparse.SUPPRESS)
    first.add_argument("--config")
    first.add_argument("--method")
    first.add_argument("--task.name", dest="task.name")
    known = vars(first.parse_known_args(argv)[0])
    source = known.get("config")
    values = read_config_file(Path(source)) if source else {}
    method = known.get("method") or values.get("method") or "sft"
    if command.variants and method not in command.variants:
        raise _in_file(None if "method" in known else source, "top level",
                       unknown_name("training method", str(method), list(command.variants)))
    task_section = values.get("task") if "task" in command.sections else None
    task_name = known.get("task.name") or (task_section.get("name") if isinstance(task_section, dict) else None)
    schema = command_schema(command, method if command.variants else None, task_name)

    parser = build_parser(schema, prog, command.run.__doc__)
    flags, rest = parser.parse_known_args(argv)
    if rest:
        unknown = rest[0].split("=")[0]
        if not unknown.startswith("-"):
            raise FasttuneError(f"Unexpected argument '{unknown}': every setting is an option (--name value). "
                                f"See {prog} --help.")
        raise unknown_name("option", unknown, ["--config", "--help", *(f"--{key}" for key in schema.options)])
    values = conform_file(values, schema, source)
    for key, value in vars(flags).items():
        if key != "config":
            _set(values, key, conform(value, schema.options[key].annotation, key, f"flag --{key}"))
    return build(command, schema, values, source)


def build_parser(schema: Schema, prog: str, description: str | None) -> argparse.ArgumentParser:
    """An argparse parser with one option per schema option (each flag also spelled with dashes for
    underscores), defaults left out so that only the flags given come back."""
    parser = argparse.ArgumentParser(prog=prog, usage=f"{prog} [--config FILE] [options]",
                                     description=(description or "").strip(), allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE", help="A YAML or JSON file of settings: these options' keys, a "
                        "section (model., task., ...) or nested config as a mapping. Flags override it.")
    for option in schema.options.values():
        names = [f"--{option.key}"] + ([f"--{option.key.replace('_', '-')}"] if "_" in option.key else [])
        default = "required" if option.default is MISSING else f"default: {_shown(option.default)}"
        arguments = {"dest": option.key, "help": f"{option.help} ({default})".replace("%", "%%")}
        inner, optional = _without_none(option.annotation)
        if inner is bool and not optional:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **arguments)
        elif typing.get_origin(inner) is list:
            element = (typing.get_args(inner) or (str,))[0]
            parser.add_argument(*names, nargs="*", type=_converter(element, False), metavar=_metavar(element, False),
                                **arguments)
        else:
            parser.add_argument(*names, type=_converter(inner, optional), metavar=_metavar(inner, optional),
                                **arguments)
    return parser


def read_config_file(path: Path) -> dict:
    """The settings mapping in a YAML (.yaml, .yml) or JSON (.json) file."""
    if not path.is_file():
        raise FasttuneError(f"Config file not found (config={path}). Pass the path of a YAML or JSON file.")
    if path.suffix.lower() == ".json":
        values = read_json(path, "Fix the file")
    elif path.suffix.lower() in (".yaml", ".yml"):
        try:
            values = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise FasttuneError(f"{path.name} is not valid YAML (file={path}{where}: "
                                f"{getattr(error, 'problem', error)}). Fix the file.") from None
        except UnicodeDecodeError as error:
            raise FasttuneError(f"{path.name} is not UTF-8 text (file={path}, byte {error.start}). "
                                "Save it as UTF-8.") from None
    else:
        raise FasttuneError(f"A config file is YAML (.yaml, .yml) or JSON (.json) (config={path}). "
                            "Rename it or write it in one of these.")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise FasttuneError(f"{path.name} holds a {type(values).__name__}, not a mapping of settings "
                            f"(file={path}). Write one key: value line per setting.")
    return values


def conform_file(values: dict, schema: Schema, source: str | None, prefix: str = "") -> dict:
    """`values` with every key checked against the schema and every value against its option's type."""
    section = f"section {prefix.rstrip('.')}" if prefix else "top level"
    conformed = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if dotted in schema.options:
            conformed[key] = conform(value, schema.options[dotted].annotation, dotted, f"in {source} ({section})")
        elif dotted in schema.groups:
            if value is None:  # `eval:` with nothing under it: the section with its defaults
                value = {}
            if not isinstance(value, dict):
                raise FasttuneError(f"{source}, {section}: '{key}' is a section of settings, not a "
                                    f"{type(value).__name__} ({dotted}={value!r}). Write its settings under it.")
            conformed[key] = conform_file(value, schema, source, dotted + ".")
        elif (not prefix and key in schema.recorded) or prefix.rstrip(".") in schema.open_groups:
            conformed[key] = value
        else:
            known = [k[len(prefix):] for k in [*schema.options, *schema.groups]
                     if k.startswith(prefix) and "." not in k[len(prefix):]]
            raise _in_file(source, section, unknown_name("key", str(key), known))
    return conformed


def conform(value: Any, annotation: Any, key: str, where: str) -> Any:
    """`value` when it is of type `annotation` (an int where a float is expected as a float); an error naming the
    key otherwise."""
    fits, conformed = _fit(value, annotation)
    if not fits:
        raise FasttuneError(f"{key} {where} should be {_type_name(annotation)}, not {type(value).__name__} "
                            f"({key}={value!r}). Change the value.")
    return conformed


def build(command: Command, schema: Schema, values: dict, source: str | None) -> dict[str, Any]:
    """One config object per keyword of `command.run` (the task built by fasttune.tasks.get)."""
    arguments = {}
    for index, (keyword, config_class) in enumerate(command.top.items()):
        if index == 0 and command.variants:
            config_class = command.variants[values.get("method", "sft")]
        arguments[keyword] = _construct(config_class, values, "", source)
    for name, config_class in command.sections.items():
        if name in command.optional and name not in values:
            arguments[name] = None
        elif config_class is TaskChoice:
            options = dict(values.get(name, {}))
            choice = _construct(TaskChoice, options, name + ".", source)
            options.pop("name")
            arguments[name] = fasttune.tasks.get(choice.name, **options)
        else:
            arguments[name] = _construct(config_class, values.get(name, {}), name + ".", source)
    return arguments


def run(argv: list[str]) -> Any:
    """Run the command named first in `argv` with the options after it; returns what the command returns."""
    if not argv or argv[0] in ("-h", "--help"):
        overview = argparse.ArgumentParser(prog="fasttune", description=__doc__.splitlines()[0])
        commands = overview.add_subparsers(title="commands", metavar="<command>")
        for name, command in COMMANDS.items():
            commands.add_parser(name, help=command.run.__doc__.splitlines()[0])
        overview.print_help()
        return None
    if argv[0] not in COMMANDS:
        raise unknown_name("command", argv[0], list(COMMANDS))
    command = COMMANDS[argv[0]]
    arguments = parse(command, argv[1:], prog=f"fasttune {argv[0]}")
    devices = arguments["devices"].devices if "devices" in arguments else 1
    if devices > 1 and distributed.world_size() == 1:  # this process starts the ranks, which run the command
        status = distributed.launch(devices, ["-m", "fasttune", *argv])
        if status:
            raise FasttuneError(f"fasttune {argv[0]} failed in one of its {devices} processes (exit status "
                                f"{status}); the output above names the rank and the error.")
        return None
    if distributed.world_size() not in (1, devices):
        raise FasttuneError(f"Started by torchrun in {distributed.world_size()} processes, but devices={devices}. "
                            f"Pass --devices {distributed.world_size()}, or let `fasttune {argv[0]} --devices N` "
                            "start torchrun itself.")
    return command.run(**arguments)


def main(argv: list[str] | None = None) -> None:
    """The `fasttune` console script."""
    try:
        run(sys.argv[1:] if argv is None else argv)
    except FasttuneError as error:
        raise SystemExit(str(error)) from None


def _construct(config_class: type, values: dict, prefix: str, source: str | None):
    hints, arguments = typing.get_type_hints(config_class), {}
    for item in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[item.name]):
            arguments[item.name] = _construct(hints[item.name], values.get(item.name, {}), f"{prefix}{item.name}.",
                                              source)
        elif item.name in values:
            arguments[item.name] = values[item.name]
        elif item.default is MISSING and item.default_factory is MISSING:
            raise FasttuneError(f"Missing setting {prefix}{item.name} (--{prefix}{item.name}"
                                + (f", or {item.name}: in the {prefix.rstrip('.') or 'top level'} of {source}"
                                   if source else "") + "). Set it.")
    return config_class(**arguments)


def _in_file(source: str | None, section: str, error: FasttuneError) -> FasttuneError:
    return FasttuneError(f"{source or 'command line'}, {section}: {str(error).removeprefix('fasttune: ')}")


def _set(values: dict, dotted: str, value: Any) -> None:
    *groups, last = dotted.split(".")
    for group in groups:
        values = values.setdefault(group, {})
    values[last] = value


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None was allowed)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(others) == 1 and len(others) < len(typing.get_args(annotation)):
            return others[0], True
    return annotation, False


def _fit(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for option in arguments:
            fits, conformed = _fit(value, option)
            if fits:
                return True, conformed
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is Literal:
        return value in arguments, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:  # YAML reads 1e-4 (no dot) as text
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(
            value, (int, float)) else value
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        element = arguments[0] if arguments else Any
        fitted = [_fit(item, element) for item in value]
        return all(fits for fits, _ in fitted), [item for _, item in fitted]
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    return True, value


def _type_name(annotation: Any) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in arguments)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, arguments))
    if origin in (list, tuple):
        return f"a list of {_type_name(arguments[0]) if arguments else 'values'}"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _converter(annotation: Any, optional: bool) -> Callable[[str], Any]:
    """Text of a flag -> the option's value (none/null -> None where None is allowed)."""
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None

    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if annotation is bool:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise argparse.ArgumentTypeError(f"expected true, false{' or none' if optional else ''} ({text!r})")
        if choices is not None:
            if text not in map(str, choices):
                raise argparse.ArgumentTypeError(f"choose from {', '.join(map(str, choices))} ({text!r})")
            return next(choice for choice in choices if str(choice) == text)
        if annotation in (int, float, str):
            return annotation(text)
        if str in typing.get_args(annotation):  # e.g. str | os.PathLike
            return text
        return yaml.load(text, Loader=Yaml12Loader)  # a mapping or a list given as YAML/JSON text

    convert.__name__ = _type_name(annotation)
    return convert


def _metavar(annotation: Any, optional: bool) -> str:
    if typing.get_origin(annotation) is Literal or annotation is bool:
        choices = typing.get_args(annotation) if annotation is not bool else ("true", "false")
        return "{" + ",".join(map(str, (*choices, *(["none"] if optional else [])))) + "}"
    if str in typing.get_args(annotation):
        return "STR"
    return getattr(annotation, "__name__", "VALUE").upper()


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return " ".join(map(str, value)) or "[]"
    return str(value)
