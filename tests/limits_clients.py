#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile and ordinary clients for tests/limits.sh.

  limits_clients.py hostile PORT VOLUME COUNT SIZE READY   (COUNT pipelined reads of SIZE bytes,
                                                           replies never read; touches READY once
                                                           sent, then holds the socket 120 s)
  limits_clients.py served PORT VOLUME                     (a libnbd client writes, reads back)
  limits_clients.py idle PORT COUNT READY WAIT             (COUNT sockets that send nothing; exit 0
                                                           once the server closed all, within WAIT s)
  limits_clients.py peer PORT COUNT READY WAIT             (COUNT sockets to a repl port: silent, half
                                                           a HELLO, or a HELLO header claiming 33 MiB
                                                           followed by 32 MiB; as idle)
"""
import os
import resource
import selectors
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513


def ready(path):
    with open(path, "w") as f:
        f.write("ready\n")


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError("server closed")
        b += d
    return b


def hostile(port, vol, count, size, ready_path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little for us
    s.connect(("127.0.0.1", port))
    magic, opt, _ = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    name = vol.encode()
    s.sendall(struct.pack(">QII", IHAVEOPT, 1, len(name)) + name)  # EXPORT_NAME
    export_size, _ = struct.unpack(">QH", recv_exact(s, 10))
    reqs = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, i, (i * size) % (export_size - size + 1), size)
                    for i in range(count))
    s.sendall(reqs)
    print("sent %d reads of %d bytes, reading no reply" % (count, size), flush=True)
    ready(ready_path)
    time.sleep(120)  # killed long before


def served(port, vol):
    import nbd
    t0 = time.time()
    h = nbd.NBD()
    h.connect_uri("nbd://127.0.0.1:%d/%s" % (port, vol))
    data = os.urandom(1 << 20)
    for i in range(4):
        h.pwrite(data, (64 << 20) + i * len(data))
        assert h.pread(len(data), (64 << 20) + i * len(data)) == data, "read back differs"
    h.flush()
    h.shutdown()
    print("served: 4 x 1 MiB written and read back in %.2f s" % (time.time() - t0))


def wait_closed(socks, ready_path, wait):
    ready(ready_path)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    t0 = time.time()
    while open_ and time.time() - t0 < wait:
        for key, _ in sel.select(timeout=0.5):
            try:
                d = key.fileobj.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                d = b""
            except BlockingIOError:
                continue
            if not d:
                sel.unregister(key.fileobj)
                open_ -= 1
    closed = len(socks) - open_
    print("closed by the server: %d of %d after %.1f s" % (closed, len(socks), time.time() - t0))
    return closed == len(socks)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n), hard))


def idle(port, count, ready_path, wait):
    raise_nofile(count + 64)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    print("%d idle sockets open" % count, flush=True)
    return wait_closed(socks, ready_path, wait)


def peer(port, count, ready_path, wait):
    raise_nofile(count + 64)
    hello = struct.pack("<IHHQII", 0x50524454, 1, 1, 0, 136, 0) + b"x" * 136
    big = struct.pack("<IHHQII", 0x50524454, 1, 1, 0, 33 << 20, 0)
    chunk = b"\xa5" * (1 << 20)
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
        try:
            if i % 8 == 1:
                s.sendall(hello[:len(hello) // 2])
            elif i % 8 >= 2:  # 3 in 4: a big frame, 32 of its 33 MiB
                s.settimeout(10)
                s.sendall(big)
                for _ in range(32):
                    s.sendall(chunk)
        except OSError as e:
            print("socket %d: %s (the server refused it)" % (i, e))
    print("%d peer sockets open" % count, flush=True)
    return wait_closed(socks, ready_path, wait)


mode = sys.argv[1]
if mode == "hostile":
    hostile(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
elif mode == "served":
    served(int(sys.argv[2]), sys.argv[3])
elif mode == "idle":
    sys.exit(0 if idle(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])) else 1)
elif mode == "peer":
    sys.exit(0 if peer(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])) else 1)
else:
    sys.exit("unknown mode " + mode)
