#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""testudod against libnbd clients: multi-conn, bad input, and the
acknowledged-write witness for the restart tests.

  nbd_clients.py multiconn PORT VOLUME
  nbd_clients.py badinput PORT VOLUME
  nbd_clients.py write PORT VOLUME JOURNAL SECONDS   (random 4 KiB writes; JOURNAL has "W" before each
                                                     is sent and "A" once it is acknowledged)
  nbd_clients.py verify PORT VOLUME JOURNAL          (each block holds its newest acknowledged write, or
                                                     a write that was in flight when the server died)
"""
import hashlib
import os
import random
import socket
import struct
import sys
import time

import nbd

mode, PORT, VOL = sys.argv[1], int(sys.argv[2]), sys.argv[3]
URI = "nbd://127.0.0.1:%d/%s" % (PORT, VOL)
fails = []
checks = 0


def check(what, cond, detail=""):
    global checks
    checks += 1
    if not cond:
        fails.append(what)
        print("FAILED:", what, detail)


def block(seed, i):
    return hashlib.sha256(b"%d:%d" % (seed, i)).digest() * 128  # 4 KiB


if mode == "multiconn":
    hs = []
    for _ in range(4):
        h = nbd.NBD()
        h.connect_uri(URI)
        check("CAN_MULTI_CONN", h.can_multi_conn())
        hs.append(h)
    size = hs[0].get_size()
    expect = {}
    # disjoint ranges, one connection each, then overlapping writes in turn
    for k, h in enumerate(hs):
        for i in range(64):
            off = (k * 64 + i) * 4096
            data = block(k, i)
            h.aio_pwrite(data, off)
            expect[off] = data
    for rnd in range(3):
        for k, h in enumerate(hs):
            off = (rnd * 7 + k) * 4096  # overlaps the disjoint area and each other across rounds
            data = block(100 + rnd, k)
            h.pwrite(data, off)       # completed before the next connection writes
            expect[off] = data
    for h in hs:
        while h.aio_in_flight() > 0:
            h.poll(-1)
    hs[2].flush()                     # one flush covers every connection's completed writes
    bad = 0
    for off, data in expect.items():
        if hs[3].pread(4096, off) != data:
            bad += 1
    check("reads on another connection see every completed write (%d blocks)" % len(expect), bad == 0,
          "%d differ" % bad)
    for h in hs:
        h.shutdown()

elif mode == "badinput":
    def conn():
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        return s

    rnd = random.Random(7)
    # garbage before, during and after the handshake
    for i in range(200):
        s = conn()
        try:
            if i % 4 == 0:
                s.sendall(os.urandom(rnd.randrange(1, 4096)))
            elif i % 4 == 1:
                s.recv(18)
                s.sendall(struct.pack(">I", 3) + os.urandom(rnd.randrange(1, 200)))
            elif i % 4 == 2:  # truncated option header / data
                s.recv(18)
                s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 7, 1000)[:rnd.randrange(1, 16)])
            else:  # absurd option and request lengths after a real GO
                s.recv(18)
                n = VOL.encode()
                s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 7, 4 + len(n) + 2) +
                          struct.pack(">I", len(n)) + n + b"\0\0")
                s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, rnd.choice([0, 1, 4, 6, 7, 99]),
                                      1, rnd.getrandbits(64), rnd.getrandbits(32)))
                s.sendall(os.urandom(rnd.randrange(0, 100)))
        except OSError:
            pass
        s.close()
    # 1000 connections opened and dropped, some mid-greeting
    socks = []
    for i in range(1000):
        try:
            socks.append(conn())
        except OSError as e:
            check("connection %d accepted" % i, False, str(e))
            break
        if len(socks) >= 100:
            for s in socks:
                s.close()
            socks = []
    for s in socks:
        s.close()
    # the daemon still serves a well-behaved client
    h = nbd.NBD()
    h.connect_uri(URI)
    data = block(9, 9)
    h.pwrite(data, 0)
    check("daemon serves after the abuse", h.pread(4096, 0) == data)
    h.shutdown()

elif mode == "write":
    journal, secs = sys.argv[4], float(sys.argv[5])
    h = nbd.NBD()
    h.connect_uri(URI)
    nblocks = h.get_size() // 4096
    rnd = random.Random(os.getpid())
    seed = os.getpid()
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    end = time.time() + secs
    n = 0
    try:
        while time.time() < end:
            i = rnd.randrange(nblocks)
            os.write(fd, b"W %d %d %d\n" % (i, seed, n))   # about to be sent
            h.pwrite(block(seed, n), i * 4096)             # returns once acknowledged
            os.write(fd, b"A %d %d %d\n" % (i, seed, n))   # acknowledged
            n += 1
    except nbd.Error:
        pass  # the daemon went away: everything journalled was acknowledged
    print("write: %d acknowledged writes" % n)
    sys.exit(0)

elif mode == "verify":
    journal = sys.argv[4]
    acked = {}       # block -> newest acknowledged (seed, n)
    inflight = {}    # block -> writes sent after it and never acknowledged
    pending = {}
    for line in open(journal):
        kind, i, seed, n = line.split()
        i, seed, n = int(i), int(seed), int(n)
        if kind == "W":
            pending[(seed, n)] = i
            inflight.setdefault(i, []).append((seed, n))
        else:
            pending.pop((seed, n), None)
            acked[i] = (seed, n)
            inflight[i] = []  # anything sent before this ack was ordered before it
    h = nbd.NBD()
    h.connect_uri(URI)
    lost = []
    for i, (seed, n) in acked.items():
        got = h.pread(4096, i * 4096)
        allowed = [block(seed, n)] + [block(s2, n2) for (s2, n2) in inflight.get(i, []) if (s2, n2) in pending]
        if got not in allowed:
            lost.append(i)
    check("every acknowledged write reads back (%d blocks, %d writes in flight at the end)" % (len(acked), len(pending)),
          not lost, "lost blocks %s" % lost[:10])
    h.shutdown()

print("%s: %d of %d checks passed" % (mode, checks - len(fails), checks))
sys.exit(1 if fails else 0)
