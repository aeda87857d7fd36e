/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testudo-bench internals, grouped by the file that defines them.
 */
#ifndef TB_INTERNAL_H
#define TB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "testudo/bench.h"
#include "testudo/nbd.h"

#define TB_MAX_URIS    16
#define TB_MAX_BS      (32u << 20)
#define TB_MAX_BS_DIST 16

/* ---- nbd_client.c: URIs and the blocking handshake ---- */

struct tb_uri {
	char text[512];
	bool unix_socket;
	char host[256];             /* TCP: host name or address */
	char port[16];
	char path[256];             /* unix: socket path */
	char export_name[256];
};

/* nbd://HOST[:PORT]/EXPORT, nbd://[V6ADDR]:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH.
 * Returns 0 or -EINVAL with a reason in ERR. */
int tb_uri_parse(const char *s, struct tb_uri *u, char *err, size_t errlen);

struct tb_export {
	uint64_t size;
	uint16_t flags;             /* transmission flags */
};

/* Connect and negotiate (fixed newstyle; NBD_OPT_GO, or EXPORT_NAME when
 * the server does not know GO). Blocking, bounded by TIMEOUT_MS per step;
 * meant for a worker thread. Returns a connected fd, or -errno with the
 * reason in ERR. */
int tb_nbd_connect(const struct tb_uri *u, int timeout_ms, struct tb_export *ex,
		   char *err, size_t errlen);

/* ---- hist.c: log-bucketed latency histogram (ns), under 0.4% error ---- */

#define TB_HIST_BUCKETS (256 + 56 * 128)
struct tb_hist {
	uint64_t count, sum, min, max;
	uint64_t b[TB_HIST_BUCKETS];
};
void tb_hist_reset(struct tb_hist *h);
void tb_hist_add(struct tb_hist *h, uint64_t v);
void tb_hist_merge(struct tb_hist *into, const struct tb_hist *h);
/* the value at quantile Q (0..1): a bucket's midpoint */
uint64_t tb_hist_quantile(const struct tb_hist *h, double q);

/* ---- verify.c: stamped blocks, the per-block map and the journal ---- */

enum tb_bad {                   /* what a checked block can be */
	TB_OK = 0,
	TB_STALE,                   /* an older write than the newest acknowledged */
	TB_MISSING,                 /* zeroes where a write must be */
	TB_CORRUPT,                 /* no valid header where one must be: torn or garbage */
	TB_MISPLACED,               /* a valid header naming another offset */
	TB_FOREIGN,                 /* another writer's block where ours must be */
	TB_RESURRECTED,             /* an in-doubt write older than the newest acknowledged */
	TB_NBAD,
};
extern const char *const tb_bad_name[TB_NBAD];

/* Fill BUF (LEN bytes, a multiple of 4 KiB, at export offset OFF) with
 * stamped blocks of write SEQ. */
void tb_vblk_fill(void *buf, uint32_t len, uint64_t off, uint64_t writer, uint64_t seq);
/* Check one block read at OFF; ACKED is the newest acknowledged seq (0:
 * none known). Returns TB_OK or the kind of damage; *FOUND gets the
 * block's seq when its header is valid. */
enum tb_bad tb_vblk_check(const void *blk, uint64_t off, uint64_t writer, uint64_t acked,
			  uint64_t *found);
struct tb_map;
/* The same, judged against M: knows the newest acknowledged and in-doubt writes. */
enum tb_bad tb_map_check(const struct tb_map *m, const void *blk, uint64_t off, uint64_t writer,
			 uint64_t *found);

/* Per-4-KiB-block state of the verified range. */
struct tb_map {
	uint64_t base, nblocks;
	uint64_t *acked;            /* newest acknowledged seq per block (0: none) */
	uint8_t *busy;              /* an op of ours covers the block now */
	uint64_t *doubt;            /* newest in-doubt seq per block; NULL until one */
};
/* Note an acknowledged write over [OFF, OFF+LEN). */
void tb_map_ack(struct tb_map *m, uint64_t off, uint32_t len, uint64_t seq);
/* Note an in-doubt write over [OFF, OFF+LEN). Returns 0 or -ENOMEM. */
int tb_map_doubt(struct tb_map *m, uint64_t off, uint32_t len, uint64_t seq);
int tb_map_init(struct tb_map *m, uint64_t base, uint64_t len);
void tb_map_free(struct tb_map *m);

