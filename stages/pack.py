"""Packing stage: tokenized documents -> fixed-length training sequences that keep document
boundaries.

Two steps, kept apart because they suit different hardware:
- the *plan* says where every piece of every document goes: (document, offset in it, length,
  sequence, offset in it). `concat` concatenates the documents in order and cuts every
  `seq_len` tokens; `bfd` (best-fit decreasing) puts each document, longest first, into the
  sequence with the least room that still holds it, so far fewer documents are cut. A document
  longer than `seq_len` is cut into full sequences plus a remainder either way. Planning is a
  sequential greedy loop (numba) over lengths only: cheap, and it stays on the CPU.
- *materialising* moves the tokens into place and derives position ids (restarting at every
  piece), labels (the Hugging Face convention: labels are the input ids, and the first token
  of every piece and all padding are -100, so nothing is predicted across a boundary) and
  cu_seqlens (piece boundaries, padding as a last piece so they always end at `seq_len`).
  It is pure gather/scatter, done by numpy on the CPU or by torch on a GPU, with identical
  results.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa

from slimpipe.schemas import packed_schema

METHODS = ("bfd", "concat")
IGNORE_INDEX = -100  # the label torch's cross-entropy skips


class Plan:
    """Pieces sorted by (sequence, offset in sequence)."""

    def __init__(self, doc, doc_offset, length, seq, seq_offset, num_sequences: int, seq_len: int):
        order = np.lexsort((seq_offset, seq))
        self.doc = doc[order]
        self.doc_offset = doc_offset[order]
        self.length = length[order]
        self.seq = seq[order]
        self.seq_offset = seq_offset[order]
        self.num_sequences = num_sequences
        self.seq_len = seq_len

    def split_documents(self) -> int:
        """Documents that ended up in more than one piece."""
        if not len(self.doc):
            return 0
        pieces = np.bincount(self.doc)
        return int(np.count_nonzero(pieces > 1))

    def tokens(self) -> int:
        return int(self.length.sum())

    def fill(self) -> np.ndarray:
        """Tokens in each sequence (the rest is padding)."""
        fill = np.zeros(self.num_sequences, np.int64)
        np.maximum.at(fill, self.seq, self.seq_offset + self.length)
        return fill

    def shuffled(self, rng: np.random.Generator) -> Plan:
        """The same packing with the sequences in an order drawn from `rng`."""
        perm = rng.permutation(self.num_sequences)
        return Plan(
            self.doc, self.doc_offset, self.length, perm[self.seq], self.seq_offset, self.num_sequences, self.seq_len
        )


def plan(lengths: np.ndarray, seq_len: int, method: str) -> Plan:
    """Place documents of the given token lengths (none empty) into sequences of seq_len."""
    if method not in METHODS:
        raise ValueError(f"unknown packing method {method!r}; choose one of {', '.join(METHODS)}")
    if seq_len < 2:
        raise ValueError("seq_len must be at least 2")
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.any(lengths <= 0):
        raise ValueError("empty documents cannot be packed; leave them out first")
    if method == "concat":
        return _plan_concat(lengths, seq_len)
    return _plan_bfd(lengths, seq_len)


def _plan_concat(lengths: np.ndarray, seq_len: int) -> Plan:
    doc_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64)
    total = int(lengths.sum())
    starts = np.union1d(doc_start, np.arange(0, total, seq_len, dtype=np.int64))
    ends = np.append(starts[1:], total)
    doc = np.searchsorted(doc_start, starts, side="right") - 1
    return Plan(
        doc, starts - doc_start[doc], ends - starts, starts // seq_len, starts % seq_len, -(-total // seq_len), seq_len
    )


def _plan_bfd(lengths: np.ndarray, seq_len: int) -> Plan:
    # Cut overlong documents into full sequences and a remainder; every piece then fits.
    full = lengths // seq_len
    rest = lengths % seq_len
    pieces_per_doc = full + (rest > 0)
    doc = np.repeat(np.arange(len(lengths)), pieces_per_doc)
    first_piece = np.concatenate([[0], np.cumsum(pieces_per_doc)[:-1]]) if len(lengths) else pieces_per_doc
    k = np.arange(len(doc)) - np.repeat(first_piece, pieces_per_doc)  # piece number in its doc
    doc_offset = k * seq_len
    length = np.minimum(lengths[doc] - doc_offset, seq_len)
    order = np.argsort(-length, kind="stable")  # longest first; ties keep document order
    seq, seq_offset, n = _best_fit(length[order], seq_len)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return Plan(doc, doc_offset, length, seq[inv], seq_offset[inv], n, seq_len)


@nb.njit(cache=True)
def _best_fit(length, seq_len):
    """Best fit over pieces in the given order. Open sequences are kept in one stack per free
    capacity, and a segment tree over capacities finds the smallest capacity >= a length with
    an open sequence in O(log seq_len)."""
    size = 1
    while size < seq_len + 1:
        size *= 2
    tree = np.zeros(2 * size, np.int64)  # open sequences under each node
    head = np.full(seq_len + 1, -1, np.int64)  # top of each capacity's stack
    nxt = np.full(len(length), -1, np.int64)  # the next sequence down the same stack
    seq = np.empty(len(length), np.int64)
    seq_offset = np.empty(len(length), np.int64)
    n = 0
    for i in range(len(length)):
        need = length[i]
        cap = -1
        node = need + size
        if tree[node] > 0:
            cap = need
        else:
            while node > 1:
                if node % 2 == 0 and tree[node + 1] > 0:
                    node += 1
                    while node < size:
                        node = 2 * node if tree[2 * node] > 0 else 2 * node + 1
                    cap = node - size
                    break
                node //= 2
        if cap < 0:
            s = n
            n += 1
            cap = seq_len
        else:
            s = head[cap]
            head[cap] = nxt[s]
            j = cap + size
            while j >= 1:
                tree[j] -= 1
                j //= 2
        seq[i] = s
        seq_offset[i] = seq_len - cap
        left = cap - need
        if left > 0:
            nxt[s] = head[left]
            head[left] = s
            j = left + size
            while j >= 1:
                tree[j] += 1
                j //= 2
    return seq, seq_offset, n


# --- materialising -----------------------------------------------------------------------------


def _cu_seqlens(plan: Plan, fill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list per sequence: 0, the end of every piece, and seq_len when
    the sequence ends in padding (`fill`: tokens in each sequence)."""
    n, L = plan.num_sequences, plan.seq_len
    ends = plan.seq_offset + plan.length
    padded = np.flatnonzero(fill < L)
    seq = np.concatenate([np.arange(n), plan.seq, padded])
    val = np.concatenate([np.zeros(n, np.int64), ends, np.full(len(padded), L)])
    order = np.lexsort((val, seq))
    counts = np.bincount(seq, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return offsets, val[order]


def materialize_numpy(tokens: np.ndarray, doc_start: np.ndarray, plan: Plan, pad_id: int) -> dict:
    """The packed arrays on the CPU. `tokens` holds every document's ids back to back and
    `doc_start` where each document begins in it."""
    n, L = plan.num_sequences, plan.seq_len
    piece_start = np.cumsum(plan.length) - plan.length
    within = np.arange(plan.tokens()) - np.repeat(piece_start, plan.length)
    src = np.repeat(doc_start[plan.doc] + plan.doc_offset, plan.length) + within
    dest = np.repeat(plan.seq * L + plan.seq_offset, plan.length) + within
    input_ids = np.full(n * L, pad_id, dtype=np.int64)
    input_ids[dest] = tokens[src]
    fill = plan.fill()
    fill_tok = np.repeat(fill, L)
    position_ids = np.arange(n * L, dtype=np.int64) % L  # padding counts up from the last piece
    position_ids -= fill_tok * (position_ids >= fill_tok)
    position_ids[dest] = within
    labels = np.full(n * L, IGNORE_INDEX, dtype=np.int64)
    labels[dest] = input_ids[dest]
    labels[plan.seq * L + plan.seq_offset] = IGNORE_INDEX
    offsets, cu = _cu_seqlens(plan, fill)
    return {
        "input_ids": input_ids.reshape(n, L),
        "position_ids": position_ids.reshape(n, L),
        "labels": labels.reshape(n, L),
        "cu_seqlens_offsets": offsets,
        "cu_seqlens": cu,
    }


def materialize_torch(tokens: np.ndarray, doc_start: np.ndarray, plan: Plan, pad_id: int, device: str) -> dict:
    """The same arrays built by torch on `device` (a GPU where there is one); returned as numpy
    so that both paths write the same files."""
    import torch

    n, L = plan.num_sequences, plan.seq_len

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64), device=device)

    tok = t(tokens)
    p_len, p_doc_off, p_seq, p_seq_off = t(plan.length), t(plan.doc_offset), t(plan.seq), t(plan.seq_offset)
    d_start = t(doc_start)
    fill = plan.fill()  # a value per sequence: bookkeeping, not token work
    piece_start = torch.cumsum(p_len, 0) - p_len
    within = torch.arange(plan.tokens(), device=device) - torch.repeat_interleave(piece_start, p_len)
    src = torch.repeat_interleave(d_start[t(plan.doc)] + p_doc_off, p_len) + within
    dest = torch.repeat_interleave(p_seq * L + p_seq_off, p_len) + within
    input_ids = torch.full((n * L,), pad_id, dtype=torch.int64, device=device)
    input_ids[dest] = tok[src]
    position_ids = torch.arange(n * L, device=device) % L
    fill_tok = torch.repeat_interleave(t(fill), L)
    position_ids -= fill_tok * (position_ids >= fill_tok)
    position_ids[dest] = within
    labels = torch.full((n * L,), IGNORE_INDEX, dtype=torch.int64, device=device)
    labels[dest] = input_ids[dest]
    labels[p_seq * L + p_seq_off] = IGNORE_INDEX
    offsets, cu = _cu_seqlens(plan, fill)
    return {
        "input_ids": input_ids.view(n, L).cpu().numpy(),
        "position_ids": position_ids.view(n, L).cpu().numpy(),
        "labels": labels.view(n, L).cpu().numpy(),
        "cu_seqlens_offsets": offsets,
        "cu_seqlens": cu,
    }


