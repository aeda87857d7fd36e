/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Testudo on-disk format. Every structure the engine writes to a device is
 * defined here, once. All fields are fixed width and little-endian; the
 * engine only runs on little-endian hosts (checked at build time below), so
 * the structs are written as they sit in memory.
 *
 * Device layout (byte offsets):
 *
 *   0                superblock copy A (one 4 KiB block)
 *   4096             superblock copy B
 *   sb_ckpt_off[0]   checkpoint area A   (sb_ckpt_size bytes)
 *   sb_ckpt_off[1]   checkpoint area B
 *   sb_seg_start     segment 0, segment 1, ... (sb_seg_count × sb_seg_size)
 *
 * Invariants:
 *   - Nothing is overwritten in place except the superblock copies and the
 *     two checkpoint areas, and each of those is double-buffered: a write
 *     only ever touches the copy that is not the newest valid one.
 *   - The log is a chain of batches. Batch seq numbers rise by exactly one
 *     along the chain; a batch starts at a 4 KiB boundary of a segment and
 *     never crosses the segment's end. When a batch does not fit, the chain
 *     continues at the start of another segment.
 *   - A segment is reused only when no durable checkpoint refers to it and
 *     it is not on the replay path of the newest durable checkpoint.
 */
#ifndef TESTUDO_FORMAT_H
#define TESTUDO_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Testudo's on-disk format is little-endian; big-endian hosts are not supported"
#endif

#define TDO_FORMAT_VERSION 1u
#define TDO_BLOCK_SIZE     4096u   /* engine block and device alignment */
#define TDO_SECTOR_SIZE    512u    /* smallest unit a client may address */
#define TDO_NAME_MAX       63u     /* volume name length, without the NUL */
#define TDO_MAX_VOLS       1024u

enum tdo_backend {
	TDO_BACKEND_FILE = 1,   /* regular file or block device */
	TDO_BACKEND_PMEM = 2,   /* file mapped through libpmem */
};

/*
 * Superblock. Written at format time into both copies; sb_seq orders them
 * and the newest copy whose checksum verifies wins.
 */
#define TDO_SB_MAGIC 0x4b4c424f44555453ull /* "STUDOBLK" */
struct tdo_sb {
	uint64_t sb_magic;
	uint32_t sb_version;
	uint32_t sb_backend;        /* enum tdo_backend */
	uint8_t  sb_uuid[16];       /* random at format; stamped on every batch */
	uint64_t sb_seq;
	uint64_t sb_dev_size;       /* bytes of the device this format uses */
	uint64_t sb_seg_size;       /* bytes per segment, multiple of 1 MiB */
	uint64_t sb_seg_start;      /* byte offset of segment 0 */
	uint32_t sb_seg_count;
	uint32_t sb_max_vols;
	uint64_t sb_ckpt_off[2];
	uint64_t sb_ckpt_size;      /* bytes of each checkpoint area */
	uint64_t sb_format_time;    /* seconds since the epoch */
	uint8_t  sb_reserved[144];
	uint64_t sb_csum;           /* xxh3-64 of the struct with this field 0 */
};
_Static_assert(sizeof(struct tdo_sb) == 256, "superblock size");

/*
 * A batch: one group commit. Its header area (bh_hdr_len bytes, a multiple
 * of 4 KiB) holds this header and then bh_nrec record headers; payloads
 * follow. Uncompressed block payloads sit at 4 KiB-aligned offsets, every
 * other payload at a 512-byte boundary, so any payload can be read with
 * O_DIRECT on its own.
 *
 * Invariants: bh_csum covers the whole header area; bh_len is a multiple
 * of 4 KiB, covers header area and payloads, and ends inside the segment.
 * A batch is written only once the one before it is durable, so a batch
 * with a valid header area proves every lower bh_seq of its chain durable:
 * only the newest batch can be torn.
 */
#define TDO_BATCH_MAGIC 0x48435442554f4454ull /* "TDOUBTCH" */
struct tdo_batch_hdr {
	uint64_t bh_magic;
	uint8_t  bh_uuid[16];       /* == sb_uuid */
	uint64_t bh_seq;            /* device-wide, +1 per batch */
	uint32_t bh_nrec;
	uint32_t bh_hdr_len;
	uint32_t bh_len;
	uint32_t bh_version;
	uint64_t bh_reserved;
	uint64_t bh_csum;           /* xxh3-64 of the header area, this field 0 */
};
_Static_assert(sizeof(struct tdo_batch_hdr) == 64, "batch header size");

enum tdo_rec_type {
	TDO_REC_DATA       = 1, /* one block of data (rec_count == 1) */
	TDO_REC_ZERO       = 2, /* rec_count blocks read as zero, allocated */
	TDO_REC_TRIM       = 3, /* rec_count blocks become holes */
	TDO_REC_VOL_CREATE = 4, /* payload: struct tdo_vol_desc */
	TDO_REC_VOL_RESIZE = 5, /* payload: struct tdo_vol_desc */
	TDO_REC_VOL_DELETE = 6, /* no payload */
};

enum tdo_rec_flags {
	TDO_RECF_LZ4   = 1u << 0, /* payload is lz4 block compressed */
	TDO_RECF_RELOC = 1u << 1, /* a cleaner copy; LSN and epoch unchanged */
};

