"""Arrow schemas of every table slimpipe writes: the one place a table's shape is written down."""

from pathlib import Path

import pyarrow as pa

CONFIG_SCHEMA_PATH = Path(__file__).with_name("config.schema.json")

# Scores that filters compute and that stay with a document wherever it ends up.
SCORES = [
    ("language", pa.string()),  # language ID, where the language filter ran
    ("language_score", pa.float32()),
    ("quality_score", pa.float32()),  # the quality classifier's score, where it ran
]

# A record as it travels between the read, clean and filter stages. Rows rejected on the way
# travel on with `reject_stage`/`reject_reason` set, so that nothing can drop out unseen.
RECORD = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.large_string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("meta", pa.string()),  # the input record's other fields, as JSON
        ("file", pa.string()),
        ("line", pa.int64()),  # 1-based line (JSONL) or row (Parquet) in `file`
        ("chunk", pa.string()),  # the read chunk this row came from (resume unit)
        ("raw", pa.large_binary()),  # input bytes, kept only when they could not be decoded
        ("bytes_read", pa.int64()),  # UTF-8 bytes of the text as read
        ("bytes_clean", pa.int64()),  # UTF-8 bytes after cleaning (and after a filter's edit)
        ("bytes_cut", pa.int64()),  # UTF-8 bytes a filter cut from a kept document (C4's bad lines)
        ("utf8_repaired", pa.bool_()),
        ("changed_by_clean", pa.bool_()),
        ("norm_chars", pa.int64()),  # characters of the normalised text (the length rule's measure)
        *SCORES,
        ("text_hash", pa.binary(16)),  # blake2b-128 of the normalised text (exact dedup key)
        ("norm_text", pa.large_string()),  # the normalised text, from normalise to signatures only
        ("minhash", pa.binary()),  # the MinHash signature, num_perm little-endian uint32 values
        ("shingles", pa.int32()),  # shingles in the signature; 0: too short, no near-dedup
        ("reject_stage", pa.string()),
        ("reject_reason", pa.string()),
        ("reject_value", pa.float64()),  # the measured value a filter compared, where it has one
        ("reject_detail", pa.string()),
    ]
)

DOCUMENT = pa.schema(
    [RECORD.field("id")]
    # the id the input gave, where it repeated and `id` was made unique (ID#N); null elsewhere
    + [pa.field("input_id", pa.string())]
    + [RECORD.field(name) for name in ("text", "source", "url", "meta", "file", "line", *(n for n, _ in SCORES))]
    + [pa.field("split", pa.string())]
)  # train | holdout

REJECTED = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("value", pa.float64()),
        ("detail", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("text", pa.large_string()),
        ("raw", pa.large_binary()),
        ("bytes", pa.int64()),  # UTF-8 bytes of the text as read
        ("utf8_repaired", pa.bool_()),
        *SCORES,
    ]
)

DUPLICATE = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("cluster_id", pa.string()),
        ("kept_id", pa.string()),
        ("kept_source", pa.string()),
        ("kind", pa.string()),  # exact | near
        ("similarity", pa.float64()),
        ("bytes", pa.int64()),
        ("file", pa.string()),
        ("line", pa.int64()),
    ]
)

# One row per near-duplicate cluster (survivor included in `size`).
CLUSTER = pa.schema(
    [
        ("cluster_id", pa.string()),
        ("size", pa.int64()),
        ("removed", pa.int64()),  # members of this run removed (earlier runs' are never removed)
        ("kept_id", pa.string()),
        ("kept_source", pa.string()),
        ("sources", pa.list_(pa.string())),
    ]
)


