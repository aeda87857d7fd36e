/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data tier: a log-structured engine that owns one device and keeps
 * many volumes on it. Callers drive it from a libuv loop they own; every
 * I/O completes through a callback on that loop. The engine knows nothing
 * of sockets or NBD.
 *
 * Conventions: functions return 0 or a negative errno (or a TDO_E* code,
 * see tdo_strerror()). An asynchronous call that returns an error has not
 * queued anything and will not call its callback; one that returns 0 calls
 * its callback exactly once, never from inside the call itself.
 */
#ifndef TESTUDO_ENGINE_H
#define TESTUDO_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "testudo/format.h"

struct tdo_engine;

/* Engine-specific error codes, below every errno. */
enum {
	TDO_EFORMAT  = -4001, /* not a Testudo device, or an unsupported version */
	TDO_EDAMAGED = -4002, /* no valid superblock or checkpoint */
	TDO_EPOISON  = -4003, /* a device write or sync failed earlier; engine stopped */
	TDO_EEXISTS  = -4004, /* the device already holds a Testudo format */
	TDO_ELOCKED  = -4005, /* another process holds the device */
	TDO_ENOVOL   = -4006, /* no such volume */
	TDO_EVOLEXIST= -4007, /* a volume of that name exists */
	TDO_ENOSPACE = -4008, /* the device cannot hold that much volume */
	TDO_ETOOSMALL= -4009, /* format: too small for 8 segments and the checkpoints */
	TDO_ELOGDAMAGED = -4010, /* open: a damaged batch with valid later batches after it */
};
/* A message for 0, a negative errno or a TDO_E* code. */
const char *tdo_strerror(int err);

