"""Reading data files into checked rows: JSON lines, JSON, CSV/TSV, Parquet and plain text, gzip-compressed or not.

Every task and method input is read here. A problem is a `FasttuneError` naming the file, the place in it and the
field, and saying how to fix it. Files are UTF-8 (a leading byte-order mark is dropped) and split into lines at "\\n"
only, so U+2028 or U+0085 inside a JSON string stay text. Each reader declares its rows' fields (`Field`): the type,
non-empty text, finite numbers, list items, a label set, distinct items. Problems with the file or a row's shape
(bad JSON, a missing field, a wrong type) name the line; problems with a value (empty text, a label outside the set,
a repeat) name the row, as the split-level checks do, and add the line where the two differ.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fasttune.errors import FasttuneError, FasttuneWarning

Row = dict[str, Any]
GZIP_MAGIC = b"\x1f\x8b"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
ROW_FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
ROLES = ("system", "user", "assistant")
BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Field:
    """What one field of a row must hold; the defaults describe non-empty text."""

    type: type | tuple[type, ...] = str
    """The type(s) the value must have as the file gives it (a bool never counts as an int)."""
    items: Field | None = None
    """For a list: what every item must hold; for a dict: what every value must hold."""
    fields: Mapping[str, Field] | None = None
    """For a dict that is a record of its own (e.g. a chat message): its fields."""
    nonempty: bool = True
    """Text must hold more than whitespace; a list or dict at least one item."""
    labels: Collection | None = None
    """The values allowed (a label set)."""
    distinct: bool = False
    """No two items of a list (values of a dict) are the same; texts compare stripped and case-folded."""
    size: int | None = None
    """The number of items a list or dict must hold."""
    optional: bool = False
    """The field may be missing or null."""


Fields = Mapping[str, Field]
TEXT = Field()
MESSAGE = Field(dict, fields={"role": Field(labels=ROLES), "content": TEXT})
"""One chat message: {role, content}."""
MESSAGES = Field(list, items=MESSAGE)
"""A chat: a non-empty list of messages."""


@dataclass(frozen=True)
class Place:
    """Where a row sits: its file, the unit its place is counted in (line, row, item, entry) and its key there."""

    path: Path
    unit: str
    key: Any
    row: int | None = None
    """For a line of JSON lines: the row's position among the file's rows."""

    @property
    def at(self) -> str:
        return f"{self.unit} {self.key!r}" if self.unit == "entry" else f"{self.unit} {self.key}"

    @property
    def row_at(self) -> str:
        """How value problems name the row: its position among the rows, and its line where that differs."""
        if self.row is None:
            return self.at
        return f"row {self.row}" + ("" if self.row == self.key else f" (line {self.key})")

    def __str__(self) -> str:
        return f"{self.path}, {self.at}"

    def error(self, problem: str, shape: bool = False) -> FasttuneError:
        """An error about this row: `shape` problems name the line, value problems the row."""
        return FasttuneError(f"{self.path}, {self.at if shape else self.row_at}: {problem}")


class Record(NamedTuple):
    """A checked row and its place in the file."""

    place: Place
    row: Row


class Problem(NamedTuple):
    """What is wrong with a value, and whether it is the row's shape (a type) rather than a value."""

    text: str
    shape: bool


# --- checking values against fields ---------------------------------------------------------------------------------

