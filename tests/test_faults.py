"""Faults that lost work or data (issue 18), each reproduced with a kill at a chosen point, a full disk, two runs at
once or a tampered folder, on the tiny random Llama (CPU). Nothing the user had is deleted, no folder looks complete
when it is not, and every refusal is a FasttuneError naming the folder and the fix."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import fasttune
from fasttune import atomic, checkpoints, exporting, guards, training
from fasttune.errors import FasttuneWarning
from fasttune.methods import METHODS
from fasttune.task import Sample, Task

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"max_steps": 8, "batch_size": 4, "limit": 40, "logging_steps": 2, "save_steps": 2}


class Killed(BaseException):
    """Stands for the process dying at the chosen point (not an Exception: nothing in fasttune may catch it)."""


def die_on_call(monkeypatch, owner, name: str, call: int) -> None:
    """Make `owner.name` kill the run on its `call`-th call, before doing anything."""
    original, calls = getattr(owner, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Killed(f"{name} call {call}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)


def train_tiny(model_dir, output_dir, task=None, dtype=torch.float32, **changes):
    model = fasttune.load(model_dir, dtype=dtype)
    return fasttune.train(model, task or fasttune.tasks.get("larger_number"), output_dir=str(output_dir),
                          **{**SETTINGS, **changes})


def adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a), "adapters differ"


def saved_settings(run_dir: Path) -> dict:
    return {key: value for key, value in json.loads((run_dir / "config.json").read_text()).items() if key != "plan"}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    run = train_tiny(tiny_model_dir, tmp_path_factory.mktemp("uninterrupted") / "run")
    return run, adapter_weights(run.output_dir)


@pytest.fixture(scope="module")
def interrupted(tiny_model_dir, tmp_path_factory):
    """A run killed after the Trainer wrote checkpoint-6 and before fasttune marked it complete."""
    folder = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.MonkeyPatch.context() as patch:
        die_on_call(patch, checkpoints, "write_manifest", 3)
        with pytest.raises(Killed):
            train_tiny(tiny_model_dir, folder)
    assert sorted(p.name for p in (folder / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    return folder


@pytest.fixture
def interrupted_copy(interrupted, tmp_path) -> Path:
    return Path(shutil.copytree(interrupted, tmp_path / "run"))


@pytest.fixture
def small_disk(tmp_path):
    """A 9 MiB tmpfs (room for two checkpoints of the tiny model, not three); skipped where it cannot be mounted."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def grow(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)


# 1. A half-written checkpoint counted as complete, and the run folder was then stuck.

def test_a_checkpoint_cut_off_while_written_does_not_count_and_resume_falls_back_bitwise(interrupted_copy,
                                                                                         tiny_model_dir,
                                                                                         uninterrupted):
    assert guards.latest_checkpoint(interrupted_copy / "checkpoints").name == "checkpoint-4"
    with pytest.raises(fasttune.FasttuneError, match=rf"{interrupted_copy} holds an interrupted run .*resume=True"):
        train_tiny(tiny_model_dir, interrupted_copy)
    with pytest.warns(FasttuneWarning, match=r"resuming from checkpoint-4.*checkpoint-6: it was cut off"):
        run = train_tiny(tiny_model_dir, interrupted_copy, resume=True)
    assert_bitwise_equal(adapter_weights(interrupted_copy), uninterrupted[1])
    assert run.losses == uninterrupted[0].losses


