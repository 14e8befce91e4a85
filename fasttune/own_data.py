"""Data a user brings, read without code: chat rows (OpenAI `messages`, ShareGPT `conversations`) and instruction
rows (alpaca) from a local file, a datasets save_to_disk folder or a LLaMA-Factory dataset_info.json entry, each
turned into a checked conversation and split into train and test.

Every file goes through fasttune.reading; every problem names the file, the line (or row) and the field.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fasttune import conversation, hub, reading, scoring
from fasttune.errors import FasttuneError, FasttuneWarning, raise_problems, unknown_name
from fasttune.reading import Field, Place
from fasttune.splits import bucket
from fasttune.task import Example, Messages

Formatting = Literal["chat", "alpaca"]
"""chat: a list of messages a row (LLaMA-Factory's sharegpt); alpaca: instruction, input and output columns."""
COLUMNS: dict[str, dict[str, str | None]] = {
    "chat": {"messages": None, "system": "system"},
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history"},
}
"""The column keys of each formatting (LLaMA-Factory's names) and the column each reads by default; None for chat
messages: `messages` or `conversations`, whichever the rows hold."""
UNSUPPORTED_COLUMNS = ("tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag")
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag", "observation_tag", "function_tag")
MESSAGE_KEYS = {"messages": ("role", "content"), "conversations": ("from", "value")}
ROLE_NAMES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}
TOOL_ROLES = ("tool", "observation", "function", "function_call", "ipython")
ENTRY_KEYS = ("file_name", "formatting", "columns", "tags", "file_sha1", "split", "ranking")
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
TASK_OF = {"chat": "chat", "alpaca": "instruction"}
LLAMA_FACTORY_FORMATTING = {"sharegpt": "chat", "alpaca": "alpaca"}


@dataclass
class OwnDataConfig:
    """Where a user's rows are and how they are read, split and scored (the options of tasks `chat` and
    `instruction`)."""

    train_file: str | None = None
    """The training rows: a .jsonl, .json (an array or JSON lines), .csv, .tsv or .parquet file (each may be .gz),
    or a folder written by datasets' save_to_disk; a relative path is taken from data_dir."""
    eval_file: str | None = None
    """Held-out rows, scored as the 'test' split; without one, test_percent of the training rows are held out."""
    test_percent: int = 10
    """Percent of the training rows held out as 'test' when there is no eval file, chosen by a hash of each prompt
    (rows with the same prompt stay together)."""
    split_seed: int = 0
    """Seed of that hash split: another seed holds out other rows."""
    dataset_info: str | None = None
    """A LLaMA-Factory dataset_info.json, read as is: the entry `dataset` names the file (beside the json), its
    formatting (alpaca or sharegpt), columns and tags."""
    dataset: str | None = None
    """The dataset_info entry to train on."""
    eval_dataset: str | None = None
    """A dataset_info entry to score as the 'test' split."""
    columns: dict[str, str] = field(default_factory=dict)
    """Which column holds what, by LLaMA-Factory's names: chat: messages, system; instruction: prompt, query,
    response, system, history (e.g. {prompt: question, response: answer})."""
    tags: dict[str, str] = field(default_factory=dict)
    """The keys and role names of chat messages: role_tag, content_tag, user_tag, assistant_tag, system_tag
    (default: role/content for `messages`, from/value with human/gpt for `conversations`)."""
    train_on: conversation.TrainOn = "all"
    """Which assistant turns carry the loss: all of them, or the last one only."""
    labels: list[str] | None = None
    """A closed set of answers: each test answer is scored by the log-likelihood of every label (accuracy, recall
    per label, the answer distribution); every row's last reply must be one of them."""
    metrics: list[str] | None = None
    """Scores of generated answers against the reference reply (default: exact_match, f1, rougeL, bleu); any of
    exact_match, f1, subem, rouge1, rouge2, rougeL, sentence_bleu, embedding_similarity, bleu. The first is the
    primary metric."""
    max_new_tokens: int = 128
    """Longest generated answer when scoring."""

    def __post_init__(self):
        problems = []
        if (self.train_file is None) == (self.dataset_info is None):
            problems.append("give the rows as train_file or as dataset_info with dataset, one of the two "
                            f"(train_file={self.train_file!r}, dataset_info={self.dataset_info!r})")
        if self.dataset_info is not None and self.dataset is None:
            problems.append("dataset_info needs dataset, the name of its entry to train on")
        for name in ("dataset", "eval_dataset"):
            if getattr(self, name) is not None and self.dataset_info is None:
                problems.append(f"{name} names an entry of a dataset_info.json; set dataset_info too "
                                f"({name}={getattr(self, name)!r})")
        if self.eval_file is not None and self.eval_dataset is not None:
            problems.append("give held-out rows as eval_file or as eval_dataset, not both")
        if self.dataset_info is not None and (self.columns or self.tags):
            problems.append("dataset_info.json gives the columns and tags of its entries; leave columns and tags "
                            "out of the config")
        if not 0 <= self.test_percent < 100:
            problems.append(f"test_percent must be in [0, 100) (test_percent={self.test_percent})")
        if self.train_on not in ("all", "last"):
            problems.append(f"train_on must be 'all' or 'last' (train_on={self.train_on!r})")
        if self.max_new_tokens <= 0:
            problems.append(f"max_new_tokens must be positive (max_new_tokens={self.max_new_tokens})")
        if self.labels is not None:
            problems += _label_problems(self.labels)
            if self.metrics is not None:
                problems.append("labels are scored by accuracy and recall per label; metrics apply to generated "
                                f"answers. Set one of the two (metrics={self.metrics!r})")
        for name in self.metrics or ():
            if name not in scoring.NAMES:
                problems.append(_unknown("metric", name, scoring.NAMES).rstrip("."))
        if self.metrics is not None and not self.metrics:
            problems.append("metrics is empty; name at least one, or leave it out for the defaults")
        raise_problems(problems)


