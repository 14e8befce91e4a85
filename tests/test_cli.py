"""The `fasttune` command line: options generated from the config dataclasses, --config files (YAML, JSON) under
the flags, errors that name the key, each subcommand end to end on the tiny random Llama, and the config.json round
trip."""

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

import fasttune
from fasttune import cli
from fasttune.configs import LoraConfig, TrainConfig
from fasttune.methods.dpo import DpoConfig


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli.run(argv)
    assert stopped.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One `fasttune train` run from a ten-line YAML file: train, evaluate, export the adapter."""
    folder = tmp_path_factory.mktemp("cli")
    config = _write(folder / "run.yaml", f"""\
model:
  name_or_path: {tiny_model_dir}
  dtype: float32
task:
  name: larger_number
max_steps: 2
batch_size: 4
limit: 8
eval: {{limit: 4}}
export: {{formats: [adapter]}}
""")
    done = cli.run(["train", "--config", str(config), "--output_dir", str(folder / "run"), "--save_steps", "none",
                    "--lora.r", "8", "--task.high", "500", "--learning-rate", "1e-3"])
    return folder, done


def test_train_help_shows_each_fields_docstring_under_its_flag(capsys):
    text = _help(capsys, ["train", "--help"])
    assert "--learning_rate FLOAT, --learning-rate FLOAT Peak learning rate of the LoRA weights. (default: 0.0005)" \
        in text
    assert "--lora.r INT Rank of the update matrices. (default: 16)" in text
    assert "--model.max_seq_length INT, --model.max-seq-length INT Longest row in tokens" in text
    assert "--eval.engine {auto,loglik,generate}" in text
    assert "--export.formats [{adapter,merged_16bit,gguf} ...]" in text


def test_method_flag_picks_the_methods_config_class_and_its_nested_sampling_options(capsys):
    text = _help(capsys, ["train", "--method", "dpo", "--help"])
    assert "--beta FLOAT Preference strength" in text and "--sampling.samples INT Completions sampled" in text
    # a field a subclass redefines without a docstring keeps its base class's help, with its own default
    assert "--learning_rate FLOAT, --learning-rate FLOAT Peak learning rate of the LoRA weights. (default: 5e-05)" \
        in text
    parsed = cli.parse(cli.COMMANDS["train"], ["--method", "dpo", "--task.name", "larger_number", "--beta", "0.3",
                                               "--sampling.samples", "2"])
    assert type(parsed["config"]) is DpoConfig
    assert (parsed["config"].beta, parsed["config"].sampling.samples, parsed["config"].sampling.temperature) == (
        0.3, 2, 1.0)


def test_every_option_of_every_command_has_help_from_a_docstring():
    for name, command in cli.COMMANDS.items():
        for variant in (command.variants or {None: None}):
            schema = cli.command_schema(command, variant, "larger_number")
            missing = [key for key, option in schema.options.items() if not option.help]
            assert not missing, f"{name} {variant}: {missing}"


def test_task_options_are_the_constructors_arguments_with_their_types(capsys):
    text = _help(capsys, ["eval", "--task.name", "larger_number", "--help"])
    assert "--task.low INT" in text and "--task.high INT" in text and "--task.data_dir STR" in text
    parsed = cli.parse(cli.COMMANDS["eval"], ["--task.name", "larger_number", "--task.low", "100", "--task.high",
                                              "200", "--limit", "3"])
    task = parsed["task"]
    assert (task.name, task.low, task.high, parsed["config"].limit) == ("larger_number", 100, 200, 3)
    assert all(100 <= example["a"] <= 200 for example in task.load("test"))


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    config = _write(tmp_path / "run.yaml", "epochs: 2\nlearning_rate: 1e-4\nlora:\n  r: 8\n  dropout: 0.1\n"
                                           "task:\n  name: larger_number\n  high: 500\n")
    parsed = cli.parse(cli.COMMANDS["train"], ["--config", str(config), "--lora.r", "4", "--task.high", "300"])
    train = parsed["config"]
    assert type(train) is TrainConfig and train.epochs == 2.0 and train.learning_rate == 1e-4  # YAML's 1e-4 is text
    assert train.lora == LoraConfig(r=4, alpha=32, dropout=0.1)
    assert (parsed["task"].high, parsed["task"].low) == (300, 10)
    assert train.batch_size == 16 and parsed["model"].max_seq_length == 2048 and parsed["eval"] is None


def test_json_config_is_read_like_yaml(tmp_path):
    config = _write(tmp_path / "merge.json", json.dumps(
        {"adapters": ["a", "b"], "weights": [0.5, 0.5], "method": "ties", "density": 0.3}))
    merge = cli.parse(cli.COMMANDS["merge"], ["--config", str(config), "--weights", "0.7", "0.3"])["config"]
    assert (merge.adapters, merge.weights, merge.method, merge.density) == (["a", "b"], [0.7, 0.3], "ties", 0.3)


def test_unknown_key_in_a_file_names_file_and_section_and_suggests_the_close_match(tmp_path):
    config = _write(tmp_path / "run.yaml", "epoch: 2\ntask: {name: larger_number}\n")
    with pytest.raises(fasttune.FasttuneError, match=r"run.yaml, top level: Unknown key 'epoch'. Did you mean: epochs"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])
    config = _write(tmp_path / "run.yaml", "task: {name: larger_number}\nlora:\n  alfa: 8\n")
    with pytest.raises(fasttune.FasttuneError, match=r"section lora: Unknown key 'alfa'. Did you mean: alpha"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])
    config = _write(tmp_path / "run.yaml", "task: {name: larger_number, hihg: 50}\n")
    with pytest.raises(fasttune.FasttuneError, match=r"section task: Unknown key 'hihg'. Did you mean: high"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])


def test_unknown_flag_task_and_method_suggest_close_matches(tmp_path):
    with pytest.raises(fasttune.FasttuneError, match=r"Unknown option '--lora.rr'. Did you mean: --lora.r"):
        cli.parse(cli.COMMANDS["train"], ["--task.name", "larger_number", "--lora.rr", "4"])
    with pytest.raises(fasttune.FasttuneError, match=r"Unknown task 'larger_numbr'. Did you mean: larger_number"):
        cli.parse(cli.COMMANDS["train"], ["--task.name", "larger_numbr"])
    config = _write(tmp_path / "run.json", json.dumps({"method": "dop", "task": {"name": "larger_number"}}))
    with pytest.raises(fasttune.FasttuneError, match=r"run.json, top level: Unknown training method 'dop'. "
                                                     r"Did you mean: dpo"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])
    with pytest.raises(fasttune.FasttuneError, match=r"Unknown command 'trian'. Did you mean: train"):
        cli.run(["trian"])


def test_wrongly_typed_values_and_missing_settings_are_errors_naming_the_key(tmp_path):
    config = _write(tmp_path / "run.yaml", "task: {name: larger_number}\nlora: {r: eight}\n")
    with pytest.raises(fasttune.FasttuneError, match=r"lora.r in .*run.yaml \(section lora\) should be a whole "
                                                     r"number, not str \(lora.r='eight'\)"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])
    config = _write(tmp_path / "run.yaml", "task: {name: larger_number}\nmodel: 12\n")
    with pytest.raises(fasttune.FasttuneError, match=r"'model' is a section of settings, not a int"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])
    with pytest.raises(fasttune.FasttuneError, match=r"Missing setting task.name \(--task.name\)"):
        cli.parse(cli.COMMANDS["train"], [])
    with pytest.raises(fasttune.FasttuneError, match=r"Missing setting out_dir"):
        cli.parse(cli.COMMANDS["export"], ["--source", "runs/x/adapter"])
    with pytest.raises(fasttune.FasttuneError, match=r"bad.yaml is not valid YAML \(file=.*line 2"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(_write(tmp_path / "bad.yaml", "a: 1\n b: [\n"))])
    with pytest.raises(fasttune.FasttuneError, match=r"A config file is YAML .* or JSON"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(_write(tmp_path / "run.toml", "a = 1\n"))])


def test_bench_keeps_the_flags_the_readme_shows():
    bench = cli.parse(cli.COMMANDS["bench"], ["--task", "rte", "--data", "../shared/data/rte", "--limit", "277",
                                              "--train-limit", "2490", "--epochs", "2", "--out", "x", "--resume"])
    config = bench["config"]
    assert (config.task, config.data, config.limit, config.train_limit, config.epochs, config.resume) == (
        "rte", "../shared/data/rte", 277, 2490, 2.0, True)
    suite = cli.parse(cli.COMMANDS["bench"], ["--suite", "seeds", "--data", "../shared/data", "--limit", "50"])
    assert suite["config"].suite == "seeds" and suite["config"].train_limit == 960 and suite["config"].lr == 5e-4


def test_train_from_a_yaml_file_trains_evaluates_and_exports(trained):
    folder, done = trained
    run = done["run"]
    assert run.config.max_steps == 2 and run.config.batch_size == 4 and run.config.limit == 8
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    saved = json.loads((run.output_dir / "eval.json").read_text())
    assert saved["n"] == 4 and saved["task"]["name"] == "larger_number" and done["eval"].n == 4
    card = json.loads((run.output_dir / "export" / "adapter" / "fasttune.json").read_text())
    assert card["evaluations"][0]["n"] == 4 and done["export"].merged_dir is None
    recorded = json.loads((run.output_dir / "config.json").read_text())
    task = fasttune.tasks.get("larger_number", high=500)
    assert recorded["task"] == {"name": "larger_number", **task.constructor_arguments()}
    assert (recorded["task"]["low"], recorded["task"]["high"]) == (10, 500)
    assert recorded["model"]["dtype"] == "float32" and recorded["max_steps"] == 2 and "plan" in recorded


def test_config_json_of_a_run_trains_the_bitwise_same_adapter_again(trained, tmp_path):
    folder, done = trained
    again = cli.run(["train", "--config", str(done["run"].output_dir / "config.json"),
                     "--output_dir", str(tmp_path / "again")])
    assert again["eval"] is None and again["export"] is None  # config.json records training only
    first = (done["run"].adapter_dir / "adapter_model.safetensors").read_bytes()
    second = (again["run"].adapter_dir / "adapter_model.safetensors").read_bytes()
    assert first == second
    assert again["run"].losses == done["run"].losses
    assert (again["run"].config.lora.r, again["run"].config.learning_rate) == (8, 1e-3)  # flags of the first run


def test_eval_command_scores_the_trained_adapter_and_saves_the_report(trained, tmp_path):
    _, done = trained
    report = cli.run(["eval", "--model.name_or_path", str(done["run"].adapter_dir), "--model.dtype", "float32",
                      "--task.name", "larger_number", "--task.high", "500", "--limit", "4", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "larger_number.json").read_text())
    assert report.n == 4 and saved["metrics"] == report.metrics
    assert report.metrics == done["eval"].metrics  # the same adapter on the same examples


def test_export_command_writes_the_adapter_format(trained, tmp_path):
    _, done = trained
    result = cli.run(["export", "--source", str(done["run"].adapter_dir), "--out-dir", str(tmp_path / "exp"),
                      "--formats", "adapter"])
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["adapter", "export.json"]
    assert (result.adapter_dir / "adapter_model.safetensors").read_bytes() == (
        done["run"].adapter_dir / "adapter_model.safetensors").read_bytes()


def test_merge_command_merges_two_adapters_into_a_loadable_one(trained, tmp_path):
    _, done = trained
    adapter = str(done["run"].adapter_dir)
    config = _write(tmp_path / "merge.yaml", f"adapters: [{adapter}, {adapter}]\nweights: [0.5, 0.5]\nmethod: svd\n")
    merged = cli.run(["merge", "--config", str(config), "--out_dir", str(tmp_path / "merged")])
    card = json.loads((merged / "fasttune.json").read_text())
    assert card["merge"]["method"] == "svd" and card["merge"]["weights"] == [0.5, 0.5]
    assert (merged / "adapter_model.safetensors").is_file()


def test_suite_command_evaluates_every_built_in_task(tiny_model_dir, data_root, tmp_path):
    summary = cli.run(["suite", "--model.name_or_path", str(tiny_model_dir), "--data_root", str(data_root),
                       "--limit", "2", "--out", str(tmp_path)])
    assert {r["task"]["name"] for r in summary["reports"]} == set(fasttune.tasks.builtin())
    assert summary["not_run"] == {} and all(r["n"] == 2 for r in summary["reports"])
    assert json.loads((tmp_path / "suite.json").read_text())["limit"] == 2


def test_bench_command_runs_the_main_job(tiny_model_dir, tmp_path):
    summary = cli.run(["bench", "--model", str(tiny_model_dir), "--limit", "4", "--train-limit", "8",
                       "--max-steps", "2", "--batch-size", "4", "--out", str(tmp_path)])
    assert summary["args"]["train_limit"] == 8 and summary["base"]["metrics"] and summary["tuned"]["metrics"]
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "tuned.json").is_file()


def test_serve_command_help_and_python_dash_m_fasttune_work(capsys, monkeypatch):
    text = _help(capsys, ["serve", "--help"])
    assert "--port INT The port to listen on. (default: 8000)" in text
    monkeypatch.setattr(sys, "argv", ["fasttune", "--help"])
    runpy.run_module("fasttune", run_name="__main__")
    out = capsys.readouterr().out
    assert all(re.search(rf"^    {re.escape(name)}(\s|$)", out, re.MULTILINE) for name in cli.COMMANDS)


@pytest.mark.parametrize("function, config", [
    ("fasttune.backend:load", "fasttune.backend:LoadConfig"),
    ("fasttune.exporting:export", "fasttune.exporting:ExportConfig"),
    ("fasttune.merging:merge_adapters", "fasttune.merging:MergeConfig"),
    ("fasttune.serve:serve", "fasttune.serve:ServeConfig"),
])
def test_a_functions_keyword_defaults_are_its_configs_defaults(function, config):
    import dataclasses
    import importlib
    import inspect

    def resolve(name):
        module, attribute = name.split(":")
        return getattr(importlib.import_module(module), attribute)

    defaults = {name: p.default for name, p in inspect.signature(resolve(function)).parameters.items()
                if p.default is not p.empty}
    fields = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
              for f in dataclasses.fields(resolve(config))
              if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    shared = defaults.keys() & fields.keys()
    assert len(shared) >= 2
    normalised = {name: list(value) if isinstance(value, tuple) else value for name, value in defaults.items()}
    assert {name: normalised[name] for name in shared} == {name: fields[name] for name in shared}


# --- the user's own data, one command each (tasks chat and instruction) -----------------------------------------------

def _own_data_run(tmp_path, monkeypatch, tiny_model_dir, task_lines: str, metrics: set[str]):
    """`fasttune train --config run.yaml` with a ten-line file: train, evaluate, export; files relative to the
    working folder, as a user writes them."""
    monkeypatch.chdir(tmp_path)
    config = _write(tmp_path / "run.yaml", "task:\n" + task_lines + """\
  test_percent: 25
