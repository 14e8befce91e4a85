"""Where GPU and CPU differ: Unsloth's 4-bit kernels on a CUDA GPU, plain transformers + PEFT elsewhere.

Unsloth is imported here and nowhere else, before transformers, trl and peft, because it patches them globally.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

USE_UNSLOTH = torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None
if USE_UNSLOTH:
    import unsloth  # noqa: F401  (must precede transformers/trl/peft)
    from unsloth import FastLanguageModel

import peft  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402

from fasttune import chat_templates, conversation, data, distributed, embedded, hooks, hub, memory  # noqa: E402
from fasttune.card import read_card, resolve_base_model  # noqa: E402
from fasttune.errors import FasttuneError, not_positive, raise_problems  # noqa: E402

DTYPES = ("bfloat16", "float16", "float32")
TEMPLATE_PROBE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue."}]
"""The conversation a chat template must render and mark (see check_chat_template)."""


@dataclass
class LoadConfig:
    """Which model `load` reads and how (its keyword arguments, as a config)."""

    name_or_path: str | None = None
    """A model folder, a fasttune adapter folder (loaded with its base), or None for the embedded
    SmolLM2-135M-Instruct."""
    load_in_4bit: bool = True
    """Load the base weights in 4-bit (Unsloth on a CUDA GPU; ignored elsewhere)."""
    max_seq_length: int = 2048
    """Longest row in tokens; longer training rows are skipped and counted."""
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    """Weight dtype (default: Unsloth's choice on a GPU; with transformers bfloat16 on a GPU, float32 on a CPU, where
    bfloat16 matmuls ran 5.5x slower on a CPU without bfloat16 instructions)."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model (read it first)."""
    max_memory_gib: float | None = None
    """Cap this process's GPU memory at this many GiB; training plans its batches within it."""
    chat_template: str | None = None
    """A chat template by name (see fasttune.chat_templates.TEMPLATES) or a .jinja file; None: the model's own
    (an adapter's saved one)."""

    def __post_init__(self):
        problems = not_positive(self, ("max_seq_length",))  # max_memory_gib: memory.limit_memory
        if self.dtype not in (None, *DTYPES):
            problems.append(f"dtype must be one of {', '.join(DTYPES)} or None (dtype={self.dtype!r})")
        raise_problems(problems)


@dataclass
class Model:
    """A causal LM ready for fasttune: weights, tokenizer, and where they came from.

    `train` attaches LoRA weights to `model` in place; `adapter_dir` then names the saved adapter.
    """

    model: Any
    tokenizer: Any
    base_path: Path
    backend: Literal["unsloth", "transformers"]
    max_seq_length: int
    adapter_dir: Path | None = None
    max_memory_gib: float | None = None
    """The memory cap it was loaded under (see `load`); training plans its batches within it."""
    card: dict = field(default_factory=dict)
    load_config: LoadConfig | None = None
    """The settings `load` read it with (a run's config.json records them)."""

    @property
    def name(self) -> str:
        return hub.model_name(self.base_path) + (f"+{self.adapter_dir.name}" if self.adapter_dir else "")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def end_of_turn(self) -> str:
        """The token that closes an assistant turn in the chat template (e.g. <|im_end|>)."""
        return end_of_turn_token(self.tokenizer)