def _unknown(kind: str, name: str, known: list[str]) -> str:
    """The message of `unknown_name` (close matches, then what exists), to follow a place."""
    return unknown_name(kind, name, known).args[0].removeprefix("fasttune: ")


def _label_problems(labels: list[str]) -> list[str]:
    if not isinstance(labels, list) or len(labels) < 2:
        return [f"labels must list at least two answers (labels={labels!r})"]
    if not all(isinstance(label, str) and label.strip() for label in labels):
        return [f"every label must be non-empty text (labels={labels!r})"]
    repeat = reading.first_repeat(label.strip().casefold() for label in labels)
    return [f"labels holds {labels[repeat[1]]!r} twice (compared case-insensitively)"] if repeat else []


@dataclass(frozen=True)
class Source:
    """One file (or saved dataset) of rows and how to read it."""

    path: Path
    formatting: Formatting
    columns: dict[str, str]
    tags: dict[str, str]
    split: str | None = None
    """The split of a saved DatasetDict."""


def sources(config: OwnDataConfig, formatting: Formatting, base: Path) -> tuple[Source, Source | None]:
    """The training rows' source and the held-out rows' source (None: hash-split the training rows)."""
    held_out = None
    if config.dataset_info is not None:
        info = base / config.dataset_info
        train = dataset_entry(info, config.dataset, formatting)
        if config.eval_dataset is not None:
            held_out = dataset_entry(info, config.eval_dataset, formatting)
    else:
        check_column_keys(config.columns, formatting, "columns")
        check_tag_keys(config.tags, "tags")
        train = Source(_local(base, config.train_file, "train_file"), formatting, dict(config.columns),
                       dict(config.tags))
    if train.split is None and (train.path / "dataset_dict.json").exists():
        train, held_out = _saved_splits(train, held_out)
    if config.eval_file is not None:
        held_out = Source(_local(base, config.eval_file, "eval_file"), formatting, train.columns, train.tags)
    return train, held_out


def _local(base: Path, given: str, option: str) -> Path:
    """The local path of option `option`, or, where no such path exists and it reads as a hub dataset id
    ("org/name"), that dataset's data file from the hub cache (downloaded when online; see fasttune.hub)."""
    path = base / given
    if path.exists() or not hub.looks_like_hub_id(given):
        return path
    folder = hub.dataset_folder(given)
    files = sorted(file for file in folder.rglob("*") if file.is_file() and reading.data_format(file) in
                   reading.ROW_FORMATS)
    training = [file for file in files if "train" in file.name.lower()]
    chosen = files if len(files) == 1 else training
    if len(chosen) != 1:
        names = ", ".join(str(file.relative_to(folder)) for file in files) or "none"
        raise FasttuneError(f"{option}={given!r}: the hub dataset holds {len(files)} data files ({names}) and "
                            f"fasttune cannot tell which one holds the training rows. Give that file's path "
                            f"(under {folder}) as {option}.")
    return chosen[0]


