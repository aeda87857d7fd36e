/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Engine internals, grouped by the file that defines them. Everything here
 * runs on the caller's loop thread unless it says "worker".
 */
#ifndef TESTUDO_STORAGE_INTERNAL_H
#define TESTUDO_STORAGE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "testudo/engine.h"
#include "testudo/format.h"
#include "testudo/list.h"
#include "testudo/util.h"

#define SEG_MIN_SIZE     (1u << 20)
#define SEG_DEFAULT_SIZE (4u << 20)
#define LZ4_MAX_NSECT    7u   /* compressed payloads must save a sector */

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* ---- device.c: backends --------------------------------------------- */

/*
 * One open device. dev_pread/dev_pwrite/dev_sync are safe from worker
 * threads. Fault injection (tests only, off unless the environment asks):
 *   TDO_FAULT_POWERCUT=N[:SEED]  at the Nth write or sync, throw away a
 *                                random part of every write not yet made
 *                                durable, then _exit(99)
 *   TDO_FAULT_EIO_WRITE=N        the Nth write fails with EIO
 *   TDO_FAULT_SKIP_SYNC=1        sync does nothing (tests of the tests)
 * These are read only when the library is built with -DTDO_FAULT_INJECTION:
 * $(BUILD)/libtestudo-storage-fault.a, which the torture program links.
 * The library that testudod, testudo and testudo-bench link leaves them
 * out (the dev_fi_* calls do nothing) and tdo_engine_open logs one warning
 * when any TDO_FAULT_* variable is set. The fi_* fields exist in both
 * builds, so code compiled with and without the define agrees on the
 * layout of struct dev.
 */
struct dev {
	int fd;
	int backend;                /* enum tdo_backend */
	int direct;                 /* opened O_DIRECT */
	int is_blockdev;
	uint64_t size;
	char *pmem;                 /* pmem backend: the mapping */
	const uint8_t *map;         /* file without O_DIRECT: read-only mapping for scattered reads (reader.c) */
	size_t pmem_len;
	int pmem_is_pmem;
	/* fault injection */
	pthread_mutex_t fi_lock;
	long fi_cut_at, fi_ops, fi_eio_at;
	int fi_skip_sync;
	unsigned fi_seed;
	struct fi_undo *fi_undo;    /* writes not yet durable, newest first */
	uint64_t fi_gen;
};
int dev_open(struct dev *d, const char *path, int backend, bool create, uint64_t create_size,
             bool direct);
void dev_close(struct dev *d);
int dev_pread(struct dev *d, void *buf, size_t len, uint64_t off);
/* Copy from D's read-only mapping (a buffered file has one when
 * tdo_engine_sigbus_install's handler was in place at dev_open, unless
 * TDO_NO_MAPPED_READS=1): -EIO where pread would fail, never SIGBUS.
 * Workers only: a page not in the cache is read in on the spot. */
int dev_map_read(const struct dev *d, void *buf, size_t len, uint64_t off);
int dev_pwrite(struct dev *d, const void *buf, size_t len, uint64_t off);
int dev_sync(struct dev *d);
/* Bytes of the file or block device at PATH (without opening the engine). */
int dev_probe_size(const char *path, uint64_t *size, bool *is_blockdev);
void *dev_alloc(size_t len);   /* 4 KiB aligned, zeroed; free() it */
/* Fault injection around a write and a sync that do not go through
 * dev_pwrite/dev_sync (uring.c): call before_write before the write is
 * issued, sync_begin before the sync, sync_end(gen) once it succeeded. */
int dev_fi_before_write(struct dev *d, uint64_t off, size_t len);
uint64_t dev_fi_sync_begin(struct dev *d);
void dev_fi_sync_end(struct dev *d, uint64_t gen);
/* Without fault injection built in: one warning naming each TDO_FAULT_*
 * variable set in the environment, which is ignored. Nothing otherwise. */
void dev_fi_env_check(void);

/* ---- uring.c: io_uring on the loop thread (file backend) -------------- */