def packed_table(arrays: dict, token_type: pa.DataType, doc_ids: pa.Array, plan: Plan) -> pa.Table:
    """The packed arrays as an Arrow table, one row per sequence; `documents` and
    `document_offsets` say which piece of which document each piece is."""
    n, L = plan.num_sequences, plan.seq_len

    def fixed(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        offsets = pa.array(np.arange(0, (n + 1) * L, L, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1).astype(typ.to_pandas_dtype())))

    piece_counts = np.bincount(plan.seq, minlength=n)
    doc_offsets = pa.array(np.concatenate([[0], np.cumsum(piece_counts)]).astype(np.int32))
    return pa.table(
        {
            "input_ids": fixed(arrays["input_ids"], token_type),
            "position_ids": fixed(arrays["position_ids"], pa.int32()),
            "labels": fixed(arrays["labels"], pa.int32()),
            "cu_seqlens": pa.ListArray.from_arrays(
                pa.array(arrays["cu_seqlens_offsets"].astype(np.int32)), pa.array(arrays["cu_seqlens"].astype(np.int32))
            ),
            "documents": pa.ListArray.from_arrays(doc_offsets, doc_ids.take(pa.array(plan.doc))),
            "document_offsets": pa.ListArray.from_arrays(doc_offsets, pa.array(plan.doc_offset, pa.int64())),
        },
        schema=packed_schema(token_type),
    )
