"""The transformers engine: batched log-likelihood scoring and generation with a transformers (or Unsloth) model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    prompt_cache: bool = True
    """Score choices over each prompt's KV cache (False: every prompt + choice as a whole row)."""

    @classmethod
    def for_model(cls, model: Model) -> TransformersEngine:
        """The engine of a fasttune Model, switched to inference mode."""
        backend.for_inference(model)
        # Under Unsloth 2026.10.7 the cached continuations differed from whole rows by more than 0.1 nats on a
        # tiny random Llama (tests/test_gpu.py, H200, 2026-12-02): whole rows there until that is understood.
        return cls(model.model, model.tokenizer, model.name, prompt_cache=model.backend != "unsloth")

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

    def choice_logprobs(self, prompts: list[list[int]], choices: list[list[str]], *, batch_tokens: int = 16384,
                        description: str = "scoring") -> list[list[float]]:
        """Each prompt runs once; its choices (each + end of turn) then run as continuations over the prompt's KV
        cache, all choices of a batch in one pass. Prompts are batched longest first, left-padded (so every prompt's
        last token, which predicts each choice's first, is in the last column), as many a batch as keep its
        continuation rows x prompt width within `batch_tokens`; continuations are right-padded. The work saved grows
        with the number of choices and the prompt's share of the tokens. With `prompt_cache` False every prompt +
        choice runs as a whole row instead."""
        end = backend.end_of_turn_token(self.tokenizer)
        continuations = [[data.completion_ids(self.tokenizer, choice, end) for choice in options]
                         for options in choices]
        if not self.prompt_cache:
            return self._whole_row_logprobs(prompts, continuations, batch_tokens, description)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        scores: list[list[float]] = [[] for _ in prompts]
        with torch.inference_mode(), progress_bar(description, len(order)) as advance:
            for batch in token_batches(order, lambda i: len(prompts[i]) + max(map(len, continuations[i])),
                                       batch_tokens, rows=lambda i: len(continuations[i])):
                rows = [(row, continuation) for row, i in enumerate(batch) for continuation in continuations[i]]
                with _out_of_memory_advice(len(batch), max(len(prompts[i]) for i in batch)
                                           + max(len(c) for _, c in rows)):
                    batch_scores = iter(self._prompt_cached_logprobs([prompts[i] for i in batch], rows))
                for i in batch:
                    scores[i] = [next(batch_scores) for _ in continuations[i]]
                advance(len(batch))
        return scores

    def _whole_row_logprobs(self, prompts: list[list[int]], continuations: list[list[list[int]]], batch_tokens: int,
                            description: str) -> list[list[float]]:
        """Each prompt + continuation is one row; rows are batched longest first within `batch_tokens`."""
        rows = [(index, choice_index, prompt, continuation)
                for index, (prompt, options) in enumerate(zip(prompts, continuations, strict=True))
                for choice_index, continuation in enumerate(options)]
        rows.sort(key=lambda row: -len(row[2]) - len(row[3]))
        scores = [[float("-inf")] * len(options) for options in continuations]
        with torch.inference_mode(), progress_bar(description, len(rows)) as advance:
            for batch in token_batches(rows, lambda row: len(row[2]) + len(row[3]), batch_tokens):
                for (index, choice_index, _, _), score in zip(batch, self._right_padded_logprobs(batch), strict=True):
                    scores[index][choice_index] = score
                advance(len(batch))
        return scores

    def _right_padded_logprobs(self, batch: list[tuple]) -> list[float]:
        """Summed log-probability of each (index, choice index, prompt, continuation) row's continuation.

        The rows are right-padded and run without an attention mask: under causal attention no real token sees the
        padding after it, so the scores are exact and the model keeps its unmasked attention kernel (Unsloth drops
        the mask in training mode and builds a dense one in inference mode). Only the positions that predict a
        continuation token reach the output layer, so no full-vocabulary logits exist for the rest of the rows."""
        device, width = self.device, max(len(prompt) + len(continuation) for _, _, prompt, continuation in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        rows, positions, targets = [], [], []
        for row, (_, _, prompt, continuation) in enumerate(batch):
            ids[row, : len(prompt) + len(continuation)] = torch.tensor(prompt + continuation)
            rows += [row] * len(continuation)
            positions += range(len(prompt) - 1, len(prompt) + len(continuation) - 1)
            targets += continuation
        keep = width - min(len(prompt) for _, _, prompt, _ in batch) + 1
        rows, kept_positions, targets = (torch.tensor(values, device=device)
                                         for values in (rows, [p - (width - keep) for p in positions], targets))
        gathered = []

        def continuation_positions_only(module, inputs):
            if inputs and inputs[0].shape[:2] == (len(batch), keep):  # the hidden states of the kept positions
                gathered.append(True)
                return (inputs[0][rows, kept_positions][None], *inputs[1:])
            return None

        hook = self.network.get_output_embeddings().register_forward_pre_hook(continuation_positions_only)
        try:
            with _out_of_memory_advice(len(batch), width):
                logits = self.network(input_ids=ids.to(device), use_cache=False, logits_to_keep=keep).logits
        finally:
            hook.remove()
        logits = logits[0] if gathered else logits[rows, kept_positions]
        log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
        return torch.zeros(len(batch), device=device).index_add_(0, rows, log_probs).tolist()

    def _prompt_cached_logprobs(self, prompts: list[list[int]], rows: list[tuple[int, list[int]]]) -> list[float]:
        """Summed log-probability of each (prompt index, continuation) row, the prompts run once."""
        device, pad_id = self.device, self.tokenizer.pad_token_id
        width = max(len(prompt) for prompt in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):], mask[row, width - len(prompt):] = torch.tensor(prompt), 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prompt_out = self.network(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  position_ids=positions.to(device), use_cache=True, logits_to_keep=1)
        owners = torch.tensor([owner for owner, _ in rows])
        first = torch.log_softmax(prompt_out.logits[:, -1].float(), dim=-1)[owners.to(device),
                                                                           torch.tensor([c[0] for _, c in rows],
                                                                                        device=device)]
        rest = max(len(continuation) for _, continuation in rows) - 1
        if rest == 0:
            return first.tolist()
        cont_ids = torch.full((len(rows), rest), pad_id, dtype=torch.long)
        cont_mask = torch.zeros((len(rows), rest), dtype=torch.long)
        for row, (_, continuation) in enumerate(rows):
            cont_ids[row, : len(continuation) - 1] = torch.tensor(continuation[:-1], dtype=torch.long)
            cont_mask[row, : len(continuation) - 1] = 1
        cont_positions = mask.sum(-1)[owners, None] + torch.arange(rest)[None, :]
        cache = prompt_out.past_key_values
        cache.batch_select_indices(owners.to(device))  # one cache row per continuation
        out = self.network(input_ids=cont_ids.to(device),
                           attention_mask=torch.cat([mask[owners], cont_mask], dim=1).to(device),
                           position_ids=cont_positions.to(device), past_key_values=cache, use_cache=True)
        targets, row_index, column = [], [], []
        for row, (_, continuation) in enumerate(rows):
            row_index += [row] * (len(continuation) - 1)
            column += range(len(continuation) - 1)
            targets += continuation[1:]
        row_index, column, targets = (torch.tensor(values, device=device) for values in (row_index, column, targets))
        log_probs = torch.log_softmax(out.logits[row_index, column].float(), dim=-1).gather(1, targets[:, None])
        return first.index_add_(0, row_index, log_probs.squeeze(1)).tolist()

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
                with _out_of_memory_advice(len(batch) * num_samples, width + max_new_tokens, "batch_size"):
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


def token_batches(items: list, length: Callable[[Any], int], budget: int,
                  rows: Callable[[Any], int] = lambda item: 1) -> Iterator[list]:
    """Consecutive runs of `items` (longest first) whose rows x the first item's length stay within `budget`
    tokens; an item longer than that runs alone."""
    batch, batch_rows = [], 0
    for item in items:
        if batch and (batch_rows + rows(item)) * length(batch[0]) > budget:
            yield batch
            batch, batch_rows = [], 0
        batch.append(item)
        batch_rows += rows(item)
    if batch:
        yield batch


def _completion(tokenizer, new_tokens: list[int], end_id: int, max_new_tokens: int) -> Completion:
    ended = end_id in new_tokens
    return Completion(tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                      not ended and len(new_tokens) == max_new_tokens,
                      new_tokens[: new_tokens.index(end_id)] if ended else new_tokens)


def _out_of_memory_advice(batch_size: int, sequence_length: int, setting: str = "batch_tokens"):
    return guards.out_of_memory_advice("evaluation", batch_size, sequence_length,
                                       f"Lower EvalConfig.{setting}, or limit the prompt length")