enum ur_kind { UR_READ, UR_WRITE_SYNC };
struct ur_op {
	struct tdo_list link;           /* waiting for room in the ring */
	int kind;                   /* enum ur_kind */
	uint8_t *buf;
	uint32_t len;
	uint64_t off;               /* device byte offset */
	void (*cb)(struct ur_op *op); /* once, on the loop; op->status */
	void *arg;
	/* uring.c's */
	int status;
	uint32_t done;              /* bytes transferred so far */
	unsigned cqes;              /* entries in the kernel */
	bool sync;                  /* UR_WRITE_SYNC: the fdatasync is still due */
	uint64_t fi_gen;
};
/* Set e->ur up when the backend is a file and io_uring works; leaves it
 * NULL otherwise (the engine then uses worker threads). */
void ur_init(struct tdo_engine *e);
/* Queue OP (reads: BUF gets LEN bytes at OFF; UR_WRITE_SYNC: write then
 * fdatasync) and give it to the kernel, with the ones queued before it
 * with MORE set (one system call for a request's several reads). 0, or an
 * error before OP was issued. */
int ur_submit(struct tdo_engine *e, struct ur_op *op, bool more);
/* Close the ring once nothing is in flight; CLOSED runs from a close
 * callback, after which e->ur is NULL. */
void ur_close(struct tdo_engine *e, void (*closed)(struct tdo_engine *e));

/* ---- record.c: encode and decode ------------------------------------- */

void rec_seal(struct tdo_rec_hdr *r);
bool rec_valid(const struct tdo_rec_hdr *r);
/* Fill bh_csum over the header area HDR of HDR_LEN bytes. */
void batch_seal(void *hdr, uint32_t hdr_len);
/*
 * Check the first 4 KiB of a batch: magic, version, uuid, seq (when
 * WANT_SEQ is nonzero), lengths within LIMIT bytes. 0 or -EILSEQ.
 */
int batch_check_head(const struct tdo_batch_hdr *bh, const uint8_t uuid[16],
                     uint64_t want_seq, uint64_t limit);
/* Check the whole header area (csum, record headers, payload bounds). */
int batch_check_area(const void *hdr);
static inline uint32_t batch_hdr_len(uint32_t nrec)
{
	return (uint32_t)round_up(sizeof(struct tdo_batch_hdr) + (uint64_t)nrec * sizeof(struct tdo_rec_hdr), TDO_BLOCK_SIZE);
}
void sb_seal(struct tdo_sb *sb);
bool sb_valid(const struct tdo_sb *sb);
void ckpt_hdr_seal(struct tdo_ckpt_hdr *h);
bool ckpt_hdr_valid(const struct tdo_ckpt_hdr *h);

/* Index entry packing (layout in format.h). */
#define IE_LSN_MASK ((1ull << 48) - 1)
static inline struct tdo_ie ie_make(int kind, uint64_t lsn, uint64_t sector, unsigned nsect, uint32_t csum)
{
	struct tdo_ie e;
	e.ie_a = (lsn & IE_LSN_MASK) | ((uint64_t)(kind & 3) << 48) |
	         ((uint64_t)(nsect & 15) << 50) | ((sector >> 32) << 54);
	e.ie_b = (uint32_t)sector;
	e.ie_c = csum;
	return e;
}
static inline int ie_kind(struct tdo_ie e) { return (int)((e.ie_a >> 48) & 3); }
static inline uint64_t ie_lsn(struct tdo_ie e) { return e.ie_a & IE_LSN_MASK; }
static inline unsigned ie_nsect(struct tdo_ie e) { return (unsigned)((e.ie_a >> 50) & 15); }
static inline uint64_t ie_sector(struct tdo_ie e) { return ((e.ie_a >> 54) << 32) | e.ie_b; }
static inline bool ie_has_payload(struct tdo_ie e) { return ie_kind(e) >= TDO_IE_DATA; }

/* lz4: compress one block into OUT (room for 4096); returns stored length
 * (u16 prefix included) or 0 when it does not save a sector. */
uint32_t rec_compress(const void *block, void *out);
/* Decompress a stored lz4 payload of LEN bytes into a 4 KiB block. */
int rec_decompress(const void *in, uint32_t len, void *block);

/* ---- index.c: block -> newest version, per volume -------------------- */

