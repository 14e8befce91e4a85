"""The transformers engine: batched log-likelihood scoring and generation with a transformers (or Unsloth) model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fasttune import backend, data, guards
from fasttune.backend import Model
from fasttune.engines.protocol import Completion
from fasttune.progress import progress_bar
from fasttune.task import Messages


@dataclass
class TransformersEngine:
    """A causal LM (`network`) and its tokenizer; the caller sets inference or training mode."""

    network: Any
    tokenizer: Any
    name: str

    @classmethod
    def for_model(cls, model: Model) -> TransformersEngine:
        """The engine of a fasttune Model, switched to inference mode."""
        backend.for_inference(model)
        return cls(model.model, model.tokenizer, model.name)

    @property
    def precision(self) -> str:
        return f"dtype={str(self.network.dtype).removeprefix('torch.')}"

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def end_of_turn_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(backend.end_of_turn_token(self.tokenizer))

    def prompt_ids(self, messages: Messages, where: str = "a prompt") -> list[int]:
        return data.prompt_ids(self.tokenizer, messages, where)

    def choice_logprobs(self, prompts: list[list[int]], choices: list[list[str]], *, batch_size: int = 16,
                        description: str = "scoring") -> list[list[float]]:
        """Each prompt + choice + end of turn is one row; rows are batched longest first, right-padded."""
        end = backend.end_of_turn_token(self.tokenizer)
        sequences = [(index, choice_index, prompt, data.completion_ids(self.tokenizer, choice, end))
                     for index, (prompt, options) in enumerate(zip(prompts, choices, strict=True))
                     for choice_index, choice in enumerate(options)]
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][2]) - len(sequences[i][3]))
        scores = [[float("-inf")] * len(options) for options in choices]
        pad_id = self.tokenizer.pad_token_id
        with torch.inference_mode(), progress_bar(description, len(order)) as advance:
            for start in range(0, len(order), batch_size):
                batch = [sequences[i] for i in order[start:start + batch_size]]
                width = max(len(p) + len(c) for _, _, p, c in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (_, _, prompt, continuation) in enumerate(batch):
                    ids[row, : len(prompt) + len(continuation)] = torch.tensor(prompt + continuation)
                    mask[row, : len(prompt) + len(continuation)] = 1
                with _out_of_memory_advice(len(batch), width):
                    logits = self.network(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for (index, choice_index, _, _), score in zip(batch, continuation_logprobs(logits, batch),
                                                              strict=True):
                    scores[index][choice_index] = score
                advance(len(batch))
        return scores

    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, batch_size: int = 16, num_samples: int = 1,
                 temperature: float = 0.0, seed: int | None = None,
                 description: str = "generating") -> list[list[Completion]]:
        """Batched with left padding, longest prompts first; with `seed` the same call gives the same samples."""
        if seed is not None:
            torch.manual_seed(seed)
        tokenizer, end_id = self.tokenizer, self.end_of_turn_id
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        completions: list[list[Completion]] = [[] for _ in prompts]
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 \
            else {"do_sample": False}
        with torch.inference_mode(), progress_bar(description, len(order)) as advance:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]):] = 1
                with _out_of_memory_advice(len(batch) * num_samples, width + max_new_tokens):
                    generated = self.network.generate(
                        input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                        max_new_tokens=max_new_tokens, num_return_sequences=num_samples, eos_token_id=end_id,
                        pad_token_id=tokenizer.pad_token_id, **sampling)
                for row, i in enumerate(batch):
                    completions[i] = [_completion(tokenizer, sequence[width:].tolist(), end_id, max_new_tokens)
                                      for sequence in generated[row * num_samples:(row + 1) * num_samples]]
                advance(len(batch))
        return completions

    def sample_answers(self, prompts: list[list[int]], *, samples: int, temperature: float, seed: int,
                       max_new_tokens: int, batch_size: int, description: str = "sampling") -> list[list[Completion]]:
        """`samples` sampled replies to each prompt, for training data drawn from the model's own answers (DPO,
        KTO, RFT, GRPO); the same seed gives bitwise the same replies."""
        return self.generate(prompts, max_new_tokens, batch_size=batch_size, num_samples=samples,
                             temperature=temperature, seed=seed, description=description)


def continuation_logprobs(logits: torch.Tensor, batch: list[tuple]) -> list[float]:
    """Summed log-probability of each row's continuation, gathered for the whole batch at once (one device sync)."""
    rows, positions, targets = [], [], []
    for row, (_, _, prompt, continuation) in enumerate(batch):
        rows += [row] * len(continuation)
        positions += range(len(prompt) - 1, len(prompt) + len(continuation) - 1)
        targets += continuation
    rows, positions, targets = (torch.tensor(values, device=logits.device) for values in (rows, positions, targets))
    log_probs = torch.log_softmax(logits[rows, positions].float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    return torch.zeros(len(batch), device=logits.device).index_add_(0, rows, log_probs).tolist()


def _completion(tokenizer, new_tokens: list[int], end_id: int, max_new_tokens: int) -> Completion:
    ended = end_id in new_tokens
    return Completion(tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                      not ended and len(new_tokens) == max_new_tokens,
                      new_tokens[: new_tokens.index(end_id)] if ended else new_tokens)


def _out_of_memory_advice(batch_size: int, sequence_length: int):
    return guards.out_of_memory_advice("evaluation", batch_size, sequence_length,
                                       "Lower EvalConfig.batch_size, or limit the prompt length")