def problem(value: Any, rule: Field, name: str) -> Problem | None:
    """What is wrong with `value` as the field `name` under `rule`, or None."""
    if value is None:
        return None if rule.optional else Problem(f"field '{name}' is null. Give it a value or leave the row out", True)
    if isinstance(value, float) and not math.isfinite(value):
        return Problem(f"field '{name}' is {value} {_given(name, value)}, not a value (a missing value exported as "
                       "NaN?). Fill it or leave the row out", True)
    types = rule.type if isinstance(rule.type, tuple) else (rule.type,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return Problem(f"field '{name}' should be {' or '.join(t.__name__ for t in types)}, got "
                       f"{type(value).__name__} {_given(name, value)}", True)
    if isinstance(value, str) and rule.nonempty and not value.strip():
        return Problem(f"field '{name}' must be non-empty text {_given(name, value)}. Fill it or leave the row out",
                       False)
    if rule.labels is not None and value not in rule.labels:
        return Problem(f"field '{name}' is {shown(value)}, expected one of {sorted(rule.labels, key=str)}", False)
    if isinstance(value, (list, dict)):
        return _container_problem(value, rule, name)
    return None


def _container_problem(value: list | dict, rule: Field, name: str) -> Problem | None:
    if rule.fields is not None and isinstance(value, dict):
        return _record_problem(value, rule.fields, name)
    if rule.nonempty and not value:
        return Problem(f"field '{name}' must hold at least one item {_given(name, value)}", False)
    if rule.size is not None and len(value) != rule.size:
        return Problem(f"field '{name}' should hold {rule.size} items, got {len(value)} {_given(name, value)}", False)
    keyed = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    if rule.items is not None:
        for key, item in keyed:
            found = problem(item, rule.items, f"{name}[{key!r}]" if isinstance(value, dict) else f"{name}[{key}]")
            if found:
                return found
    repeat = first_repeat(same_text(item) for _, item in keyed) if rule.distinct else None
    if repeat:
        return Problem(f"field '{name}' holds the same item twice ({shown(keyed[repeat[1]][1])}); its items "
                       "must differ", False)
    return None


def _record_problem(row: dict, fields: Fields, name: str | None) -> Problem | None:
    for field_name, rule in fields.items():
        full = f"{name}.{field_name}" if name else field_name
        if field_name not in row:
            if rule.optional:
                continue
            required = ", ".join(f for f, r in fields.items() if not r.optional)
            return Problem(f"missing field '{full}'. Every {'row' if name is None else name} needs {required}", True)
        found = problem(row[field_name], rule, full)
        if found:
            return found
    return None


def check_row(row: Any, fields: Fields, place: Place) -> Row:
    """`row` if it is an object holding `fields`; else an error naming its place and the field."""
    if not isinstance(row, dict):
        raise place.error(f"expected a JSON object, got {_json_name(row)} ({shown(row)}). Write one object "
                          "(a row) per line.", shape=True)
    found = _record_problem(row, fields, None)
    if found:
        raise place.error(found.text + ".", found.shape)
    return row


def same_text(value: Any) -> Any:
    """The key two values compare by when looking for repeats: texts stripped and case-folded."""
    return " ".join(value.casefold().split()) if isinstance(value, str) else repr(value)


def first_repeat(keys: Iterable) -> tuple[int, int] | None:
    """Positions of the first key that occurs twice, (first, repeat), or None."""
    seen: dict[Any, int] = {}
    for index, key in enumerate(keys):
        if key in seen:
            return seen[key], index
        seen[key] = index
    return None


def check_unique(records: list[Record], name: str, key: Callable[[Any], Any] = same_text) -> None:
    """Raise when two rows hold the same value of field `name` (texts compared stripped and case-folded)."""
    repeat = first_repeat(key(record.row[name]) for record in records)
    if repeat:
        first, second = (records[index] for index in repeat)
        raise second.place.error(f"field '{name}' repeats {first.place.row_at} ({name}={shown(second.row[name])}). "
                                 "Remove one of the two rows; each must differ, or the same example could land in "
                                 "training and test.")


def warn_skipped(path: Path, count: int, total: int, what: str, why: str) -> None:
    """A FasttuneWarning that `count` of `total` rows of `path` were left out, and why."""
    warnings.warn(f"fasttune: {path}: skipped {count} of {total} {what} ({why}).", FasttuneWarning, stacklevel=3)


# --- reading files --------------------------------------------------------------------------------------------------

def read_text(path: str | Path) -> str:
    """A file's text: gunzipped when compressed, decoded as UTF-8, a leading byte-order mark dropped."""
    path = _existing_file(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise FasttuneError(f"Cannot read {path} ({error.strerror or error}). Check its permissions.") from None
    if raw[:2] == GZIP_MAGIC or path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # not gzip, truncated, or corrupt
            raise FasttuneError(f"{path}: not a complete gzip file ({type(error).__name__}: {error}). Download it "
                                "again, or compress it anew with gzip.") from None
    if raw[:2] in UTF16_BOMS:
        raise FasttuneError(f"{path}: the file is UTF-16 (encoding=utf-16), not UTF-8. Save it as UTF-8.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise FasttuneError(f"{path}, line {line}: not UTF-8 (byte {raw[error.start:error.start + 1]!r} at offset "
                            f"{error.start}: {error.reason}). Save the file as UTF-8 (e.g. iconv -f latin1 -t "
                            "utf-8).") from None
    return text.removeprefix("\ufeff")


def read_jsonl(path: str | Path, fields: Fields) -> list[Record]:
    """The rows of a JSON-lines file: one JSON object a line holding `fields`; blank lines are skipped."""
    path = Path(path)
    return _nonempty(_jsonl_records(read_text(path), path, fields), path)


def read_json(path: str | Path, fields: Fields, container: type[list] | type[dict] = list) -> list[Record]:
    """The rows of a JSON file: an array of objects (places are `item i`, from 0), or with `container=dict` an
    object of objects keyed by id (places are `entry 'key'`)."""
    path = Path(path)
    return _nonempty(_json_records(read_text(path), path, fields, container), path)


def read_csv(path: str | Path, fields: Fields, delimiter: str = ",") -> list[Record]:
    """The rows of a CSV (or, with delimiter="\\t", TSV) file under a header line; every row has one cell a column.
    Places are spreadsheet rows: the header is row 1."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    records: list[Record] = []
    try:
        header = next(reader, [])
        if not any(header):
            raise FasttuneError(f"{path}: no header line. Put the column names on the first line.")
        repeat = first_repeat(header)
        if repeat:
            raise FasttuneError(f"{path}, row 1: column '{header[repeat[1]]}' appears twice in the header. Rename one.")
        for cells in reader:
            if not any(cell.strip() for cell in cells):  # a blank line, or a spreadsheet's empty row
                continue
            place = Place(path, "row", len(records) + 2)
            if len(cells) != len(header):
                raise place.error(f"{len(cells)} cells, but the header has {len(header)} columns (an unquoted "
                                  f"{delimiter!r} or quote?). Quote cells that hold the delimiter.", shape=True)
            records.append(Record(place, check_row(dict(zip(header, cells)), fields, place)))
    except csv.Error as error:
        raise FasttuneError(f"{path}, line {reader.line_num}: malformed CSV ({error}).") from None
    return _nonempty(records, path)


def read_parquet(path: str | Path, fields: Fields) -> list[Record]:
    """The rows of a Parquet file (places are rows, from 1); needs pyarrow."""
    path = _existing_file(path)
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FasttuneError(f"Reading {path} needs pyarrow. Install it: pip install pyarrow.") from None
    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except (OSError, pyarrow.ArrowException) as error:
        raise FasttuneError(f"{path}: not a readable Parquet file ({error}).") from None
    return _nonempty(_checked([(Place(path, "row", number), row) for number, row in enumerate(rows, start=1)],
                              fields), path)


def read_saved_dataset(path: str | Path, fields: Fields, split: str | None = None) -> list[Record]:
    """The rows of a folder written by `datasets`' save_to_disk: a Dataset, or the `split` of a DatasetDict
    (places are rows, from 1)."""
    path = Path(path)
    if not is_saved_dataset(path):
        raise FasttuneError(f"{path} is not a folder written by datasets' save_to_disk (no state.json or "
                            "dataset_dict.json in it). Point at a data file, or at a saved dataset's folder.")
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if split not in data:
            raise FasttuneError(f"{path} holds a DatasetDict with splits {', '.join(data)} (split={split!r}). Name "
                                "the split to read.")
        data = data[split]
    elif split is not None:
        raise FasttuneError(f"{path} holds one dataset, not a DatasetDict with splits (split={split!r}). Leave the "
                            "split out.")
    return _nonempty(_checked([(Place(path, "row", number), row) for number, row in enumerate(data.to_list(), 1)],
                              fields), path)


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder that datasets' save_to_disk wrote (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / name).exists() for name in ("state.json", "dataset_dict.json"))


def read_rows(path: str | Path, fields: Fields) -> list[Record]:
    """The rows of a data file, read as its name says: .jsonl/.ndjson (JSON lines), .json (an array of objects, or
    JSON lines as many tools write them), .csv, .tsv, .parquet; each may also end in .gz. A folder is read as one
    that datasets' save_to_disk wrote (`read_saved_dataset`)."""
    path = Path(path)
    if is_saved_dataset(path):
        return read_saved_dataset(path, fields)
    kind = data_format(path)
    if kind not in ROW_FORMATS:
        raise FasttuneError(f"{path}: unknown data format (suffix={kind or 'none'!r}). Use one of "
                            f"{', '.join(ROW_FORMATS)} (optionally .gz).")
    if kind == ".parquet":
        return read_parquet(path, fields)
    if kind in (".csv", ".tsv"):
        return read_csv(path, fields, "," if kind == ".csv" else "\t")
    text = read_text(path)
    if kind == ".json" and text.lstrip().startswith("["):
        return _nonempty(_json_records(text, path, fields, list), path)
    return _nonempty(_jsonl_records(text, path, fields), path)


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """Raw-text documents: the `text_field` of each row of a data file (`read_rows`), or the blank-line-separated
    parts of any other text file. Rows with empty text are skipped with a warning; no document at all is an error."""
    path = Path(path)
    if data_format(path) in ROW_FORMATS:
        texts = [row[text_field].strip() for _, row in read_rows(path, {text_field: Field(nonempty=False)})]
        if not all(texts):
            warn_skipped(path, texts.count(""), len(texts), "rows", f"field '{text_field}' is empty")
    else:
        texts = [part.strip() for part in BLANK_LINE.split(read_text(path).replace("\r\n", "\n"))]
    documents = [text for text in texts if text]
    if not documents:
        raise FasttuneError(f"{path}: no documents, the file holds no text (text_file={path}). Fill it, or point at "
                            "the right file.")
    return documents


def data_format(path: Path) -> str:
    """The format suffix of a file name, looking past a final .gz (e.g. ".jsonl" for "x.jsonl.gz")."""
    return Path(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise FasttuneError(f"{path} is a folder, not a data file (path={path}). Point at a file inside it.")
    if not path.exists():
        hint = f" ({path.parent} is a file, not a folder)" if path.parent.is_file() else ""
        raise FasttuneError(f"Data file not found: {path}{hint}.")
    return path


class _RepeatedKey(Exception):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict:
    row = dict(pairs)
    if len(row) < len(pairs):
        raise _RepeatedKey(next(key for index, (key, _) in enumerate(pairs) if key in dict(pairs[:index])))
    return row


def _parse_json(text: str, path: Path, line: int | None = None) -> Any:
    """The JSON value of `text` (a whole file, or its line `line`); every failure names the file and line."""
    where = f"{path}, line {line}" if line is not None else str(path)
    if text.startswith("\ufeff"):
        raise FasttuneError(f"{where}: a byte-order mark (U+FEFF) starts the line, as when files are joined "
                            "together. Remove it.")
    try:
        return json.loads(text, object_pairs_hook=_object)
    except _RepeatedKey as error:
        raise FasttuneError(f"{where}: field '{error.args[0]}' appears twice in one object. Keep one.") from None
    except json.JSONDecodeError as error:
        at = where if line is not None else f"{path}, line {error.lineno}"
        raise FasttuneError(f"{at}: malformed JSON ({error.msg}, column {error.colno}). Fix the line, or remove it."
                            ) from None
    except RecursionError:
        raise FasttuneError(f"{where}: JSON nested too deeply to read (over ~{sys.getrecursionlimit()} levels). "
                            "Flatten the data.") from None
    except ValueError as error:  # an integer past Python's conversion limit
        raise FasttuneError(f"{where}: a number with more than {sys.get_int_max_str_digits()} digits ({error}). "
                            "Store it as a string.") from None


def _jsonl_records(text: str, path: Path, fields: Fields) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            place = Place(path, "line", number, row=len(records) + 1)
            records.append(Record(place, check_row(_parse_json(line, path, number), fields, place)))
    return records


def _json_records(text: str, path: Path, fields: Fields, container: type[list] | type[dict]) -> list[Record]:
    if not text.strip():
        return []
    data = _parse_json(text, path)
    if not isinstance(data, container):
        raise FasttuneError(f"{path}: the top level is {_json_name(data)}, expected {_json_name(container())} of "
                            f"rows ({'a list of objects' if container is list else 'objects keyed by id'}).")
    if isinstance(data, dict):
        return _checked([(Place(path, "entry", key), row) for key, row in data.items()], fields)
    return _checked([(Place(path, "item", index), row) for index, row in enumerate(data)], fields)


def _checked(placed_rows: list[tuple[Place, Any]], fields: Fields) -> list[Record]:
    return [Record(place, check_row(row, fields, place)) for place, row in placed_rows]


def _nonempty(records: list[Record], path: Path) -> list[Record]:
    if not records:
        raise FasttuneError(f"{path}: no rows (an empty split). Fill the file or point at the right one.")
    return records


def _json_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _given(name: str, value: Any) -> str:
    return f"({name}={shown(value)})"


def shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut at `limit` characters for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