#define IDX_CHUNK_SHIFT 10
#define IDX_CHUNK (1u << IDX_CHUNK_SHIFT)
/* A chunk's entries are narrow (15 bytes: the LSN as a 40-bit offset from
 * the chunk's base) or, once one LSN falls outside that window, wide (a
 * whole struct tdo_ie). Layout of a narrow entry, two little-endian words:
 *   bytes 0..7   bits  0..39 LSN - base, 40..41 kind, 42..45 sectors,
 *                46..63 payload sector bits 0..17
 *   bytes 8..14  bits  0..23 payload sector bits 18..41, 24..55 ie_c
 * A hole is 15 zero bytes (wide: 16), whatever the base. */
#define IDX_NARROW 15u
#define IDX_DELTA_BITS 40
struct idx_chunk {
	uint64_t base;              /* narrow: LSN of delta 0 */
	uint32_t used;              /* entries that are not HOLE */
	uint32_t wide;              /* entries are struct tdo_ie */
	uint8_t e[];                /* IDX_CHUNK entries */
};
#define IDX_CHUNK_BYTES(wide) (sizeof(struct idx_chunk) + (size_t)IDX_CHUNK * ((wide) ? sizeof(struct tdo_ie) : IDX_NARROW))
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "narrow index entries are packed little-endian");
struct idx {
	uint64_t nblocks;
	uint64_t nchunks;
	struct idx_chunk **chunks;  /* NULL: every entry a HOLE */
	uint64_t mem;               /* bytes allocated */
};
int idx_init(struct idx *x, uint64_t nblocks);
void idx_free(struct idx *x);
/* The narrow entry at P, its LSN counted from BASE (a HOLE is all zero). */
static inline struct tdo_ie idx_unpack(const uint8_t *p, uint64_t base)
{
	struct tdo_ie e = { 0, 0, 0 };
	uint64_t lo, hi = 0, sector;

	memcpy(&lo, p, 8);
	if (!((lo >> IDX_DELTA_BITS) & 3))
		return e;
	memcpy(&hi, p + 8, 7);
	sector = (lo >> 46) | ((hi & 0xffffff) << 18);
	return ie_make((int)((lo >> IDX_DELTA_BITS) & 3), base + (lo & ((1ull << IDX_DELTA_BITS) - 1)),
	               sector, (unsigned)((lo >> 42) & 15), (uint32_t)(hi >> 24));
}
/* Entry I of chunk C. */
static inline struct tdo_ie idx_chunk_get(const struct idx_chunk *c, uint32_t i)
{
	struct tdo_ie e;

	if (!c->wide)
		return idx_unpack(c->e + (size_t)i * IDX_NARROW, c->base);
	memcpy(&e, c->e + (size_t)i * sizeof e, sizeof e);
	return e;
}
static inline struct tdo_ie idx_get(const struct idx *x, uint64_t b)
{
	struct idx_chunk *c = x->chunks[b >> IDX_CHUNK_SHIFT];
	struct tdo_ie hole = { 0, 0, 0 };
	return c ? idx_chunk_get(c, (uint32_t)(b & (IDX_CHUNK - 1))) : hole;
}
/* Set block B; *OLD gets what was there. -ENOMEM. */
int idx_set(struct idx *x, uint64_t b, struct tdo_ie e, struct tdo_ie *old);
/* Grow or shrink; entries past the new end are passed to DROP first. */
int idx_resize(struct idx *x, uint64_t nblocks,
               void (*drop)(void *arg, struct tdo_ie e), void *arg);
/* Visit every non-HOLE entry in block order; stops when FN returns != 0. */
int idx_walk(const struct idx *x, int (*fn)(void *arg, uint64_t b, struct tdo_ie e), void *arg);

/* ---- segment.c: the segment life cycle -------------------------------- */

