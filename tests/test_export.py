"""Export on the tiny random Llama (256 wide, so llama.cpp's K-quants apply): adapter, merged 16-bit, GGUF,
each loaded back; and the embedded model's GGUF q8_0 scored against its merged weights (slow)."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import fasttune
from fasttune import data
from fasttune.exporting import parity
from fasttune.engines import GgufEngine


@pytest.fixture(scope="module")
def exported(tiny_wide_model_dir, tmp_path_factory):
    model = fasttune.load(tiny_wide_model_dir, dtype=torch.float32)
    task = fasttune.tasks.get("larger_number")
    run = fasttune.train(model, task, max_steps=4, batch_size=8, limit=32, learning_rate=5e-3,
                         output_dir=str(tmp_path_factory.mktemp("run")))
    report = fasttune.evaluate(run.model, task, limit=4)
    result = fasttune.export(run, tmp_path_factory.mktemp("exports") / "tiny", gguf_quants=("f16", "q8_0", "q4_k_m"),
                             merged_dtype="float16", reports=[report])
    return run, report, result


def _prompt_ids(tokenizer):
    task = fasttune.tasks.get("larger_number")
    return torch.tensor([data.prompt_ids(tokenizer, task.format(task.load("test")[0]).prompt)])


def test_export_writes_every_format_and_no_partial_folder(exported):
    _, _, result = exported
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["adapter", "export.json", "gguf", "merged_16bit"]
    assert sorted(result.gguf_files) == ["f16", "q4_k_m", "q8_0"] and all(p.is_file() for p in result.gguf_files.values())
    assert not list(result.out_dir.parent.glob(".*partial*"))
    assert not list(result.out_dir.rglob("*.bin")) and not list(result.out_dir.rglob("*.pt"))
    summary = json.loads((result.out_dir / "export.json").read_text())
    assert [check["artifact"] for check in summary["checks"]] == [
        "adapter", "merged_16bit", "gguf f16", "gguf q8_0", "gguf q4_k_m"]


def test_exported_adapter_reloads_with_identical_logits_and_carries_its_card(exported):
    run, report, result = exported
    reloaded = fasttune.load(result.adapter_dir, dtype=torch.float32)
    run.model.model.eval()
    ids = _prompt_ids(reloaded.tokenizer)
    with torch.no_grad():
        assert torch.equal(reloaded.model(input_ids=ids).logits, run.model.model(input_ids=ids).logits)
    card = json.loads((result.adapter_dir / "fasttune.json").read_text())
    assert card["task"]["name"] == "larger_number" and card["config"]["max_steps"] == 4
    assert card["evaluations"][0]["metrics"] == report.metrics and card["evaluations"][0]["n"] == 4


def test_merged_16bit_is_base_plus_adapter_merged_in_float32_then_rounded_once(exported, tiny_wide_model_dir):
    """Merging in float32 gives the logits of base+adapter within 1e-4; the export is that merge rounded to 16 bits.

    (The 16-bit rounding itself moves this model's logits by up to ~1e-3, so 1e-4 holds before the cast.)
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run, _, result = exported
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    lora = load_file(result.adapter_dir / "adapter_model.safetensors")
    by_hand = AutoModelForCausalLM.from_pretrained(tiny_wide_model_dir, dtype=torch.float32)
    parameters = dict(by_hand.named_parameters())
    with torch.no_grad():
        for key in [k for k in lora if k.endswith("lora_A.weight")]:
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
            parameters[name] += config["lora_alpha"] / config["r"] * lora[key.replace("lora_A", "lora_B")] @ lora[key]
    ids = _prompt_ids(run.model.tokenizer)
    with torch.no_grad():
        assert (by_hand(input_ids=ids).logits - run.model.model(input_ids=ids).logits).abs().max() < 1e-4
    with safe_open(result.merged_dir / "model.safetensors", "pt") as weights:
        for key in weights.keys():
            tensor = weights.get_tensor(key)
            assert tensor.dtype == torch.float16
            torch.testing.assert_close(tensor, parameters[key].detach().to(torch.float16), rtol=1e-3, atol=0)
    assert (result.merged_dir / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (result.merged_dir / "tokenizer_config.json").read_text())


def test_gguf_f16_greedy_tokens_match_transformers(exported):
    _, _, result = exported
    checks = {check.artifact: check for check in result.checks}
    f16 = checks["gguf f16"]
    assert f16.reference == "merged_16bit" and f16.agreement == 1.0 and f16.same_prompt_tokens
    assert all(len(tokens) > 0 for tokens in f16.tokens)
    # independently of the export's own check: one prompt, token by token
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32)
    ids = data.prompt_ids(tokenizer, [{"role": "user", "content": "Name a colour."}])
    expected = merged.generate(input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                               eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))[0, len(ids):].tolist()
    assert GgufEngine.open(result.gguf_files["f16"]).generate([ids], 8)[0][0].tokens == expected[:8]