struct tb_journal {
	int fd;
	uint64_t writer;
	char *buf;                  /* records not yet written */
	size_t len, cap;
	uint64_t records;
	uv_fs_t sync_req;           /* one fdatasync in flight at a time */
	bool syncing;
};
/* Create (truncate) PATH and write its header. Returns 0 or -errno. */
int tb_journal_create(struct tb_journal *j, const char *path, uint64_t writer,
		      uint64_t export_size, const char *export_name);
/* LEN may carry TDO_BJ_IN_DOUBT */
void tb_journal_add(struct tb_journal *j, uint64_t off, uint32_t len, uint64_t seq);
/* write() what is buffered (survives the bench being killed) */
int tb_journal_write(struct tb_journal *j);
/* write, then fdatasync in the thread pool unless one is in flight */
void tb_journal_sync_async(struct tb_journal *j, uv_loop_t *loop);
int tb_journal_close(struct tb_journal *j);   /* write, fdatasync, close */
/* Read PATH into M (sized to cover every record); *WRITER gets the id.
 * Counts records (in-doubt ones also in *IN_DOUBT) and ignored tail bytes. Returns 0 or -errno with
 * the reason in ERR. */
int tb_journal_load(const char *path, struct tb_map *m, uint64_t *writer, uint64_t *records,
		    uint64_t *in_doubt, uint64_t *tail_bytes, char *err, size_t errlen);

/* ---- run.c: the load and verify engine on one libuv loop ---- */

enum tb_rw { TB_READ, TB_WRITE, TB_RANDREAD, TB_RANDWRITE, TB_RANDRW, TB_RW_VERIFY_PASS };

struct tb_opts {
	struct tb_uri uri[TB_MAX_URIS];
	int nuri;
	enum tb_rw rw;
	int mix_read_pct;           /* randrw: share of reads */
	uint32_t bs[TB_MAX_BS_DIST];
	uint32_t bs_weight[TB_MAX_BS_DIST];
	int nbs;
	int qd, conns;
	double time_s;              /* 0: not a limit */
	uint64_t ops, bytes;        /* 0: not a limit */
	uint64_t range_off, range_len;   /* range_len 0: to the end */
	double rate;                /* IOPS for the whole run, 0: unlimited */
	bool fua;
	uint64_t flush_every;       /* writes per connection between FLUSHes */
	uint64_t seed;
	double reconnect_s;         /* 0: a dropped connection ends the run */
	double pause_ms;            /* gaps longer than this count as pauses */
	const char *journal;        /* --verify */
	bool json, progress, quiet;
	int connect_timeout_ms;
	double io_timeout_s;        /* a request unanswered this long drops its connection */
};

struct tb_errs {
	uint64_t nbd[128];          /* by NBD error code (clamped) */
	uint64_t disconnect;        /* requests lost with their connection */
	uint64_t bad[TB_NBAD];      /* verify findings by kind */
};

struct tb_result {
	uint64_t ops, reads, writes, flushes, read_bytes, write_bytes;
	double elapsed_s;
	struct tb_hist lat, lat_read, lat_write, lat_flush;   /* lat: reads and writes */
	struct tb_errs errs;
	uint64_t reconnects, connect_failures;
	uint64_t longest_gap_ns;    /* longest time without a completion */
	uint64_t pauses, pause_total_ns;
	uint64_t export_size;
	bool aborted;               /* gave up: could not (re)connect */
	char abort_reason[256];
	/* verify pass */
	uint64_t checked, lost, newer, journal_records, journal_tail, in_doubt;
	bool gap_open_at_end;       /* the run ended inside its longest pause */
};

/* Run the workload (or, for TB_RW_VERIFY_PASS, read and check every block
 * in VMAP) and fill RES. Returns 0, or -errno before anything ran. */
int tb_run(const struct tb_opts *o, struct tb_map *vmap, uint64_t writer, struct tb_result *res);

/* ---- report.c ---- */
void tb_report(const struct tb_opts *o, const struct tb_result *r, FILE *f);
void tb_report_json(const struct tb_opts *o, const struct tb_result *r, FILE *f);
const char *tb_nbd_err_name(unsigned code);

#endif
