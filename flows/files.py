"""Recorded streams in files: CSV, JSON Lines and Parquet (a file, or a folder of Parquet
files such as the offline store), as the events and labels the learn flow would read.

Two shapes are understood. **Tabular** rows: a ``label`` column (empty: no label yet) and
feature columns of numbers (an empty cell is an absent feature), with optional ``id``,
``time`` and ``entity`` columns; the offline store's ``predictions`` column is ignored. A
missing id is the row's number; a time is epoch seconds, a timestamp or ISO 8601 text, and
a row whose time is empty or no time is refused as the flow refuses it (``bad_field``).
**Events** (JSON Lines only): the project's event and label objects, parsed by the flow's
own :class:`~flows.codec.Parser`. Rows are read in file order, a chunk at a time.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Callable, Iterator
from datetime import date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from flows.codec import Parser
from flows.kafka_io import Raw
from models.offline_store import feature_of
from models.schema import (
    Event,
    InvalidInput,
    Label,
    Record,
    check_features,
    check_label,
    check_time,
    text_seconds,
    utc_seconds,
)

RESERVED = frozenset({"id", "time", "entity", "label", "predictions"})
CHUNK_ROWS = 10_000
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")

OnReject = Callable[[InvalidInput], None]
BINARY_TEXT = {"true": True, "false": False, "1": True, "0": False}  # as written in a file


# The event time of a row without one: its row number times this, as `produce` spaces a
# stream's events. One second a row would expire every label held back 3,600 rows or more.
ROW_SECONDS = 0.001


_WHOLE_TEXT = re.compile(r"^(-?\d+)\.0*$")  # "100.0": a whole float written as text
_RAGGED = re.compile(r"^Skipping line (\d+): expected (\d+) fields, saw (\d+)$", re.M)  # pandas


class SourceError(ValueError):
    """A source that cannot be read; the message says which and why."""


def row_event(row: dict[str, Any], index: int, task: str) -> Event:
    """The event of one tabular row (``index`` stands in for a missing id or time column)."""
    features = {
        name: value for name, value in row.items() if name not in RESERVED and not _empty(value)
    }
    label = row.get("label")
    return Event(
        _key(row.get("id"), str(index)),
        index * ROW_SECONDS if "time" not in row else _epoch_seconds(row["time"]),
        _key(row.get("entity"), ""),
        check_features(features),
        None if _empty(label) else _label(label, task),
    )


def _empty(value: Any) -> bool:
    """Whether a cell is empty: ``None`` (a Parquet or JSON null) or NaN (pandas' empty cell)."""
    return value is None or (type(value) is float and math.isnan(value))


def _whole(value: Any) -> bool:
    """Whether a value is a whole number held as a float: pandas reads an integer column with
    an empty cell as floats (1.0), and writes them back so to CSV and Parquet."""
    return type(value) is float and value.is_integer()


def _number(value: Any) -> Any:
    """Text that writes a finite number as that number (``"2"`` and ``"02"`` are 2), as a
    CSV's cells are read; anything else as it is."""
    if type(value) is not str:
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _key(value: Any, default: str) -> str:
    """An id or entity as text, ``default`` if its cell is empty; a whole float without ``.0``
    (pandas writes an int column with an empty cell as floats), as a number or as text.

    >>> _key(100.0, "1"), _key("100.0", "1"), _key("007", "1"), _key(None, "1")
    ('100', '100', '007', '1')
    """
    if _empty(value) or value == "":
        return default
    if type(value) is str:
        return _WHOLE_TEXT.sub(r"\1", value)
    return str(int(value)) if _whole(value) else str(value)


def _label(value: Any, task: str) -> Label:
    """A row's label, checked for ``task``: binary words or digits as written in text, and a
    whole number, as a float or written as text (the offline store writes classes as text),
    as the integer it was (1.0 and "1" are 1; 0.5 stays a float and is refused)."""
    if task == "binary" and type(value) is str:  # a column mixing true and 1 reads as text
        value = BINARY_TEXT.get(value.strip().lower(), value)
    elif task != "regression" and _whole(number := _number(value)):
        value = int(number)
    return check_label(task, value)


def _epoch_seconds(value: Any) -> float:
    """A row's time as epoch seconds, checked as the flow checks event times: a number, a
    date and time (a Parquet timestamp; naive is UTC) or either one written as text."""
    if _empty(value):  # the row's number is no time to put among real ones
        raise InvalidInput("bad_field", "field 'time' is empty", "time")
    if type(value) is str:
        try:
            value = text_seconds(value.strip())
        except ValueError:
            raise InvalidInput(
                "bad_field",
                f"field 'time' must be epoch seconds or an ISO 8601 date and time, got {value!r}",
                "time",
            ) from None
    elif isinstance(value, datetime):
        value = utc_seconds(value)
    elif isinstance(value, date):
        value = utc_seconds(datetime.combine(value, dt_time()))
    return check_time(value)


def file_size(path: Path) -> int | None:
    """How many rows a file holds, when that is cheap to know (Parquet), else ``None``."""
    if _kind(path) != "parquet":
        return None
    with _reading(path, "parquet"):
        return int(_parquet_dataset(path).count_rows())


def read_file(path: Path, task: str, max_bytes: int, on_reject: OnReject) -> Iterator[Record]:
    """Every event and label of a file or folder, in order; bad rows go to ``on_reject``."""
    kind = _kind(path)
    if kind == "json":
        yield from _json_lines(path, Parser(task, max_bytes), task, on_reject)
        return
    index = 0
    for rows in _chunks(path, kind, on_reject):
        if index == 0 and rows and "label" not in rows[0]:  # each row has every column
            columns = ", ".join(map(repr, rows[0]))
            raise SourceError(f"{str(path)!r}: no 'label' column (its columns: {columns})")
        for row in rows:
            try:
                yield row_event(row, index, task)
            except InvalidInput as exc:
                on_reject(exc)
            index += 1


@contextlib.contextmanager
def _reading(path: Path, kind: str) -> Iterator[None]:
    """Turn what pandas or pyarrow raise on a file they cannot read into a SourceError."""
    try:
        yield
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowException, OSError) as exc:
        raise SourceError(f"{str(path)!r}: cannot be read as {kind}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{str(path)!r}: cannot be read as {kind}: not UTF-8 ({exc})") from None