DAMAGES = {
    "empty trainer_state.json": ("trainer_state.json", lambda path: path.write_bytes(b"")),
    "cut-off optimizer.pt": ("optimizer.pt", lambda path: path.write_bytes(path.read_bytes()[:1000])),
    "cut-off adapter weights": ("adapter_model.safetensors",
                                lambda path: path.write_bytes(path.read_bytes()[:5000])),
    "missing adapter weights": ("adapter_model.safetensors", Path.unlink),
    "optimizer.pt zeroed, same size": ("optimizer.pt", lambda path: path.write_bytes(
        path.read_bytes()[:2000] + bytes(len(path.read_bytes()) - 4000) + path.read_bytes()[-2000:])),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_crashed_resume_with_raw_errors_now_resume_names_it_and_uses_the_one_before(
        interrupted_copy, damage):
    newest = interrupted_copy / "checkpoints" / "checkpoint-6"
    checkpoints.write_manifest(newest)  # complete, then damaged (a disk fault, a tampered folder)
    name, hurt = DAMAGES[damage]
    hurt(newest / name)
    with pytest.warns(FasttuneWarning, match=rf"resuming from checkpoint-4.*checkpoint-6: {name}"):
        chosen = guards.resume_point(interrupted_copy, saved_settings(interrupted_copy), ("plan",))
    assert chosen.name == "checkpoint-4"
    assert (interrupted_copy / "checkpoints" / "incomplete-checkpoint-6" / MANIFEST_NAME).is_file()  # kept


MANIFEST_NAME = checkpoints.MANIFEST


def test_a_run_folder_whose_checkpoints_all_fail_says_which_and_how_to_start_over(interrupted_copy):
    (interrupted_copy / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_bytes(b"")
    with pytest.raises(fasttune.FasttuneError, match=r"No complete checkpoint to resume from in .*checkpoints "
                                                     r"\(checkpoint-6: .*; checkpoint-4: trainer_state.json has 0 "
                                                     r"bytes.*delete .*checkpoints and train again"):
        guards.resume_point(interrupted_copy, saved_settings(interrupted_copy), ("plan",))
    assert sorted(p.name for p in (interrupted_copy / "checkpoints").iterdir() if p.is_dir()) == [
        "incomplete-checkpoint-4", "incomplete-checkpoint-6"]


def test_a_full_disk_while_checkpointing_is_a_fasttune_error_and_the_run_resumes_once_space_is_freed(
        small_disk, tiny_model_dir, uninterrupted):
    with pytest.raises(fasttune.FasttuneError, match=r"No space left on the device while writing .*checkpoints.*"
                                                     r"free space, then call train\(\.\.\., resume=True\)"):
        train_tiny(tiny_model_dir, small_disk / "run")
    assert not (small_disk / "run" / "adapter").exists()
    assert checkpoints.incomplete_reason(checkpoints.checkpoint_folders(small_disk / "run" / "checkpoints")[0])
    grow(small_disk)
    with pytest.warns(FasttuneWarning, match="resuming from checkpoint-4"):
        train_tiny(tiny_model_dir, small_disk / "run", resume=True)
    assert_bitwise_equal(adapter_weights(small_disk / "run"), uninterrupted[1])


# 2. The final adapter was not written atomically.

def test_a_kill_during_the_final_save_leaves_no_adapter_that_loads_and_resume_finishes_it(tiny_model_dir, tmp_path,
                                                                                          monkeypatch, uninterrupted):
    die_on_call(monkeypatch, training, "write_card", 1)  # weights and tokenizer written, the card not yet
    with pytest.raises(Killed):
        train_tiny(tiny_model_dir, tmp_path / "run")
    monkeypatch.undo()
    assert not (tmp_path / "run" / "adapter").exists()
    with pytest.raises(fasttune.FasttuneError, match="Model folder not found"):
        fasttune.load(tmp_path / "run" / "adapter")
    assert guards.latest_checkpoint(tmp_path / "run" / "checkpoints").name == "checkpoint-8"
    train_tiny(tiny_model_dir, tmp_path / "run", resume=True)
    assert_bitwise_equal(adapter_weights(tmp_path / "run"), uninterrupted[1])
    assert fasttune.load(tmp_path / "run" / "adapter").card["task"]["name"] == "larger_number"


def test_a_full_disk_during_the_final_save_leaves_no_half_adapter_and_resume_finishes_it(small_disk, tiny_model_dir,
                                                                                         monkeypatch, uninterrupted):
    grow(small_disk)
    write_card = training.write_card

    def fill_disk_then_write_card(folder, card):
        filler = small_disk / "filler"
        filler.write_bytes(bytes(shutil.disk_usage(small_disk).free))  # not a page left
        return write_card(folder, card)

    monkeypatch.setattr(training, "write_card", fill_disk_then_write_card)
    with pytest.raises(fasttune.FasttuneError, match=r"No space left on the device while writing .*adapter"):
        train_tiny(tiny_model_dir, small_disk / "run")
    monkeypatch.undo()
    assert {"adapter", ".adapter.partial"}.isdisjoint(p.name for p in (small_disk / "run").iterdir())
    assert guards.latest_checkpoint(small_disk / "run" / "checkpoints").name == "checkpoint-8"
    (small_disk / "filler").unlink()
    train_tiny(tiny_model_dir, small_disk / "run", resume=True)
    assert_bitwise_equal(adapter_weights(small_disk / "run"), uninterrupted[1])


# 3. export(..., overwrite=True) deleted whatever folder it was pointed at.

def test_export_overwrite_deleted_the_source_adapter_base_model_or_user_files_now_replaces_only_an_export(
        uninterrupted, tiny_model_dir, tmp_path):
    run = uninterrupted[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = {folder: sorted(p.name for p in folder.rglob("*")) for folder in (run.adapter_dir, tiny_model_dir, mine)}
    for target, what in ((run.adapter_dir, "holds the source adapter"), (run.output_dir, "holds the source adapter"),
                         (tiny_model_dir, "holds the base model"), (mine, "is not a fasttune export")):
        with pytest.raises(fasttune.FasttuneError, match=rf"export folder {what} .*{target}.*Export to another"):
            fasttune.export(run.adapter_dir, target, formats=("adapter",), overwrite=True)
    assert before == {folder: sorted(p.name for p in folder.rglob("*")) for folder in before}
    first = fasttune.export(run.adapter_dir, tmp_path / "export", formats=("adapter",))
    (first.out_dir / "stale.txt").write_text("from the first export")
    second = fasttune.export(run.adapter_dir, tmp_path / "export", formats=("adapter",), overwrite=True)
    assert sorted(p.name for p in second.out_dir.iterdir()) == ["adapter", "export.json"]


# 4. Resume accepted other inputs.

def test_resume_accepted_another_base_model_task_data_or_dtype_now_refuses_and_a_moved_run_still_resumes(
        interrupted_copy, tiny_model_dir, tmp_path, data_root, uninterrupted):
    for model_dir, task, dtype, changed in (
            (tiny_model_dir, fasttune.tasks.get("larger_number", low=100, high=999), torch.float32, "data: |task: "),
            (tiny_model_dir, fasttune.tasks.get("rte", data_dir=data_root / "rte"), torch.float32, "task: "),
            (tiny_model_dir, None, torch.bfloat16, "dtype"),
            (tmp_path, None, torch.float32, "model: ")):
        if model_dir == tmp_path:
            model_dir = shutil.copytree(tiny_model_dir, tmp_path / "other-base")
        with pytest.raises(fasttune.FasttuneError, match=rf"Resuming {interrupted_copy} with other (settings|inputs) "
                                                         rf".*({changed}).*train into a new output_dir"):
            train_tiny(model_dir, interrupted_copy, task=task, dtype=dtype, resume=True)
    weights = tiny_model_dir / "model.safetensors"
    original = weights.read_bytes()
    try:  # the same base folder with other weights: only its content tells
        save_file({name: tensor * 1.01 for name, tensor in load_file(weights).items()}, weights,
                  metadata={"format": "pt"})
        with pytest.raises(fasttune.FasttuneError, match=rf"Resuming {interrupted_copy} with other inputs .*"
                                                         r"base_model: fingerprint=.*train into a new output_dir"):
            train_tiny(tiny_model_dir, interrupted_copy, resume=True)
    finally:
        weights.write_bytes(original)
    moved = Path(shutil.move(interrupted_copy, tmp_path / "moved"))
    train_tiny(tiny_model_dir, moved, resume=True)
    assert_bitwise_equal(adapter_weights(moved), uninterrupted[1])


# 5. Two runs on one output folder both succeeded.

HOLD_LOCK = """
import sys, time
from pathlib import Path
from fasttune.runlock import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(300)
"""


def test_two_runs_on_one_output_folder_both_succeeded_now_the_second_is_refused_and_a_dead_owners_lock_is_taken(
        tiny_model_dir, tmp_path, uninterrupted):
    owner = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdout=subprocess.PIPE,
                             text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(fasttune.FasttuneError, match=rf"Another run is writing to {tmp_path / 'run'} .*"
                                                         rf"\"pid\": {owner.pid}.*train into another output_dir"):
            train_tiny(tiny_model_dir, tmp_path / "run")
    finally:
        owner.kill()
        owner.wait()
    assert f'"pid": {owner.pid}' in (tmp_path / "run" / ".fasttune.lock").read_text()  # left by a killed owner
    train_tiny(tiny_model_dir, tmp_path / "run")
    assert_bitwise_equal(adapter_weights(tmp_path / "run"), uninterrupted[1])


def test_a_fresh_run_into_a_finished_runs_folder_is_refused_unless_asked_to_overwrite(tiny_model_dir, tmp_path,
                                                                                     uninterrupted):
    finished = Path(shutil.copytree(uninterrupted[0].output_dir, tmp_path / "run"))
    with pytest.raises(fasttune.FasttuneError, match=rf"{finished} holds a finished run .*overwrite=True"):
        train_tiny(tiny_model_dir, finished, seed=1)
    assert_bitwise_equal(adapter_weights(finished), uninterrupted[1])
    train_tiny(tiny_model_dir, finished, seed=1, overwrite=True)
    assert adapter_weights(finished).keys() == uninterrupted[1].keys()
    assert not all(torch.equal(adapter_weights(finished)[k], v) for k, v in uninterrupted[1].items())
    model_folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "a-model"))
    with pytest.raises(fasttune.FasttuneError, match=rf"{model_folder} is not a fasttune run folder"):
        train_tiny(tiny_model_dir, model_folder)


# 6. Pickled adapter files were read.

def test_pickled_adapter_bin_was_read_by_merges_and_merged_exports_now_refused_everywhere(uninterrupted, tmp_path):
    pickled = Path(shutil.copytree(uninterrupted[0].adapter_dir, tmp_path / "pickled"))
    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    refusal = rf"No (adapter_model\.)?safetensors.* in {pickled}"
    with pytest.raises(fasttune.FasttuneError, match=refusal):
        fasttune.merge_adapters([pickled, uninterrupted[0].adapter_dir], [0.5, 0.5], out_dir=tmp_path / "merged")
    with pytest.raises(fasttune.FasttuneError, match=refusal):
        fasttune.export(pickled, tmp_path / "export", formats=("merged_16bit",))
    with pytest.raises(fasttune.FasttuneError, match=refusal):
        fasttune.load(pickled)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "export").exists()