def _saved_splits(train: Source, held_out: Source | None) -> tuple[Source, Source | None]:
    """A DatasetDict folder: its train split, and (unless rows are held out already) its test or validation split."""
    from datasets import load_from_disk

    names = list(load_from_disk(str(train.path)))
    if "train" not in names:
        raise FasttuneError(f"{train.path} holds splits {', '.join(names)} but no 'train'. Save the training rows "
                            "as the 'train' split.")
    split = next((name for name in ("test", "validation") if name in names), None)
    if held_out is None and split is not None:
        held_out = Source(train.path, train.formatting, train.columns, train.tags, split)
    return Source(train.path, train.formatting, train.columns, train.tags, "train"), held_out


def check_column_keys(columns: dict, formatting: Formatting, where: str) -> None:
    """Raise for a column key the formatting does not read (with close matches)."""
    if not isinstance(columns, dict) or not all(isinstance(value, str) for value in columns.values()):
        raise FasttuneError(f"{where} must map column keys to column names (columns={columns!r}).")
    for key in columns:
        if key in UNSUPPORTED_COLUMNS:
            raise FasttuneError(f"{where}: column key '{key}' is not supported: fasttune trains on system, user "
                                f"and assistant text (columns.{key}={columns[key]!r}). Leave it out.")
        if key not in COLUMNS[formatting]:
            raise FasttuneError(f"{where} (task '{TASK_OF[formatting]}'): "
                                f"{_unknown('column key', key, list(COLUMNS[formatting]))}")


def check_tag_keys(tags: dict, where: str) -> None:
    """Raise for an unknown ShareGPT tag key (with close matches)."""
    if not isinstance(tags, dict) or not all(isinstance(value, str) for value in tags.values()):
        raise FasttuneError(f"{where} must map tag keys to names (tags={tags!r}).")
    for key in tags:
        if key not in TAG_KEYS:
            raise FasttuneError(f"{where}: {_unknown('tag', key, list(TAG_KEYS))}")


def dataset_entry(info: Path, name: str, formatting: Formatting) -> Source:
    """The source an entry of a LLaMA-Factory dataset_info.json describes, as LLaMA-Factory reads it."""
    entries = reading.read_json(info, {}, dict)
    by_name = {record.place.key: record for record in entries}
    if name not in by_name:
        raise FasttuneError(f"{info}: {_unknown('dataset', name, list(by_name))}")
    place, entry = by_name[name]
    hub = [key for key in HUB_KEYS if key in entry]
    if hub:
        raise place.error(f"the dataset is on a hub ({hub[0]}={entry[hub[0]]!r}); fasttune reads local files. "
                          "Download it and give its file as file_name.", shape=True)
    for key in entry:
        if key not in ENTRY_KEYS:
            raise place.error(f"field '{key}' is not read by fasttune (supported: {', '.join(ENTRY_KEYS)}). Leave it "
                              "out, or prepare the rows it selects in a file of their own.", shape=True)
    found = reading.problem(entry.get("file_name"), Field(), "file_name")
    if found:
        raise place.error(found.text + ".", shape=True)
    if entry.get("ranking"):
        raise place.error("the dataset is a preference dataset (ranking=true). Train on pairs with method 'dpo' "
                          "and pairs_file=.", shape=True)
    kind = entry.get("formatting", "alpaca")
    if kind not in LLAMA_FACTORY_FORMATTING:
        raise place.error(f"field 'formatting' is {kind!r}, expected alpaca or sharegpt.", shape=True)
    if LLAMA_FACTORY_FORMATTING[kind] != formatting:
        raise place.error(f"the dataset is formatting={kind!r}: train it with task "
                          f"'{TASK_OF[LLAMA_FACTORY_FORMATTING[kind]]}'.", shape=True)
    where = f"{place}, field 'columns'"
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    check_column_keys(columns, formatting, where)
    check_tag_keys(tags, f"{place}, field 'tags'")
    path = info.parent / entry["file_name"]
    if "file_sha1" in entry and path.is_file():
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest != entry["file_sha1"]:
            warnings.warn(f"fasttune: {path}: its SHA-1 is {digest}, not the file_sha1 {entry['file_sha1']} that "
                          f"{info.name} gives for '{name}' (the file changed since it was registered).",
                          FasttuneWarning, stacklevel=2)
    split = entry.get("split")
    if (path / "dataset_dict.json").exists():
        return Source(path, formatting, columns, tags, split)
    if split not in (None, "train"):  # a file or one saved dataset is all one "train" split, as in LLaMA-Factory
        raise place.error(f"field 'split' is {split!r}, but {entry['file_name']} holds one split (train). Leave "
                          "split out, or save the splits with datasets' DatasetDict.save_to_disk.", shape=True)
    return Source(path, formatting, columns, tags)


