"""Training methods beyond SFT: each trains a few steps on the tiny Llama; the pair/reward builders on hand-made outputs."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors import safe_open

import fasttune
from fasttune import backend
from fasttune.logs import read_log
from fasttune.methods.cpt import pack, read_documents
from fasttune.methods.grpo import format_reward, task_reward
from fasttune.methods.kto import kto_rows
from fasttune.methods.preference import build_pairs, read_pairs
from fasttune.methods.rft import select_answers
from fasttune.sampling import judge
from fasttune.tasks.larger_number import LargerNumber

TASK = fasttune.tasks.get("larger_number")
EXAMPLES = TASK.load("train")[:3]  # gold answers: the larger of a and b
SMALL = {"max_steps": 2, "batch_size": 4, "limit": 8, "logging_steps": 1, "learning_rate": 5e-3, "warmup_ratio": 0.0}
SAMPLING = {"samples": 2, "max_new_tokens": 4, "batch_size": 8}
VALIDATED = {"eval_every": 1, "validation_split": "train", "validation_size": 4, "keep": "best"}
PINNED_SFT_LOSSES = [10.768756866455078, 10.731485366821289, 10.704651832580566]  # recorded from a run of this test


def judged_outputs(outputs_per_example):
    return [[judge(TASK, example, text) for text in outputs]
            for example, outputs in zip(EXAMPLES, outputs_per_example)]


def gold(example):
    return str(TASK.answer(example))


def smaller(example):
    return str(min(example["a"], example["b"]))


# --- builders on hand-made model outputs --------------------------------------------------------------------------

def test_pairs_reject_each_distinct_wrong_answer_and_count_prompts_the_model_always_got_right():
    outputs = [[smaller(EXAMPLES[0]), smaller(EXAMPLES[0]), "no idea"],  # two distinct wrong answers
               [gold(EXAMPLES[1]), f"It is {gold(EXAMPLES[1])}.", gold(EXAMPLES[1])],  # always right
               [gold(EXAMPLES[2]), "", smaller(EXAMPLES[2])]]
    built = build_pairs(TASK, EXAMPLES, judged_outputs(outputs))
    assert [(p.chosen, p.rejected) for p in built.pairs] == [
        (gold(EXAMPLES[0]), smaller(EXAMPLES[0])), (gold(EXAMPLES[0]), "no idea"),
        (gold(EXAMPLES[2]), ""), (gold(EXAMPLES[2]), smaller(EXAMPLES[2]))]
    assert built.pairs[0].prompt == TASK.format(EXAMPLES[0]).prompt
    assert built.always_right == [str(EXAMPLES[1]["id"])]
    assert built.summary()["wrong_samples"] == 5 and built.summary()["samples"] == 9


def test_kto_labels_gold_desirable_and_each_wrong_answer_undesirable_once():
    built = build_pairs(TASK, EXAMPLES[:1], judged_outputs([["1", "2", "1"]]))
    rows = kto_rows(built.pairs)
    assert [(row["completion"][0]["content"], row["label"]) for row in rows] == [
        (gold(EXAMPLES[0]), True), ("1", False), ("2", False)]


def test_rejection_sampling_keeps_distinct_answers_at_or_above_the_threshold():
    outputs = [[gold(EXAMPLES[0]), gold(EXAMPLES[0]), f"The larger is {gold(EXAMPLES[0])}"],
               [smaller(EXAMPLES[1]), "", "?"], [gold(EXAMPLES[2]), smaller(EXAMPLES[2]), gold(EXAMPLES[2])]]
    kept = select_answers(TASK, EXAMPLES, judged_outputs(outputs), threshold=1.0)
    assert [(example["id"], s.completion) for example, s in kept.samples] == [
        (EXAMPLES[0]["id"], gold(EXAMPLES[0])), (EXAMPLES[0]["id"], f"The larger is {gold(EXAMPLES[0])}"),
        (EXAMPLES[2]["id"], gold(EXAMPLES[2]))]
    assert kept.none_kept == [str(EXAMPLES[1]["id"])] and kept.summary()["sampled"] == 9
    assert len(select_answers(TASK, EXAMPLES, judged_outputs(outputs), threshold=0.0).samples) == 6  # not ""


def test_grpo_rewards_are_the_tasks_score_and_an_optional_parse_reward():
    completions = [[{"role": "assistant", "content": text}] for text in (gold(EXAMPLES[0]), smaller(EXAMPLES[0]),
                                                                        "none", f"= {gold(EXAMPLES[1])}")]
    rows = [0, 0, 0, 1]
    assert task_reward(TASK, EXAMPLES)(prompts=[None] * 4, completions=completions, example_index=rows) == [1.0, 0.0, 0.0, 1.0]
    assert format_reward(TASK, EXAMPLES)(prompts=[None] * 4, completions=completions,
                                         example_index=rows) == [1.0, 1.0, 0.0, 1.0]


def test_sampled_answers_are_parsed_by_the_tasks_parse_hook_which_sees_the_example():
    class ParsesByExample(type(TASK)):  # like ShopBench: the answer depends on the example
        def parse_answer(self, text, example):
            return self.answer(example) if text == "the gold one" else None

    task = ParsesByExample()
    completions = [[{"role": "assistant", "content": text}] for text in ("the gold one", "other")]
    assert judge(task, EXAMPLES[0], "the gold one").score == 1.0
    assert task_reward(task, EXAMPLES)(prompts=[None] * 2, completions=completions, example_index=[0, 1]) == [1.0, 0.0]
    assert format_reward(task, EXAMPLES)(prompts=[None] * 2, completions=completions,
                                         example_index=[0, 1]) == [1.0, 0.0]


def test_user_pairs_file_accepts_text_or_chat_prompts(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n" + json.dumps(
        {"prompt": [{"role": "user", "content": "3+3?"}], "chosen": "6", "rejected": "7"}) + "\n")
    pairs = read_pairs(path)
    assert [(p.prompt[0]["content"], p.chosen, p.rejected) for p in pairs] == [("2+2?", "4", "5"), ("3+3?", "6", "7")]


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "q", "chosen": "a"}, r"row 2 .*\n?.*missing field 'rejected'|line 2: missing field 'rejected'"),
    ({"prompt": "q", "chosen": "a", "rejected": ""}, r"row 2: field 'rejected' must be non-empty text"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, r"line 2: field 'prompt' should be str or list, got int"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, r"row 2: 'chosen' and 'rejected' are the same text"),
])
def test_bad_user_pairs_are_errors_naming_the_file_and_row(tmp_path, row, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(fasttune.FasttuneError, match=f"{path}.*({message})"):
        read_pairs(path)


def test_packing_cuts_full_blocks_with_a_separator_after_each_document_and_counts_the_tail():
    blocks, dropped = pack([[1, 2, 3], [4, 5], [6]], separator=0, block_size=4)
    assert blocks == [[1, 2, 3, 0], [4, 5, 0, 6]] and dropped == 1


def test_documents_come_from_blank_line_separated_text_or_a_jsonl_field(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\nsecond doc\n")
    assert read_documents(tmp_path / "a.txt") == ["first doc\nline two", "second doc"]
    (tmp_path / "a.jsonl").write_text('{"abstract": "x y"}\n{"abstract": 5}\n')
    with pytest.raises(fasttune.FasttuneError, match=r"a.jsonl, line 2: field 'abstract' should be str, got int"):
        read_documents(tmp_path / "a.jsonl", "abstract")


def test_method_settings_are_checked_together_and_unknown_methods_suggest_names():
    with pytest.raises(fasttune.FasttuneError, match="batch_size x gradient_accumulation must be a multiple"):
        fasttune.GrpoConfig(batch_size=6, num_generations=4)
    with pytest.raises(fasttune.FasttuneError, match="sampling.samples must be positive.*beta must be positive"):
        fasttune.DpoConfig(beta=0, sampling={"samples": 0})
    with pytest.raises(fasttune.FasttuneError, match="Unknown training method 'dpp'. Did you mean: dpo"):
        fasttune.train(None, TASK, "dpp")


def test_plain_torch_log_prob_head_matches_log_softmax_and_its_gradient():
    torch.manual_seed(0)
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    targets = torch.tensor([0, 3, 10, 3, 7])
    log_probs, entropy, _, _, is_top1 = backend._PlainLogProbs.apply(
        hidden, weight, None, targets, 0.7, 4, None, 1.0, ("entropy", "is_top1"))
    reference = torch.log_softmax(hidden @ weight.T / 0.7, dim=-1)
    assert torch.allclose(log_probs, reference[torch.arange(5), targets], atol=1e-5)
    assert torch.allclose(entropy, -(reference.exp() * reference).sum(-1), atol=1e-5)
    assert torch.equal(is_top1, reference.argmax(-1) == targets)
    log_probs.sum().backward()
    assert hidden.grad is not None and torch.isfinite(weight.grad).all()


# --- each method trains on the tiny Llama --------------------------------------------------------------------------

class EvenCodeSum(LargerNumber):
    """Right when the reply's character codes add up to an even number: random weights are right half the time."""

    name = "even_code_sum"

    def answer(self, example):
        return True

    def parse_answer(self, text, example):
        return sum(map(ord, text)) % 2 == 0