# 7. Scores that should be refused were reported.

class FixedChoices(Task):
    name = "fixed_choices"
    kind = "choices"
    splits = ("test",)

    def __init__(self, choices, gold="yes"):
        super().__init__(None)
        self.fixed, self.gold = choices, gold

    def load(self, split):
        return [{"id": "q1"}, {"id": "q2"}]

    def format(self, example):
        return Sample([{"role": "user", "content": "Yes or no?"}], self.gold)

    def answer(self, example):
        return self.gold

    def parse_answer(self, text, example):
        return text.strip().lower() or None

    def choices(self, example):
        return self.fixed


@pytest.mark.parametrize("choices, gold, refusal", [
    (["yes", "yes"], "yes", "the same choice twice"),
    (["yes"], "yes", "gave 1 choices"),
    ([], "yes", "gave 0 choices"),
    (["yes", "no"], "maybe", "the gold answer is none of the choices"),
])
def test_degenerate_choice_lists_scored_without_a_word_now_refused_naming_the_example(tiny_model_dir, choices, gold,
                                                                                      refusal):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(fasttune.FasttuneError, match=rf"Task 'fixed_choices'.*, example id=q1: .*{refusal}"):
        fasttune.evaluate(model, FixedChoices(choices, gold), config=fasttune.EvalConfig(engine="loglik"))