max_steps: 2
batch_size: 4
eval: {limit: 4, max_new_tokens: 4}
export: {formats: [adapter], max_new_tokens: 2}
""")
    assert len(config.read_text().splitlines()) <= 11
    done = cli.run(["train", "--config", "run.yaml", "--model.name_or_path", str(tiny_model_dir),
                    "--model.dtype", "float32", "--output_dir", "run", "--save_steps", "none",
                    "--logging_steps", "1"])
    run = done["run"]
    assert len(run.losses) == 2 and all(loss > 0 for _, loss in run.losses)
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["n"] == 4 and set(saved["metrics"]) >= metrics
    card = json.loads((tmp_path / "run" / "export" / "adapter" / "fasttune.json").read_text())
    assert card["evaluations"][0]["metrics"] == saved["metrics"] and card["task"]["name"] == run.model.card[
        "task"]["name"]
    return done, json.loads((tmp_path / "run" / "config.json").read_text())


def test_an_alpaca_jsonl_trains_evaluates_and_exports_with_one_command(tmp_path, monkeypatch, tiny_model_dir):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "alpaca.jsonl").write_text("".join(json.dumps(
        {"instruction": f"Is {n} even or odd?", "input": "", "output": "even" if n % 2 == 0 else "odd"}) + "\n"
        for n in range(40)))
    done, recorded = _own_data_run(tmp_path, monkeypatch, tiny_model_dir,
                                   "  name: instruction\n  train_file: data/alpaca.jsonl\n  labels: [even, odd]\n",
                                   {"accuracy", "recall_even"})
    assert done["eval"].engine == "loglik"
    assert recorded["task"]["labels"] == ["even", "odd"] and recorded["task"]["train_file"] == "data/alpaca.jsonl"


def test_a_multi_turn_openai_messages_jsonl_trains_evaluates_and_exports_with_one_command(tmp_path, monkeypatch,
                                                                                          tiny_model_dir):
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "Count."}, {"role": "user", "content": f"Say the number {n}."},
        {"role": "assistant", "content": str(n)}, {"role": "user", "content": "And the next one?"},
        {"role": "assistant", "content": str(n + 1)}]}) + "\n" for n in range(40)))
    done, _ = _own_data_run(tmp_path, monkeypatch, tiny_model_dir, "  name: chat\n  train_file: chats.jsonl\n",
                            {"exact_match", "f1", "rougeL", "bleu"})
    assert done["eval"].engine == "generate"


def test_a_csv_with_own_column_names_trains_evaluates_exports_and_its_config_json_trains_it_again(
        tmp_path, monkeypatch, tiny_model_dir):
    rows = "".join(f"What comes after {n}?,{n + 1}\n" for n in range(40))
    (tmp_path / "qa.csv").write_text("question,answer\n" + rows)
    done, recorded = _own_data_run(tmp_path, monkeypatch, tiny_model_dir, """\
  name: instruction
  train_file: qa.csv
  columns: {prompt: question, response: answer}
  metrics: [exact_match, f1]
