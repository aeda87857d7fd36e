#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Seed inputs for the NBD fuzzer: byte streams a client could send (the
export is named "fuzz", 16 MiB). Writes them into tests/fuzz/corpus/."""
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
IHAVEOPT = 0x49484156454F5054
N = b"fuzz"


def opt(o, d=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(d)) + d


def go(infos=(), o=7):
    return opt(o, struct.pack(">I", len(N)) + N + struct.pack(">H", len(infos)) +
               b"".join(struct.pack(">H", i) for i in infos))


def req(t, off=0, ln=0, fl=0, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, fl, t, 1, off, ln) + payload


meta = struct.pack(">I", len(N)) + N + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation"
seeds = {
    "go-simple": struct.pack(">I", 3) + go() + req(1, 0, 4096, payload=b"a" * 4096) + req(0, 0, 4096) +
    req(3) + req(4, 4096, 8192) + req(6, 0, 1024, 2) + req(5, 0, 4096) + req(2),
    "go-structured": struct.pack(">I", 3) + opt(8) + opt(10, meta) + go((0, 1, 2, 3)) +
    req(7, 0, 1 << 20) + req(7, 0, 1 << 20, 8) + req(0, 512, 1536, 4) + req(1, 512, 1024, 1, b"b" * 1024) + req(2),
    "export-name": struct.pack(">I", 1) + opt(1, N) + req(0, 0, 512) + req(2),
    "list-info": struct.pack(">I", 3) + opt(3) + go((3,), 6) + opt(9, meta) + opt(5) + opt(2),
    "bad-requests": struct.pack(">I", 3) + go() + req(0, 1 << 40, 512) + req(1, 100, 512, 0, b"c" * 512) +
    req(9) + req(1, 0, 512, 0x80, b"d" * 512) + req(4, 0, 0xFFFFFE00) + req(0, 0, 0),
    "unknown-options": struct.pack(">I", 3) + opt(11) + opt(0x12345, b"xyz") + opt(10, meta) + opt(8, b"q") + go(),
    "truncated": struct.pack(">I", 3) + opt(7, struct.pack(">I", 100) + N),
}
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print("wrote %d seeds to %s" % (len(seeds), out))