@pytest.fixture(scope="module")
def nan_gguf(tiny_model_dir, tmp_path_factory):
    """The tiny model as GGUF f16, and a copy whose weights are NaN."""
    pytest.importorskip("llama_cpp")
    from fasttune import gguf

    folder = tmp_path_factory.mktemp("gguf")
    broken = Path(shutil.copytree(tiny_model_dir, folder / "nan-model"))
    save_file({name: torch.full_like(t, float("nan")) for name, t in load_file(broken / "model.safetensors").items()},
              broken / "model.safetensors", metadata={"format": "pt"})
    files = {}
    for name, source in (("fine", tiny_model_dir), ("nan", broken)):
        files[name] = folder / f"{name}-f16.gguf"
        gguf.convert(source, files[name], "f16", None)
    return files


def test_gguf_scoring_with_nan_log_likelihoods_picked_the_first_choice_now_refused(nan_gguf):
    with pytest.raises(fasttune.FasttuneError, match=r"non-finite log-likelihoods for 4 of 4 examples"):
        fasttune.evaluate(nan_gguf["nan"], fasttune.tasks.get("larger_number"), limit=4)


def test_gguf_generation_reported_empty_and_truncated_outputs_as_none_now_counts_them(nan_gguf):
    report = fasttune.evaluate(nan_gguf["fine"], fasttune.tasks.get("larger_number"),
                               config=fasttune.EvalConfig(limit=3, engine="generate", max_new_tokens=2))
    assert isinstance(report.empty_outputs, int) and isinstance(report.truncated_outputs, int)
    assert report.empty_outputs + report.truncated_outputs >= 1  # random weights: two tokens never end the reply