""", {"exact_match", "f1"})
    assert recorded["task"]["columns"] == {"prompt": "question", "response": "answer"}
    cli.run(["train", "--config", "run/config.json", "--output_dir", "again"])
    assert (tmp_path / "again" / "adapter" / "adapter_model.safetensors").read_bytes() == (
        done["run"].adapter_dir / "adapter_model.safetensors").read_bytes()


def test_a_llama_factory_dataset_info_entry_trains_evaluates_and_exports_with_one_command(tmp_path, monkeypatch,
                                                                                          tiny_model_dir):
    (tmp_path / "doubles.json").write_text(json.dumps([{"conversations": [
        {"from": "human", "value": f"Double {n}."}, {"from": "gpt", "value": str(2 * n)}]} for n in range(40)]))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"doubles": {"file_name": "doubles.json", "formatting": "sharegpt"}}))
    done, recorded = _own_data_run(tmp_path, monkeypatch, tiny_model_dir,
                                   "  name: chat\n  dataset_info: dataset_info.json\n  dataset: doubles\n",
                                   {"exact_match", "f1"})
    assert done["eval"].records[0]["id"].startswith("doubles.json, item ") and recorded["task"]["dataset"] == "doubles"


def test_an_unknown_own_data_option_in_the_file_suggests_the_close_match(tmp_path):
    config = _write(tmp_path / "run.yaml", "task:\n  name: instruction\n  train_fil: rows.jsonl\n")
    with pytest.raises(fasttune.FasttuneError, match=r"run.yaml, section task: Unknown key 'train_fil'. "
                                                     r"Did you mean: train_file"):
        cli.parse(cli.COMMANDS["train"], ["--config", str(config)])


def test_yaml_yes_and_no_stay_text_and_only_true_and_false_are_booleans(tmp_path):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"instruction": f"Is {n} even?", "input": "",
                                                             "output": "yes" if n % 2 == 0 else "no"}) + "\n"
                                                 for n in range(8)))
    config = _write(tmp_path / "run.yaml", f"task:\n  name: instruction\n  train_file: {tmp_path / 'rows.jsonl'}\n"
                                           "  labels: [yes, no]\nmodel: {trust_remote_code: true}\n")
    parsed = cli.parse(cli.COMMANDS["train"], ["--config", str(config)])
    assert parsed["task"].labels == ["yes", "no"] and parsed["model"].trust_remote_code is True


def test_app_command_options_come_from_app_config(capsys):
    text = _help(capsys, ["app", "--help"])
    assert "--port INT Port to listen on; one already in use is refused. (default: 7860)" in text
    assert "--host STR Address to listen on; 127.0.0.1 keeps the app on this machine." in text


def test_devices_other_than_torchruns_process_count_is_refused(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(fasttune.FasttuneError, match=r"Started by torchrun in 2 processes, but devices=1\. Pass "
                                                     r"--devices 2"):
        cli.run(["eval", "--model.name_or_path", str(tiny_model_dir), "--task.name", "larger_number"])


def test_eval_with_two_devices_runs_two_torchrun_processes_and_saves_the_one_process_report(tiny_model_dir,
                                                                                            tmp_path):
    common = ["--model.name_or_path", str(tiny_model_dir), "--model.dtype", "float32", "--task.name",
              "larger_number", "--limit", "5"]
    assert cli.run(["eval", *common, "--devices", "2", "--out", str(tmp_path / "two")]) is None
    alone = cli.run(["eval", *common, "--out", str(tmp_path / "one")])
    two = json.loads((tmp_path / "two" / "larger_number.json").read_text())
    assert two["n"] == 5 and two["metrics"] == alone.metrics
    assert (tmp_path / "two" / "larger_number.predictions.jsonl").read_text() == \
        (tmp_path / "one" / "larger_number.predictions.jsonl").read_text()


def test_fetch_converter_passes_a_downloaded_source_package_to_the_fetch_and_names_the_folder(capfd, monkeypatch,
                                                                                             tmp_path):
    asked = []
    monkeypatch.setattr(cli.gguf, "fetch_converter", lambda sdist: asked.append(sdist) or tmp_path / "converter")
    assert cli.run(["fetch-converter", "--sdist", "llama_cpp_python-0.3.36.tar.gz"]) == tmp_path / "converter"
    assert cli.run(["fetch-converter"]) == tmp_path / "converter"
    assert asked == ["llama_cpp_python-0.3.36.tar.gz", None]
    assert f"llama.cpp converter in {tmp_path / 'converter'}" in "".join(capfd.readouterr().err.split("\n"))