/*
 * One segment of the log. Its state changes only in segment.c:
 *
 *            seg_open_next           seg_open_next
 *     FREE --------------> OPEN --------------------> SEALED
 *     ^  ^                                            | |  ^
 *     |  +--------------- seg_try_free ---------------+ |  | seg_unmark_freeing
 *     |                              seg_mark_freeing   v  |
 *     +----- seg_release, seg_reader_put ------------ FREEING
 *
 *   FREE -> OPEN        seg_open_next: the writer needs a new head
 *   OPEN -> SEALED      seg_open_next: the same call seals the old head
 *   SEALED -> FREE      seg_try_free: empty, and wholly before the durable
 *                       checkpoint's replay start (called when it empties,
 *                       eng_account; when the cleaner is done with it; when
 *                       its last read ends; when the cleaner looks for room)
 *   SEALED -> FREEING   seg_mark_freeing: empty at a checkpoint's snapshot
 *   FREEING -> SEALED   seg_unmark_freeing: that checkpoint failed
 *   FREEING -> FREE     seg_release: that checkpoint is durable; or, when
 *                       reads still held it then, seg_reader_put of the last
 *
 * At open, once recovery has written a fresh checkpoint (which names no
 * empty segment), seg_set_from_recovery sets every state afresh: the log
 * head OPEN, a segment with live data SEALED, every other one FREE.
 *
 * Invariants:
 *   - while the engine is open exactly one segment is OPEN, e->head_seg;
 *     batches go into it and nowhere else
 *   - e->seg_free is the number of FREE segments
 *   - FREE and FREEING segments have live == 0 (the index names nothing
 *     in them); a FREEING one may still have readers that looked it up
 *     before it emptied, never new ones
 *   - "reclaimable" (seg_reclaimable) is SEALED, live == 0, not cleaning
 *
 * Must never happen: a segment becomes FREE, and so may be overwritten by
 * the next head, while anything can still refer to it: live data, the
 * cleaner reading it (cleaning), a read in flight (readers), the durable
 * checkpoint (it goes FREEING -> FREE only once a checkpoint taken after
 * it emptied is durable), or the durable checkpoint's replay path (it
 * goes SEALED -> FREE directly only when its newest batch, age, precedes
 * that checkpoint's replay start). Nothing is freed while the final
 * checkpoint is written (e->closing == 2).
 */
enum seg_state { SEG_FREE = 0, SEG_OPEN, SEG_SEALED, SEG_FREEING };
struct seg {
	uint64_t live;              /* payload bytes the index refers to (eng_account) */
	uint64_t age;               /* newest bh_seq written into it (writer, recovery, ckpt_load) */
	uint8_t state;              /* enum seg_state; segment.c only */
	bool cleaning;              /* the cleaner is copying out of it (cleaner.c) */
	bool stuck;                 /* the cleaner could not empty it (cleaner.c) */
	bool free_when_idle;        /* FREEING: its checkpoint is durable, waits for readers */
	uint32_t readers;           /* reads in flight from it (seg_reader_get/put) */
};

/* Set every segment's state after recovery (see above); recounts e->seg_free. */
void seg_set_from_recovery(struct tdo_engine *e);
/* Seal the head and make the first FREE segment the OPEN head (e->head_seg,
 * live 0). False, and nothing changed, when no segment is FREE. */
bool seg_open_next(struct tdo_engine *e);
/* Is segment S SEALED, empty and not being cleaned: waiting to be freed? */
bool seg_reclaimable(const struct tdo_engine *e, uint32_t s);
/* Free S now if it is reclaimable, has no readers and nothing durable can
 * need it (wholly before the durable checkpoint's replay start). */
bool seg_try_free(struct tdo_engine *e, uint32_t s);
/* A checkpoint's snapshot: a reclaimable S becomes FREEING (true). */
bool seg_mark_freeing(struct tdo_engine *e, uint32_t s);
/* That checkpoint failed: the FREEING S is SEALED again. */
void seg_unmark_freeing(struct tdo_engine *e, uint32_t s);
/* That checkpoint is durable: a FREEING S is FREE now, or once its last
 * reader is done. */
void seg_release(struct tdo_engine *e, uint32_t s);
/* A read starts using S (its index entries name S). */
void seg_reader_get(struct tdo_engine *e, uint32_t s);
/* A read is done with S; the last one frees it if it may be freed. */
void seg_reader_put(struct tdo_engine *e, uint32_t s);

/* ---- engine.c --------------------------------------------------------- */

struct vol {
	struct tdo_vol_desc d;      /* vd_lsn: the newest LSN given out (maybe not durable yet) */
	uint64_t dur_lsn;           /* the newest LSN whose record is durable and applied */
	uint32_t dur_epoch;         /* and its epoch; what a checkpoint records as vd_lsn */
	struct idx idx;
	uint64_t live;
	struct tdo_list active;         /* struct wreq in flight (locks) */
	struct tdo_list waiting;        /* struct wreq held back by an overlap */
};