# --- rows -> conversations -------------------------------------------------------------------------------------------

def read_conversations(source: Source, labels: list[str] | None = None) -> list[tuple[Place, Messages]]:
    """Every row of `source` as a checked conversation; the last reply must be one of `labels` when given."""
    if reading.is_saved_dataset(source.path):
        records = reading.read_saved_dataset(source.path, {}, source.split)
    else:
        records = reading.read_rows(source.path, {})
    _check_mapped_columns(source, records)
    read_row = _alpaca_row if source.formatting == "alpaca" else _chat_row
    first: tuple[str, Place] | None = None
    conversations = []
    for place, row in records:
        kind = _row_kind(row, source, place)
        if first is None:
            first = kind, place
        elif kind != first[0]:
            raise place.error(f"mixed formats in one file: this row is {kind or 'of neither format'}, but "
                              f"{first[1].at} is {first[0]}. Keep to one format per file.", shape=True)
        messages, fields = read_row(row, place, source)
        found = conversation.conversation_problem(messages)
        if found:
            index, text = found
            raise place.error(f"{text} (field '{fields[index]}')." if index is not None else f"{text}.")
        if labels is not None and messages[-1]["content"].strip() not in [label.strip() for label in labels]:
            raise place.error(f"field '{fields[-1]}' is {reading.shown(messages[-1]['content'])}, expected one of "
                              f"the labels {labels}.")
        conversations.append((place, messages))
    return conversations


def _check_mapped_columns(source: Source, records: list[reading.Record]) -> None:
    """A column the mapping names (or a required default) that no row holds is an unknown column."""
    present = sorted({key for _, row in records for key in row})
    defaults = COLUMNS[source.formatting]
    required = ("prompt", "response") if source.formatting == "alpaca" else ()
    for key in dict.fromkeys([*required, *source.columns]):
        name = source.columns.get(key, defaults[key])
        if name not in present:
            error = _unknown("column", name, present)
            mapped = f"columns.{key}={name!r}" if key in source.columns else f"the default column of {key}"
            raise FasttuneError(f"{source.path} ({mapped}): {error} Map the file's columns with "
                                f"columns: {{{key}: <column>}}.")


def _row_kind(row: dict, source: Source, place: Place) -> str | None:
    """How a row is written: a chat ('messages' with role/content, ...) or alpaca; None for neither."""
    layout = _chat_layout(row, source, place)
    if layout is not None:
        return f"a chat ('{layout[0]}' with {layout[1]}/{layout[2]})"
    prompt = source.columns.get("prompt", COLUMNS["alpaca"]["prompt"])
    return f"alpaca ('{prompt}')" if prompt in row else None


def _chat_layout(row: dict, source: Source, place: Place) -> tuple[str, str, str] | None:
    """(messages column, role key, content key) of a chat row, or None when it holds no messages column."""
    candidates = [source.columns["messages"]] if "messages" in source.columns else list(MESSAGE_KEYS)
    held = [column for column in candidates if column in row]
    if not held:
        return None
    if len(held) > 1:
        raise place.error(f"the row holds both {' and '.join(held)}. Keep one, or name the column with "
                          "columns: {messages: <column>}.", shape=True)
    items = row[held[0]]
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    keys = next((keys for keys in MESSAGE_KEYS.values() if keys[0] in first),
                MESSAGE_KEYS.get(held[0], MESSAGE_KEYS["messages"]))
    return held[0], source.tags.get("role_tag", keys[0]), source.tags.get("content_tag", keys[1])


def _alpaca_row(row: dict, place: Place, source: Source) -> tuple[Messages, list[str]]:
    """The conversation of an alpaca row, and the field each of its messages came from."""
    names = {key: source.columns.get(key, default) for key, default in COLUMNS["alpaca"].items()}
    if names["prompt"] not in row:
        chat = next((column for column in MESSAGE_KEYS if column in row), None)
        kind = f"a chat row ('{chat}')" if chat else "a row without a prompt"
        raise place.error(f"{kind}: missing field '{names['prompt']}'" + (
            "" if chat is None else ". Train chat rows with task 'chat'") + ".", shape=True)
    optional_text = Field(nonempty=False, optional=True)
    fields = {names["prompt"]: Field(), names["response"]: Field(), names["query"]: optional_text,
              names["system"]: optional_text,
              names["history"]: Field(list, items=Field(list, items=Field(), size=2), nonempty=False, optional=True)}
    reading.check_row(row, {name: rule for name, rule in fields.items()
                            if name in row or not rule.optional}, place)
    messages, fields = [], []
    if (row.get(names["system"]) or "").strip():
        messages, fields = [{"role": "system", "content": row[names["system"]]}], [names["system"]]
    for turn, (question, answer) in enumerate(row.get(names["history"]) or []):
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        fields += [f"{names['history']}[{turn}][0]", f"{names['history']}[{turn}][1]"]
    query = row.get(names["query"]) or ""
    prompt = row[names["prompt"]] + ("\n" + query if query.strip() else "")
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": row[names["response"]]}]
    return messages, [*fields, names["prompt"], names["response"]]


