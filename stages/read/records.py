"""The rows of one chunk: every decoded record becomes a row (BatchBuilder), and a line becomes a
decoded record (parse_line). A record the reader cannot use is a rejected row with the reason
(malformed JSON, JSON nested too deep, missing text, ...): no one record can fail the task. An
integer with more digits than Python converts from a string (sys.get_int_max_str_digits(), 4300 by
default; the limit is left as it is) is kept as its digit string, so such a field arrives in `meta`
as a JSON string of its digits."""

from __future__ import annotations

import json
import re
import sys

import orjson
import pyarrow as pa

from slimpipe.io.inputs import Chunk
from slimpipe.schemas import RECORD

MAX_BATCH_ROWS = 32768
ORJSON_MAX_DEPTH = 1024  # orjson refuses deeper nesting itself


def repair_surrogates(text: str) -> tuple[str, bool]:
    """JSON may escape lone UTF-16 surrogates ("\\ud800"), which no UTF-8 writer accepts:
    join valid pairs, replace lone ones with U+FFFD."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), True


class BatchBuilder:
    """Collects rows of one chunk and cuts them into Arrow tables of about `batch_bytes`."""

    def __init__(self, chunk: Chunk, read_cfg: dict):
        self.chunk = chunk
        self.cfg = read_cfg
        self.batch_bytes = read_cfg["batch_bytes"]
        # the line a reader goes on to next (None before its first): where a row about a file that
        # could not be read to its end says reading stopped
        self.next_line: int | None = None
        self._reset()

    def _reset(self):
        self.cols: dict[str, list] = {
            k: []
            for k in (
                "id",
                "text",
                "source",
                "url",
                "meta",
                "line",
                "raw",
                "bytes_read",
                "utf8_repaired",
                "reject_reason",
                "reject_detail",
            )
        }
        self.size = 0

    def __len__(self):
        return len(self.cols["line"])

    def _add(
        self,
        line,
        *,
        id=None,
        text=None,
        source=None,
        url=None,
        meta=None,
        raw=None,
        nbytes=0,
        repaired=False,
        reason=None,
        detail=None,
    ):
        c = self.cols
        c["id"].append(id if id is not None else f"{self.chunk.file.rel}:{line if line else 0}")
        c["text"].append(text)
        c["source"].append(source or self.chunk.file.source)
        c["url"].append(url)
        c["meta"].append(meta)
        c["line"].append(line)
        c["raw"].append(raw)
        c["bytes_read"].append(nbytes)
        c["utf8_repaired"].append(repaired)
        c["reject_reason"].append(reason)
        c["reject_detail"].append(detail)
        self.size += nbytes

    def reject(self, line, reason, detail, raw=None, repaired=False):
        self._add(line, raw=raw, nbytes=len(raw) if raw else 0, reason=reason, detail=detail, repaired=repaired)

    def add_record(self, line: int, obj, raw: bytes | None, repaired: bool):
        """One decoded record; `raw` is its input line (None for Parquet rows, where a rejected
        row keeps the record itself, as JSON, for evidence)."""
        problem = _record_problem(obj, self.cfg["text_field"])
        if problem:
            evidence = raw if raw is not None else _to_json(obj).encode()
            return self.reject(line, *problem, evidence, repaired)
        cfg = self.cfg
        text_field = cfg["text_field"]
        text = obj[text_field]
        text, fixed = repair_surrogates(text)
        repaired |= fixed
        special = {text_field, cfg.get("id_field"), cfg.get("url_field")}
        rid = obj.get(cfg["id_field"]) if cfg.get("id_field") else None
        url = obj.get(cfg["url_field"]) if cfg.get("url_field") else None
        source = obj.get(cfg["source_field"]) if cfg.get("source_field") else None
        rest = {k: v for k, v in obj.items() if k not in special}
        self._add(
            line,
            id=_clean_str(rid),
            text=text,
            source=_clean_str(source),
            url=_clean_str(url),
            meta=_to_json(rest) if rest else None,
            nbytes=len(text.encode("utf-8")) if not text.isascii() else len(text),
            repaired=repaired,
        )

    def full(self) -> bool:
        return self.size >= self.batch_bytes or len(self) >= MAX_BATCH_ROWS

    def flush(self) -> pa.Table:
        n = len(self)
        c = self.cols
        table = pa.table(
            {
                "id": pa.array(c["id"], pa.string()),
                "text": pa.array(c["text"], pa.large_string()),
                "source": pa.array(c["source"], pa.string()),
                "url": pa.array(c["url"], pa.string()),
                "meta": pa.array(c["meta"], pa.string()),
                "file": pa.array([self.chunk.file.uri] * n, pa.string()),
                "line": pa.array(c["line"], pa.int64()),
                "chunk": pa.array([self.chunk.key] * n, pa.string()),
                "raw": pa.array(c["raw"], pa.large_binary()),
                "bytes_read": pa.array(c["bytes_read"], pa.int64()),
                "bytes_clean": pa.nulls(n, pa.int64()),
                "bytes_cut": pa.nulls(n, pa.int64()),
                "utf8_repaired": pa.array(c["utf8_repaired"], pa.bool_()),
                "changed_by_clean": pa.nulls(n, pa.bool_()),
                "norm_chars": pa.nulls(n, pa.int64()),
                "language": pa.nulls(n, pa.string()),
                "language_score": pa.nulls(n, pa.float32()),
                "quality_score": pa.nulls(n, pa.float32()),
                "text_hash": pa.nulls(n, pa.binary(16)),
                "norm_text": pa.nulls(n, pa.large_string()),
                "minhash": pa.nulls(n, pa.binary()),
                "shingles": pa.nulls(n, pa.int32()),
                "reject_stage": pa.array(["read" if r else None for r in c["reject_reason"]], pa.string()),
                "reject_reason": pa.array(c["reject_reason"], pa.string()),
                "reject_value": pa.nulls(n, pa.float64()),
                "reject_detail": pa.array(c["reject_detail"], pa.string()),
            },
            schema=RECORD,
        )
        self._reset()
        return table


def _record_problem(obj, text_field: str) -> tuple[str, str] | None:
    """(reason, detail) when a decoded record has no usable text."""
    if not isinstance(obj, dict):
        return "not_an_object", f"a JSON {type(obj).__name__}"
    if text_field not in obj:
        return "missing_text", f"no field {text_field!r}"
    text = obj[text_field]
    if text is None:
        return "null_text", f"{text_field!r} is null"
    if isinstance(text, LongInt):
        return "text_not_string", f"{text_field!r} is a int"
    if not isinstance(text, str):
        return "text_not_string", f"{text_field!r} is a {type(text).__name__}"
    return None


def _clean_str(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = value if isinstance(value, (int, float)) else _to_json(value)
        value = str(value)
    return repair_surrogates(value)[0]


def _to_json(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # lone surrogates, integers beyond 64 bits, deep nesting: the slower encoder
        return json.dumps(value, ensure_ascii=True)


class LongInt(str):
    """A JSON integer with more digits than int() converts from a string
    (sys.get_int_max_str_digits()): kept as its digits. Rejecting the record would lose a document
    for a field nobody reads, and raising the limit would change it for the whole process."""


def _parse_int(digits: str) -> int | str:
    limit = sys.get_int_max_str_digits()
    if limit and len(digits) - digits.startswith("-") > limit:
        return LongInt(digits)
    return int(digits)


# The fallback decoder: what orjson refuses (escaped lone surrogates, integers beyond 64 bits)
DECODER = json.JSONDecoder(parse_int=_parse_int)


def parse_line(raw: bytes) -> tuple[object, bool]:
    """-> (decoded JSON value, utf8 was repaired). Raises ValueError for malformed JSON, also
    for JSON nested too deeply to decode."""
    try:
        obj = orjson.loads(raw)
        if not lost_digits(obj, raw):
            return obj, False
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # the fallback would only recurse into the same wall
            raise ValueError(f"JSON nested deeper than {ORJSON_MAX_DEPTH} levels") from None
    try:
        decoded, repaired = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        decoded, repaired = raw.decode("utf-8", "replace"), True
    # The standard library also takes what orjson refuses for good reasons we can repair
    # (escaped lone surrogates) or keep (long integers); anything else is malformed.
    try:
        return DECODER.decode(decoded), repaired
    except RecursionError:
        raise ValueError(too_deep()) from None


_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def lost_digits(obj, raw: bytes) -> bool:
    """orjson reads an integer beyond 64 bits as a float, dropping digits: such a record is read
    again by the standard library, which keeps them. A cheap walk, iterative (deep nesting)."""
    stack = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is float:
            if value.is_integer() and abs(value) >= 2**63 and _LONG_DIGITS.search(raw):
                return True
        elif kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False


def too_deep() -> str:
    return f"JSON nested too deeply (beyond the recursion limit, {sys.getrecursionlimit()} levels)"


def error_detail(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return too_deep()
    if isinstance(exc, ValueError):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def add_decoded(batch: BatchBuilder, line: int, obj, raw: bytes | None, repaired: bool) -> None:
    """batch.add_record, where a record that cannot be stored (nested too deeply to write back as
    JSON) becomes a rejected row instead of failing the task."""
    try:
        batch.add_record(line, obj, raw, repaired)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one record never fails a task
        batch.reject(line, "malformed_json", error_detail(exc), raw=raw, repaired=repaired)
