"""Shared fixtures: the real datasets in ../shared/data, the embedded model, and a tiny random Llama."""

import os
from pathlib import Path

import pytest

BLOCK_SOCKETS = """
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:]))
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = refuse
"""
"""The start of a script run in a fresh process whose sockets refuse to connect; `attempts` records who asked."""

DATA = Path(os.environ.get("FASTTUNE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"datasets not found at {DATA} (set FASTTUNE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from fasttune import embedded

    return embedded.hf_folder()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir) -> Path:
    """A 2-layer, 64-wide Llama with random weights and SmolLM2's tokenizer and chat template."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny-llama"), embedded_dir, hidden=64)


@pytest.fixture(scope="session")
def tiny_wide_model_dir(tmp_path_factory, embedded_dir) -> Path:
    """The tiny Llama 256 wide: llama.cpp's K-quants pack rows in blocks of 256, narrower rows fall back to others."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny-llama-256"), embedded_dir, hidden=256)


def _tiny_llama(folder: Path, embedded_dir: Path, hidden: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True, eos_token_id=end, pad_token_id=end,
                         bos_token_id=1)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def whole_row_logprob(model, prompt: list[int], choice: str) -> float:
    """The reference score of a choice: prompt + choice + end of turn run as one row, its continuation's summed
    log-probability (what every choice scorer must equal)."""
    import torch

    from fasttune import data

    continuation = data.completion_ids(model.tokenizer, choice, model.end_of_turn)
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([prompt + continuation], device=model.device)).logits[0].float()
    log_probs = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
    return log_probs[torch.arange(len(continuation)), torch.tensor(continuation)].sum().item()


def check_choice_scores(model, engine, tolerance: float) -> None:
    """`engine`'s choice scores, in batches of a few rows, against `whole_row_logprob`; the output layer sees only
    the positions that predict a choice's tokens (on the whole-row scorer)."""
    from fasttune import data

    prompts = [list(range(40, 40 + n)) for n in (9, 3, 17, 5, 12)]
    choices = [["yes", "no"], ["A", "B", "C"], ["one two three", "x"], ["maybe", "no"], ["yes", "a longer answer"]]
    output_rows = []
    hook = model.model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: output_rows.append(output.shape[:-1].numel()))
    try:
        scores = engine.choice_logprobs(prompts, choices, batch_tokens=60)
    finally:
        hook.remove()
    for prompt, options, got in zip(prompts, choices, scores, strict=True):
        assert got == pytest.approx([whole_row_logprob(model, prompt, choice) for choice in options], abs=tolerance)
    assert len({round(score, 3) for options in scores for score in options}) > 5  # the scores differ
    assert len(output_rows) > 3  # several batches
    if not engine.prompt_cache:
        assert sum(output_rows) == sum(len(data.completion_ids(model.tokenizer, choice, model.end_of_turn))
                                       for options in choices for choice in options)
