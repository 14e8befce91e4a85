"""Continued pretraining (cpt): next-token loss on raw text packed into full blocks.

The text comes from a .txt file (documents separated by blank lines), a JSONL field, or the task's documents
(`Task.document`). With `train_embeddings`, embed_tokens and lm_head are trained in full at their own, smaller
learning rate. SFT on top is a second `train` call on the same model: it keeps training the same adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import trl
from datasets import Dataset

from fasttune import backend, splits
from fasttune.backend import Model
from fasttune.configs import TrainConfig, TrainingData
from fasttune.errors import not_positive
from fasttune.plan import Plan
from fasttune.reading import read_documents
from fasttune.task import Task
from fasttune.trainers import trainer_arguments, with_progress

EMBEDDINGS = ["embed_tokens", "lm_head"]


@dataclass
class CptConfig(TrainConfig):
    """Settings of continued pretraining."""

    method: ClassVar[str] = "cpt"
    text_file: str | None = None
    """A text file (documents separated by blank lines) or a data file (.jsonl, .json, .csv, .parquet) of documents
    in `text_field`; default: the task's documents."""
    text_field: str = "text"
    """The field (JSON key or CSV column) of a data file that holds a document."""
    block_size: int = 512
    """Tokens per packed training row; the last partial block is dropped and counted."""
    train_embeddings: bool = False
    """Also train embed_tokens and lm_head in full (e.g. for a new domain's vocabulary use)."""
    embedding_learning_rate: float | None = None
    """Learning rate of embed_tokens/lm_head when trained (default: learning_rate / 10)."""

    def problems(self) -> list[str]:
        problems = super().problems() + not_positive(self, ("block_size", "embedding_learning_rate"))
        if self.embedding_learning_rate is not None and not self.train_embeddings:
            problems.append(f"embedding_learning_rate is set but train_embeddings is off (embedding_learning_rate="
                            f"{self.embedding_learning_rate}); set train_embeddings=True")
        return problems

    @property
    def modules_to_save(self) -> list[str] | None:
        return list(EMBEDDINGS) if self.train_embeddings else None


def pack(token_lists: list[list[int]], separator: int, block_size: int) -> tuple[list[list[int]], int]:
    """Concatenate documents (each followed by `separator`) and cut full blocks; returns (blocks, dropped tokens)."""
    stream = [token for tokens in token_lists for token in (*tokens, separator)]
    full = len(stream) // block_size * block_size
    return [stream[start:start + block_size] for start in range(0, full, block_size)], len(stream) - full


class Cpt:
    config = CptConfig

    def prepare(self, model: Model, task: Task, config: CptConfig) -> TrainingData:
        """Packed blocks of the text file's or the task's documents."""
        if config.text_file:
            documents = read_documents(config.text_file, config.text_field)[: config.limit]
        else:
            examples = splits.training_examples(task, config)
            documents = [task.document(example) for example in examples]
        tokenizer = model.tokenizer
        tokens = [tokenizer(document, add_special_tokens=False)["input_ids"] for document in documents]
        blocks, dropped = pack(tokens, tokenizer.eos_token_id, config.block_size)
        summary = {"source": config.text_file or f"task {task.name} ({config.split})",
                   "documents": len(documents), "tokens": sum(map(len, tokens)) + len(tokens), "blocks": len(blocks),
                   "block_size": config.block_size, "dropped_tail_tokens": dropped}
        return TrainingData([{"input_ids": block} for block in blocks], [f"block-{i}" for i in range(len(blocks))],
                            summary=summary)

    def make_trainer(self, model: Model, task: Task, prepared: TrainingData, config: CptConfig,
                     device_plan: Plan, output_dir: Path, callbacks: list):
        """SFTTrainer with the loss on every token (Unsloth's trainer with an embedding learning rate when
        trained)."""
        if config.train_embeddings:
            trainer_class, arguments_class = backend.pretraining_trainer(
                config.embedding_learning_rate or config.learning_rate / 10)
        else:
            trainer_class, arguments_class = backend.sft_trainer_class(), trl.SFTConfig
        args = arguments_class(**trainer_arguments(config, output_dir, model, device_plan),
                               completion_only_loss=False, max_length=config.block_size, packing=False,
                               include_num_input_tokens_seen="non_padding", dataset_num_proc=None,
                               remove_unused_columns=False)
        return with_progress(trainer_class(model=model.model, processing_class=model.tokenizer,
                                           train_dataset=Dataset.from_list(prepared.rows), args=args,
                                           callbacks=callbacks))