/* A write-side request: write, zero, trim, volume op, flush, relocation. */
enum wreq_kind { WR_WRITE, WR_ZERO, WR_TRIM, WR_VOLOP, WR_FLUSH, WR_RELOC };
struct wreq {
	struct tdo_list link;           /* pending queue, or a volume's waiting list */
	struct tdo_list vlink;          /* volume's active list */
	struct tdo_list olink;          /* engine's outstanding list (flush order) */
	struct tdo_engine *e;
	int kind;
	uint32_t vol;
	uint64_t off, len;          /* bytes */
	const uint8_t *buf;         /* caller's data (WR_WRITE) */
	unsigned flags;
	tdo_done_cb cb;
	void *arg;
	uint64_t wid;               /* submission order */
	uint64_t b0, b1;            /* first block, one past last */
	bool rmw;                   /* partial first/last block */
	uint8_t *head_blk, *tail_blk; /* merged partial blocks (rmw) */
	int rmw_pending;
	uint64_t lsn;               /* the request's LSN, shared by its records */
	uint32_t epoch;
	bool tagged;                /* LSN and epoch given by the caller */
	/* progress through batches */
	uint64_t next_b;            /* next block to put in a batch */
	bool meta_done;             /* VOLOP record placed */
	int parts;                  /* batches holding part of it, in flight */
	int status;
	/* WR_VOLOP */
	int rec_type;
	struct tdo_vol_desc desc;
	/* WR_RELOC */
	struct tdo_rec_hdr rh;      /* the record being copied */
	const uint8_t *payload;
	uint64_t old_sector;
	struct clean_job *job;
};

struct ckpt_job;
struct clean_job;
struct uring;

struct tdo_engine {
	uv_loop_t *loop;
	struct dev dev;
	struct tdo_sb sb;
	struct tdo_open_opts opts;
	char *path;

	struct vol **vols;
	uint32_t nvols, next_vol_id;

	struct seg *segs;
	uint32_t seg_free;          /* count of SEG_FREE (segment.c) */
	uint32_t head_seg;          /* the OPEN segment (segment.c) */
	uint32_t head_off;          /* next batch's offset in it */
	bool head_for_cleaner;      /* head came from the reserve: copies only */
	uint64_t next_seq;          /* next batch's seq */
	/* the log position the index reflects (end of the newest applied batch) */
	uint32_t applied_seg, applied_off;
	uint64_t applied_seq;

	/* write path */
	struct tdo_list pending;        /* client wreqs ready for a batch */
	struct tdo_list pending_reloc;  /* cleaner copies, they go first */
	struct tdo_list outstanding;    /* every unfinished write-side wreq, by wid */
	struct tdo_list flushes;        /* flushes waiting on older writes */
	uint64_t next_wid;
	struct batch *inflight;     /* at most one batch at a time */
	uint64_t log_since_ckpt;

	/* deferred callbacks */
	uv_async_t alive;           /* never sent: keeps the loop running while open */
	uv_idle_t soon;             /* eng_kick: run kicked() next turn */
	struct tdo_list deferred;

	/* checkpoints */
	struct ckpt_job *ckpt;      /* in flight */
	uint64_t ckpt_seq;
	uint64_t ckpt_log_seq;      /* replay start of the newest durable checkpoint */
	bool ckpt_wanted;
	struct tdo_list ckpt_waiters;

	/* cleaner */
	struct clean_job *clean;
	uint32_t clean_low, clean_high, reserve;

	/* closing */
	int closing;                 /* 1: draining, 2: final checkpoint */
	tdo_done_cb close_cb;
	void *close_arg;
	int poison;                 /* first failure, once set every write fails */
	int reads_inflight;
	struct uring *ur;           /* NULL: worker threads do the I/O */

	struct tdo_engine_stats st;
};

struct vol *eng_vol(struct tdo_engine *e, uint32_t id);
struct vol *eng_vol_by_name(struct tdo_engine *e, const char *name);
void eng_kick(struct tdo_engine *e);
/* Run CB(ARG, STATUS) on a later loop iteration. */
int eng_defer(struct tdo_engine *e, tdo_done_cb cb, void *arg, int status);
void eng_poison(struct tdo_engine *e, int err, const char *what);
/* Account for an index change: payload moved in or out of segments. */
void eng_account(struct tdo_engine *e, struct vol *v, struct tdo_ie old, struct tdo_ie neu);
uint64_t eng_sector_to_seg(struct tdo_engine *e, uint64_t sector);
/* Does the index still name data record R, whose payload is at SECTOR?
 * (Its volume and entry into *VP and *IEP when not NULL.) */
