"""One stack of the speed benchmark (benchmarks/speed.py) on one model, in its own process: `python speed_worker.py
SPEC` trains every data kind of the spec and writes the measurements to the spec's result file.

Its own process, because Unsloth patches transformers globally and must not touch the HF stack: only the worker of an
Unsloth stack imports it (fasttune's on a GPU, through fasttune's loading). fasttune's stack trains through
fasttune.seam, the one declared way into fasttune's training, and the public API.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
import zlib
from pathlib import Path

import torch

import fasttune
from fasttune import memory
from fasttune.seam import sft_trainer

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_RANK = 16  # alpha is the same in every stack: a scale of 1
WEIGHT_DECAY = 0.001  # the notebooks' value, used by every stack


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Rows padded on the right to the longest, loss on completion tokens only (what hand-written loops do)."""
    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        ids = torch.tensor(row["input_ids"])
        input_ids[i, : len(ids)], attention[i, : len(ids)] = ids, 1
        labels[i, : len(ids)] = torch.where(torch.tensor(row["completion_mask"]) == 1, ids, -100)
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "labels": labels.to(device)}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    stack = spec["stack"]
    memory.limit_memory(spec["memory_limit_gib"])  # before any weights are on the GPU
    fasttune_stack = stack.startswith("fasttune")  # fasttune, a variant of it, or an earlier version of it
    if stack == "hf-peft":
        model, pad_id = _hf_peft_model(spec)
    elif fasttune_stack:
        model, pad_id = _fasttune_model(spec)
    else:
        model, pad_id = _unsloth_model(spec)
    measurements = {}
    for kind, rows_path in spec["rows"].items():
        rows = json.loads(Path(rows_path).read_text())
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            if stack in ("unsloth-padded", "hf-peft"):
                shared_lora_init(model, spec["seed"])
                measurement = plain_loop(model, rows, spec, pad_id)
            else:  # fasttune's trainer attaches its LoRA on the first kind: initialise after building
                trainer = (fasttune_trainer(model, rows, spec) if fasttune_stack
                           else _notebook_trainer(model, rows, spec))
                shared_lora_init(model.model if fasttune_stack else model, spec["seed"])
                with _training_scope() if fasttune_stack else contextlib.nullcontext():
                    measurement = timed_trainer_run(trainer)
                del trainer
        except torch.OutOfMemoryError as error:
            measurement = {"error": f"out of GPU memory: {str(error)[:200]}"}
        measurement["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        measurements[kind] = measurement
        Path(spec["result"]).write_text(json.dumps(measurements))
        if fasttune_stack and spec["profile_dir"]:
            prefix = Path(spec["profile_dir"], f"profile-{Path(spec['model_dir']).name}-{kind}")
            profile_steps(model, rows, spec, prefix)


def shared_lora_init(model, seed: int) -> None:
    """The same LoRA starting point in every stack: A uniform in +-1/sqrt(fan-in), drawn from a generator seeded by
    the layer's name; B zero."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name:
                key = name[name.find("layers."):]
                generator = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
                bound = parameter.shape[1] ** -0.5
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound)
            elif "lora_B" in name:
                parameter.zero_()


def plain_loop(model, rows: list[dict], spec: dict, pad_id: int) -> dict:
    """A hand-written training loop: padded batches of `rows_per_step`, AdamW, linear warmup and decay, gradients
    clipped at norm 1."""
    import transformers

    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec["lr"], weight_decay=WEIGHT_DECAY, fused=device.type == "cuda")
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, spec["warmup_lr_steps"], spec["steps"])
    model.train()
    per_step = spec["rows_per_step"]
    losses, ends, start = [], [], _now()
    for step in range(spec["steps"]):
        batch = pad_batch(rows[step * per_step: (step + 1) * per_step], pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # as Trainer's bf16
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # Trainer's default max_grad_norm
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        ends.append(_now())
    return {"losses": losses, "step_ends": ends, "start": start}


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _training_scope():
    """The hooks fasttune.train runs its trainer under (an earlier fasttune may have none)."""
    import fasttune.seam

    return getattr(fasttune.seam, "training_scope", contextlib.nullcontext)()


def timed_trainer_run(trainer, same_order: bool = True) -> dict:
    """Per-step end times, losses and the seconds of each step's parts (forward and backward, optimizer, the
    rest) of a trainer's run; with `same_order` the rows are taken in dataset order. Timing the parts syncs the
    device three more times a step."""
    import transformers

    ends, marks = [], {}
    parts = {"model": [], "optimizer": [], "other": []}

    class StepClock(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            marks["begin"] = _now()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            marks["backward"] = _now()

        def on_optimizer_step(self, args, state, control, **kwargs):
            marks["optimizer"] = _now()

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(_now())
            step = ends[-1] - (ends[-2] if len(ends) > 1 else marks["begin"])
            if "backward" in marks:  # trainers that call every hook
                parts["model"].append(marks["backward"] - marks["begin"])
                parts["optimizer"].append(marks["optimizer"] - marks["backward"])
                parts["other"].append(step - parts["model"][-1] - parts["optimizer"][-1])

    trainer.add_callback(StepClock())
    if same_order:
        trainer.args.train_sampling_strategy = "sequential"  # every stack takes the rows in the same order
    start = _now()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    notes = {"padding_free": bool(getattr(trainer.args, "padding_free", False)),
             "gradient_checkpointing": trainer.args.gradient_checkpointing,
             "micro_batch": trainer.args.per_device_train_batch_size,
             "accumulation": trainer.args.gradient_accumulation_steps}
    return {"losses": losses, "step_ends": ends, "start": start, "notes": notes,
            **({"parts": parts} if parts["model"] else {})}


def _fasttune_model(spec: dict):
    model = fasttune.load(spec["model_dir"], max_seq_length=8192, max_memory_gib=spec["memory_limit_gib"])
    # fasttune decides checkpointing from the longest row of the run: here, of every data kind the worker trains
    spec["longest_row"] = max(len(row["input_ids"]) for path in spec["rows"].values()
                              for row in json.loads(Path(path).read_text()))
    return model, model.tokenizer.pad_token_id


def fasttune_trainer(model, rows: list[dict], spec: dict):
    """fasttune's SFT trainer on `rows`, through its benchmark seam. The first call attaches LoRA (r=16 on every
    projection), with gradient checkpointing decided from the free memory (within the model's cap) and the longest
    row of all the worker's data (`spec["longest_row"]`, default: of `rows`); the choice is kept in `spec` for the
    later calls."""
    decided = {key: spec[key] for key in ("padding_free", "gradient_checkpointing") if spec.get(key) is not None}
    config = fasttune.TrainConfig(
        max_steps=spec["steps"], batch_size=spec["rows_per_step"], learning_rate=spec["lr"],
        **{**spec.get("variant_config", {}), **decided},
        warmup_ratio=(spec["warmup_lr_steps"] - 0.5) / spec["steps"],  # transformers takes ceil(ratio * steps)
        weight_decay=WEIGHT_DECAY, logging_steps=1, seed=spec["seed"], save_steps=None,  # no checkpoint in timing
        output_dir=spec["work"], lora=fasttune.LoraConfig(r=LORA_RANK, alpha=LORA_RANK, target_modules=PROJECTIONS))
    trainer = sft_trainer(model, rows, config, longest_row=spec.get("longest_row"))
    spec["gradient_checkpointing"] = trainer.args.gradient_checkpointing
    return trainer


def profile_steps(model, rows: list[dict], spec: dict, prefix: Path, top: int = 25) -> None:
    """Profile the second step of a short fasttune run, padding-free and padded, and write its wall time and the
    top operations by total and by self GPU time to `<prefix>-padding-free.txt` and `<prefix>-padded.txt`."""
    import transformers
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    class OneStep(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.profiler = profile(activities=activities)
                self.start = _now()
                self.profiler.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.seconds = _now() - self.start
                self.profiler.__exit__(None, None, None)

    for padding_free, name in ((True, "padding-free"), (False, "padded")):
        trainer = fasttune_trainer(model, rows, {**spec, "steps": 2, "warmup_lr_steps": 1,
                                                 "padding_free": padding_free, "work": spec["work"] + "-profile"})
        shared_lora_init(model.model, spec["seed"])
        trainer.args.train_sampling_strategy = "sequential"
        step = OneStep()
        trainer.add_callback(step)
        with _training_scope():
            trainer.train()
        events = step.profiler.key_averages()
        Path(f"{prefix}-{name}.txt").write_text(
            f"fasttune, {name} batches: step 2 of {prefix.name} ({spec['rows_per_step']} rows), "
            f"{step.seconds:.3f} s under torch.profiler\n\nTop {top} by total GPU time\n"
            f"{events.table(sort_by='cuda_time_total', row_limit=top)}\n\nTop {top} by self GPU time\n"
            f"{events.table(sort_by='self_cuda_time_total', row_limit=top)}\n")
        del trainer


def _unsloth_model(spec: dict):
    import unsloth  # noqa: F401  (before transformers, as its notebooks do)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=spec["model_dir"], max_seq_length=8192, load_in_4bit=True, dtype=None, local_files_only=True)
    model = FastLanguageModel.get_peft_model(
        model, r=LORA_RANK, target_modules=PROJECTIONS, lora_alpha=LORA_RANK, lora_dropout=0, bias="none",
        use_gradient_checkpointing="unsloth", random_state=spec["seed"])
    model._speed_tokenizer = tokenizer
    return model, tokenizer.pad_token_id


def _notebook_trainer(model, rows: list[dict], spec: dict):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer(
        model=model, processing_class=model._speed_tokenizer, train_dataset=Dataset.from_list(rows),
        args=SFTConfig(per_device_train_batch_size=2, gradient_accumulation_steps=4, warmup_steps=spec["warmup_lr_steps"],
                       max_steps=spec["steps"], learning_rate=spec["lr"], logging_steps=1, optim="adamw_8bit",
                       weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", seed=spec["seed"],
                       output_dir=spec["work"], report_to="none", completion_only_loss=True,
                       max_length=None, dataset_num_proc=None, save_strategy="no"))


def _hf_peft_model(spec: dict):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], quantization_config=quantization,
                                                 dtype=torch.bfloat16, device_map={"": 0}, attn_implementation="sdpa")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, lora_dropout=0.0,
                                             target_modules=PROJECTIONS,
                                             task_type="CAUSAL_LM"))
    return model, AutoTokenizer.from_pretrained(spec["model_dir"]).pad_token_id


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1])
