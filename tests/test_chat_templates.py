"""Chat templates: each named template renders its family's published format (pinned on the family's own example
where it publishes one), assistant-only masking over whole conversations, refusal of templates that cannot mark
assistant turns, and the template used in training carried through the adapter, the merged export and the GGUF."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import fasttune
from fasttune import backend, chat_templates, conversation

SYSTEM, USER_1, REPLY_1, USER_2, REPLY_2 = "Be brief.", "Hi!", "Hello.", "Name a colour.", "Blue."
TWO_TURNS = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER_1},
             {"role": "assistant", "content": REPLY_1}, {"role": "user", "content": USER_2},
             {"role": "assistant", "content": REPLY_2}]


def _turns(*texts: str) -> list[dict]:
    return [{"role": ("user", "assistant")[index % 2], "content": text} for index, text in enumerate(texts)]


# (template, special tokens it is rendered with, conversation, the whole conversation, the prompt for the last reply)
RENDERINGS = [
    ("chatml", {}, TWO_TURNS,
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>"
     "\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n",
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>"
     "\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"),
    ("qwen-2.5", {}, TWO_TURNS[1:],
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nName a colour."
     "<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n",
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nName a colour."
     "<|im_end|>\n<|im_start|>assistant\n"),
    ("qwen-3", {}, TWO_TURNS,
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
     "</think>\n\nHello.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
     "</think>\n\nBlue.<|im_end|>\n",
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
     "</think>\n\nHello.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
     "</think>\n\n"),
    ("llama-3", {"bos_token": "<|begin_of_text|>"}, TWO_TURNS,
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
     "<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|><|start_header_id|>assistant"
     "<|end_header_id|>\n\nBlue.<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
     "<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|><|start_header_id|>assistant"
     "<|end_header_id|>\n\n"),
    # Gemma's formatting page: its dialogue example, and a system instruction put into the first user turn
    ("gemma", {"bos_token": "<bos>"}, _turns("knock knock", "who is there", "Gemma", "Gemma who?"),
     "<bos><start_of_turn>user\nknock knock<end_of_turn>\n<start_of_turn>model\nwho is there<end_of_turn>\n"
     "<start_of_turn>user\nGemma<end_of_turn>\n<start_of_turn>model\nGemma who?<end_of_turn>\n",
     "<bos><start_of_turn>user\nknock knock<end_of_turn>\n<start_of_turn>model\nwho is there<end_of_turn>\n"
     "<start_of_turn>user\nGemma<end_of_turn>\n<start_of_turn>model\n"),
    ("gemma", {"bos_token": "<bos>"},
     [{"role": "system", "content": "Only reply like a pirate."},
      *_turns("What is the answer to life the universe and everything?", "Arrr, 'tis 42,")],
     "<bos><start_of_turn>user\nOnly reply like a pirate.\n\nWhat is the answer to life the universe and everything?"
     "<end_of_turn>\n<start_of_turn>model\nArrr, 'tis 42,<end_of_turn>\n",
     "<bos><start_of_turn>user\nOnly reply like a pirate.\n\nWhat is the answer to life the universe and everything?"
     "<end_of_turn>\n<start_of_turn>model\n"),
    # Mistral's tokenization guide, tokenizer v3: its example conversation
    ("mistral", {"bos_token": "<s>", "eos_token": "</s>"},
     _turns("Hello, how are you?", "Fine, and you?", "I'm doing great!", "Glad to hear!"),
     "<s>[INST] Hello, how are you?[/INST] Fine, and you?</s>[INST] I'm doing great![/INST] Glad to hear!</s>",
     "<s>[INST] Hello, how are you?[/INST] Fine, and you?</s>[INST] I'm doing great![/INST]"),
    ("phi-3", {}, TWO_TURNS,
     "<|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nName a colour."
     "<|end|>\n<|assistant|>\nBlue.<|end|>\n",
     "<|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nName a colour."
     "<|end|>\n<|assistant|>\n"),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(("name", "special", "messages", "whole", "prompt"), RENDERINGS,
                         ids=[f"{case[0]}-{index}" for index, case in enumerate(RENDERINGS)])
def test_each_named_template_renders_a_two_turn_conversation_as_its_family_specifies(tokenizer, name, special,
                                                                                    messages, whole, prompt):
    _, text = chat_templates.template_text(name)
    assert tokenizer.apply_chat_template(messages, chat_template=text, tokenize=False, **special) == whole
    assert tokenizer.apply_chat_template(messages[:-1], chat_template=text, tokenize=False,
                                         add_generation_prompt=True, **special) == prompt


def test_every_named_template_is_pinned_above():
    assert {case[0] for case in RENDERINGS} == set(chat_templates.TEMPLATES)


@pytest.mark.parametrize("name", ["gemma", "mistral"])
def test_templates_of_families_without_free_roles_refuse_turns_out_of_order(tokenizer, name):
    _, text = chat_templates.template_text(name)
    with pytest.raises(Exception, match=rf"{name}: after an optional system message, turns alternate user/assistant"):
        tokenizer.apply_chat_template(_turns("a", "b")[1:], chat_template=text, tokenize=False)


def _with_tokens(tokenizer, tokens: list[str]):
    """A copy of the tiny model's tokenizer that has a family's turn markers as special tokens."""
    import copy

    extended = copy.deepcopy(tokenizer)
    extended.add_special_tokens({"additional_special_tokens": tokens})
    return extended


@pytest.mark.parametrize(("name", "markers", "end_of_turn"), [
    ("chatml", [], "<|im_end|>"),
    ("gemma", ["<bos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
])
def test_assistant_only_masking_covers_each_reply_and_its_end_of_turn_token_and_nothing_else(tokenizer, name,
                                                                                           markers, end_of_turn):
    tokens = _with_tokens(tokenizer, markers)
    entry = backend.use_chat_template(tokens, name)
    assert entry["name"] == name and tokens.chat_template == chat_templates.template_text(name)[1]
    messages = TWO_TURNS[1:] if name == "gemma" else TWO_TURNS
    encoded = conversation.encode(tokens, messages, end_of_turn)
    assert tokens.decode(encoded.input_ids) == tokens.apply_chat_template(messages, tokenize=False)
    runs, run = [], []
    for token, trained in zip(encoded.input_ids, encoded.completion_mask, strict=True):
        if trained:
            run.append(token)
        elif run:
            runs, run = runs + [run], []
    runs += [run] if run else []
    assert [tokens.decode(ids) for ids in runs] == [REPLY_1 + end_of_turn, REPLY_2 + end_of_turn]
    last = conversation.encode(tokens, messages, end_of_turn, train_on="last")
    assert tokens.decode([t for t, m in zip(last.input_ids, last.completion_mask) if m]) == REPLY_2 + end_of_turn


def test_a_template_without_assistant_markers_is_refused_saying_so(tiny_model_dir, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for message in messages %}{{ message['content'] }}<|im_end|>{% endfor %}")
    with pytest.raises(fasttune.FasttuneError, match=r"cannot mark where assistant turns start and end"):
        fasttune.load(tiny_model_dir, dtype=torch.float32, chat_template=plain)


def test_a_template_whose_turn_markers_are_not_tokens_of_the_model_is_refused(tiny_model_dir):
    with pytest.raises(fasttune.FasttuneError, match=r"llama-3.*cannot mark where assistant turns start and end.*"
                                                     r"followed by '<\|eot_id\|>'"):
        fasttune.load(tiny_model_dir, dtype=torch.float32, chat_template="llama-3")


def test_an_unknown_template_name_suggests_close_ones(tokenizer):
    with pytest.raises(fasttune.FasttuneError, match=r"Unknown chat template 'chatm'\. Did you mean: chatml\?"):
        backend.use_chat_template(tokenizer, "chatm")


def test_a_template_file_with_a_syntax_error_is_named_with_its_line(tokenizer, tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}\n{{ message['content'] }\n{% endfor %}")
    before = tokenizer.chat_template
    with pytest.raises(fasttune.FasttuneError, match=rf"chat_template={re.escape(str(broken))}, line 2: "
                                                     r"TemplateSyntaxError"):
        backend.use_chat_template(tokenizer, broken)
    assert tokenizer.chat_template == before  # a refused template leaves the tokenizer as it was
    with pytest.raises(fasttune.FasttuneError, match=r"Data file not found: .*missing.jinja"):
        backend.use_chat_template(tokenizer, tmp_path / "missing.jinja")


@pytest.fixture(scope="module")
def base_without_template(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as a base checkpoint: the same weights and tokenizer, no chat template."""
    folder = tmp_path_factory.mktemp("base") / "tiny-base"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink()
    return folder


