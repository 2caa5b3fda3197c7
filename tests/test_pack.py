"""Packing: plans checked against a plain best-fit reference, and the packed arrays checked for
the invariants training relies on, on the numpy path and the torch path alike."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimpipe.stages.pack import IGNORE_INDEX, materialize_numpy, plan

torch = pytest.importorskip("torch")
from slimpipe.stages.pack import materialize_torch  # noqa: E402

PAD = -1  # not a token id, so padding can never pass for a token


def reference_best_fit(lengths, seq_len):
    """Best-fit decreasing written the obvious way: O(n * sequences)."""
    pieces = []
    for d, n in enumerate(lengths):
        for off in range(0, n, seq_len):
            pieces.append((min(seq_len, n - off), d, off))
    order = sorted(range(len(pieces)), key=lambda i: -pieces[i][0])  # stable: ties keep order
    room, last_touch = [], []
    out = {}
    for step, i in enumerate(order):
        n, d, off = pieces[i]
        fits = [s for s in range(len(room)) if room[s] >= n]
        if fits:
            s = min(fits, key=lambda s: room[s])
            # among equal rooms the packer takes the sequence that reached that room last
            s = max((x for x in fits if room[x] == room[s]), key=lambda x: last_touch[x])
        else:
            s = len(room)
            room.append(seq_len)
            last_touch.append(-1)
        out[(d, off)] = (s, seq_len - room[s])
        room[s] -= n
        last_touch[s] = step
    return out, len(room)


def check_packed(lengths, seq_len, method, seed=0):
    """Pack random tokens and check every invariant; returns the plan."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    tokens = rng.integers(0, 50000, size=int(lengths.sum()))
    doc_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    p = plan(lengths, seq_len, method)
    a = materialize_numpy(tokens, doc_start, p, PAD)
    b = materialize_torch(tokens, doc_start, p, PAD, "cpu")
    for key in a:
        assert np.array_equal(a[key], b[key]), key  # the GPU code path gives the same arrays

    ids, pos, labels = a["input_ids"], a["position_ids"], a["labels"]
    assert ids.shape == (p.num_sequences, seq_len)
    # no token lost or duplicated: each document reads back whole from its pieces, in order
    pieces = sorted(zip(p.doc, p.doc_offset, p.length, p.seq, p.seq_offset))
    rebuilt = {d: [] for d in range(len(lengths))}
    for d, off, n, s, so in pieces:
        assert off == sum(len(x) for x in rebuilt[d])
        rebuilt[d].append(ids[s, so : so + n])
        assert list(pos[s, so : so + n]) == list(range(n))  # positions restart at every piece
        assert labels[s, so] == IGNORE_INDEX  # nothing predicted across a boundary
        assert np.array_equal(labels[s, so + 1 : so + n], ids[s, so + 1 : so + n])
    for d, n in enumerate(lengths):
        assert np.array_equal(np.concatenate(rebuilt[d]), tokens[doc_start[d] : doc_start[d] + n])
    assert (ids != PAD).sum() == lengths.sum()
    assert (labels[ids == PAD] == IGNORE_INDEX).all()
    # cu_seqlens: 0, every piece end, seq_len; their gaps are where the positions restart
    offs, cu = a["cu_seqlens_offsets"], a["cu_seqlens"]
    for s in range(p.num_sequences):
        row = cu[offs[s] : offs[s + 1]]
        assert row[0] == 0 and row[-1] == seq_len and (np.diff(row) > 0).all()
        assert list(np.flatnonzero(pos[s] == 0)) == list(row[:-1])
    return p


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=60),
    seq_len=st.integers(2, 128),
    method=st.sampled_from(["bfd", "concat"]),
)
def test_packing_invariants(lengths, seq_len, method):
    p = check_packed(lengths, seq_len, method)
    if method == "bfd":  # best fit never cuts a document that fits in a sequence
        split = {d for d in p.doc if np.count_nonzero(p.doc == d) > 1}
        assert all(lengths[d] > seq_len for d in split)
    else:  # concatenation leaves padding in the last sequence only
        assert (p.fill()[:-1] == seq_len).all()


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 100), min_size=1, max_size=80), seq_len=st.integers(2, 100))
def test_best_fit_matches_the_plain_algorithm(lengths, seq_len):
    expected, sequences = reference_best_fit(lengths, seq_len)
    p = plan(np.array(lengths), seq_len, "bfd")
    assert p.num_sequences == sequences
    got = {(d, off): (s, so) for d, off, s, so in zip(p.doc, p.doc_offset, p.seq, p.seq_offset)}
    assert got == expected


def test_bfd_cuts_fewer_documents_than_concat():
    lengths = np.random.default_rng(1).lognormal(6, 1.2, size=3000).astype(np.int64) + 1
    bfd = check_packed(lengths, 2048, "bfd")
    concat = check_packed(lengths, 2048, "concat")
    assert bfd.split_documents() == np.count_nonzero(lengths > 2048)
    assert concat.split_documents() > 2 * bfd.split_documents()
    assert bfd.num_sequences <= concat.num_sequences * 1.02  # and wastes little room doing so


def test_shuffling_is_seeded_and_keeps_the_packing():
    p = plan(np.arange(1, 400), 64, "bfd")
    a = p.shuffled(np.random.default_rng(7))
    b = p.shuffled(np.random.default_rng(7))
    c = p.shuffled(np.random.default_rng(8))
    assert np.array_equal(a.seq, b.seq) and not np.array_equal(a.seq, c.seq)
    assert sorted(map(tuple, np.c_[a.doc, a.doc_offset, a.length])) == sorted(
        map(tuple, np.c_[p.doc, p.doc_offset, p.length])
    )


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="empty documents"):
        plan(np.array([3, 0, 2]), 8, "bfd")
    with pytest.raises(ValueError, match="unknown packing method"):
        plan(np.array([3]), 8, "first-fit")