@hooks.library_scope()
def load(name_or_path: str | os.PathLike | None = None, *, load_in_4bit: bool = True, max_seq_length: int = 2048,
         dtype: torch.dtype | None = None, trust_remote_code: bool = False,
         max_memory_gib: float | None = None, chat_template: str | os.PathLike | None = None) -> Model:
    """Load a causal LM (default: the embedded SmolLM2-135M-Instruct), or a fasttune adapter folder with its base.

    `name_or_path` is a folder, an adapter folder, or a model hub id ("Qwen/Qwen2.5-0.5B-Instruct"), which is
    downloaded into the Hugging Face cache, or read from it alone under HF_HUB_OFFLINE=1 (see fasttune.hub).
    `chat_template` replaces the model's own: a name from fasttune.chat_templates.TEMPLATES (chatml, llama-3,
    qwen-2.5, qwen-3, gemma, mistral, phi-3) or a .jinja file; an adapter keeps the template it was trained with.

    On a CUDA GPU with `fasttune[gpu]` installed the model is loaded by Unsloth, in 4-bit when `load_in_4bit`;
    elsewhere by transformers in `dtype` (default bfloat16 on a GPU, float32 on a CPU), and `load_in_4bit` is
    ignored. Weights are read from safetensors only; Python code shipped with a model runs only with
    `trust_remote_code=True`.
    `max_memory_gib` caps this process's GPU memory from loading on (for a shared GPU; CUDA's cap is per process,
    so the latest load's cap wins); training splits batches and turns on gradient checkpointing to stay within it.
    On a CPU nothing is capped, but training plans its batches within the cap less the RAM the process holds.
    The arguments are the fields of LoadConfig (`load(**asdict(config))`); the model keeps them as `load_config`.
    Under torchrun on CUDA GPUs each process loads the model whole onto its own GPU (LOCAL_RANK).
    """
    config = LoadConfig(None if name_or_path is None else str(name_or_path), load_in_4bit, max_seq_length,
                        str(dtype).removeprefix("torch.") if dtype is not None else None, trust_remote_code,
                        max_memory_gib, None if chat_template is None else str(chat_template))
    dtype = getattr(torch, config.dtype) if config.dtype else None
    path = embedded.hf_folder() if name_or_path is None else Path(name_or_path).expanduser()
    if not path.is_dir() and hub.looks_like_hub_id(name_or_path):
        path = hub.model_folder(str(name_or_path), trust_remote_code=trust_remote_code)
    if not path.is_dir():
        raise _not_a_folder(name_or_path)
    placement = distributed.device_map()  # before the cap: under torchrun it applies to this rank's GPU
    memory.limit_memory(max_memory_gib)
    if (path / "adapter_config.json").exists():
        model = _load_adapter(path, load_in_4bit=load_in_4bit, max_seq_length=max_seq_length, dtype=dtype,
                              trust_remote_code=trust_remote_code, max_memory_gib=max_memory_gib,
                              chat_template=chat_template)
        model.load_config = config
        return model
    if not any(path.glob("*.safetensors")):
        raise FasttuneError(f"No safetensors weights in {path} (name_or_path={name_or_path}). fasttune reads "
                            "weights from safetensors only (pickled .bin files can run code): convert them with "
                            "transformers' save_pretrained on a machine you trust.")
    try:
        if USE_UNSLOTH:
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=str(path), max_seq_length=max_seq_length, load_in_4bit=load_in_4bit, dtype=dtype,
                local_files_only=True, trust_remote_code=trust_remote_code,  # the folder has safetensors: checked
                **placement)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype or _transformers_dtype(), local_files_only=True, trust_remote_code=trust_remote_code,
                use_safetensors=True, **placement)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                path, local_files_only=True, trust_remote_code=trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise FasttuneError(f"The model in {path} ships its own Python code (trust_remote_code=False). Read that "
                            "code, then load(..., trust_remote_code=True) if you trust it.") from None
    card = {}
    if chat_template is not None:
        card[chat_templates.CARD_KEY] = use_chat_template(tokenizer, chat_template)
    _ensure_padding(tokenizer)
    return Model(model, tokenizer, path, "unsloth" if USE_UNSLOTH else "transformers", max_seq_length,
                 max_memory_gib=max_memory_gib, card=card, load_config=config)


def _transformers_dtype() -> torch.dtype:
    # Measured 2026-12-02 on an AMD EPYC with AVX2 only (torch 2.13.0 CPU build): one SmolLM2-135M forward of 16 x 120
    # tokens took 54.3 s in bfloat16 and 9.8 s in float32.
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def _not_a_folder(name_or_path) -> FasttuneError:
    return FasttuneError(f"Model folder not found (name_or_path={name_or_path}). Pass a folder with config.json and "
                         "safetensors weights, a fasttune adapter folder, a model hub id such as "
                         "'Qwen/Qwen2.5-0.5B-Instruct', or nothing for the embedded default.")


def _load_adapter(adapter_dir: Path, **kwargs) -> Model:
    if not (adapter_dir / "adapter_model.safetensors").exists():
        raise FasttuneError(f"No adapter_model.safetensors in {adapter_dir}. fasttune reads adapter weights from "
                            "safetensors only (pickled .bin files can run code).")
    card = read_card(adapter_dir)
    model = load(resolve_base_model(adapter_dir, card), **kwargs)
    model.model = peft.PeftModel.from_pretrained(model.model, adapter_dir, is_trainable=False, use_safetensors=True)
    trained_with = chat_templates.from_card(card)
    if kwargs["chat_template"] is None and trained_with is not None:
        model.tokenizer.chat_template = trained_with
    model.adapter_dir, model.card = adapter_dir, card
    return model


