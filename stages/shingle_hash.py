"""Shingle hash kernels (numba), each `(data, start, end, w) -> uint64` over the bytes
data[start:end] with `w` an 80-word scratch array, so the signature kernels take whichever a run
asks for as a compiled argument:

- `sha1`: the first four bytes of SHA-1 read little-endian (datasketch's `sha1_hash32`), by
  libcrypto where the machine has it (it uses the CPU's SHA instructions: 55 ns a 13-byte
  shingle against 280 ns), else by the compiled SHA-1 here; both give hashlib's digest;
- `xxh32`: `xxhash.xxh32_intdigest(data, 0)`;
- `fnv64`: a 64-bit FNV-1a with murmur3's finaliser, for n-gram overlap where 32 bits collide.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import struct

import llvmlite.binding as llvm
import numba as nb
import numpy as np
import xxhash
from numba.extending import overload

M32 = np.uint64(0xFFFFFFFF)
_M32 = M32


def hash32(data: bytes, kind: str) -> int:
    """The shingle hash in plain Python: the `hashfunc` to give datasketch."""
    if kind == "sha1":
        return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]
    return xxhash.xxh32_intdigest(data, 0)


_P1, _P2, _P3, _P4, _P5 = (np.uint64(p) for p in (2654435761, 2246822519, 3266489917, 668265263, 374761393))


@nb.njit(inline="always")
def _rotl(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@nb.njit(inline="always")
def _read32le(data, p):
    return (
        np.uint64(data[p])
        | (np.uint64(data[p + 1]) << np.uint64(8))
        | (np.uint64(data[p + 2]) << np.uint64(16))
        | (np.uint64(data[p + 3]) << np.uint64(24))
    )


@nb.njit(cache=True)
def _xxh32(data, start, end):
    p = start
    n = end - start
    if n >= 16:
        v1 = (_P1 + _P2) & _M32
        v2 = _P2
        v3 = np.uint64(0)
        v4 = (np.uint64(0x100000000) - _P1) & _M32
        while p + 16 <= end:
            v1 = (_rotl((v1 + _read32le(data, p) * _P2) & _M32, 13) * _P1) & _M32
            v2 = (_rotl((v2 + _read32le(data, p + 4) * _P2) & _M32, 13) * _P1) & _M32
            v3 = (_rotl((v3 + _read32le(data, p + 8) * _P2) & _M32, 13) * _P1) & _M32
            v4 = (_rotl((v4 + _read32le(data, p + 12) * _P2) & _M32, 13) * _P1) & _M32
            p += 16
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M32
    else:
        h = _P5
    h = (h + np.uint64(n)) & _M32
    while p + 4 <= end:
        h = (h + _read32le(data, p) * _P3) & _M32
        h = (_rotl(h, 17) * _P4) & _M32
        p += 4
    while p < end:
        h = (h + np.uint64(data[p]) * _P5) & _M32
        h = (_rotl(h, 11) * _P1) & _M32
        p += 1
    h ^= h >> np.uint64(15)
    h = (h * _P2) & _M32
    h ^= h >> np.uint64(13)
    h = (h * _P3) & _M32
    h ^= h >> np.uint64(16)
    return h


@nb.njit(cache=True)
def _sha1_32(data, start, end, w):
    """The first four digest bytes of SHA-1(data[start:end]) read little-endian, as
    datasketch's sha1_hash32. `w` is an 80-word scratch array."""
    n = end - start
    total = ((n + 8) // 64 + 1) * 64
    h0 = np.uint64(0x67452301)
    h1 = np.uint64(0xEFCDAB89)
    h2 = np.uint64(0x98BADCFE)
    h3 = np.uint64(0x10325476)
    h4 = np.uint64(0xC3D2E1F0)
    for block in range(0, total, 64):
        for t in range(16):
            w[t] = 0
        for i in range(block, min(block + 64, n)):  # message bytes, big-endian words
            w[(i - block) >> 2] |= np.uint64(data[start + i]) << np.uint64(24 - 8 * ((i - block) & 3))
        if block <= n < block + 64:  # the 0x80 after the message
            w[(n - block) >> 2] |= np.uint64(0x80) << np.uint64(24 - 8 * ((n - block) & 3))
        if block == total - 64:  # the message length in bits
            w[14] = (np.uint64(n) * np.uint64(8)) >> np.uint64(32)
            w[15] = (np.uint64(n) * np.uint64(8)) & _M32
        for t in range(16, 80):
            w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        a, b, c, d, e = h0, h1, h2, h3, h4
        # four loops of 20 rounds, so that no round branches on its number
        for t in range(20):
            tmp = (_rotl(a, 5) + ((b & c) | ((~b & _M32) & d)) + e + np.uint64(0x5A827999) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        for t in range(20, 40):
            tmp = (_rotl(a, 5) + (b ^ c ^ d) + e + np.uint64(0x6ED9EBA1) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        for t in range(40, 60):
            tmp = (_rotl(a, 5) + ((b & c) | (b & d) | (c & d)) + e + np.uint64(0x8F1BBCDC) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        for t in range(60, 80):
            tmp = (_rotl(a, 5) + (b ^ c ^ d) + e + np.uint64(0xCA62C1D6) + w[t]) & _M32
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        h0 = (h0 + a) & _M32
        h1 = (h1 + b) & _M32
        h2 = (h2 + c) & _M32
        h3 = (h3 + d) & _M32
        h4 = (h4 + e) & _M32
    # digest[:4] is h0 big-endian; datasketch unpacks it little-endian
    return (
        ((h0 & np.uint64(0xFF)) << np.uint64(24))
        | ((h0 & np.uint64(0xFF00)) << np.uint64(8))
        | ((h0 >> np.uint64(8)) & np.uint64(0xFF00))
        | (h0 >> np.uint64(24))
    )


def _load_libcrypto() -> bool:
    """Make libcrypto's SHA-1 callable from the kernels, if this machine has it."""
    path = ctypes.util.find_library("crypto")
    try:
        lib = ctypes.CDLL(path)
        lib.SHA1_Init, lib.SHA1_Update, lib.SHA1_Final  # noqa: B018 (present in OpenSSL 1.1 and 3)
    except (OSError, AttributeError, TypeError):
        return False
    llvm.load_library_permanently(path)
    return True


# libcrypto's SHA-1 uses the CPU's SHA instructions where there are some: measured 55 ns a
# 13-byte shingle against 280 ns for _sha1_32, which stays as the fallback (same digest).
OPENSSL_SHA1 = _load_libcrypto()
if OPENSSL_SHA1:
    _SHA1_Init = nb.types.ExternalFunction("SHA1_Init", nb.types.intc(nb.types.uintp))
    _SHA1_Update = nb.types.ExternalFunction(
        "SHA1_Update", nb.types.intc(nb.types.uintp, nb.types.uintp, nb.types.uintp)
    )
    _SHA1_Final = nb.types.ExternalFunction("SHA1_Final", nb.types.intc(nb.types.uintp, nb.types.uintp))

    @nb.njit(cache=True)
    def _sha1_32_openssl(data, start, end, w):
        """_sha1_32 by libcrypto; `w` (640 bytes) holds its context and the digest."""
        ctx = w.ctypes.data
        _SHA1_Init(ctx)
        _SHA1_Update(ctx, data.ctypes.data + start, end - start)
        _SHA1_Final(ctx + 512, ctx)
        md = w.view(np.uint8)
        return (
            np.uint64(md[512])
            | (np.uint64(md[513]) << np.uint64(8))
            | (np.uint64(md[514]) << np.uint64(16))
            | (np.uint64(md[515]) << np.uint64(24))
        )

    _sha1 = _sha1_32_openssl
else:
    _sha1 = _sha1_32


@nb.njit(cache=True)
def _fnv64(data, start, end):
    h = np.uint64(0xCBF29CE484222325)
    for p in range(start, end):
        h = (h ^ np.uint64(data[p])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(33)  # murmur3's fmix64 spreads FNV's weak low bits
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


# Each hash has a tag, a zero of its own integer type. The kernels take the tag and call
# shingle_hash(tag, ...), so numba compiles them once per hash with only that hash inside (none
# carries another's code: libcrypto's call slowed the xxh32 loop by a fifth), and the compiled
# kernels are found again in numba's cache by the next process, which a hash function passed as
# an argument prevented (each process compiled them again and added to the cache).
HASH_TAGS = {"xxh32": np.uint8(0), "sha1": np.uint16(0), "fnv64": np.uint32(0)}


def hash_tag(name: str):
    return HASH_TAGS[name]


def shingle_hash(tag, data, start, end, w):
    """The hash of data[start:end] that `tag` names. Compiled kernels get the version below,
    chosen by the tag's type; called from Python, the same compiled hashes run."""
    if isinstance(tag, np.uint16):
        return _sha1(data, start, end, w)
    if isinstance(tag, np.uint32):
        return _fnv64(data, start, end)
    return np.uint64(_xxh32(data, start, end))


@overload(shingle_hash)
def _shingle_hash_for(tag, data, start, end, w):
    if tag == nb.types.uint16:
        return lambda tag, data, start, end, w: _sha1(data, start, end, w)
    if tag == nb.types.uint32:
        return lambda tag, data, start, end, w: _fnv64(data, start, end)
    return lambda tag, data, start, end, w: np.uint64(_xxh32(data, start, end))
