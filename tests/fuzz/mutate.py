"""Mutations of a request frame: what a broken or hostile client could send.

Each mutator takes the seed frame (without its size prefix) and a `random.Random`, and returns
the bytes to write to the socket, size prefix included (sometimes a wrong one, on purpose).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

_I32 = struct.Struct(">i")

# Lengths and counts that have killed or could kill a decoder: null, negative, huge, 4 GiB.
BOMBS = [
    b"\xff\xff\xff\xff\x0f",  # uvarint 0xFFFFFFFF: compact length 0xFFFFFFFE
    b"\xff\xff\xff\xff\x07",  # uvarint 0x7FFFFFFF
    b"\x80\x80\x80\x80\x10",  # varint overflow (bit beyond 32)
    b"\xff\xff\xff\xff\xff\x01",  # 6-byte varint
    b"\x00",  # compact null
    b"\xff\xff\xff\xff",  # int32 -1 (null) / uvarint running off
    b"\xff\xff\xff\xfe",  # int32 -2
    b"\x7f\xff\xff\xff",  # int32 max
    b"\x10\x00\x00\x00",  # int32 256 Mi
    b"\x00\x10\x00\x00",  # int32 1 Mi
    b"\xff\xff",  # int16 -1
    b"\xff\xfe",  # int16 -2
    b"\x7f\xff",  # int16 max
    b"\x80\x00",  # int16 min
    b"\xfe\xff\xff\xff\x0f",
]


def _framed(body: bytes) -> bytes:
    return _I32.pack(len(body)) + body


def bit_flips(frame: bytes, r: random.Random) -> bytes:
    b = bytearray(frame)
    lo = 8 if len(b) > 8 and r.random() < 0.8 else 0
    for _ in range(r.randint(1, 8)):
        i = r.randrange(lo, len(b))
        b[i] ^= 1 << r.randrange(8)
    return _framed(bytes(b))


def truncate(frame: bytes, r: random.Random) -> bytes:
    return _framed(frame[: r.randrange(0, len(frame))])


def length_bomb(frame: bytes, r: random.Random) -> bytes:
    b = bytearray(frame)
    bomb = r.choice(BOMBS)
    i = r.randrange(8, max(9, len(b)))
    if r.random() < 0.5:
        b[i : i + len(bomb)] = bomb  # overwrite
    else:
        b[i:i] = bomb  # insert
    return _framed(bytes(b))


def many_bombs(frame: bytes, r: random.Random) -> bytes:
    b = bytearray(frame)
    for _ in range(r.randint(2, 6)):
        bomb = r.choice(BOMBS)
        i = r.randrange(8, max(9, len(b)))
        b[i : i + len(bomb)] = bomb
    return _framed(bytes(b))


def random_bytes(frame: bytes, r: random.Random) -> bytes:
    b = bytearray(frame)
    choice = r.random()
    if choice < 0.4:  # overwrite a slice
        i = r.randrange(0, len(b))
        n = r.randint(1, 16)
        b[i : i + n] = r.randbytes(n)
    elif choice < 0.7:  # insert
        i = r.randrange(0, len(b) + 1)
        b[i:i] = r.randbytes(r.randint(1, 32))
    elif choice < 0.9:  # delete
        i = r.randrange(0, len(b))
        del b[i : i + r.randint(1, 16)]
    else:  # keep the header, random body
        b[8:] = r.randbytes(r.randint(0, 256))
    return _framed(bytes(b))


def header_change(frame: bytes, r: random.Random) -> bytes:
    b = bytearray(frame)
    if len(b) < 10:
        return _framed(bytes(b))
    what = r.randrange(5)
    if what == 0:  # another API key, same body
        struct.pack_into(">h", b, 0, r.choice([r.randint(0, 70), -1, 32767, r.randint(-5, 90)]))
    elif what == 1:  # another version
        struct.pack_into(">h", b, 2, r.choice([r.randint(0, 20), -1, 32767]))
    elif what == 2:  # client_id length
        struct.pack_into(">h", b, 8, r.choice([-1, -2, 0, 32767, len(b), len(b) - 9]))
    elif what == 3:  # header tagged fields (flexible): a bomb right after client_id
        (n,) = struct.unpack_from(">h", b, 8)
        at = 10 + max(n, 0)
        b[at:at] = r.choice(BOMBS) + r.choice(BOMBS)
    else:  # a random correlation id and api/version pair
        struct.pack_into(">hhi", b, 0, r.randint(0, 70), r.randint(0, 17), r.getrandbits(31))
    return _framed(bytes(b))


def wrong_size(frame: bytes, r: random.Random) -> bytes:
    """A size prefix that disagrees with the bytes that follow."""
    size = r.choice([len(frame) + r.randint(1, 64), max(0, len(frame) - r.randint(1, 8)), -1,
                     -(2**31), 2**31 - 1, 0, 1, 7])
    return _I32.pack(size) + frame


def pipelined(frame: bytes, r: random.Random) -> bytes:
    """The good frame, then a mutated copy behind it on the same connection."""
    return _framed(frame) + r.choice(MUTATORS[:-1])[1](frame, r)


MUTATORS: list[tuple[str, Callable[[bytes, random.Random], bytes]]] = [
    ("bit_flips", bit_flips),
    ("truncate", truncate),
    ("length_bomb", length_bomb),
    ("many_bombs", many_bombs),
    ("random_bytes", random_bytes),
    ("header_change", header_change),
    ("wrong_size", wrong_size),
    ("pipelined", pipelined),
]
WEIGHTS = [3, 2, 5, 2, 3, 2, 1, 1]


def mutate(frame: bytes, r: random.Random) -> tuple[str, bytes]:
    name, fn = r.choices(MUTATORS, WEIGHTS)[0]
    return name, fn(frame, r)
