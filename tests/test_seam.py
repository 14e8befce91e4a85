"""fasttune.seam, the benchmarks' one way into training: rows as train() tokenizes them, and its SFT trainer."""

import pytest
import torch

import fasttune
from fasttune.seam import sft_rows, sft_trainer


def test_an_example_longer_than_max_seq_length_is_an_error_not_a_dropped_row(tiny_model_dir):
    from transformers import AutoTokenizer

    task = fasttune.tasks.get("larger_number")
    examples = task.load("train")[:3]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = sft_rows(task, examples, tokenizer, end_of_turn="<|im_end|>", max_seq_length=1024)
    assert len(rows) == 3 and all(len(r["input_ids"]) == len(r["completion_mask"]) for r in rows)
    shortest = min(len(row["input_ids"]) for row in rows)
    with pytest.raises(fasttune.FasttuneError, match=r"of 3 'larger_number' examples are longer than max_seq_length "
                                                     rf"\(max_seq_length={shortest - 1}, ids: train-"):
        sft_rows(task, examples, tokenizer, end_of_turn="<|im_end|>", max_seq_length=shortest - 1)


def test_the_trainer_attaches_the_configured_lora_once_and_needs_an_output_folder(tiny_model_dir, tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    rows = [{"input_ids": list(range(100, 110)), "completion_mask": [0] * 5 + [1] * 5}] * 4
    with pytest.raises(fasttune.FasttuneError, match=r"needs a folder for its checkpoints \(output_dir=None\)"):
        sft_trainer(model, rows, fasttune.TrainConfig(max_steps=1))
    config = fasttune.TrainConfig(max_steps=1, batch_size=2, gradient_checkpointing=False, output_dir=str(tmp_path),
                                  lora=fasttune.LoraConfig(r=2, alpha=2, target_modules=["q_proj"]))
    trainer = sft_trainer(model, rows, config)
    assert model.model.peft_config["default"].r == 2 and trainer.model is model.model
    assert (trainer.args.per_device_train_batch_size, trainer.args.padding_free) == (2, False)
    again = sft_trainer(model, rows, fasttune.TrainConfig(max_steps=1, output_dir=str(tmp_path)))  # keeps r=2
    assert list(model.model.peft_config) == ["default"] and model.model.peft_config["default"].r == 2
    again.train()
    assert [entry["step"] for entry in again.state.log_history if "train_loss" in entry] == [1]
