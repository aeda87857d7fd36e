#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Every NBD option, command and flag testudod serves, and the error
replies, checked byte by byte with a raw socket client and with libnbd
(the library nbdsh scripts use).

usage: nbd_protocol.py PORT VOLUME   (VOLUME must be at least 64 MiB, and scratch)
"""
import errno
import os
import socket
import struct
import sys

import nbd

PORT = int(sys.argv[1])
VOL = sys.argv[2]
URI = "nbd://127.0.0.1:%d/%s" % (PORT, VOL)

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ = 0x25609513
SIMPLE = 0x67446698
STRUCT = 0x668E33EF
ERR = lambda n: (1 << 31) + n

checks = 0
failures = []


def check(what, cond, detail=""):
    global checks
    checks += 1
    if not cond:
        failures.append("%s %s" % (what, detail))
        print("FAILED:", what, detail)


class Raw:
    """A hand-driven client: every byte is ours."""

    def __init__(self, flags=3):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        check("greeting magic", magic == NBDMAGIC and opt == IHAVEOPT)
        check("greeting flags FIXED_NEWSTYLE|NO_ZEROES", hflags == 3, hex(hflags))
        self.s.sendall(struct.pack(">I", flags))

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError("server closed after %d of %d bytes" % (len(b), n))
            b += c
        return b

    def opt(self, o, data=b""):
        self.s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)

    def reply(self):
        magic, o, t, ln = struct.unpack(">QIII", self.recv(20))
        check("option reply magic", magic == REPMAGIC)
        return o, t, self.recv(ln)

    def replies_until_final(self):
        out = []
        while True:
            o, t, d = self.reply()
            out.append((t, d))
            if t == 1 or t >= (1 << 31):
                return out

    def go(self, name=VOL, infos=(), o=7):
        n = name.encode()
        self.opt(o, struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) +
                 b"".join(struct.pack(">H", i) for i in infos))
        return self.replies_until_final()

    def req(self, typ, off=0, ln=0, flags=0, cookie=0x1122334455667788, payload=b""):
        self.s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, ln) + payload)

    def simple(self):
        magic, err, cookie = struct.unpack(">IIQ", self.recv(16))
        check("simple reply magic", magic == SIMPLE, hex(magic))
        return err, cookie

    def chunk(self):
        magic, flags, typ, cookie, ln = struct.unpack(">IHHQI", self.recv(20))
        check("structured reply magic", magic == STRUCT, hex(magic))
        return flags, typ, cookie, self.recv(ln)

    def closed(self):
        try:
            self.s.settimeout(5)
            return self.s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        self.s.close()


def info_types(replies):
    return [struct.unpack(">H", d[:2])[0] for t, d in replies if t == 3]


# ---- handshake -----------------------------------------------------------------

r = Raw()
rep = r.go(infos=())
check("GO without info requests: INFO_EXPORT then ACK", [t for t, _ in rep] == [3, 1] and info_types(rep) == [0],
      str(rep))
t, d = rep[0]
size, tflags = struct.unpack(">QH", d[2:12])
check("export size", size >= 64 << 20, str(size))
for bit, name in [(1, "HAS_FLAGS"), (4, "SEND_FLUSH"), (8, "SEND_FUA"), (32, "SEND_TRIM"), (64, "SEND_WRITE_ZEROES"),
                  (128, "SEND_DF"), (256, "CAN_MULTI_CONN"), (1024, "SEND_CACHE"), (2048, "SEND_FAST_ZERO")]:
    check("transmission flag " + name, tflags & bit, hex(tflags))
check("not read-only", not tflags & 2)
# simple replies: the kernel's way
r.req(1, 0, 4096, payload=b"\x5a" * 4096)
err, cookie = r.simple()
check("simple WRITE reply ok", err == 0 and cookie == 0x1122334455667788, "%d %x" % (err, cookie))
r.req(0, 0, 4096, cookie=7)
err, cookie = r.simple()
check("simple READ reply", err == 0 and cookie == 7 and r.recv(4096) == b"\x5a" * 4096)
# SEND_FUA is advertised: FUA MUST be accepted on every command
r.req(0, 0, 4096, flags=1, cookie=8)
err, cookie = r.simple()
check("READ with FUA accepted", err == 0 and cookie == 8 and r.recv(4096) == b"\x5a" * 4096, str(err))
r.req(3, flags=1, cookie=9)
err, cookie = r.simple()
check("FLUSH with FUA accepted", err == 0 and cookie == 9, str(err))
r.req(0, size - 512, 1024)
err, _ = r.simple()
check("READ past the end: EINVAL", err == errno.EINVAL, str(err))
r.req(1, size - 512, 1024, payload=b"x" * 1024)
err, _ = r.simple()
check("WRITE past the end: ENOSPC, payload drained", err == errno.ENOSPC, str(err))
r.req(0, 100, 512)
err, _ = r.simple()
check("unaligned READ: EINVAL", err == errno.EINVAL, str(err))
r.req(1, 0, 4096, flags=0x40, payload=b"y" * 4096)
err, _ = r.simple()
check("WRITE with an unknown flag: EINVAL, payload drained", err == errno.EINVAL, str(err))
r.req(7, 0, 4096)
err, _ = r.simple()
check("BLOCK_STATUS without a negotiated context: EINVAL", err == errno.EINVAL, str(err))
r.req(99, 0, 0)
err, _ = r.simple()
check("unknown command: EINVAL", err == errno.EINVAL, str(err))
r.req(0, 0, 33 << 20)
err, _ = r.simple()
check("READ over the 32 MiB payload limit: EOVERFLOW", err == errno.EOVERFLOW, str(err))
r.req(4, 0, (4 << 30) - 512)
err, _ = r.simple()
check("TRIM of 4 GiB - 512 accepted (range checked, no payload limit)",
      err == (0 if size >= (4 << 30) else errno.EINVAL), str(err))
r.req(4, 0, min(size, 2 << 30))
err, _ = r.simple()
check("TRIM of up to 2 GiB (mkfs's step)", err == 0, str(err))
r.req(3, 0, 0)
err, _ = r.simple()
check("FLUSH", err == 0)
r.req(5, 0, 1 << 20)
err, _ = r.simple()
check("CACHE", err == 0)
r.req(6, 0, 8192, flags=2 | 16)
err, _ = r.simple()
check("WRITE_ZEROES with NO_HOLE and FAST_ZERO", err == 0, str(err))
r.req(2)
check("DISC closes the connection", r.closed())
r.close()

# INFO with every information request, then GO; EXPORT_NAME; LIST
r = Raw()
rep = r.go(infos=(0, 1, 2, 3), o=6)
types = info_types(rep)
check("INFO answers NAME, DESCRIPTION, BLOCK_SIZE, EXPORT", sorted(types) == [0, 1, 2, 3], str(types))
for t, d in rep:
    if t == 3 and d[:2] == b"\x00\x03":
        mn, pref, mx = struct.unpack(">III", d[2:14])
        check("block sizes 512 / 4096 / 32 MiB", (mn, pref, mx) == (512, 4096, 32 << 20), str((mn, pref, mx)))
    if t == 3 and d[:2] == b"\x00\x01":
        check("INFO_NAME", d[2:] == VOL.encode())
rep = r.go(name="no-such-volume")
check("GO for an unknown export: ERR_UNKNOWN", rep[-1][0] == ERR(6), str(rep))
r.opt(3)
rep = r.replies_until_final()
names = [d[4:4 + struct.unpack(">I", d[:4])[0]].decode() for t, d in rep if t == 2]
check("LIST names the volume", VOL in names and rep[-1][0] == 1, str(names))
r.opt(3, b"junk")
check("LIST with data: ERR_INVALID", r.reply()[1] == ERR(3))
r.opt(5)
check("STARTTLS: ERR_UNSUP (no TLS yet, plain clients unaffected)", r.reply()[1] == ERR(1))
r.opt(11)
check("EXTENDED_HEADERS: ERR_UNSUP", r.reply()[1] == ERR(1))
r.opt(0x4242, b"abc")
check("unknown option: ERR_UNSUP", r.reply()[1] == ERR(1))
q = struct.pack(">I", len(VOL)) + VOL.encode() + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation"
r.opt(10, q)
check("SET_META_CONTEXT before STRUCTURED_REPLY: ERR_INVALID", r.reply()[1] == ERR(3))
r.opt(9, struct.pack(">I", len(VOL)) + VOL.encode() + struct.pack(">I", 0))
rep = r.replies_until_final()
check("LIST_META_CONTEXT with no query lists base:allocation",
      [(t, d[4:]) for t, d in rep] == [(4, b"base:allocation"), (1, b"")], str(rep))
r.opt(9, struct.pack(">I", len(VOL)) + VOL.encode() + struct.pack(">I", 5))
check("meta context query count past the option: ERR_INVALID", r.reply()[1] == ERR(3))
r.opt(8, b"x")
check("STRUCTURED_REPLY with data: ERR_INVALID", r.reply()[1] == ERR(3))
r.opt(8)
check("STRUCTURED_REPLY: ACK", r.reply()[1] == 1)
r.opt(10, q)
rep = r.replies_until_final()
check("SET_META_CONTEXT base:allocation", rep[0][0] == 4 and struct.unpack(">I", rep[0][1][:4])[0] == 1 and
      rep[-1][0] == 1, str(rep))
rep = r.go()
check("GO after structured replies", rep[-1][0] == 1)
# structured transmission
r.req(1, 0, 8192, payload=b"\x11" * 8192, flags=1)
fl, typ, ck, d = r.chunk()
check("structured WRITE+FUA reply: NONE chunk with DONE", fl == 1 and typ == 0 and d == b"", "%d %d" % (fl, typ))
r.req(0, 0, 8192, flags=4)
fl, typ, ck, d = r.chunk()
check("structured READ with DF: one OFFSET_DATA chunk", fl == 1 and typ == 1 and
      struct.unpack(">Q", d[:8])[0] == 0 and d[8:] == b"\x11" * 8192)
r.req(4, 8192, 1 << 20)
r.chunk()
r.req(7, 0, 2 << 20)
fl, typ, ck, d = r.chunk()
ctx = struct.unpack(">I", d[:4])[0]
ext = [struct.unpack(">II", d[4 + i:12 + i]) for i in range(0, len(d) - 4, 8)]
check("BLOCK_STATUS chunk for base:allocation", typ == 5 and fl == 1 and ctx == 1, str((typ, fl, ctx)))
check("BLOCK_STATUS: written data, then a trimmed hole", ext[0] == (8192, 0) and ext[1][1] == 3, str(ext[:3]))
r.req(7, 0, 2 << 20, flags=8)
fl, typ, ck, d = r.chunk()
check("BLOCK_STATUS with REQ_ONE: one extent", len(d) == 12, str(len(d)))
r.req(0, 1 << 62, 512)
fl, typ, ck, d = r.chunk()
check("structured error chunk: EINVAL", typ == (1 << 15) + 1 and struct.unpack(">I", d[:4])[0] == errno.EINVAL,
      str(typ))
r.req(2)
check("DISC", r.closed())
r.close()

# EXPORT_NAME, the -g path: size and flags, no zeroes after NO_ZEROES
r = Raw()
n = VOL.encode()
r.opt(1, n)
sz, fl = struct.unpack(">QH", r.recv(10))
check("EXPORT_NAME reply", sz == size and fl == tflags)
r.req(0, 0, 4096)
err, _ = r.simple()
check("transmission after EXPORT_NAME", err == 0 and len(r.recv(4096)) == 4096)
r.close()
r = Raw(flags=1)  # without NO_ZEROES: 124 zero bytes follow
r.opt(1, n)
d = r.recv(10 + 124)
check("EXPORT_NAME without NO_ZEROES pads 124 zeroes", d[10:] == b"\0" * 124)
r.close()
r = Raw()
r.opt(1, b"no-such-volume")
check("EXPORT_NAME for an unknown export closes", r.closed())
r.close()
r = Raw()
r.opt(2)
check("ABORT: ACK, then close", r.reply()[1] == 1 and r.closed())
r.close()

# ---- malformed input closes that one connection --------------------------------
r = Raw()
r.s.sendall(struct.pack(">QII", 0xDEADBEEF, 7, 0))
check("bad option magic closes", r.closed())
r.close()
r = Raw()
r.s.sendall(struct.pack(">QII", IHAVEOPT, 7, 0xFFFFFFFF))
check("absurd option length closes", r.closed())
r.close()
r = Raw()
r.go()
r.s.sendall(struct.pack(">IHHQQI", 0x12345678, 0, 0, 1, 0, 512))
check("bad request magic closes", r.closed())
r.close()
r = Raw()
r.go()
r.req(1, 0, 0xFFFFFFF0)
check("impossible write length closes", r.closed())
r.close()
s = socket.create_connection(("127.0.0.1", PORT))
s.recv(18)
s.sendall(struct.pack(">I", 0xFF))
check("unknown client flags close", s.recv(1) == b"")
s.close()

# ---- libnbd (nbdsh's library): the same server through a real client ------------
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(URI)
check("libnbd: structured replies", h.get_structured_replies_negotiated())
check("libnbd: can_multi_conn, can_fua, can_flush, can_trim, can_zero, can_fast_zero, can_cache, can_df",
      all([h.can_multi_conn(), h.can_fua(), h.can_flush(), h.can_trim(), h.can_zero(), h.can_fast_zero(),
           h.can_cache(), h.can_df()]))
buf = os.urandom(1 << 20)
h.pwrite(buf, 16 << 20, nbd.CMD_FLAG_FUA)
check("libnbd: pwrite/pread", h.pread(1 << 20, 16 << 20) == buf)
h.pwrite(b"\x77" * 1536, (16 << 20) + 512)
got = h.pread(4096, 16 << 20)
check("libnbd: 512-byte granular write inside a block",
      got[:512] == buf[:512] and got[512:2048] == b"\x77" * 1536 and got[2048:] == buf[2048:4096])
h.zero(1 << 20, 16 << 20, nbd.CMD_FLAG_NO_HOLE)
check("libnbd: zero with NO_HOLE reads zero", h.pread(1 << 20, 16 << 20) == b"\0" * (1 << 20))
ext = []
h.block_status(1 << 20, 16 << 20, lambda meta, off, e, err: ext.extend(e))
check("libnbd: zeroed with NO_HOLE is ZERO, not HOLE", ext[:2] == [1 << 20, 2], str(ext[:4]))
h.pwrite(buf, 16 << 20)
h.trim(1 << 20, 16 << 20)
check("libnbd: trimmed reads zero", h.pread(1 << 20, 16 << 20) == b"\0" * (1 << 20))
ext = []
h.block_status(1 << 20, 16 << 20, lambda meta, off, e, err: ext.extend(e))
check("libnbd: trimmed is HOLE|ZERO", ext[:2] == [1 << 20, 3], str(ext[:4]))
h.zero(1 << 20, 17 << 20, nbd.CMD_FLAG_FAST_ZERO)
h.flush()
h.cache(1 << 20, 0)
h.set_strict_mode(0)
try:
    h.pread(512, size)
    check("libnbd: read past the end fails", False)
except nbd.Error as e:
    check("libnbd: read past the end is EINVAL", e.errnum == errno.EINVAL, str(e))
h.shutdown()

# simple replies through libnbd (as the kernel would get)
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(URI)
check("libnbd without structured replies", not h.get_structured_replies_negotiated())
h.pwrite(buf, 0)
check("libnbd simple replies: read back", h.pread(1 << 20, 0) == buf)
h.shutdown()

print("nbd protocol: %d of %d checks passed" % (checks - len(failures), checks))
sys.exit(1 if failures else 0)
