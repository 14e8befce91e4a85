"""Multi-turn conversations tokenized with the loss on assistant turns only, checked token by token."""

import copy

import pytest

from fasttune import conversation
from fasttune.errors import FasttuneError

CHAT = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
    {"role": "user", "content": "Which of the two is further south?"},
    {"role": "assistant", "content": "Rome is further south than Paris."},
]
REPLIES = [message["content"] for message in CHAT if message["role"] == "assistant"]
# [INST] turns closed by <|endoftext|>, as Mistral's template closes them with </s>
INST_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                 "{% elif m['role'] == 'assistant' %}{{ m['content'] }}<|endoftext|>{% endif %}{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer(embedded_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


def with_template(tokenizer, template):
    changed = copy.deepcopy(tokenizer)
    changed.chat_template = template
    return changed


def trained_runs(tokenizer, encoded):
    """The decoded text of each run of consecutive tokens under loss."""
    runs, current = [], []
    for token, trained in zip(encoded.input_ids, encoded.completion_mask):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_every_assistant_turn_and_nothing_else_is_under_loss(tokenizer):
    encoded = conversation.encode(tokenizer, CHAT, "<|im_end|>")

    assert trained_runs(tokenizer, encoded) == [reply + "<|im_end|>" for reply in REPLIES]
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert encoded.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert sum(encoded.completion_mask) == sum(
        len(tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]) for reply in REPLIES)


def test_labels_ignore_every_token_outside_the_assistant_turns(tokenizer):
    encoded = conversation.encode(tokenizer, CHAT, "<|im_end|>")

    kept = [label for label in encoded.labels if label != conversation.IGNORED]
    assert tokenizer.decode(kept) == "".join(reply + "<|im_end|>" for reply in REPLIES)
    assert len(encoded.labels) == len(encoded.input_ids)


def test_last_turn_only_trains_the_final_reply(tokenizer):
    encoded = conversation.encode(tokenizer, CHAT, "<|im_end|>", train_on="last")

    assert trained_runs(tokenizer, encoded) == ["Rome is further south than Paris.<|im_end|>"]
    assert encoded.input_ids == conversation.encode(tokenizer, CHAT, "<|im_end|>").input_ids


def test_a_second_template_marks_its_turns_with_its_own_end_token(tokenizer):
    inst = with_template(tokenizer, INST_TEMPLATE)

    encoded = conversation.encode(inst, CHAT[1:], "<|endoftext|>")

    assert trained_runs(inst, encoded) == [reply + "<|endoftext|>" for reply in REPLIES]
    assert inst.decode(encoded.input_ids).startswith("[INST] What is the capital of France? [/INST]")


def test_a_template_that_trims_replies_is_marked_on_the_trimmed_text(tokenizer):
    trimming = with_template(tokenizer, tokenizer.chat_template.replace("message['content']",
                                                                         "message['content'] | trim"))
    chat = [*CHAT[:-1], {"role": "assistant", "content": "  Rome is further south.  "}]

    encoded = conversation.encode(trimming, chat, "<|im_end|>", train_on="last")

    assert trained_runs(trimming, encoded) == ["Rome is further south.<|im_end|>"]


def test_a_template_that_renders_earlier_replies_differently_is_refused_naming_it(tokenizer):
    # like templates that drop the reasoning of earlier turns: history replies are not what the model wrote
    hiding = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' and not loop.last %}"
              "(earlier reply){% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    with pytest.raises(FasttuneError, match=r"row 3, message 2: my-template cannot mark where assistant turns start "
                                            r"and end: the turn's tokens change when later turns follow it"):
        conversation.encode(with_template(tokenizer, hiding), CHAT, "<|im_end|>", where="row 3",
                            template="my-template")


def test_a_template_without_an_end_of_turn_token_is_refused(tokenizer):
    plain = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
             "{% if add_generation_prompt %}assistant: {% endif %}")

    with pytest.raises(FasttuneError, match=r"cannot mark where assistant turns start and end: the assistant's text "
                                            r"is not followed by the end-of-turn token '<\|im_end\|>'"):
        conversation.encode(with_template(tokenizer, plain), CHAT, "<|im_end|>")


def test_a_generation_prompt_unlike_the_turn_it_asks_for_is_refused(tokenizer):
    mismatched = tokenizer.chat_template.replace("{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant:\n' }}")
    assert mismatched != tokenizer.chat_template

    with pytest.raises(FasttuneError, match="generation prompt differs from how an assistant turn starts"):
        conversation.encode(with_template(tokenizer, mismatched), CHAT, "<|im_end|>")


def test_a_tokenizer_without_a_chat_template_is_refused(tokenizer):
    with pytest.raises(FasttuneError, match="the tokenizer has no chat template"):
        conversation.encode(with_template(tokenizer, None), CHAT, "<|im_end|>")


@pytest.mark.parametrize(("messages", "problem"), [
    (CHAT[:-1], r"message 5: the conversation ends on a user turn"),
    ([*CHAT[:2], {"role": "assistant", "content": "  "}], r"message 2: the assistant turn is empty"),
    ([CHAT[1], CHAT[1], CHAT[2]], r"message 1: two user turns in a row"),
    ([CHAT[1], CHAT[0], CHAT[2]], r"message 1: a system message may only open the conversation"),
    ([CHAT[2]], r"message 0: expected a user turn, got assistant"),
    ([{"role": "tool", "content": "x"}], r"message 0: role 'tool' is not one of system, user, assistant"),
    ([], r"the conversation holds no messages"),
])
def test_malformed_conversations_are_refused_naming_the_message(tokenizer, messages, problem):
    with pytest.raises(FasttuneError, match=problem):
        conversation.encode(tokenizer, messages, "<|im_end|>", where="chats.jsonl, line 4")