struct tdo_format_opts {
	uint64_t size;          /* bytes; 0 = the existing file's or device's size */
	uint64_t seg_size;      /* bytes; 0 = default (4 MiB) */
	int backend;            /* enum tdo_backend; 0 = file */
	int force;              /* overwrite an existing Testudo format */
	int sparse;             /* a regular file: leave its holes as they are */
	/* called now and then while holes are filled: bytes done of TOTAL */
	void (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
};
/*
 * Format PATH. A regular file is created when missing (opts->size needed).
 * Unless opts->sparse, every hole in a regular file (never written, or
 * allocated but unwritten) is filled with zeros and made durable first: the
 * log then never allocates file system space as it runs, so a durable
 * write costs one flush and no journal commit, and a full file system is
 * found at format time instead of as a failed write.
 */
int tdo_format(const char *path, const struct tdo_format_opts *opts);

struct tdo_open_opts {
	uint64_t ckpt_every;    /* bytes of log between checkpoints; 0 = 256 MiB */
	int no_cleaner;         /* tests: never clean (device may fill) */
	int cleaner;            /* victim policy: TDO_CLEAN_COST_BENEFIT (default) or _GREEDY */
	int direct;             /* O_DIRECT on a regular file too (block devices always) */
};
enum { TDO_CLEAN_COST_BENEFIT = 0, TDO_CLEAN_GREEDY = 1 };

/*
 * Let the engine handle SIGBUS, so that it may read a buffered regular
 * file through a read-only mapping (reads scattered over the device then
 * cost a copy each, not a system call and a page-cache lookup per place).
 * A page of the mapping that the kernel cannot read in (an I/O error, the
 * file cut short behind the engine's back) raises SIGBUS in the thread
 * that touches it. The engine's handler turns one raised inside its own
 * copy into -EIO for that read, as pread would return, and hands every
 * other SIGBUS to the disposition that was in place before the call (by
 * default the process dies of it, as without the call).
 *
 * Process-wide: call it at start, before tdo_engine_open. The engine
 * maps a device only while its handler is the one in place, so a program
 * that does not call this never gets a SIGBUS from the engine: it reads
 * with pread (as with TDO_NO_MAPPED_READS=1). A SIGBUS handler the
 * program sets afterwards must hand the signal on to the one it replaced,
 * or be followed by another call of this, which puts the engine's back in
 * front and chains to the program's. 0, or a negative errno from
 * sigaction().
 */
int tdo_engine_sigbus_install(void);

/*
 * Open the device at PATH and recover it: load the newest checkpoint,
 * replay the log after it, cut a torn tail, then write a fresh checkpoint.
 * A damaged batch with valid later batches after it is no torn tail:
 * open fails with TDO_ELOGDAMAGED (the place is logged) and writes
 * nothing, rather than cut acknowledged writes off.
 * Takes an exclusive lock on the device (TDO_ELOCKED when held). The
 * backend comes from the superblock. Blocks the calling thread; call it
 * before the loop runs.
 */
int tdo_engine_open(uv_loop_t *loop, const char *path,
                    const struct tdo_open_opts *opts, struct tdo_engine **out);

typedef void (*tdo_done_cb)(void *arg, int status);

/*
 * Stop accepting requests, let queued ones complete, write a final
 * checkpoint, release the device and free E. CB runs once, after which E
 * is gone. Returns -EALREADY when a close is already under way.
 */
int tdo_engine_close(struct tdo_engine *e, tdo_done_cb cb, void *arg);

/* ---- volumes ---------------------------------------------------------- */

struct tdo_vol_info {
	uint32_t id;
	uint32_t flags;             /* enum tdo_vol_flags */
	uint64_t size;
	uint64_t lsn;               /* newest LSN assigned (its write may still be in flight) */
	uint32_t epoch;
	uint64_t durable_lsn;       /* newest LSN whose write is durable; after a crash, lsn is this */
	uint32_t durable_epoch;
	uint64_t used_bytes;        /* bytes of live payload on the device */
	uint64_t ctime;
	char name[TDO_NAME_MAX + 1];
};

/* Names: 1..63 of [A-Za-z0-9._-], not starting with '.' or '-'. True
 * when NAME is one (the same convention as tdo_node_id_valid). */
bool tdo_vol_name_valid(const char *name);

/* Persisted (durable) when CB runs with 0. Sizes: multiple of 512, > 0. */
int tdo_vol_create(struct tdo_engine *e, const char *name, uint64_t size,
                   uint32_t flags, tdo_done_cb cb, void *arg);
int tdo_vol_resize(struct tdo_engine *e, const char *name, uint64_t size,
                   tdo_done_cb cb, void *arg);
int tdo_vol_delete(struct tdo_engine *e, const char *name,
                   tdo_done_cb cb, void *arg);

/* Synchronous, from memory. */
int tdo_vol_lookup(struct tdo_engine *e, const char *name, struct tdo_vol_info *out);
/* Fills up to MAX entries sorted by name; returns how many volumes exist. */
int tdo_vol_list(struct tdo_engine *e, struct tdo_vol_info *out, int max);

/* ---- I/O -------------------------------------------------------------- */
/*
 * OFF and LEN are bytes, multiples of 512, LEN > 0, within the volume;
 * anything else is -EINVAL. Buffers stay owned by the caller and must stay
 * valid until CB. A write's CB with status 0 means durable. Writes that
 * overlap are applied in the order they were submitted.
 */
int tdo_engine_read(struct tdo_engine *e, uint32_t vol, uint64_t off,
                    uint32_t len, void *buf, tdo_done_cb cb, void *arg);
int tdo_engine_write(struct tdo_engine *e, uint32_t vol, uint64_t off,
                     uint32_t len, const void *buf, tdo_done_cb cb, void *arg);
/* Blocks become holes (read as zero). */
int tdo_engine_trim(struct tdo_engine *e, uint32_t vol, uint64_t off,
                    uint64_t len, tdo_done_cb cb, void *arg);
/* Blocks read as zero; with NO_HOLE they are reported allocated. */
#define TDO_ZERO_NO_HOLE 1u
int tdo_engine_write_zeroes(struct tdo_engine *e, uint32_t vol, uint64_t off,
                            uint64_t len, unsigned flags,
                            tdo_done_cb cb, void *arg);
/* Completes once every write submitted before it is durable. */
int tdo_engine_flush(struct tdo_engine *e, tdo_done_cb cb, void *arg);

/*
 * The volume tier's forms. tdo_engine_submit_at is a write, write-zeroes
 * or trim (OP) that carries the LSN and epoch the caller gives instead of
 * the next one: a replica applies its primary's writes this way. LSN > 0,
 * EPOCH > 0; the volume's LSN becomes LSN when that is not lower. Records
 * take effect in submission order whatever their LSNs (a resync copy may
 * carry an older LSN than the version it replaces).
 */
enum { TDO_OP_WRITE = 1, TDO_OP_ZERO = 2, TDO_OP_TRIM = 3 };
int tdo_engine_submit_at(struct tdo_engine *e, int op, uint32_t vol, uint64_t off, uint64_t len,
                         const void *buf, unsigned flags, uint64_t lsn, uint32_t epoch,
                         tdo_done_cb cb, void *arg);
/* Set (also lower) a volume's LSN and epoch, durably, once no write of
 * it is in flight (-EBUSY otherwise): the end of a replica's resync. */
int tdo_vol_set_lsn(struct tdo_engine *e, const char *name, uint64_t lsn, uint32_t epoch,
                    tdo_done_cb cb, void *arg);
/*
 * Every allocated block (data or zero; STATE 0 or TDO_MAP_ZERO) whose
 * newest version has an LSN above MIN_LSN, in block order; stops when FN
 * returns nonzero and returns that. Trimmed blocks are holes and carry no
 * LSN: a resync learns of them from the allocation map. Synchronous.
 */
typedef int (*tdo_scan_fn)(void *arg, uint64_t block, uint64_t lsn, unsigned state);
int tdo_engine_scan(struct tdo_engine *e, uint32_t vol, uint64_t min_lsn, tdo_scan_fn fn, void *arg);

/*
 * Allocation map of [OFF, OFF+LEN): calls FN for each run of blocks with
 * the same state (TDO_MAP_HOLE | TDO_MAP_ZERO bits) in order. Synchronous.
 */
#define TDO_MAP_HOLE 1u
#define TDO_MAP_ZERO 2u
typedef int (*tdo_map_fn)(void *arg, uint64_t off, uint64_t len, unsigned state);
int tdo_engine_map(struct tdo_engine *e, uint32_t vol, uint64_t off,
                   uint64_t len, tdo_map_fn fn, void *arg);

/* ---- figures ---------------------------------------------------------- */

struct tdo_engine_stats {
	uint64_t dev_size, seg_size;
	uint32_t seg_count, seg_free, seg_used;
	uint64_t capacity;          /* bytes volumes may total */
	uint64_t vol_bytes;         /* bytes they do total */
	uint64_t live_bytes;        /* payload bytes the index refers to */
	uint64_t user_bytes;        /* payload bytes written by callers, lifetime */
	uint64_t clean_bytes;       /* payload bytes the cleaner copied, lifetime */
	uint64_t log_bytes;         /* bytes appended to the log, lifetime */
	uint64_t batches, batch_recs;  /* this open: group commits and records in them */
	uint64_t ckpt_count, ckpt_seq;
	uint64_t segs_cleaned;
	uint64_t index_bytes;       /* memory held by the index */
	uint64_t read_errors;       /* checksum failures seen by reads */
	uint64_t recovery_usec;     /* time tdo_engine_open spent recovering */
	uint64_t replayed_batches;
	int poisoned;
};
void tdo_engine_stats(struct tdo_engine *e, struct tdo_engine_stats *out);

/* Write a checkpoint now (tests and benchmarks). */
int tdo_engine_checkpoint(struct tdo_engine *e, tdo_done_cb cb, void *arg);

/* ---- offline tools ---------------------------------------------------- */

/*
 * Print the superblock, volumes, segment usage and checkpoint of the
 * device at PATH to OUT (JSON when JSON is nonzero). Opens (and so
 * recovers) the device; fails with TDO_ELOCKED while a daemon holds it.
 */
int tdo_inspect(const char *path, FILE *out, int json);

/*
 * Verify every batch header in every segment in use, every live record's
 * payload against its record and index checksums, and every index entry
 * against the record it names. Problems are printed to OUT one per line
 * with volume, block and location; a log damaged before later batches
 * (the engine will not open it) is one problem, with its segment and
 * offset. Returns 0 clean, 1 damaged, or a negative error when the device
 * could not be examined.
 */
int tdo_check(const char *path, FILE *out);

#endif