# 8. Smaller ones.

def test_a_hub_task_without_data_or_network_ended_in_a_raw_connection_error_now_one_fasttune_error(tmp_path,
                                                                                                 monkeypatch):
    import datasets

    def no_network(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'aps/super_glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", no_network)
    task = fasttune.tasks.get("rte", data_dir=tmp_path / "missing")
    with pytest.raises(fasttune.FasttuneError, match=rf"could not read hub dataset 'aps/super_glue' .*ConnectionError"
                                                     rf".*data_dir={tmp_path / 'missing'}.*HF_HUB_OFFLINE=1"):
        task.load("train")


@pytest.mark.parametrize("low, high, pairs", [(10, 20, 55), (50, 50, 0), (60, 40, 0)])
def test_larger_number_with_too_few_pairs_looped_forever_or_raised_raw_now_refused(low, high, pairs):
    with pytest.raises(fasttune.FasttuneError, match=rf"needs 2400 distinct pairs .*holds {pairs} .*"
                                                     r"high - low >= 69"):
        fasttune.tasks.get("larger_number", low=low, high=high)
    assert len(fasttune.tasks.get("larger_number", low=10, high=79).load("test")) == 200  # 69 apart: enough


def test_dpo_pairs_longer_than_max_seq_length_were_cut_silently_now_counted_and_all_too_long_refused(tiny_model_dir,
                                                                                                   tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32, max_seq_length=48)
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Which is larger, 3 or 4?", "chosen": "4", "rejected": "3"},
            {"prompt": "Which is larger, 5 or 6?", "chosen": "6 " * 40, "rejected": "5"},
            {"prompt": "Which is larger, 7 or 8?", "chosen": "8", "rejected": "7"}]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = METHODS["dpo"].config(pairs_file=str(pairs))
    prepared = METHODS["dpo"].prepare(model, fasttune.tasks.get("larger_number"), config)
    assert len(prepared.rows) == 2 and prepared.skipped_too_long == ["pairs.jsonl row 2"]
    assert prepared.summary["too_long"] == 1 and prepared.summary["pairs"] == 3
    pairs.write_text(json.dumps(rows[1]) + "\n")
    with pytest.warns(FasttuneWarning, match=r"skipped 1 of 1 .*max_seq_length=48"), \
            pytest.raises(fasttune.FasttuneError, match=r"No training rows left .*'too_long': 1"):
        fasttune.train(model, fasttune.tasks.get("larger_number"), "dpo", pairs_file=str(pairs),
                       output_dir=str(tmp_path / "run"), max_steps=1)


