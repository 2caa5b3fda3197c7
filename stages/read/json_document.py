"""Files of layout "json" (one JSON array, or JSON values one after another, spread over lines): the
one thing read whole, up to input.max_json_bytes, as they cannot be split where records end without
being parsed. Each array element, or each top-level value, is a record, and its 1-based index is its
`line`. Too large a file, or broken JSON, is one rejected row that says how to convert the file to
JSON Lines; the records before a break are kept."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator

import orjson
import pyarrow as pa

from slimpipe.io.inputs import Chunk, InputFile
from slimpipe.io.retry import RetryingFile, check_reached
from slimpipe.stages.read.jsonl import BOM, StreamDamage, decompressing, stream_blocks
from slimpipe.stages.read.records import DECODER, BatchBuilder, add_decoded, lost_digits, too_deep


class JsonBreak(Exception):
    """Where a JSON document stops being JSON: `pos` in its decoded text."""

    def __init__(self, pos: int, reason: str):
        super().__init__(reason)
        self.pos = pos


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def read_document(chunk: Chunk, batch: BatchBuilder) -> Iterator[pa.Table]:
    """A file of layout "json", read whole (it cannot be split where records end without being
    parsed): too large a file, or broken JSON, is one rejected row for the whole file."""
    if chunk.start > 0:
        return  # the chunk at offset 0 reads the whole file
    f = chunk.file
    limit = int(batch.cfg.get("max_json_bytes", 256 << 20))
    blocks: list[bytes] = []
    damage = None
    with RetryingFile(f, batch.cfg) as raw:
        if f.compression is None and raw.size() > limit:
            batch.reject(None, "json_file_too_large", _too_large(f, limit, raw.size()))
            return
        read = 0
        try:
            for block in stream_blocks(decompressing(raw, f.compression)):
                blocks.append(block)
                read += len(block)
                if read > limit:
                    batch.reject(None, "json_file_too_large", _too_large(f, limit, None))
                    return
        except StreamDamage as exc:
            raw.check_unchanged()
            damage = exc
        if f.compression is None and damage is None:
            check_reached(chunk, raw.pos, None)
        raw.check_unchanged()
    data = b"".join(blocks)
    del blocks
    yield from _json_records(batch, data[len(BOM) :] if data.startswith(BOM) else data, damage)


def _json_records(batch: BatchBuilder, data: bytes, damage: StreamDamage | None) -> Iterator[pa.Table]:
    f = batch.chunk.file
    text, repaired = "", False
    values: Iterator[object]
    try:
        whole = orjson.loads(data)
        if lost_digits(whole, data):
            raise orjson.JSONDecodeError("integers beyond 64 bits", "", 0)
        values = iter(whole if isinstance(whole, list) else [whole])
    except orjson.JSONDecodeError:  # concatenated values, broken JSON, or what only json takes
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text, repaired = data.decode("utf-8", "replace"), True
        values = _json_values(text)
    del data
    index = 0
    try:
        for value in values:
            index += 1
            add_decoded(batch, index, value, None, repaired)
            batch.next_line = index + 1
            if batch.full():
                yield batch.flush()
    except JsonBreak as brk:
        if damage is None:
            batch.reject(index + 1, "malformed_json_file", _broken(f, text, brk, index))
    if damage is not None:
        batch.reject(index + 1, "corrupt_stream", f"input damaged after record {index}: {damage}")


def _json_values(text: str) -> Iterator[object]:
    """The records of a JSON text: each element of a top-level array, each other top-level value.
    Raises JsonBreak where it stops being JSON, after yielding every record before that."""
    pos, n = _skip_space(text, 0), len(text)
    while pos < n:
        if text[pos] != "[":
            value, pos = _json_value(text, pos)
            yield value
        else:  # an array: its elements one by one, so those before a break are kept
            pos = _skip_space(text, pos + 1)
            closed = text.startswith("]", pos)
            pos += closed
            while not closed:
                value, pos = _json_value(text, pos)
                yield value
                pos = _skip_space(text, pos)
                if not text.startswith((",", "]"), pos):
                    raise JsonBreak(pos, "expected ',' or ']' after an array element")
                closed = text[pos] == "]"
                pos = _skip_space(text, pos + 1)
        pos = _skip_space(text, pos)


def _skip_space(text: str, pos: int) -> int:
    m = _JSON_SPACE.match(text, pos)
    return m.end() if m else pos


def _json_value(text: str, pos: int) -> tuple[object, int]:
    try:
        return DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise JsonBreak(exc.pos, exc.msg) from None
    except RecursionError:
        raise JsonBreak(pos, too_deep()) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a value the decoder chokes on ends the document
        raise JsonBreak(pos, f"{type(exc).__name__}: {exc}") from None


def _convert_hint(f: InputFile) -> str:
    """The command that turns a JSON document into JSON Lines, which stream."""
    out = shlex.quote(re.sub(r"\.(gz|zst|zstd)$", "", f.uri, flags=re.IGNORECASE) + ".jsonl")
    unpack = {"gzip": "gzip -dc", "zstd": "zstd -dc"}.get(f.compression or "")
    src = shlex.quote(f.uri)
    return f"{unpack} {src} | jq -c '.[]' > {out}" if unpack else f"jq -c '.[]' {src} > {out}"


def _too_large(f: InputFile, limit: int, size: int | None) -> str:
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes decompressed"
    return (
        f"{f.uri} is one JSON document ({what}), which is read whole, over input.max_json_bytes "
        f"({limit}): none of its records were read. Convert it to JSON Lines, which stream: "
        f"{_convert_hint(f)} (jq -c . for JSON values one after another), and take the original "
        "out of the input; or raise input.max_json_bytes"
    )


def _broken(f: InputFile, text: str, brk: JsonBreak, kept: int) -> str:
    line = text.count("\n", 0, brk.pos) + 1
    col = brk.pos - (text.rfind("\n", 0, brk.pos) + 1) + 1
    kept_note = f"the {kept} records before it were kept" if kept else "no record of it was read"
    return (
        f"{f.uri} is not valid JSON at line {line} column {col} ({brk}): {kept_note}, nothing after "
        f"it was read. Repair the file; as JSON Lines ({_convert_hint(f)}) it would stream, and "
        "damage would cost one line"
    )