def test_a_base_model_without_a_template_is_refused_for_a_chat_task_until_one_is_given(base_without_template):
    model = fasttune.load(base_without_template, dtype=torch.float32)
    assert model.tokenizer.chat_template is None and model.tokenizer.pad_token == model.tokenizer.eos_token
    task = fasttune.tasks.get("larger_number")
    with pytest.raises(fasttune.FasttuneError, match=r"The model has no chat template.*chat_template=\.\.\.\) from "
                                                     r"chatml, llama-3"):
        fasttune.evaluate(model, task, limit=2)
    tuned = fasttune.load(base_without_template, dtype=torch.float32, chat_template="chatml")
    assert fasttune.evaluate(tuned, task, limit=2).n == 2


def test_a_model_loaded_with_a_template_and_exported_untrained_carries_it(base_without_template, tmp_path):
    from transformers import AutoTokenizer

    model = fasttune.load(base_without_template, dtype=torch.float32, chat_template="qwen-2.5")
    result = fasttune.export(model, tmp_path / "export", formats=("merged_16bit",))
    qwen = chat_templates.template_text("qwen-2.5")[1]
    assert AutoTokenizer.from_pretrained(result.merged_dir).chat_template == qwen
    assert json.loads((result.merged_dir / "fasttune.json").read_text())["chat_template"]["name"] == "qwen-2.5"


