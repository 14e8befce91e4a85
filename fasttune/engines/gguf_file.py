"""The GGUF engine: a GGUF file run by llama.cpp (llama-cpp-python), generating and scoring choices.

`fasttune.evaluate("model.gguf", task)` uses this engine. Prompts are rendered with the chat template stored in the
GGUF file itself, as llama.cpp and Ollama users get them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fasttune import data
from fasttune.engines.protocol import Completion
from fasttune.errors import FasttuneError
from fasttune.progress import progress_bar
from fasttune.task import Messages


@dataclass
class GgufEngine:
    """A GGUF file opened by llama.cpp, with its chat template and end-of-turn token."""

    path: Path
    llama: Any
    end_of_turn_id: int

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def open(cls, path: str | os.PathLike, n_ctx: int = 1024, n_threads: int | None = None) -> GgufEngine:
        """Load `path` on the CPU (logits of every position kept, for log-likelihood scoring).

        `n_threads` defaults to llama-cpp-python's (half the cores): ggml's spinning threads slow down several
        times over when they outnumber free cores.
        """
        import llama_cpp

        path = Path(path)
        if path.suffix != ".gguf" or not path.is_file():
            raise FasttuneError(f"Not a GGUF file (model={path}). Pass a .gguf file written by fasttune.export "
                                "or a fasttune.Model.")
        with _without_weight_repacking():
            llama = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True,
                                    **({"n_threads": n_threads} if n_threads else {}),
                                    verbose=False)
        if "tokenizer.chat_template" not in llama.metadata:
            raise FasttuneError(f"{path} has no chat template (tokenizer.chat_template); fasttune tasks are chat "
                                "prompts. Export from a model whose tokenizer has one.")
        model = cls(path, llama, -1)
        model.end_of_turn_id = model._end_of_turn_id()
        return model

    def render(self, messages: Messages) -> str:
        """The chat-template text of `messages`, ending where the assistant's reply begins."""
        return self._prompt_formatter(messages=messages).prompt

    @cached_property
    def _prompt_formatter(self):
        return self._chat_formatter(add_generation_prompt=True)  # compiling the template costs ~1.7 ms a call

    def _chat_formatter(self, add_generation_prompt: bool):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        return Jinja2ChatFormatter(self.llama.metadata["tokenizer.chat_template"],
                                   eos_token=self._token_text(self.llama.token_eos()),
                                   bos_token=self._token_text(self.llama.token_bos()),
                                   add_generation_prompt=add_generation_prompt)

    @property
    def precision(self) -> str:
        return f"file_type={self.llama.metadata.get('general.file_type', 'unknown')}"

    def tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode(), add_bos=False, special=True)

    def prompt_ids(self, messages: Messages, where: str = "a prompt") -> list[int]:
        return self.tokenize(self.render(messages))

    def generate(self, prompts: list[list[int]], max_new_tokens: int, *, batch_size: int = 16, num_samples: int = 1,
                 temperature: float = 0.0, seed: int | None = None,
                 description: str = "generating") -> list[list[Completion]]:
        """One prompt at a time (llama.cpp runs one sequence here; `batch_size` is not used)."""
        if seed is not None:
            self.llama.set_seed(seed)
        sampling = {"temp": temperature, "top_k": 0, "top_p": 1.0, "min_p": 0.0} if temperature > 0 else \
            {"temp": 0.0, "top_k": 1}
        completions = []
        with progress_bar(f"{description} (llama.cpp)", len(prompts)) as advance:
            for prompt in prompts:
                completions.append([self._reply(prompt, max_new_tokens, sampling) for _ in range(num_samples)])
                advance(1)
        return completions

    def _reply(self, prompt: list[int], max_new_tokens: int, sampling: dict) -> Completion:
        tokens, ended = [], False
        for token in self.llama.generate(prompt, reset=True, **sampling):
            ended = token == self.end_of_turn_id or token == self.llama.token_eos()
            if ended or len(tokens) == max_new_tokens:
                break
            tokens.append(token)
        text = self.llama.detokenize(tokens).decode("utf-8", errors="replace").strip()
        return Completion(text, not ended and len(tokens) == max_new_tokens, tokens)

    def choice_logprobs(self, prompts: list[list[int]], choices: list[list[str]], *, batch_tokens: int = 16384,
                        description: str = "scoring") -> list[list[float]]:
        """Each prompt is evaluated once; its KV cache is reused for every choice (`batch_tokens` is not used)."""
        scores = []
        with progress_bar(f"{description} (llama.cpp)", len(prompts)) as advance:
            for prompt, options in zip(prompts, choices, strict=True):
                scores.append(self.continuation_logprobs(
                    prompt, [self.tokenize(option) + [self.end_of_turn_id] for option in options]))
                advance(1)
        return scores

    def continuation_logprobs(self, prompt: list[int], continuations: list[list[int]]) -> list[float]:
        """The summed log-probability of each continuation after token ids `prompt`, which is evaluated once."""
        self.llama.reset()
        self.llama.eval(prompt)
        start = len(prompt) - 1  # the prompt's last position predicts a continuation's first token
        scores = []
        for continuation in continuations:
            self.llama.n_tokens = len(prompt)  # eval drops the KV cache past n_tokens: the prompt's is kept
            self.llama.eval(continuation)
            logits = np.asarray(self.llama.scores[start:start + len(continuation)], dtype=np.float64)
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            scores.append(float(log_probs[np.arange(len(continuation)), continuation].sum()))
        return scores

    def _token_text(self, token: int) -> str:
        return self.llama.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _end_of_turn_id(self) -> int:
        render = self._chat_formatter(add_generation_prompt=False)
        tail = self.tokenize(data.text_after_assistant_turn(lambda messages: render(messages=messages).prompt,
                                                            f"The chat template of {self.path}"))
        return tail[0] if tail else self.llama.token_eos()


@contextmanager
def _without_weight_repacking():
    """Load with llama.cpp's CPU weight repacking ("extra buffer types") off.

    On the AMX-capable Xeon CPUs measured here (2026-11), llama.cpp 0.3.36's AMX matmul on repacked quantized
    weights segfaults the whole process; f16 files are unaffected. llama-cpp-python exposes the switch
    (use_extra_bufts) only through the default model parameters, so they are wrapped while the model loads.
    """
    import llama_cpp.llama_cpp as raw

    original = raw.llama_model_default_params

    def params():
        value = original()
        value.use_extra_bufts = False
        return value

    raw.llama_model_default_params = params
    try:
        yield
    finally:
        raw.llama_model_default_params = original
