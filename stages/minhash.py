"""MinHash signatures, computed for a whole batch at once by compiled kernels (numba).

A document's shingles are character or word n-grams of its SlimPajama-normalised text
(lower-case, ASCII punctuation removed, whitespace collapsed to single spaces), as UTF-8 bytes.
Each shingle is hashed to 32 bits (`sha1`: datasketch's default `sha1_hash32`; `xxh32`:
`xxhash.xxh32_intdigest`, seed 0) and permuted exactly as `datasketch.MinHash` does it, for
either of its schemes (`affine32`, its default since 2.0; `legacy`, the one SlimPajama used).
So for the same shingles, seed, hash and scheme a signature equals
`datasketch.MinHash(...).hashvalues` bit for bit, and loads as a `LeanMinHash`
(`to_datasketch`, `datasketch_minhash`).

Documents with fewer units than one n-gram follow `short_docs`: `whole` makes the whole
normalised text their one shingle (they can only match an identical short text); `skip` gives
them no shingle. A document with no shingle has no signature and takes no part in near-dedup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from slimpipe.errors import ConfigError
from slimpipe.stages.normalize import normalize_text
from slimpipe.stages.shingle_hash import M32 as _M32
from slimpipe.stages.shingle_hash import hash32, hash_tag, shingle_hash

_MERSENNE = np.uint64((1 << 61) - 1)
_U61 = np.uint64(61)
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's initial hash value (max_hash)


@dataclass(frozen=True)
class MinHashParams:
    """What a signature depends on; two runs can share signatures only if these are equal."""

    shingle: str = "char"  # char | word
    ngram: int = 13
    num_perm: int = 128
    seed: int = 1
    hash: str = "sha1"  # sha1 | xxh32
    scheme: str = "legacy"  # affine32 | legacy
    short_docs: str = "whole"  # whole | skip

    @classmethod
    def from_config(cls, near: dict) -> MinHashParams:
        return cls(**{k: near[k] for k in cls.__dataclass_fields__ if k in near})

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """datasketch's own (a, b) for this seed and scheme, as uint64 arrays."""
        from datasketch import MinHash

        a, b = MinHash(num_perm=self.num_perm, seed=self.seed, scheme=self.scheme).permutations
        return np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)


# --- shingles and signatures ----------------------------------------------------------------


BLOCK = 4096  # shingle hashes folded into a signature at a time: memory does not grow with a document


@nb.njit(cache=True)
def _fold(hashes, cnt, legacy, a, b, sig):
    """sig = min(sig, permuted hashes), exactly as datasketch's update_batch."""
    if not legacy:
        for j in range(cnt):  # datasketch's affine schemes pre-mix with murmur3's fmix32
            h = hashes[j]
            h ^= h >> np.uint64(16)
            h = (h * np.uint64(0x85EBCA6B)) & _M32
            h ^= h >> np.uint64(13)
            h = (h * np.uint64(0xC2B2AE35)) & _M32
            h ^= h >> np.uint64(16)
            hashes[j] = h
    for k in range(len(a)):
        ak = a[k]
        bk = b[k]
        m = np.uint64(sig[k])
        if legacy:
            for j in range(cnt):
                x = hashes[j] * ak + bk  # wraps mod 2^64, as numpy's uint64 does
                x = (x & _MERSENNE) + (x >> _U61)  # x mod (2^61 - 1), exactly
                if x >= _MERSENNE:
                    x -= _MERSENNE
                m = min(m, x & _M32)
        else:
            for j in range(cnt):
                m = min(m, (hashes[j] * ak + bk) & _M32)
        sig[k] = m


@nb.njit(cache=True)
def _shingles(data, start, end, word, ngram, tag, whole_if_short, hashes, collect, legacy, a, b, sig):
    """Every shingle hash of data[start:end]: all kept in `hashes` (collect), or folded into
    `sig` BLOCK at a time. Units (characters, or words split on single spaces) are found in one
    pass; a ring of the last ngram + 1 unit starts gives each shingle's bytes. Returns the count."""
    w = np.empty(80, np.uint64)
    ring = np.empty(ngram + 1, np.int64)
    size = ngram + 1
    units = 0
    total = 0
    cnt = 0
    at_start = True
    for p in range(start, end):
        c = data[p]
        if word:
            if c == 32:
                at_start = True
                continue
            if not at_start:
                continue
            at_start = False
        elif (c & 0xC0) == 0x80:  # a UTF-8 continuation byte
            continue
        if units >= ngram:  # unit `units` starts here: the shingle ngram units back ends before it
            e = p - 1 if word else p
            hashes[cnt] = shingle_hash(tag, data, ring[(units - ngram) % size], e, w)
            cnt += 1
            total += 1
            if not collect and cnt == BLOCK:
                _fold(hashes, cnt, legacy, a, b, sig)
                cnt = 0
        ring[units % size] = p
        units += 1
    if units >= ngram:
        hashes[cnt] = shingle_hash(tag, data, ring[(units - ngram) % size], end, w)
        cnt += 1
        total += 1
    elif units > 0 and whole_if_short:
        hashes[cnt] = shingle_hash(tag, data, start, end, w)
        cnt += 1
        total += 1
    if not collect and cnt:
        _fold(hashes, cnt, legacy, a, b, sig)
    return total