def test_quantized_ggufs_are_real_k_quants_and_answer(exported):
    import gguf as gguf_lib

    _, _, result = exported
    types = {tensor.tensor_type.name for tensor in gguf_lib.GGUFReader(result.gguf_files["q4_k_m"]).tensors}
    assert "Q4_K" in types
    assert "Q8_0" in {tensor.tensor_type.name for tensor in gguf_lib.GGUFReader(result.gguf_files["q8_0"]).tensors}
    for quant in ("q8_0", "q4_k_m"):
        model = GgufEngine.open(result.gguf_files[quant])
        assert model.generate([model.prompt_ids([{"role": "user", "content": "Hi"}])], 4)[0][0].tokens


def test_modelfile_template_renders_a_turn_like_the_chat_template(exported):
    _, _, result = exported
    from transformers import AutoTokenizer

    text = result.modelfiles["q8_0"].read_text()
    assert text.startswith(f"FROM ./{result.gguf_files['q8_0'].name}\n") and 'PARAMETER stop "<|im_end|>"' in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    system = re.search(r'SYSTEM """(.*?)"""', text, re.S).group(1)
    rendered = (template.replace("{{ .System }}", system).replace("{{ .Prompt }}", "Hello?")
                .replace("{{ .Response }}", "Hi."))
    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    assert rendered == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."}], tokenize=False)


def test_evaluate_scores_a_gguf_file_with_llama_cpp(exported):
    _, _, result = exported
    task = fasttune.tasks.get("larger_number")
    merged = fasttune.evaluate(fasttune.load(result.merged_dir, dtype=torch.float32), task, limit=6)
    report = fasttune.evaluate(result.gguf_files["f16"], task, limit=6)
    assert report.engine == "loglik" and report.n == 6 and report.model.endswith("-f16.gguf")
    assert [r["output"] for r in report.records] == [r["output"] for r in merged.records]
    check = parity(merged, report)
    assert check.delta == 0.0 and check.agreement == 1.0 and check.n == 6
    generated = fasttune.evaluate(result.gguf_files["q8_0"], task,
                                  config=fasttune.EvalConfig(limit=2, engine="generate", max_new_tokens=4))
    assert generated.engine == "generate" and generated.n == 2


def test_gguf_choice_scores_evaluate_the_prompt_once_and_equal_scoring_each_choice_from_scratch(exported):
    _, _, result = exported
    model = GgufEngine.open(result.gguf_files["f16"])
    task = fasttune.tasks.get("larger_number")
    examples = task.load("test")[:4]
    evaluated = []
    evaluate_tokens = model.llama.eval
    model.llama.eval = lambda tokens: (evaluated.append(list(tokens)), evaluate_tokens(tokens))
    expected_picks = []
    for example in examples:
        prompt = model.tokenize(model.render(task.format(example).prompt))
        # a longer continuation first: the shorter ones after it must not see its tokens
        texts = [f"The larger number is {task.answer(example)}."] + task.choices(example)
        continuations = [model.tokenize(text) + [model.end_of_turn_id] for text in texts]
        evaluated.clear()
        scores = model.continuation_logprobs(prompt, continuations)
        assert evaluated == [prompt] + continuations
        from_scratch = []
        for continuation in continuations:
            model.llama.reset()
            evaluate_tokens(prompt + continuation)
            logits = torch.tensor(model.llama.scores[len(prompt) - 1:len(prompt) + len(continuation) - 1],
                                  dtype=torch.float64)
            from_scratch.append(torch.log_softmax(logits, -1)[range(len(continuation)), continuation].sum().item())
        assert scores == pytest.approx(from_scratch, rel=1e-9)
        expected_picks.append(texts[1 + max(range(2), key=lambda i: from_scratch[1 + i])])
    assert [r["output"] for r in fasttune.evaluate(model, task, limit=4).records] == expected_picks