@pytest.fixture(scope="module")
def exported(base_without_template, tmp_path_factory):
    model = fasttune.load(base_without_template, dtype=torch.float32, chat_template="chatml")
    run = fasttune.train(model, fasttune.tasks.get("larger_number"), max_steps=2, batch_size=4, limit=8,
                         output_dir=str(tmp_path_factory.mktemp("run")))
    return run, fasttune.export(run, tmp_path_factory.mktemp("exports") / "tiny", gguf_quants=("f16",))


def test_the_training_template_is_saved_with_the_adapter_and_comes_back_with_it(exported, base_without_template):
    run, result = exported
    chatml = chat_templates.template_text("chatml")[1]
    for folder in (run.adapter_dir, result.adapter_dir):
        assert json.loads((folder / "fasttune.json").read_text())["chat_template"] == {"name": "chatml",
                                                                                      "text": chatml}
        assert (folder / "chat_template.jinja").read_text() == chatml
    assert fasttune.load(result.adapter_dir, dtype=torch.float32).tokenizer.chat_template == chatml
    assert fasttune.load(base_without_template).tokenizer.chat_template is None  # the base is left as it was


def test_adapter_merged_and_gguf_render_the_same_prompt_with_the_training_template(exported):
    import gguf as gguf_lib
    from transformers import AutoTokenizer

    from fasttune.engines import GgufEngine

    _, result = exported
    chatml = chat_templates.template_text("chatml")[1]
    messages = TWO_TURNS[:4]
    adapter = fasttune.load(result.adapter_dir, dtype=torch.float32).tokenizer
    merged = AutoTokenizer.from_pretrained(result.merged_dir)
    field = gguf_lib.GGUFReader(result.gguf_files["f16"]).fields["tokenizer.chat_template"]
    assert merged.chat_template == chatml and field.contents() == chatml
    assert json.loads((result.merged_dir / "fasttune.json").read_text())["chat_template"]["name"] == "chatml"
    expected = RENDERINGS[0][4]
    assert adapter.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    assert merged.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    assert GgufEngine.open(result.gguf_files["f16"]).render(messages) == expected
    modelfile = result.modelfiles["f16"].read_text()
    assert "SYSTEM" not in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)
    for turn in (TWO_TURNS[1:3], TWO_TURNS[:3]):
        system = turn[0]["content"] if turn[0]["role"] == "system" else ""
        assert _ollama_render(template, system, USER_1, REPLY_1) == merged.apply_chat_template(turn, tokenize=False)


def _ollama_render(template: str, system: str, prompt: str, response: str) -> str:
    """What Ollama makes of the Modelfile's Go template for one turn (only the constructs fasttune writes)."""
    branch = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ else \}\}(.*?)\{\{ end \}\}",
                    lambda found: found.group(1) if system else found.group(2), template, flags=re.S)
    return branch.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt).replace("{{ .Response }}",
                                                                                           response)