def _chunks(path: Path, kind: str, on_reject: OnReject) -> Iterator[list[dict[str, Any]]]:
    """The rows of a CSV or Parquet source, a chunk at a time (a CSV's ragged rows to
    ``on_reject``)."""
    with _reading(path, kind):
        yield from _parquet_chunks(path) if kind == "parquet" else _csv_chunks(path, on_reject)


def _kind(path: Path) -> str:
    if not path.exists():
        raise SourceError(f"no such file, dataset or source: {str(path)!r}")
    name = path.name.lower()
    if path.is_dir() or name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    raise SourceError(
        f"{str(path)!r}: unknown file type (use .csv, .jsonl or .parquet, or a folder of "
        "Parquet files)"
    )


def _csv_chunks(path: Path, on_reject: OnReject) -> Iterator[list[dict[str, Any]]]:
    """A CSV's rows, each cell read as a number where it is one. Left to pandas, a chunk
    with one word in a column reads the whole column as text: every row of the chunk would
    be refused for one bad cell, and class 1 in one chunk would be class "1" (or "01",
    "1.0") in the next. Ids and entities stay text (``007`` is not ``7``), and spaces after
    the commas are no part of a name. A row with more cells than the header is refused
    alone (pandas would stop the whole file at it)."""
    sep = "\t" if path.name.lower().endswith(".tsv") else ","
    text = {"label": str, "id": str, "entity": str}
    with pd.read_csv(
        path, sep=sep, chunksize=CHUNK_ROWS, dtype=text, skipinitialspace=True, on_bad_lines="warn"
    ) as reader:
        while (frame := _next_chunk(reader, on_reject)) is not None:
            for column in frame.columns:
                numeric = pd.api.types.is_numeric_dtype(frame[column])
                if not numeric and column not in ("id", "entity", "time"):
                    numbers = pd.to_numeric(frame[column], errors="coerce")
                    frame[column] = numbers.where(numbers.notna(), frame[column])
            yield frame.to_dict("records")


def _next_chunk(reader: Iterator[pd.DataFrame], on_reject: OnReject) -> pd.DataFrame | None:
    """The reader's next chunk (``None`` after the last); each row it skipped as ragged, which
    pandas tells only in a warning, to ``on_reject``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = next(reader, None)
    for warning in caught:
        ragged = _RAGGED.findall(str(warning.message))  # a line each, one warning a chunk
        if not ragged:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
        for line, header, cells in ragged:
            message = f"line {line} has {cells} cells, the header {header}"
            on_reject(InvalidInput("bad_row", message))
    return frame


def _parquet_dataset(path: Path) -> ds.Dataset:
    """One file, or every visible Parquet file under a folder in path order (hidden and
    ``_`` files, such as files still being written, are not read), columns unified."""
    if not path.is_dir():
        return ds.dataset(path, format="parquet")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.name.lower().endswith(PARQUET_SUFFIXES)
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise SourceError(f"{str(path)!r}: no Parquet files in this folder")
    schema = pa.unify_schemas(  # an int column in one file may be doubles in the next
        [ds.dataset(f, format="parquet").schema for f in files], promote_options="permissive"
    )
    return ds.dataset([str(f) for f in files], format="parquet", schema=schema)


def _parquet_chunks(path: Path) -> Iterator[list[dict[str, Any]]]:
    """A Parquet source's rows; an offline store's (it has ``predictions``) under the names of
    the features the flow saw, which the store prefixes where they are like its columns."""
    dataset = _parquet_dataset(path)
    names = dataset.schema.names
    columns = [name for name in names if name != "predictions"]
    store = "predictions" in names
    for batch in dataset.to_batches(columns=columns, batch_size=CHUNK_ROWS):
        if store:
            batch = batch.rename_columns([feature_of(c) for c in columns])
        yield batch.to_pylist()


def _json_lines(path: Path, parser: Parser, task: str, on_reject: OnReject) -> Iterator[Record]:
    """Project events and labels, or tabular rows, one JSON object per line."""
    with path.open("rb") as lines:
        for index, line in enumerate(lines):
            if index == 0:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is no JSON
            if not line.strip():
                continue
            # The flow's parser, with the line number standing in for a missing time.
            raw = Raw(path.name, 0, index, None, line, round(index * ROW_SECONDS * 1000))
            try:
                obj = _object(line)
                if obj is None or "features" in obj or obj.get("kind") == "label":
                    yield parser.parse(raw)  # says why a line that is no object is refused
                else:
                    yield row_event(obj, index, task)
            except InvalidInput as exc:
                on_reject(exc)


def _object(line: bytes) -> dict[str, Any] | None:
    """The line's JSON object, or ``None`` when it is none (the parser says why)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