@nb.njit(cache=True)
def _signatures(data, offsets, word, ngram, tag, whole_if_short, legacy, a, b, sigs, counts):
    hashes = np.empty(BLOCK, np.uint64)
    sigs[:, :] = _EMPTY
    for i in range(len(offsets) - 1):
        counts[i] = _shingles(
            data, offsets[i], offsets[i + 1], word, ngram, tag, whole_if_short, hashes, False, legacy, a, b, sigs[i]
        )


@nb.njit(cache=True)
def _all_shingles(data, offsets, word, ngram, tag, whole_if_short, hashes, counts):
    """Every shingle hash of every document, back to back (for the torch path)."""
    at = 0
    none = np.zeros(0, np.uint64)
    for i in range(len(offsets) - 1):
        counts[i] = _shingles(
            data,
            offsets[i],
            offsets[i + 1],
            word,
            ngram,
            tag,
            whole_if_short,
            hashes[at:],
            True,
            False,
            none,
            none,
            np.zeros(0, np.uint32),
        )
        at += counts[i]
    return at


def _utf8_buffer(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    arr = pa.array(texts, pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[: len(arr) + 1]
    data = arr.buffers()[2]
    return (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(1, np.uint8)), offsets


class Signer:
    """Signatures for batches of texts; the permutations are built once. With a torch `device`
    ("cuda", or "cpu" to check the path), the permutations and minimum run as torch operations
    there, with the same result bit for bit; shingles are still hashed by the CPU kernel."""

    def __init__(self, params: MinHashParams, device: str | None = None):
        self.params = params
        self.a, self.b = params.permutations()
        self.device = device

    def normalized(self, texts: list[str]) -> list[str]:
        return [normalize_text(t) for t in texts]

    def sign_normalized(self, norm_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures (n, num_perm) uint32, shingle counts (n,) int64) of normalised texts."""
        p = self.params
        data, offsets = _utf8_buffer(norm_texts)
        counts = np.empty(len(norm_texts), np.int64)
        if self.device:
            hashes = np.empty(len(data) + len(norm_texts) + 1, np.uint64)
            n = _all_shingles(
                data, offsets, p.shingle == "word", p.ngram, hash_tag(p.hash), p.short_docs == "whole", hashes, counts
            )
            return self._fold_torch(hashes[:n], counts), counts
        sigs = np.empty((len(norm_texts), p.num_perm), np.uint32)
        _signatures(
            data,
            offsets,
            p.shingle == "word",
            p.ngram,
            hash_tag(p.hash),
            p.short_docs == "whole",
            p.scheme == "legacy",
            self.a,
            self.b,
            sigs,
            counts,
        )
        return sigs, counts

    def sign(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.sign_normalized(self.normalized(texts))

    def _fold_torch(self, hashes: np.ndarray, counts: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """datasketch's permutation and minimum in int64 torch arithmetic: a product wraps mod
        2^64 exactly as numpy's uint64 does, so only the shifts need care (logical, not signed)."""
        import torch

        dev = torch.device(self.device or "cpu")
        m32 = 0xFFFFFFFF
        a = torch.from_numpy(self.a.view(np.int64)).to(dev)
        b = torch.from_numpy(self.b.view(np.int64)).to(dev)
        doc = torch.repeat_interleave(torch.arange(len(counts), device=dev), torch.from_numpy(counts).to(dev))
        h = torch.from_numpy(hashes.view(np.int64)).to(dev)
        if self.params.scheme != "legacy":  # murmur3's fmix32 pre-mix
            h = h ^ (h >> 16)
            h = (h * 0x85EBCA6B) & m32
            h = h ^ (h >> 13)
            h = (h * 0xC2B2AE35) & m32
            h = h ^ (h >> 16)
        out = torch.full((len(counts), len(self.a)), m32, dtype=torch.int64, device=dev)
        mersenne = (1 << 61) - 1
        for start in range(0, len(h), chunk):
            x = h[start : start + chunk, None] * a[None, :] + b[None, :]
            if self.params.scheme == "legacy":
                x = (x & mersenne) + ((x >> 61) & 7)  # mod 2^61 - 1, exactly
                x = torch.where(x >= mersenne, x - mersenne, x)
            x = x & m32
            idx = doc[start : start + chunk, None].expand_as(x)
            out.scatter_reduce_(0, idx, x, reduce="amin", include_self=True)
        return out.cpu().numpy().astype(np.uint32)


def shingle_set(norm_text: str, params: MinHashParams) -> np.ndarray:
    """The sorted distinct 32-bit shingle hashes of one normalised text (for true Jaccard)."""
    data, offsets = _utf8_buffer([norm_text])
    n = int(offsets[1])
    out = np.empty(n + 1, np.uint64)
    none = np.zeros(0, np.uint64)
    cnt = _shingles(
        data,
        0,
        n,
        params.shingle == "word",
        params.ngram,
        hash_tag(params.hash),
        params.short_docs == "whole",
        out,
        True,
        False,
        none,
        none,
        np.zeros(0, np.uint32),
    )
    return np.unique(out[:cnt])


def ngram_hashes(norm_text: str, n: int) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the word n-grams of a normalised text (the whole text
    as one n-gram when it has fewer words)."""
    data, offsets = _utf8_buffer([norm_text])
    size = int(offsets[1])
    out = np.empty(size + 1, np.uint64)
    none = np.zeros(0, np.uint64)
    cnt = _shingles(
        data, 0, size, True, n, hash_tag("fnv64"), True, out, True, False, none, none, np.zeros(0, np.uint32)
    )
    return np.unique(out[:cnt])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


# --- the same, in plain Python, for users' own queries ----------------------------------------


def shingles(text: str, params: MinHashParams) -> list[bytes]:
    """The shingles of a raw text as the kernels see them (reference implementation)."""
    norm = normalize_text(text)
    units = norm.split(" ") if params.shingle == "word" and norm else list(norm)
    sep = " " if params.shingle == "word" else ""
    if len(units) >= params.ngram:
        return [sep.join(units[i : i + params.ngram]).encode() for i in range(len(units) - params.ngram + 1)]
    return [norm.encode()] if norm and params.short_docs == "whole" else []


def datasketch_minhash(text: str, params: MinHashParams):
    """A `datasketch.MinHash` of a raw text, for querying signatures a run wrote."""
    from datasketch import MinHash

    m = MinHash(
        num_perm=params.num_perm,
        seed=params.seed,
        scheme=params.scheme,
        hashfunc=lambda data: hash32(data, params.hash),
    )
    m.update_batch(shingles(text, params))
    return m


def to_datasketch(signature: np.ndarray, params: MinHashParams):
    """A stored signature as a `datasketch.LeanMinHash`."""
    from datasketch import LeanMinHash

    dtype = np.uint64 if params.scheme == "legacy" else np.uint32
    return LeanMinHash(seed=params.seed, hashvalues=np.asarray(signature, dtype=dtype), scheme=params.scheme)


class SignStage:
    """map_batches callable: the signature and shingle count of every row not yet rejected,
    from the `norm_text` the normalise stage left (which it then drops)."""

    def __init__(self, near_cfg: dict):
        device = "cuda" if near_cfg.get("device") == "gpu" else None
        self.signer = Signer(MinHashParams.from_config(near_cfg), device)

    def __call__(self, table: pa.Table) -> pa.Table:
        live = pc.is_null(table["reject_stage"]).to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(live)
        norm = table["norm_text"].take(pa.array(idx)).to_pylist()
        sigs, counts = self.signer.sign_normalized(norm)
        minhash: list[bytes | None] = [None] * table.num_rows
        shingle_counts = np.zeros(table.num_rows, np.int32)
        flat = sigs.astype("<u4").tobytes()
        width = 4 * sigs.shape[1]
        for j, i in enumerate(idx):
            minhash[i] = flat[j * width : (j + 1) * width]
        shingle_counts[idx] = counts
        names = table.schema.names
        table = table.set_column(names.index("minhash"), "minhash", pa.array(minhash, pa.binary()))
        table = table.set_column(names.index("shingles"), "shingles", pa.array(shingle_counts, pa.int32(), mask=~live))
        return table.set_column(names.index("norm_text"), "norm_text", pa.nulls(table.num_rows, pa.large_string()))


def _sign_batch(table: pa.Table, near_cfg: dict) -> pa.Table:
    return SignStage(near_cfg)(table)


def sign(ds, near_cfg: dict, gpus: int):
    """The signature stage over a Ray dataset of records: fused tasks on CPUs, or with
    `dedup.near.device: gpu` one actor per GPU, which keeps the CUDA context and the permutations
    on the device (`gpus`: how many the cluster has)."""
    import ray.data

    common = dict(batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    if near_cfg["device"] != "gpu":
        return ds.map_batches(_sign_batch, fn_kwargs={"near_cfg": near_cfg}, **common)
    if not gpus:
        raise ConfigError("dedup.near.device is gpu but the Ray cluster has no GPU")
    return ds.map_batches(
        SignStage,
        fn_constructor_kwargs={"near_cfg": near_cfg},
        num_gpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=gpus),
        **common,
    )
