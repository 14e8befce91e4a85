"""Weighted adapter merging (PEFT add_weighted_adapter) on the tiny random Llama: exact deltas, reload, errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

import fasttune
from fasttune import data


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir, tmp_path_factory):
    task = fasttune.tasks.get("larger_number")
    folders = []
    for seed in (0, 1):
        run = fasttune.train(fasttune.load(tiny_model_dir, dtype=torch.float32), task, max_steps=3, batch_size=8,
                             limit=24, seed=seed, learning_rate=5e-3, lora=fasttune.LoraConfig(r=4, alpha=8),
                             output_dir=str(tmp_path_factory.mktemp(f"adapter{seed}")))
        folders.append(run.adapter_dir)
    return folders


def _logits(folder):
    model = fasttune.load(folder, dtype=torch.float32)
    task = fasttune.tasks.get("larger_number")
    ids = torch.tensor([data.prompt_ids(model.tokenizer, task.format(task.load("test")[0]).prompt)])
    model.model.eval()
    with torch.no_grad():
        return model.model(input_ids=ids).logits


def _deltas(folder):
    """module name -> scaling * B @ A, read from the adapter's safetensors."""
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = load_file(folder / "adapter_model.safetensors")
    scaling = config["lora_alpha"] / config["r"]
    return {key.removesuffix(".lora_A.weight"): scaling * weights[key.replace("lora_A", "lora_B")] @ weights[key]
            for key in weights if key.endswith("lora_A.weight")}


def _factors(folder):
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = load_file(folder / "adapter_model.safetensors")
    return config["lora_alpha"] / config["r"], weights


def test_weights_one_and_zero_reproduce_adapter_a(two_adapters, tmp_path):
    merged = fasttune.merge_adapters(two_adapters, weights=[1.0, 0.0], method="linear", out_dir=tmp_path / "m")
    torch.testing.assert_close(_logits(merged), _logits(two_adapters[0]), atol=1e-5, rtol=0)
    card = json.loads((merged / "fasttune.json").read_text())
    assert card["merge"]["weights"] == [1.0, 0.0] and len(card["merge"]["adapters"]) == 2
    assert card["task"]["name"] == "larger_number"


def test_linear_half_half_equals_the_hand_computed_weighted_delta(two_adapters, tmp_path):
    merged = fasttune.merge_adapters(two_adapters, weights=[0.5, 0.5], method="linear", out_dir=tmp_path / "m")
    (scale_a, a), (scale_b, b) = _factors(two_adapters[0]), _factors(two_adapters[1])
    got = _deltas(merged)
    assert len(got) == 14  # 7 projections x 2 layers
    for module, delta in got.items():
        # PEFT's linear: sum of sqrt(w * scaling)-weighted B's times sum of sqrt(w * scaling)-weighted A's
        root_a, root_b = (0.5 * scale_a) ** 0.5, (0.5 * scale_b) ** 0.5
        lora_b = root_a * a[f"{module}.lora_B.weight"] + root_b * b[f"{module}.lora_B.weight"]
        lora_a = root_a * a[f"{module}.lora_A.weight"] + root_b * b[f"{module}.lora_A.weight"]
        torch.testing.assert_close(delta, lora_b @ lora_a, atol=1e-6, rtol=1e-5)


def test_svd_at_full_rank_gives_the_exact_weighted_sum_of_updates(two_adapters, tmp_path):
    merged = fasttune.merge_adapters(two_adapters, weights=[0.5, 0.5], method="svd", svd_rank=8,
                                     out_dir=tmp_path / "m")
    a, b, got = _deltas(two_adapters[0]), _deltas(two_adapters[1]), _deltas(merged)
    for module, delta in got.items():
        torch.testing.assert_close(delta, 0.5 * a[module] + 0.5 * b[module], atol=1e-6, rtol=1e-4)


def test_dare_linear_at_density_one_drops_nothing_and_equals_linear(two_adapters, tmp_path):
    dare = fasttune.merge_adapters(two_adapters, weights=[0.5, 0.5], method="dare_linear", density=1.0,
                                   out_dir=tmp_path / "dare")
    linear = fasttune.merge_adapters(two_adapters, weights=[0.5, 0.5], method="linear", out_dir=tmp_path / "lin")
    for module, delta in _deltas(dare).items():
        torch.testing.assert_close(delta, _deltas(linear)[module])


def test_ties_merge_loads_and_differs_from_both_inputs(two_adapters, tmp_path):
    merged = fasttune.merge_adapters(two_adapters, weights=[0.5, 0.5], method="ties", density=0.5,
                                     out_dir=tmp_path / "ties")
    logits = _logits(merged)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, _logits(two_adapters[0])) and not torch.allclose(logits, _logits(two_adapters[1]))


def test_merge_problems_are_reported_together(two_adapters, tmp_path):
    with pytest.raises(fasttune.FasttuneError, match=r"one weight per adapter.*method must be one of"):
        fasttune.merge_adapters(two_adapters, weights=[1.0], method="mean", out_dir=tmp_path / "m")


def test_merging_adapters_of_different_bases_is_refused(two_adapters, tmp_path, embedded_dir):
    other = tmp_path / "other"
    other.mkdir()
    for path in two_adapters[1].iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    card = json.loads((other / "fasttune.json").read_text())
    (other / "fasttune.json").write_text(json.dumps({**card, "base_model": str(embedded_dir)}))
    with pytest.raises(fasttune.FasttuneError, match="different base models"):
        fasttune.merge_adapters([two_adapters[0], other], weights=[0.5, 0.5], out_dir=tmp_path / "m")


def test_a_merged_adapter_keeps_the_chat_template_its_inputs_were_trained_with(two_adapters, tmp_path):
    out = fasttune.merge_adapters(two_adapters, weights=[0.5, 0.5], out_dir=tmp_path / "m")
    trained_with = json.loads((two_adapters[0] / "fasttune.json").read_text())["chat_template"]
    assert trained_with["name"] == "model" and "<|im_start|>" in trained_with["text"]
    assert json.loads((out / "fasttune.json").read_text())["chat_template"] == trained_with


def test_merging_adapters_trained_with_different_chat_templates_is_refused(two_adapters, tmp_path):
    from fasttune import chat_templates

    other = tmp_path / "other"
    other.mkdir()
    for path in two_adapters[1].iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    card = json.loads((other / "fasttune.json").read_text())
    chatml = {"name": "chatml", "text": chat_templates.template_text("chatml")[1]}
    (other / "fasttune.json").write_text(json.dumps({**card, "chat_template": chatml}))
    with pytest.raises(fasttune.FasttuneError, match=r"different chat templates \(chat_template=\['model', 'chatml'\]"):
        fasttune.merge_adapters([two_adapters[0], other], weights=[0.5, 0.5], out_dir=tmp_path / "m")
