"""An OpenAI-compatible chat-completions server for a model fasttune loads, on 127.0.0.1 by default.

    fasttune serve [--model MODEL] [--port 8000] [--host 127.0.0.1]

A .gguf file is served by llama-cpp-python's own server (llama_cpp.server: the well-kept OpenAI-compatible one);
a transformers model (the embedded default, a base, adapter or merged folder) by a small FastAPI app with
`/v1/models` and `/v1/chat/completions` (plain JSON, or server-sent events with `"stream": true`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fasttune import ports
from fasttune.app import models


@dataclass
class ServeConfig:
    """What `serve` serves and where (its arguments, as a config)."""

    model: str | None = None
    """A model folder, adapter folder, merged export or .gguf file (default: the embedded model)."""
    host: str = "127.0.0.1"
    """The address to bind (127.0.0.1: this machine only)."""
    port: int = 8000
    """The port to listen on."""


def transformers_app(model: models.TransformersChatModel):
    """A FastAPI app answering OpenAI chat-completion requests with `model`."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import StreamingResponse

    app = FastAPI(title=f"fasttune serve {model.name}")

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": model.name, "object": "model", "owned_by": "fasttune"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: dict):
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "fasttune: the request has no messages (messages=[]). Send a list of "
                                     "{role, content} chat messages.")
        sampling = models.Sampling(temperature=float(request.get("temperature") or 0.0),
                                   top_p=float(request.get("top_p") or 1.0),
                                   max_new_tokens=int(request.get("max_tokens") or
                                                      request.get("max_completion_tokens") or 128),
                                   seed=request.get("seed"))
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if request.get("stream"):
            def events():
                def chunk(delta: dict, finish: str | None) -> str:
                    body = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                            "model": model.name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    return f"data: {json.dumps(body)}\n\n"

                yield chunk({"role": "assistant"}, None)
                for piece in model.stream(chat, sampling):
                    yield chunk({"content": piece}, None)
                yield chunk({}, "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        text = models.reply(model, chat, sampling)
        return {"id": reply_id, "object": "chat.completion", "created": created, "model": model.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}]}

    return app


def gguf_app(path: str | Path):
    """llama-cpp-python's OpenAI-compatible server app for the GGUF file at `path`."""
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    return create_app(server_settings=ServerSettings(),
                      model_settings=[ModelSettings(model=str(path), model_alias=Path(path).name, n_ctx=2048,
                                                    chat_format=None, verbose=False)])


def serve(spec: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the model named by `spec` until interrupted."""
    import uvicorn

    ports.check_port_free(host, port)
    app = gguf_app(spec) if models.is_gguf(spec) else transformers_app(models.load(spec))
    uvicorn.run(app, host=host, port=port, log_level="warning")