def _ensure_padding(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.chat_template is None else end_of_turn_token(tokenizer)


def use_chat_template(tokenizer, chat_template: str | os.PathLike) -> dict:
    """Put the named template (or .jinja file) on `tokenizer` once `check_chat_template` accepts it there (a refused one leaves the
    tokenizer as it was); returns the card entry {"name", "text"}."""
    name, text = chat_templates.template_text(chat_template)
    previous = tokenizer.chat_template
    tokenizer.chat_template = text
    try:
        check_chat_template(tokenizer, name)
    except FasttuneError:
        tokenizer.chat_template = previous
        raise
    return {"name": name, "text": text}


def check_chat_template(tokenizer, name: str) -> None:
    """Raise when the template on `tokenizer` cannot mark where assistant turns start and end: it must render a
    two-turn conversation, set a reply apart from a user turn, and nest as fasttune.conversation needs (each reply
    and its end-of-turn token extend the prompt that asks for it)."""
    template = f"chat template {name}"
    try:
        end_of_turn = end_of_turn_token(tokenizer)
        marked = _marks_replies(tokenizer)
    except Exception as error:  # jinja raises many types: syntax errors, raise_exception, undefined names
        line = f", line {error.lineno}" if getattr(error, "lineno", None) else ""
        raise FasttuneError(f"The chat template cannot render a conversation (chat_template={name}{line}: "
                            f"{type(error).__name__}: {error}). Fix the template, or pick one of "
                            f"{', '.join(chat_templates.TEMPLATES)}.") from None
    if not marked:
        raise FasttuneError(f"The {template} cannot mark where assistant turns start and end: a reply is opened by "
                            "the same text as a user turn, so a model could not tell whose turn it is. Give each "
                            f"role its own marker (e.g. chatml's <|im_start|>assistant) or pick one of "
                            f"{', '.join(chat_templates.TEMPLATES)}.")
    conversation.encode(tokenizer, TEMPLATE_PROBE, end_of_turn, where="Checking a two-turn conversation",
                        template=template)


def _marks_replies(tokenizer) -> bool:
    """Whether the text between a user message and the reply differs from the text between a reply and the next user
    message (role markers, or mistral's [/INST] and [INST])."""
    marks = [f"\u2063{index}\u2063" for index in range(4)]
    text = tokenizer.apply_chat_template([{"role": ("user", "assistant")[index % 2], "content": mark}
                                          for index, mark in enumerate(marks)], tokenize=False)
    return text.split(marks[0])[1].split(marks[1])[0] != text.split(marks[1])[1].split(marks[2])[0]


def end_of_turn_token(tokenizer) -> str:
    """The special token that the chat template writes right after an assistant message."""
    chat_templates.require(tokenizer)
    tail = data.text_after_assistant_turn(lambda messages: tokenizer.apply_chat_template(messages, tokenize=False),
                                          f"The chat template of {tokenizer.name_or_path or 'the tokenizer'}")
    for token in sorted(tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()), key=len, reverse=True):
        if tail.startswith(token):
            return token
    return tokenizer.eos_token


def add_lora(model: Model, *, r: int, alpha: int, dropout: float, target_modules: list[str], seed: int,
             gradient_checkpointing: bool, modules_to_save: list[str] | None = None) -> bool:
    """Attach trainable LoRA weights to `model.model`, in place; `modules_to_save` are trained in full.

    A model that already carries an adapter (a previous `train`, or a loaded adapter folder) keeps it and trains it
    further; returns False then, True when a new adapter was attached.
    """
    if isinstance(model.model, peft.PeftModel):
        for name, parameter in model.model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                parameter.requires_grad_(True)
        return False
    if USE_UNSLOTH:
        model.model = FastLanguageModel.get_peft_model(
            model.model, r=r, lora_alpha=alpha, lora_dropout=dropout,
            target_modules=target_modules + (modules_to_save or []), bias="none",
            use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=seed)
        return True
    torch.manual_seed(seed)
    if gradient_checkpointing:
        model.model.gradient_checkpointing_enable()
        model.model.enable_input_require_grads()
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                             modules_to_save=modules_to_save, ensure_weight_tying=bool(modules_to_save), bias="none",
                             task_type="CAUSAL_LM")
    model.model = peft.get_peft_model(model.model, config)
    return True


def for_inference(model: Model) -> None:
    """Switch the model to generation/scoring mode."""
    hooks.return_logits(True)  # scoring needs the logits
    if USE_UNSLOTH:
        FastLanguageModel.for_inference(model.model)
    model.model.eval()


def for_training(model: Model) -> None:
    """Switch the model back to training mode."""
    hooks.return_logits(False)  # with logits requested Unsloth turns padding-free batching and its fused loss off
    if USE_UNSLOTH:
        FastLanguageModel.for_training(model.model)
    model.model.train()


def device_arguments(model: Model) -> dict:
    """Trainer arguments for this machine: the device and bfloat16 mixed precision where it applies."""
    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": model.model.dtype == torch.bfloat16, "use_cpu": True}


