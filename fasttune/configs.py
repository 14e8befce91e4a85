"""The settings every training method shares (TrainConfig, LoraConfig) and the rows a method hands to training.

A method's config extends TrainConfig and names its method in the class attribute `method`; `config_dict` is what
a run's config.json records (the method's name, then every field).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

from fasttune.errors import not_positive, raise_problems
from fasttune.task import Example

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    """The LoRA adapter's shape."""

    r: int = 16
    """Rank of the update matrices."""
    alpha: int = 32
    """Scale numerator: updates are multiplied by alpha / r."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    """Names of the linear layers that get an adapter."""


@dataclass
class TrainConfig:
    """Settings of one training run; this class is the SFT config, and every method's config extends it."""

    method: ClassVar[str] = "sft"
    """The training method this config belongs to (its key in fasttune.methods.METHODS)."""
    epochs: float = 1.0
    """Passes over the training split."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    learning_rate: float = 5e-4
    """Peak learning rate of the LoRA weights."""
    batch_size: int = 16
    """Examples per batch (fasttune splits a batch that would not fit in free memory; updates stay the same)."""
    gradient_accumulation: int = 1
    """Batches per optimizer step."""
    padding_free: bool | None = None
    """True packs each batch into one row with no padding (positions restart at every example); False pads the
    rows of a batch to the longest and groups rows of similar length into batches; None picks padding-free only
    where a varlen attention kernel (flash-attn, or torch's varlen_attn under Unsloth) makes it faster. The run's
    config.json records the choice."""
    warmup_ratio: float = 0.05
    """Share of steps with linear warmup."""
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate schedule after warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    optimizer: Literal["adamw_torch_fused", "adamw_8bit"] | None = None
    """AdamW as one fused launch for every adapter tensor, or bitsandbytes' 8-bit AdamW (a quarter of the state,
    one launch per tensor); None picks fused unless its state would take over a tenth of the free memory. The
    run's config.json records the choice."""
    split: str = "train"
    """Task split to train on."""
    limit: int | None = None
    """Train on the first `limit` examples only."""
    seed: int = 0
    """Seed of LoRA initialisation and data order."""
    gradient_checkpointing: bool | None = None
    """True recomputes activations in the backward to save memory (about a third more compute); None turns it on
    only when a device step of the longest training row would not fit the free memory without it (within
    `load(max_memory_gib=...)` where set). For DPO, ORPO, KTO and GRPO, whose rows are tokenized by the trainer,
    the longest row is taken as max_seq_length. The run's config.json records the choice."""
    logging_steps: int = 5
    """Record the loss every this many steps."""
    save_steps: int | None = 50
    """Checkpoint (adapter, optimizer, scheduler, RNG, data position) every this many steps; None: only on a signal."""
    output_dir: str | None = None
    """Where the adapter, config, losses and plot go (default: runs/<task>-<time>)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The adapter's shape."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers that get the run's logs beside its log.jsonl (always written): TensorBoard event files,
    W&B in offline mode (`pip install wandb`), an MLflow file store (`pip install mlflow`); all inside output_dir."""
    eval_every: int | None = None
    """Score the task's primary metric on the validation split every this many steps and at the last step (None:
    no validation during training)."""
    validation_split: str | None = None
    """Task split scored during training (None: the task's "validation" split if it has one, else
    `validation_size` training rows held out by a seeded hash of their text)."""
    validation_size: int = 200
    """Training rows held out for validation when the task has no validation split of its own."""
    eval_limit: int | None = 100
    """Score only the first `eval_limit` validation rows for tasks scored by generation (None: all of them)."""
    eval_batch_tokens: int = 16384
    """Validation by log-likelihood: rows of a forward pass add up to at most this many tokens, padding included."""
    keep: Literal["best", "last"] = "last"
    """Which adapter the run saves: the one after the last step, or the one with the best validation metric."""
    early_stopping: int | None = None
    """Stop after this many evaluations in a row without a better validation metric (None: never)."""

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        raise_problems(self.problems())

    def problems(self) -> list[str]:
        """Every problem with these settings (subclasses add their own)."""
        problems = not_positive(self, ("learning_rate", "batch_size", "gradient_accumulation", "logging_steps",
                                       "limit", "save_steps", "eval_every", "validation_size", "eval_limit",
                                       "eval_batch_tokens", "early_stopping"))
        problems += not_positive(self.lora, ("r",), prefix="lora.")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append(f"set epochs > 0 or max_steps > 0 (epochs={self.epochs}, max_steps={self.max_steps})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (warmup_ratio={self.warmup_ratio})")
        if self.eval_every is None and (self.keep == "best" or self.early_stopping is not None):
            problems.append(f"keep='best' and early_stopping need validation: set eval_every (keep={self.keep!r}, "
                            f"early_stopping={self.early_stopping})")
        if self.keep not in ("best", "last"):
            problems.append(f"keep must be 'best' or 'last' (keep={self.keep!r})")
        unknown = [name for name in self.report_to if name not in ("tensorboard", "wandb", "mlflow")]
        if unknown:
            problems.append(f"report_to takes tensorboard, wandb and mlflow (report_to={self.report_to!r})")
        return problems

    @property
    def modules_to_save(self) -> list[str] | None:
        """Layers trained in full beside the LoRA weights (none for most methods)."""
        return None


def config_dict(config: TrainConfig) -> dict:
    """The config as config.json records it: the method's name, then every field."""
    return {"method": config.method, **asdict(config)}


@dataclass
class TrainingData:
    """A method's training rows, built from the task before the adapter is attached."""

    rows: list[dict]
    row_ids: list[str] = field(default_factory=list)
    """The example id of each row, for the non-finite guard; empty where the trainer reshapes rows (preference,
    GRPO)."""
    skipped_too_long: list[str] = field(default_factory=list)
    """Ids of task examples left out for length."""
    summary: dict = field(default_factory=dict)
    """Method-specific counts saved in the card (e.g. pairs built, prompts the model always got right)."""
    examples_used: list[Example] = field(default_factory=list, repr=False)
    """The task examples the rows come from, for methods that judge outputs during training (GRPO)."""
