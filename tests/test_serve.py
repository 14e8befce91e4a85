"""fasttune serve: an OpenAI-compatible endpoint for the tiny model, plain and streamed, and a port in use refused."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from fasttune.errors import FasttuneError
from fasttune.ports import check_port_free


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(model, port: int):
    server = subprocess.Popen([sys.executable, "-m", "fasttune", "serve", "--model", str(model), "--port", str(port)],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"serve exited with {server.returncode}: {server.stderr.read()}")
        try:
            return server, httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    pytest.fail("serve did not answer within 180 s")


def _chat(port: int, model_id: str, ask: str, ask_stream: bool):
    body = {"model": model_id, "messages": [{"role": "user", "content": ask}], "max_tokens": 8,
            "temperature": 0, "stream": ask_stream}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        if not ask_stream:
            return json.loads(response.read())
        return [json.loads(line[6:]) for line in response.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"]


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir):
    port = _free_port()
    server, listed = _start(tiny_model_dir, port)
    yield port, listed
    server.terminate()
    server.wait(30)


def _greedy_reference(model_dir, ask: str, max_new_tokens: int) -> str:
    """What transformers' greedy decoding of the tiny model says, for the served replies to match."""
    import fasttune

    model = fasttune.load(model_dir)
    ids = model.tokenizer.apply_chat_template([{"role": "user", "content": ask}], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)["input_ids"]
    new = model.model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=model.tokenizer.convert_tokens_to_ids(model.end_of_turn))[0, ids.shape[1]:]
    return model.tokenizer.decode(new, skip_special_tokens=True)


def test_serve_answers_a_chat_completion_plain_and_streamed(tiny_server, tiny_model_dir):
    port, listed = tiny_server
    expected = _greedy_reference(tiny_model_dir, "Which is larger, 3 or 7?", 8)
    model_id = listed["data"][0]["id"]
    assert listed["object"] == "list" and model_id
    plain = _chat(port, model_id, "Which is larger, 3 or 7?", ask_stream=False)
    text = plain["choices"][0]["message"]["content"]
    assert plain["object"] == "chat.completion" and plain["choices"][0]["message"]["role"] == "assistant"
    assert text == expected and len(text) > 0  # random weights: 8 newlines, but exactly greedy's 8
    chunks = _chat(port, model_id, "Which is larger, 3 or 7?", ask_stream=True)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert len(chunks) >= 3 and streamed == expected  # greedy: the stream spells the same reply


def test_serve_works_with_the_openai_client(tiny_server):
    openai = pytest.importorskip("openai")
    port, listed = tiny_server
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    reply = client.chat.completions.create(model=listed["data"][0]["id"], max_tokens=6, temperature=0,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert len(reply.choices[0].message.content) > 0
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=listed["data"][0]["id"], max_tokens=6, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Hi"}])]
    assert "".join(pieces) == reply.choices[0].message.content


def test_serve_refuses_a_port_in_use_naming_the_port_and_the_fix():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FasttuneError, match=rf"port {port} .*in use.*--port {port + 1}"):
            check_port_free("127.0.0.1", port)
        started = subprocess.run([sys.executable, "-m", "fasttune", "serve", "--port", str(port)],
                                 capture_output=True, text=True, timeout=120)
    assert started.returncode != 0 and f"port {port}" in started.stderr and "Traceback" not in started.stderr


def test_serve_answers_from_a_gguf_through_llama_cpp_server_plain_and_streamed():
    from fastapi.testclient import TestClient

    from fasttune import embedded
    from fasttune.serve import gguf_app

    try:
        path = embedded.gguf_path()
    except FasttuneError as missing:
        pytest.skip(str(missing))
    client = TestClient(gguf_app(path))
    assert client.get("/v1/models").json()["data"][0]["id"] == path.name
    body = {"messages": [{"role": "user", "content": "Which is larger, 3 or 7?"}], "max_tokens": 8, "temperature": 0}
    plain = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert plain["role"] == "assistant" and "7" in plain["content"]  # SmolLM2-135M answers this one right
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line.strip() != "data: [DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == plain["content"]