def _chat_row(row: dict, place: Place, source: Source) -> tuple[Messages, list[str]]:
    """The conversation of a chat row, and the field each of its messages came from."""
    layout = _chat_layout(row, source, place)
    if layout is None:
        raise place.error(_no_messages(row, source), shape=True)
    column, role_key, content_key = layout
    found = reading.problem(row[column], Field(list, items=Field(dict, nonempty=False)), column)
    if found:
        raise place.error(found.text + ".", shape=True)
    items = row[column]
    roles = dict(ROLE_NAMES)
    roles.update({source.tags[f"{role}_tag"]: role for role in ("user", "assistant", "system")
                  if f"{role}_tag" in source.tags})
    messages, fields = [], []
    for index, item in enumerate(items):
        where = f"{column}[{index}]"
        for key in (role_key, content_key):
            if key not in item:
                raise place.error(f"missing field '{where}.{key}' (messages here hold {role_key} and {content_key}"
                                  f"; this one holds {', '.join(item) or 'nothing'}). Keep to one message format "
                                  "per file, or set tags.", shape=True)
            if not isinstance(item[key], str):
                raise place.error(f"field '{where}.{key}' should be str, got {type(item[key]).__name__} "
                                  f"({reading.shown(item[key])}).", shape=True)
        role = item[role_key]
        if role not in roles:
            tool = " Tool turns are not supported: fasttune trains system, user and assistant turns." if (
                role in TOOL_ROLES or role == source.tags.get("observation_tag")
                or role == source.tags.get("function_tag")) else " Name the role with tags (user_tag, ...)."
            raise place.error(f"field '{where}.{role_key}' is {role!r}, expected one of {sorted(roles)}.{tool}")
        messages.append({"role": roles[role], "content": item[content_key]})
        fields.append(f"{where}.{content_key}")
    system_column = source.columns.get("system", "system")
    system = row.get(system_column)
    if system is not None and not isinstance(system, str):
        raise place.error(f"field '{system_column}' should be str, got {type(system).__name__}.", shape=True)
    if system and system.strip():
        if messages and messages[0]["role"] == "system":
            raise place.error(f"both field '{system_column}' and a system message ({column}[0]) give the system "
                              "prompt. Keep one.")
        messages.insert(0, {"role": "system", "content": system})
        fields.insert(0, system_column)
    return messages, fields


def _no_messages(row: dict, source: Source) -> str:
    named = source.columns.get("messages")
    missing = f"missing field '{named}'" if named else "missing field 'messages' (or 'conversations')"
    if COLUMNS["alpaca"]["prompt"] in row:
        return f"{missing}: an alpaca row. Train alpaca rows with task 'instruction'."
    return (f"{missing}; the row holds {', '.join(row) or 'nothing'}. Name the column with "
            "columns: {messages: <column>}.")


# --- splits ----------------------------------------------------------------------------------------------------------

def prompt_text(messages: Messages) -> str:
    """The text a conversation's split is decided by: every message before the last reply."""
    return "\n".join(message["content"] for message in messages[:-1])


def load_split(config: OwnDataConfig, train: Source, held_out: Source | None, split: str) -> list[Example]:
    """The examples of `split` ("train" or "test"), each {"id": where it is in its file, "messages": [...]}: the
    held-out source's rows as "test", or else the training rows split by a seeded hash of their prompts."""
    if held_out is not None:
        rows = read_conversations(train if split == "train" else held_out, config.labels)
    else:
        rows = [(place, messages) for place, messages in read_conversations(train, config.labels)
                if (bucket(f"{config.split_seed}\n{prompt_text(messages)}") < config.test_percent) == (split == "test")]
    return [{"id": f"{place.path.name}, {place.at}", "messages": messages} for place, messages in rows]


def describe(config: OwnDataConfig) -> dict[str, Any]:
    """The options saved beside adapters and reports."""
    return asdict(config)