def test_cards_with_a_relative_base_a_cut_off_body_or_a_non_string_base_are_read_or_refused_clearly(
        uninterrupted, tiny_model_dir, tmp_path, monkeypatch):
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")
    adapter = Path(shutil.copytree(uninterrupted[0].adapter_dir, tmp_path / "models" / "adapter"))
    card = json.loads((adapter / "fasttune.json").read_text())
    (adapter / "fasttune.json").write_text(json.dumps({**card, "base_model": "../base"}))
    monkeypatch.chdir(tmp_path)  # ../base from here is not the base: it must resolve from the adapter folder
    assert fasttune.load(adapter).base_path == (tmp_path / "models" / "base").resolve()
    (adapter / "fasttune.json").write_text(json.dumps({**card, "base_model": 3}))
    with pytest.raises(fasttune.FasttuneError, match=rf"base_model is not a folder path .*{adapter}"):
        fasttune.load(adapter)
    (adapter / "fasttune.json").write_text(json.dumps(card)[:40])
    with pytest.raises(fasttune.FasttuneError, match=rf"fasttune.json is not valid JSON, perhaps cut off .*{adapter}"):
        fasttune.load(adapter)


def test_a_chat_template_that_never_renders_the_assistant_turn_raised_index_error_now_names_the_model(
        tiny_model_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "user-only"))
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    model = fasttune.load(folder, dtype=torch.float32)
    with pytest.raises(fasttune.FasttuneError, match=rf"chat template of {folder} does not render the assistant"):
        model.end_of_turn


def test_a_resumed_runs_card_showed_another_loss_at_the_step_after_the_resume_now_the_same_as_uninterrupted(
        tiny_model_dir, tmp_path, monkeypatch, uninterrupted):
    die_on_call(monkeypatch, checkpoints, "write_manifest", 2)  # saves at 3, 6: killed before 6 counts
    with pytest.raises(Killed):
        train_tiny(tiny_model_dir, tmp_path / "run", save_steps=3)
    monkeypatch.undo()
    with pytest.warns(FasttuneWarning, match="resuming from checkpoint-3"):
        run = train_tiny(tiny_model_dir, tmp_path / "run", save_steps=3, resume=True)
    assert run.losses == uninterrupted[0].losses  # step 4 averages steps 3 and 4, as without the interruption
    assert json.loads((run.adapter_dir / "fasttune.json").read_text())["losses"] == [list(pair) for pair in run.losses]
    assert_bitwise_equal(adapter_weights(tmp_path / "run"), uninterrupted[1])


def test_atomic_folder_keeps_the_old_folder_when_writing_the_new_one_dies(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(Killed), atomic.atomic_folder(target) as staging:
        (staging / "weights").write_text("new, half")
        raise Killed
    assert (target / "weights").read_text() == "old" and not atomic.staging_folder(target).exists()
    with atomic.atomic_folder(target) as staging:
        (staging / "weights").write_text("new")
    assert (target / "weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_export_refuses_before_any_work_so_nothing_is_written_beside_the_target(uninterrupted, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(fasttune.FasttuneError):
        exporting.export(uninterrupted[0].adapter_dir, mine, formats=("adapter",), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
