/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testudo-bench's verification formats: the header it stamps on every
 * 4 KiB block it writes with --verify, and the journal of acknowledged
 * writes. All fields little-endian (the bench runs on x86-64 and aarch64;
 * it refuses big-endian hosts at build time).
 *
 * Invariants:
 *  - Every 4 KiB block written under --verify starts with a struct
 *    tdo_vblk whose vb_offset is the block's own byte offset in the
 *    export; the rest of the block is pseudo-random bytes derived from
 *    (writer, seq, offset), so two writes never have the same content.
 *    vb_check covers the header's first 32 bytes and the block's last
 *    TDO_VBLK_SIZE - sizeof(struct tdo_vblk) bytes: a torn or shifted
 *    block fails it.
 *  - Sequence numbers are per writer, start at 1 and rise with every
 *    write issued (one number per write; a multi-block write stamps the
 *    same number on each of its blocks). The bench never has two writes
 *    to one block in flight on live connections at once.
 *  - The journal holds one header, then records appended in the order
 *    the server acknowledged the writes. A record is written only after
 *    its write was acknowledged, so everything the journal lists was
 *    acknowledged; acknowledged writes may be missing from its tail (the
 *    bench was killed before it appended them), and a torn last record
 *    fails jr_check and is ignored.
 *  - A block is good when its content is the journal's newest write to
 *    it, or a newer write of the same writer (one that was in flight and
 *    never acknowledged, or acknowledged but not yet journaled). Anything
 *    older, torn, or naming another offset is lost; an older write that is
 *    the block's newest in-doubt one is reported as "resurrected" (it was
 *    in flight on a dropped connection and landed after a newer
 *    acknowledged write), which is a finding too.
 */
#ifndef TESTUDO_BENCH_H
#define TESTUDO_BENCH_H

#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "testudo-bench's verify formats are little-endian"
#endif

#define TDO_VBLK_SIZE  4096u
#define TDO_VBLK_MAGIC 0x4b4c42564f445454ull   /* "TTDOVBLK" */
#define TDO_BJ_MAGIC   0x4c4e524a4f445454ull   /* "TTDOJRNL" */
#define TDO_BJ_VERSION 1u

struct tdo_vblk {
	uint64_t vb_magic;          /* TDO_VBLK_MAGIC */
	uint64_t vb_offset;         /* byte offset of this block in the export */
	uint64_t vb_writer;         /* the writing run's id (random, non-zero) */
	uint64_t vb_seq;            /* the write's sequence number, >= 1 */
	uint64_t vb_check;          /* xxh3 of bytes 0..31 then 40..4095 */
};
_Static_assert(sizeof(struct tdo_vblk) == 40, "verify block header");

struct tdo_bj_header {
	uint64_t jh_magic;          /* TDO_BJ_MAGIC */
	uint32_t jh_version;        /* TDO_BJ_VERSION */
	uint32_t jh_block;          /* TDO_VBLK_SIZE */
	uint64_t jh_writer;         /* the run's writer id */
	uint64_t jh_export_size;    /* size the server reported */
	uint64_t jh_created_ns;     /* CLOCK_REALTIME when the run began */
	char     jh_export[16];     /* first bytes of the export name, NUL-padded */
	uint64_t jh_check;          /* xxh3 of the bytes before it */
};
_Static_assert(sizeof(struct tdo_bj_header) == 64, "journal header");

struct tdo_bj_rec {
	uint64_t jr_offset;         /* byte offset, a multiple of TDO_VBLK_SIZE */
	uint64_t jr_seq;            /* the write's sequence number */
	uint32_t jr_length;         /* bytes, a multiple of TDO_VBLK_SIZE, > 0; with
	                             * TDO_BJ_IN_DOUBT set: a write whose connection
	                             * dropped before its reply (never acknowledged) */
	uint32_t jr_check;          /* low 32 bits of xxh3 of the 20 bytes before */
};
_Static_assert(sizeof(struct tdo_bj_rec) == 24, "journal record");
#define TDO_BJ_IN_DOUBT (1u << 31)

#endif