FLASH_ATTENTION_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")


def varlen_attention(model: Model) -> bool:
    """Whether attention here has a variable-length kernel, which padding-free batches need to be fast: on a GPU,
    flash-attn under Unsloth (its attention dispatch then runs `flash_attn_varlen_func`), torch's own
    `varlen_attn` under Unsloth (`hooks.unsloth_varlen_kernel`), or a flash-attention implementation set on a
    transformers model. Without one, a packed row's examples are kept apart by a dense block-diagonal mask, which
    cost 2-3.5x the step time of padded batches on an H100 (benchmarks/RESULTS.md); on a CPU neither kind was
    measurably faster. fasttune's SFT trains padding-free only where this is True."""
    if not torch.cuda.is_available():
        return False
    if USE_UNSLOTH:
        try:
            from flash_attn import flash_attn_varlen_func  # noqa: F401
        except (ImportError, OSError):  # not installed, or built for another torch/CUDA
            return hooks.unsloth_varlen_kernel() is not None
        return True
    return model.model.config._attn_implementation in FLASH_ATTENTION_IMPLEMENTATIONS


def sft_trainer_class() -> type:
    """TRL's SFTTrainer (patched by Unsloth on a GPU) with the model's own loss.

    TRL 1.15's loss runs its fused log-prob head and logs entropy and token accuracy, three device syncs every
    micro-batch; the model's own loss (transformers' cross-entropy on a CPU, Unsloth's chunked cross-entropy on a
    GPU, which never holds the full-vocabulary float32 logits) needs none. On a CPU TRL's head has no kernel at
    all (a Triton kernel).
    """
    class PlainLossSFTTrainer(trl.SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return transformers.Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return PlainLossSFTTrainer


def trainer_class(method: Literal["dpo", "orpo", "kto", "grpo"]) -> type:
    """TRL's trainer for a preference or RL method (Unsloth-patched on a GPU).

    Without Triton (a CPU), trl's fused log-prob head has no kernel; a plain-torch one takes its place.
    """
    hooks.install_cpu_log_probs(_PlainLogProbs)
    if method == "orpo":
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    return {"dpo": trl.DPOTrainer, "kto": trl.KTOTrainer, "grpo": trl.GRPOTrainer}[method]


class _PlainLogProbs:
    """Plain-torch stand-in for trl's Triton `ChunkedLogProbFunction`: same arguments, same five outputs.

    It materialises the [tokens, vocab] logits (fine for CPU-sized batches) and lets autograd do the backward.
    """

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:
            logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
        logits = logits / temperature
        log_z = torch.logsumexp(logits, dim=-1)
        log_probs = logits.gather(1, targets[:, None]).squeeze(1) - log_z
        probs = torch.softmax(logits, dim=-1)
        entropy = log_z - (probs * logits).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq = torch.log((probs * probs).sum(-1)) if "log_sum_sq_probs" in outputs else None
            mean_logits = logits.mean(-1) if "mean_logits" in outputs else None
            is_top1 = logits.argmax(-1) == targets if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def pretraining_trainer(embedding_learning_rate: float) -> tuple[type, Callable[..., trl.SFTConfig]]:
    """(trainer class, arguments factory) for continued pretraining with a separate embedding learning rate.

    On a GPU these are Unsloth's UnslothTrainer and UnslothTrainingArguments; on a CPU an SFTTrainer (plain loss)
    whose optimizer gives fully trained embedding/LM-head weights (`modules_to_save`) their own learning rate.
    """
    if USE_UNSLOTH:
        from unsloth import UnslothTrainer, UnslothTrainingArguments

        return UnslothTrainer, functools.partial(UnslothTrainingArguments,
                                                 embedding_learning_rate=embedding_learning_rate)

    class EmbeddingLearningRateTrainer(sft_trainer_class()):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
                groups = [{"params": [p for n, p in trainable if "modules_to_save" not in n],
                           "weight_decay": self.args.weight_decay},
                          {"params": [p for n, p in trainable if "modules_to_save" in n],
                           "weight_decay": 0.0, "lr": embedding_learning_rate}]
                optimizer_class, optimizer_kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(self.args)
                self.optimizer = optimizer_class([group for group in groups if group["params"]], **optimizer_kwargs)
            return self.optimizer

    return EmbeddingLearningRateTrainer, trl.SFTConfig


def count_4bit_linear_layers(model: Model) -> tuple[int, int]:
    """(4-bit, all) base linear layers of the model, LoRA's own excluded: a check that QLoRA really is 4-bit."""
    linear = four_bit = 0
    for name, module in model.model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:
            linear += 1
            four_bit += type(module).__name__ == "Linear4bit"
    return four_bit, linear