/*
 * Record header. rec_poff is relative to the batch start. For DATA the
 * payload is the block (4096 bytes, or its lz4 form, prefixed by a u16
 * length, when TDO_RECF_LZ4). rec_pcsum is xxh3-64 of the payload bytes as
 * stored; rec_hcsum is xxh3-64 of this header with rec_hcsum zero.
 *
 * Invariants: a client record (not TDO_RECF_RELOC) takes effect in log
 * order; its rec_lsn is the writer's (a replica writes its primary's LSNs,
 * and a resync copy may carry an LSN older than the version it replaces).
 * A TDO_RECF_RELOC copy repeats the LSN and payload checksum of the record
 * it copies and takes effect only over that same version.
 */
struct tdo_rec_hdr {
	uint8_t  rec_type;          /* enum tdo_rec_type */
	uint8_t  rec_flags;         /* enum tdo_rec_flags */
	uint16_t rec_reserved;
	uint32_t rec_vol;           /* volume id */
	uint64_t rec_block;         /* first 4 KiB block */
	uint32_t rec_count;         /* blocks covered */
	uint32_t rec_epoch;         /* the volume's epoch when written */
	uint64_t rec_lsn;           /* the volume's LSN of this write */
	uint64_t rec_seq;           /* bh_seq of the batch holding it */
	uint32_t rec_poff;
	uint32_t rec_plen;
	uint64_t rec_pcsum;
	uint64_t rec_hcsum;
};
_Static_assert(sizeof(struct tdo_rec_hdr) == 64, "record header size");

#define TDO_BATCH_MAX_REC 4095u /* bounds a header area to 256 KiB */

/* Volume descriptor: payload of VOL_CREATE/VOL_RESIZE and checkpoint body. */
enum tdo_vol_flags {
	TDO_VOL_LZ4 = 1u << 0,
};
struct tdo_vol_desc {
	uint32_t vd_id;             /* never reused on a device */
	uint32_t vd_flags;          /* enum tdo_vol_flags */
	uint64_t vd_size;           /* bytes, multiple of 512 */
	uint64_t vd_lsn;            /* newest LSN assigned */
	uint32_t vd_epoch;
	uint32_t vd_reserved0;
	uint64_t vd_ctime;
	char     vd_name[TDO_NAME_MAX + 1]; /* NUL-terminated */
	uint8_t  vd_reserved[24];
};
_Static_assert(sizeof(struct tdo_vol_desc) == 128, "volume descriptor size");

/*
 * Packed index entry: "where is this block's newest version", as the
 * engine passes it around and, verbatim, as the checkpoint stores it. (In
 * memory the index packs it further, to 15 bytes around a per-chunk LSN
 * base: storage/index.c.)
 *
 *   ie_a bits  0..47  LSN of the version
 *        bits 48..49  kind (enum tdo_ie_kind)
 *        bits 50..53  payload length in 512-byte sectors (1..9)
 *        bits 54..63  high 10 bits of the payload's device sector
 *   ie_b              low 32 bits of the payload's device sector
 *   ie_c              low 32 bits of rec_pcsum of the payload
 *
 * Invariant: a TDO_IE_DATA entry always names a record the log still holds
 * in a segment that is not free.
 */
enum tdo_ie_kind {
	TDO_IE_HOLE = 0,            /* never written, or trimmed */
	TDO_IE_ZERO = 1,            /* reads as zero, allocated */
	TDO_IE_DATA = 2,            /* plain 4 KiB payload */
	TDO_IE_LZ4  = 3,            /* lz4 payload */
};
struct tdo_ie {
	uint64_t ie_a;
	uint32_t ie_b;
	uint32_t ie_c;
};
_Static_assert(sizeof(struct tdo_ie) == 16, "index entry size");

/*
 * Checkpoint area: this header in the first 4 KiB, then the body:
 * ck_nvols × struct tdo_vol_desc, ck_nsegs × struct tdo_ckpt_seg,
 * ck_nents × struct tdo_ckpt_ent. ck_seq orders the two areas; the newest
 * whose header and body checksums verify wins.
 */
#define TDO_CKPT_MAGIC 0x54504b43554f4454ull /* "TDOUCKPT" */
struct tdo_ckpt_hdr {
	uint64_t ck_magic;
	uint32_t ck_version;
	uint32_t ck_nvols;
	uint8_t  ck_uuid[16];
	uint64_t ck_seq;            /* checkpoint generation */
	uint64_t ck_log_seq;        /* seq of the first batch to replay */
	uint32_t ck_log_seg;        /* where that batch is */
	uint32_t ck_log_off;
	uint32_t ck_next_vol_id;
	uint32_t ck_nsegs;
	uint64_t ck_nents;
	uint64_t ck_body_len;
	uint64_t ck_body_csum;      /* xxh3-64 of the body */
	uint64_t ck_user_bytes;     /* lifetime counters, carried across opens */
	uint64_t ck_log_bytes;
	uint64_t ck_clean_bytes;
	uint8_t  ck_reserved[136];
	uint64_t ck_csum;           /* xxh3-64 of this header, this field 0 */
};
_Static_assert(sizeof(struct tdo_ckpt_hdr) == 256, "checkpoint header size");

struct tdo_ckpt_seg {
	uint64_t cs_age;            /* bh_seq of the newest batch written in it */
};
_Static_assert(sizeof(struct tdo_ckpt_seg) == 8, "checkpoint segment size");

struct tdo_ckpt_ent {
	uint32_t ce_vol;
	uint32_t ce_reserved;
	uint64_t ce_block;
	struct tdo_ie ce_ie;
};
_Static_assert(sizeof(struct tdo_ckpt_ent) == 32, "checkpoint entry size");

#endif