def tokens_schema(token_type: pa.DataType) -> pa.Schema:
    """RUN/tokens/*.arrow: one row per document; `input_ids` is uint16 while the vocabulary fits
    in it, else uint32, with BOS/EOS as the tokenize config says (none for an empty text)."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("split", pa.string()),  # train | holdout, as in RUN/documents
            ("input_ids", pa.large_list(token_type)),
        ]
    )


def packed_schema(token_type: pa.DataType) -> pa.Schema:
    """Packed Arrow export: one row per training sequence of seq_len tokens."""
    return pa.schema(
        [
            ("input_ids", pa.list_(token_type)),
            ("position_ids", pa.list_(pa.int32())),  # restart at 0 at every piece (and the padding)
            ("labels", pa.list_(pa.int32())),  # input ids, -100 at each piece's first token and padding
            ("cu_seqlens", pa.list_(pa.int32())),  # piece boundaries, 0 .. seq_len
            ("documents", pa.list_(pa.string())),  # ids of the documents whose pieces it holds, in order
            ("document_offsets", pa.list_(pa.int64())),  # where in its document each piece starts
        ]
    )


# --- split and decontamination: the contaminant index and what decontamination removes -------

# Decontamination's join: a hash to check, of a contaminant (origin: bits, 1 the holdout, 2 the
# evaluation data) or of a train document (origin 0, with its chunk and line); kind 0 is the
# hash of a whole normalised text, 1 one of its word n-grams.
CHECK_ROW = pa.schema(
    [("kind", pa.int8()), ("hash", pa.uint64()), ("origin", pa.uint8()), ("chunk", pa.string()), ("line", pa.int64())]
)

# A train document (chunk, line) holding a contaminant: its kind and origins, and whether the cap
# ignores it (an n-gram too many train documents hold).
MATCH = pa.schema(
    [("chunk", pa.string()), ("line", pa.int64()), ("kind", pa.int8()), ("origin", pa.uint8()), ("ignored", pa.bool_())]
)

# WORK/decontaminated/CHUNK.parquet: the lines of a chunk that decontamination removed, sorted.
REMOVED_LINES = pa.schema([("line", pa.int64())])


# --- near-dedup: the tables its steps pass through shuffles and leave under WORK/near --------

# LSH: one row per document and band; the shuffle partition is the bucket key's.
NEAR_BAND_ROW = pa.schema([("band", pa.int32()), ("key", pa.uint64()), ("node", pa.int64()), ("partition", pa.int64())])

# WORK/near/edges/*.parquet: a bucket member u and its bucket's representative v (nodes).
NEAR_EDGE = pa.schema([("u", pa.int64()), ("v", pa.int64())])

# WORK/near/verified/*.parquet: the candidate edges whose true Jaccard reaches the threshold.
NEAR_VERIFIED_EDGE = NEAR_EDGE.append(pa.field("similarity", pa.float64()))

# WORK/near/components.parquet: every node on an edge and its component (named by its lowest node).
NEAR_COMPONENT = pa.schema([("node", pa.int64()), ("component", pa.int64())])

# A component member with what the survivor policy and the duplicate rows need, on its way to the
# shuffle on the component; `reference` marks an earlier run's document (never removed).
NEAR_MEMBER = pa.schema(
    [RECORD.field(name) for name in ("id", "source")]
    + [pa.field("bytes", pa.int64())]  # the part's bytes_clean
    + [RECORD.field(name) for name in ("file", "line", "chunk", "minhash")]
    + [("node", pa.int64()), ("component", pa.int64()), ("reference", pa.bool_()), ("partition", pa.int64())]
)

# Per component and partition of its members: the best member there (the policy's columns and
# its signature), how many members and earlier runs' members, and their sources.
NEAR_PARTIAL = pa.schema(
    [("component", pa.int64()), ("member_partition", pa.int64()), ("size", pa.int64()), ("references", pa.int64())]
    + [pa.field("sources", pa.list_(pa.string()))]
    + [NEAR_MEMBER.field(name) for name in ("id", "source", "bytes", "node", "reference", "minhash")]
)

# A component's survivor, sent to each partition that holds members of the component.
NEAR_SURVIVOR = pa.schema(
    [("partition", pa.int64()), ("component", pa.int64()), ("cluster_id", pa.string())]
    + [pa.field("kept_id", RECORD.field("id").type), pa.field("kept_source", RECORD.field("source").type)]
    + [("kept_node", pa.int64()), pa.field("kept_minhash", RECORD.field("minhash").type)]
)

# A near duplicate row with its chunk, which the per-chunk removed lines are grouped by.
NEAR_DUPLICATE = DUPLICATE.append(pa.field("chunk", pa.string()))


# --- tokenize and export: the work units the driver hands to actors, and what they hand back ---

# One tokenize unit: consecutive row groups of one documents shard, tokenized into `out`.
TOKENIZE_UNIT = pa.schema(
    [
        ("name", pa.string()),
        ("file", pa.string()),  # the documents shard
        ("row_groups", pa.list_(pa.int64())),
        ("out", pa.string()),  # the tokens file (Arrow IPC stream) to write
    ]
)

# A finished tokenize unit: its documents, empty documents, tokens and text bytes per (source, split).
TOKENIZE_DONE = pa.schema(
    [
        ("unit", pa.string()),
        (
            "counts",
            pa.list_(
                pa.struct(
                    [
                        ("source", pa.string()),
                        ("split", pa.string()),
                        ("documents", pa.int64()),
                        ("empty", pa.int64()),
                        ("tokens", pa.int64()),
                        ("bytes", pa.int64()),
                    ]
                )
            ),
        ),
    ]
)

# One export group: a tokens file, and where each split of it goes (a prefix the format extends).
EXPORT_GROUP = pa.schema(
    [
        ("group", pa.string()),
        ("tokens", pa.string()),
        ("outputs", pa.list_(pa.struct([("split", pa.string()), ("prefix", pa.string())]))),
    ]
)

# A finished export group, per split: documents written, empty ones skipped, tokens per source,
# and the format's own counts (sequences, padding, ... for packed formats).
EXPORT_DONE = pa.schema(
    [
        ("group", pa.string()),
        (
            "splits",
            pa.list_(
                pa.struct(
                    [
                        ("split", pa.string()),
                        ("documents", pa.int64()),
                        ("empty", pa.int64()),
                        ("tokens", pa.int64()),
                        ("sources", pa.map_(pa.string(), pa.int64())),
                        ("counters", pa.map_(pa.string(), pa.int64())),
                    ]
                )
            ),
        ),
    ]
)