bool eng_record_live(struct tdo_engine *e, const struct tdo_rec_hdr *r, uint64_t sector,
                     struct vol **vp, struct tdo_ie *iep);
uint64_t eng_capacity(const struct tdo_sb *sb);
struct rcv_damage;
/* tdo_engine_open, and on TDO_ELOGDAMAGED where the damage is into *DMG
 * (when not NULL): testudo check reports it. */
int eng_open(uv_loop_t *loop, const char *path, const struct tdo_open_opts *opts,
             struct tdo_engine **out, struct rcv_damage *dmg);
void eng_maybe_finish_close(struct tdo_engine *e);

/* ---- volume.c --------------------------------------------------------- */

struct vol *vol_new(const struct tdo_vol_desc *d);
void vol_destroy(struct tdo_engine *e, struct vol *v);
int vol_add(struct tdo_engine *e, struct vol *v);
void vol_remove(struct tdo_engine *e, struct vol *v);
int vol_apply_resize(struct tdo_engine *e, struct vol *v, uint64_t size);
uint64_t vol_total_bytes(struct tdo_engine *e);

/* ---- writer.c: write path and group commit --------------------------- */

void wr_submit(struct tdo_engine *e, struct wreq *w);
void wr_schedule(struct tdo_engine *e);
void wr_check_flushes(struct tdo_engine *e);
bool wr_idle(struct tdo_engine *e);

/* ---- reader.c --------------------------------------------------------- */

/* Read whole blocks [B0, B0+N) of V into DST (N*4096 bytes). */
int rd_blocks(struct tdo_engine *e, struct vol *v, uint64_t b0, uint32_t n,
              uint8_t *dst, tdo_done_cb cb, void *arg);

/* ---- checkpoint.c ----------------------------------------------------- */

/* Between batches: start a wanted checkpoint. */
void ckpt_poll(struct tdo_engine *e);
uint64_t ckpt_area_size(uint64_t seg_blocks, uint32_t nsegs, uint32_t max_vols);
/* Start a checkpoint now unless one is running (then it runs after). */
void ckpt_request(struct tdo_engine *e, tdo_done_cb cb, void *arg);
/* Synchronous form for open and format. */
int ckpt_write_sync(struct tdo_engine *e);
/* Load the newest valid checkpoint into E (vols, segment ages, index). */
int ckpt_load(struct tdo_engine *e, uint64_t *log_seq, uint32_t *log_seg, uint32_t *log_off);

/* ---- recovery.c ------------------------------------------------------- */

/* Where replay found damage with later batches after it (TDO_ELOGDAMAGED). */
struct rcv_damage {
	uint32_t seg, off;          /* the damage */
	uint64_t seq;               /* the batch due there */
	uint64_t later;             /* valid batches with a higher seq found */
	uint64_t first_seq;         /* the lowest of them, and where it is */
	uint32_t first_seg, first_off;
};
/* Replay the log from batch SEQ at (SEG, OFF) and set the log head. A
 * torn tail is cut; damage that later batches follow is TDO_ELOGDAMAGED
 * (logged, and described in *DMG when DMG is not NULL); a read error is
 * returned, never taken for the end of the log. Reads only. */
int rcv_replay(struct tdo_engine *e, uint64_t seq, uint32_t seg, uint32_t off, struct rcv_damage *dmg);
/* Apply one record (replay and run time share it). PAYLOAD may be NULL for
 * data records. SECTOR is the device sector of the payload. */
int rcv_apply(struct tdo_engine *e, const struct tdo_rec_hdr *r,
              const void *payload, uint64_t sector, bool replay,
              uint64_t expect_sector);

/* ---- cleaner.c -------------------------------------------------------- */

void cln_maybe_start(struct tdo_engine *e);
void cln_reloc_done(struct tdo_engine *e, struct wreq *w);

/* ---- format.c --------------------------------------------------------- */

int fmt_read_sb(struct dev *d, struct tdo_sb *out);

#endif