METHOD_SETTINGS = {
    "cpt": {"block_size": 32},
    "dpo": {"sampling": SAMPLING},
    "orpo": {"sampling": SAMPLING},
    "kto": {"sampling": SAMPLING},
    "grpo": {"max_completion_length": 4, "format_reward": 0.5, "batch_size": 8},  # 2 groups of 4 a step
    "rft": {"sampling": SAMPLING, "threshold": 0.0},  # a random model is never right: keep every non-empty answer
}


@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
def test_method_trains_a_few_steps_and_its_adapter_loads_and_evaluates(method, tiny_model_dir, tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    task = EvenCodeSum() if method == "grpo" else TASK  # GRPO learns only where rewards differ within a group
    run = fasttune.train(model, task, method, output_dir=str(tmp_path),
                         **{**SMALL, **VALIDATED, **METHOD_SETTINGS[method]})
    losses = [loss for _, loss in run.losses]
    assert [step for step, _ in run.validation["history"]] == [1, 2]  # the task's metric, whatever the method
    assert run.validation["kept_step"] == run.validation["best_step"]
    logged = [r for r in read_log(run.output_dir / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in logged] == [1, 2] and all(r["tokens_per_second"] > 0 for r in logged)
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    lora_b = [p for n, p in model.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero: the optimizer moved it
    if method != "grpo":  # GRPO's loss is ~0 on policy by construction; its update shows in the weights
        assert len(set(losses)) > 1
    card = json.loads((run.adapter_dir / "fasttune.json").read_text())
    assert card["method"] == method and card["data"] == run.data and run.data
    assert json.loads((run.output_dir / "config.json").read_text())["method"] == method
    if method in ("dpo", "orpo", "kto"):  # pairs built from the task: 8 prompts x 2 samples
        assert run.data["prompts"] == 8 and run.data["samples"] == 16
        assert run.data["pairs"] + run.data["always_right"] >= 8 and run.data["pairs"] <= run.data["wrong_samples"]
    reloaded = fasttune.load(run.adapter_dir, dtype=torch.float32)
    # EvenCodeSum's choices never parse to its gold answer, which log-likelihood scoring refuses: generate there
    engine = "generate" if method == "grpo" else "auto"
    report = fasttune.evaluate(reloaded, task, config=fasttune.EvalConfig(limit=4, engine=engine))
    assert report.n == 4 and reloaded.card["method"] == method


def test_sampled_negatives_are_the_same_for_the_same_seed(tiny_model_dir):
    from fasttune.sampling import SamplingConfig, sample_judged

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    examples = TASK.load("train")[:4]
    config = SamplingConfig(**SAMPLING)
    first, again, other = (sample_judged(model, TASK, examples, config, seed) for seed in (0, 0, 1))
    texts = [[judged.text for judged in row] for row in first]
    assert texts == [[judged.text for judged in row] for row in again]
    assert texts != [[judged.text for judged in row] for row in other]


def test_cpt_with_embeddings_then_sft_keeps_training_the_same_adapter(tiny_model_dir, tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    (tmp_path / "corpus.txt").write_text("\n\n".join(f"Number {i} is smaller than {i + 1}." for i in range(60)))
    cpt = fasttune.train(model, TASK, "cpt", text_file=str(tmp_path / "corpus.txt"), block_size=32,
                         train_embeddings=True, output_dir=str(tmp_path / "cpt"), **SMALL)
    assert cpt.data["documents"] == 8 and cpt.data["blocks"] == cpt.data["tokens"] // 32
    with safe_open(cpt.adapter_dir / "adapter_model.safetensors", "pt") as weights:
        assert any("embed_tokens" in key for key in weights.keys())
    sft = fasttune.train(model, TASK, "sft", output_dir=str(tmp_path / "sft"), **SMALL)
    assert sft.model.card["continued_from"] == str(cpt.adapter_dir)
    assert fasttune.evaluate(fasttune.load(sft.adapter_dir, dtype=torch.float32), TASK, limit=4).n == 4


def test_the_registry_lists_every_method_under_its_configs_name():
    from fasttune.methods import METHODS

    assert list(METHODS) == ["sft", "cpt", "dpo", "orpo", "kto", "grpo", "rft"]
    for name, method in METHODS.items():
        assert method.config.method == name
        assert method.config().method == name and "method" not in dataclasses.asdict(method.config())
    assert fasttune.DpoConfig.method == "dpo" and fasttune.TrainConfig.method == "sft"
    # config.json's form (method name + fields) builds the same config again.
    from fasttune.configs import config_dict

    recorded = json.loads(json.dumps(config_dict(fasttune.KtoConfig(beta=0.2, sampling={"samples": 3}))))
    assert recorded["method"] == "kto"
    assert METHODS[recorded.pop("method")].config(**recorded) == fasttune.KtoConfig(beta=0.2, sampling={"samples": 3})


def test_method_modules_never_import_training():
    import ast
    from pathlib import Path

    folder = Path(fasttune.__file__).parent / "methods"
    sources = sorted(folder.glob("*.py"))
    assert {path.stem for path in sources} >= {"sft", "cpt", "dpo", "orpo", "kto", "grpo", "rft", "preference"}
    for path in sources:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        assert "fasttune.training" not in imported, path


def test_the_tiny_models_first_sft_losses_are_pinned(tiny_model_dir, tmp_path):
    """CPU runs are bitwise reproducible: a change in the data, the masks or the trainer shows here first."""
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    run = fasttune.train(model, TASK, output_dir=str(tmp_path), max_steps=3, batch_size=4, limit=12,
                         logging_steps=1, save_steps=None)
    assert [step for step, _ in run.losses] == [1, 2, 3]
    assert [loss for _, loss in run.losses] == pytest.approx(PINNED_SFT_LOSSES, abs=1e-6)