def test_a_failing_step_is_named_and_leaves_no_export_folder(tiny_wide_model_dir, tmp_path):
    broken = tmp_path / "llama.cpp"
    broken.mkdir()
    (broken / "convert_hf_to_gguf.py").write_text("import sys\nsys.exit('converter exploded')\n")
    out = tmp_path / "export"
    with pytest.raises(fasttune.FasttuneError, match=r"Export step 'write GGUF f16' failed.*converter exploded"):
        fasttune.export(tiny_wide_model_dir, out, formats=("gguf",), gguf_quants=("f16",), llama_cpp_dir=broken)
    assert not out.exists()



def test_a_bug_inside_an_export_step_keeps_its_type_and_names_the_step(tiny_wide_model_dir, tmp_path, monkeypatch):
    from fasttune import exporting

    def bug(*args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(exporting, "merge_to_16bit", bug)
    out = tmp_path / "export"
    with pytest.raises(ZeroDivisionError) as raised:  # fasttune's own bug, not a FasttuneError the user should fix
        fasttune.export(tiny_wide_model_dir, out, formats=("merged_16bit",))
    assert raised.value.__notes__ == ["fasttune: raised during export step 'merge LoRA into bfloat16 weights'"]
    assert not out.exists()


def test_a_full_disk_during_an_export_step_is_a_user_error_naming_the_step(tiny_wide_model_dir, tmp_path,
                                                                           monkeypatch):
    from fasttune import exporting

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exporting, "merge_to_16bit", full_disk)
    with pytest.raises(fasttune.FasttuneError, match=r"Export step 'merge LoRA into bfloat16 weights' failed: "
                                                     r"OSError: \[Errno 28\] No space left on device"):
        fasttune.export(tiny_wide_model_dir, tmp_path / "export", formats=("merged_16bit",))

def test_export_refuses_bad_requests_before_any_work(tiny_wide_model_dir, tmp_path):
    with pytest.raises(fasttune.FasttuneError, match="Unknown export format 'onnx'"):
        fasttune.export(tiny_wide_model_dir, tmp_path / "a", formats=("onnx",))
    with pytest.raises(fasttune.FasttuneError, match=r"Unknown GGUF type \(gguf_quants=\['q9'\]\)"):
        fasttune.export(tiny_wide_model_dir, tmp_path / "a", gguf_quants=("q9",))
    with pytest.raises(fasttune.FasttuneError, match="converter is missing.*llama_cpp_dir"):
        fasttune.export(tiny_wide_model_dir, tmp_path / "a", formats=("gguf",), llama_cpp_dir=tmp_path)
    with pytest.raises(fasttune.FasttuneError, match="no adapter to export"):
        fasttune.export(tiny_wide_model_dir, tmp_path / "a", formats=("adapter",))
    (tmp_path / "exists").mkdir()
    with pytest.raises(fasttune.FasttuneError, match="export folder exists"):
        fasttune.export(tiny_wide_model_dir, tmp_path / "exists", formats=("merged_16bit",))


@pytest.mark.slow
def test_embedded_model_gguf_q8_0_scores_within_one_point_of_the_merged_model(tmp_path):
    task = fasttune.tasks.get("larger_number")
    # 20 steps: after 10, q8_0 flipped 4-5% of near-tied answers (delta 1-3 points on 60-200 pairs), after 20 none
    run = fasttune.train(fasttune.load(), task, limit=320, batch_size=16, output_dir=str(tmp_path / "run"))
    result = fasttune.export(run, tmp_path / "export", formats=("merged_16bit", "gguf"), gguf_quants=("q8_0",))
    merged = fasttune.evaluate(fasttune.load(result.merged_dir), task, limit=200)
    gguf_report = fasttune.evaluate(result.gguf_files["q8_0"], task, limit=200)
    check = parity(merged, gguf_report)
    assert abs(check.delta) <= 0.01 and check.agreement >= 0.97
    assert Path(result.modelfiles["q8_0"]).is_file()
