"""Every call the app and the server make into a model, in one place: load a spec, stream a chat reply.

A spec is None (the embedded default), a base/adapter/merged folder (transformers) or a .gguf file (llama.cpp).
Streaming uses transformers' TextIteratorStreamer or llama.cpp's token stream; when the engine protocol lands,
only this module changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fasttune.errors import FasttuneError


@dataclass
class Sampling:
    """How a reply is decoded."""

    temperature: float = 0.0
    """0 decodes greedily; above 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling mass (used only when temperature > 0)."""
    max_new_tokens: int = 128
    """The reply's length cap in tokens."""
    seed: int | None = None
    """Sampling seed, for a reproducible sampled reply."""


class TransformersChatModel:
    """A fasttune.Model that renders chat messages with its own template and streams the reply's text pieces."""

    def __init__(self, model):
        self.model = model
        self.name = model.name
        self._lock = threading.Lock()  # one generate at a time on one set of weights

    @property
    def chat_template(self) -> str:
        return self.model.tokenizer.chat_template

    def stream(self, messages: list[dict], sampling: Sampling) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        tokenizer = self.model.tokenizer
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"].to(self.model.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        decoding = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0} \
            if sampling.temperature > 0 else {"do_sample": False}
        errors = []

        def run():
            try:
                with self._lock, torch.inference_mode():
                    if sampling.seed is not None:
                        torch.manual_seed(sampling.seed)
                    self.model.model.eval()
                    self.model.model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=sampling.max_new_tokens,
                        eos_token_id=tokenizer.convert_tokens_to_ids(self.model.end_of_turn),
                        pad_token_id=tokenizer.pad_token_id, streamer=streamer, **decoding)
            except BaseException as error:  # surfaced in the consumer's thread below
                errors.append(error)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if errors:
            raise errors[0]


class GgufChatModel:
    """A GGUF file through llama.cpp, with the same `stream` as TransformersChatModel."""
    def __init__(self, gguf):
        self.gguf = gguf
        self.name = gguf.name
        self._lock = threading.Lock()

    @property
    def chat_template(self) -> str:
        return self.gguf.llama.metadata["tokenizer.chat_template"]

    def stream(self, messages: list[dict], sampling: Sampling) -> Iterator[str]:
        llama = self.gguf.llama
        prompt = self.gguf.tokenize(self.gguf.render(messages))
        with self._lock:
            if sampling.seed is not None:
                llama.set_seed(sampling.seed)
            llama.reset()
            pieces = bytearray()
            count = 0
            for token in llama.generate(prompt, temp=sampling.temperature, top_p=sampling.top_p, top_k=0,
                                        reset=True):
                if token in (self.gguf.end_of_turn_id, llama.token_eos()) or count >= sampling.max_new_tokens:
                    break
                count += 1
                pieces += llama.detokenize([token])
                try:
                    text = pieces.decode()
                except UnicodeDecodeError:  # a character split over tokens: wait for its other bytes
                    continue
                pieces.clear()
                yield text


def reply(model: TransformersChatModel | GgufChatModel, messages: list[dict], sampling: Sampling) -> str:
    """The whole reply at once."""
    return "".join(model.stream(messages, sampling))


def is_gguf(spec: str | Path | None) -> bool:
    return spec is not None and str(spec).endswith(".gguf")


def load(spec: str | Path | None = None) -> TransformersChatModel | GgufChatModel:
    """The model named by `spec` (see the module docstring), ready to chat."""
    if is_gguf(spec):
        from fasttune.engines.gguf_file import GgufEngine

        return GgufChatModel(GgufEngine.open(spec, n_ctx=2048))
    if spec is not None and not Path(spec).expanduser().exists():
        raise FasttuneError(f"no model at {spec} (model={spec}). Pass a model folder, an adapter "
                            "folder, a merged export or a .gguf file, or nothing for the embedded default.")
    from fasttune.backend import load as load_model

    return TransformersChatModel(load_model(spec))
