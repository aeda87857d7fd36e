/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine_bench: the storage engine alone, on one file, no server and no
 * network. Every subcommand formats the file afresh (tdo_format, file
 * backend) unless told otherwise, drives the engine from its own libuv
 * loop and prints one line per figure on standard output:
 *
 *   figure=NAME key=value ...          (default)
 *   {"figure":"NAME","key":value,...}  (--json)
 *
 * Progress and the engine's own log go to standard error.
 *
 *   engine_bench randwrite --dev F [--qd N] [--bs 4k] [--time S] [--vol-size SZ] [--max-bytes SZ] [--label NAME]
 *       durable random writes (a write's callback means durable): IOPS,
 *       MiB/s, mean/p50/p99/max latency. Stops at --time, or before the
 *       log would need the cleaner (so the figure is the clean log's), or
 *       at --max-bytes; the line says which.
 *   engine_bench randread --dev F [--qd N] [--bs 4k] [--time S] [--vol-size SZ] [--fill-bs 1M] [--fill-qd 8]
 *       fills a volume with large sequential writes (figure "seqfill"),
 *       then random reads over it (figure "randread"); every block read
 *       is checked against the stamp the fill put in it.
 *   engine_bench recovery --dev F [--bytes 1G] [--qd N] [--mode both|nockpt|ckpt] [--vol-size SZ]
 *       a child writes --bytes of random 4 KiB writes with checkpoints
 *       effectively off (ckpt_every huge), optionally takes a checkpoint,
 *       reports and SIGKILLs itself; the parent times tdo_engine_open.
 *   engine_bench index --dev F [--vol-size 1G] [--order both|random|seq] [--seq-bs 128k]
 *       every block of a fresh volume written once (a random permutation
 *       of its 4 KiB blocks, or in order): index bytes per block.
 *   engine_bench wa --dev F [--util 50,80,90] [--overwrite 3] [--qd N]
 *       a volume of UTIL% of the segment space (seg_count * seg_size),
 *       filled, then overwritten at random (4 KiB, QD) --overwrite times
 *       its size: (user + clean) / user and log / user over the
 *       overwrite phase. --max-time caps that phase (the line then says
 *       stop=time and how much was overwritten).
 *
 * Common: --format-size SZ (0 = the whole file), --seg-size SZ (0 = the
 * engine's default), --ckpt-every SZ (0 = the engine's default; recovery
 * ignores it), --seed N, --stall S (abort when nothing completes
 * for S seconds: an engine that stopped making progress), --json,
 * --verbose (the engine's info log).
 *
 * Exit status: 0, 1 for a usage or setup error, 2 when the engine failed
 * an I/O or a check, 3 on a stall.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testudo/engine.h"
#include "testudo/util.h"

#define BLK 4096u
#define VOL_NAME "bench"
#define MAX_QD 1024

/* ---- options -------------------------------------------------------------- */

static struct {
	const char *dev;
	uint64_t fmt_size, seg_size;
	double time_s;
	int qd;
	uint64_t bs;
	uint64_t vol_size;          /* 0: per subcommand default */
	uint64_t max_bytes;         /* randwrite: 0 = until the cleaner would start */
	uint64_t bytes;             /* recovery */
	const char *mode;           /* recovery */
	const char *order;          /* index */
	uint64_t seq_bs;            /* index, sequential order */
	uint64_t fill_bs;
	int fill_qd;
	const char *utils;          /* wa */
	double overwrite;           /* wa */
	double max_time;            /* wa: cap on the overwrite phase, 0 = none */
	uint64_t seed;
	uint64_t ckpt_every;        /* tdo_open_opts.ckpt_every; 0 = the engine's default */
	double stall_s;
	int json;
	int no_format;
	int verbose;
	const char *label;          /* randwrite: the figure's name */
} opt = {
	.time_s = 20,
	.qd = 32,
	.bs = 4096,
	.bytes = 1ull << 30,
	.mode = "both",
	.order = "both",
	.seq_bs = 128u << 10,
	.fill_bs = 1u << 20,
	.fill_qd = 8,
	.utils = "50,80,90",
	.overwrite = 3,
	.seed = 0x7e57ull,
	.stall_s = 60,
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "engine_bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "engine_bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- output: one line per figure ------------------------------------------- */

struct out {
	char buf[4096];
	size_t n;
};

static void out_raw(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_raw(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (o->n >= sizeof o->buf)
		return;
	va_start(ap, fmt);
	r = vsnprintf(o->buf + o->n, sizeof o->buf - o->n, fmt, ap);
	va_end(ap);
	if (r > 0)
		o->n += (size_t)r;
	if (o->n >= sizeof o->buf)
		o->n = sizeof o->buf - 1;
}

static void out_begin(struct out *o, const char *figure)
{
	o->n = 0;
	if (opt.json)
		out_raw(o, "{\"figure\":\"%s\"", figure);
	else
		out_raw(o, "figure=%s", figure);
}

static void out_key(struct out *o, const char *k)
{
	if (opt.json)
		out_raw(o, ",\"%s\":", k);
	else
		out_raw(o, " %s=", k);
}

static void out_u64(struct out *o, const char *k, uint64_t v)
{
	out_key(o, k);
	out_raw(o, "%" PRIu64, v);
}

static void out_dbl(struct out *o, const char *k, double v, int prec)
{
	out_key(o, k);
	out_raw(o, "%.*f", prec, v);
}

static void out_str(struct out *o, const char *k, const char *v)
{
	out_key(o, k);
	out_raw(o, opt.json ? "\"%s\"" : "%s", v);
}

static void out_end(struct out *o)
{
	if (opt.json)
		out_raw(o, "}");
	printf("%s\n", o->buf);
	fflush(stdout);
}

/* ---- randomness ----------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* */
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed | 1;

	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t v = rng_next(&s);
		memcpy(p + i, &v, 8);
	}
}

/* ---- the engine, synchronously where it does not matter ------------------- */

struct bench {
	uv_loop_t loop;
	struct tdo_engine *e;
	uint32_t vol;
};

struct waitc {
	int done, status;
};

static void wait_cb(void *arg, int status)
{
	struct waitc *w = arg;

	w->status = status;
	w->done = 1;
}

static int wait_on(uv_loop_t *loop, struct waitc *w)
{
	while (!w->done)
		uv_run(loop, UV_RUN_ONCE);
	return w->status;
}

static void do_format(void)
{
	struct tdo_format_opts fo = { 0 };
	int err;

	if (opt.no_format)
		return;
	fo.size = opt.fmt_size;
	fo.seg_size = opt.seg_size;
	fo.backend = TDO_BACKEND_FILE;
	fo.force = 1;
	err = tdo_format(opt.dev, &fo);
	if (err)
		die("format %s: %s", opt.dev, tdo_strerror(err));
}

static void b_open(struct bench *b, uint64_t ckpt_every)
{
	struct tdo_open_opts oo = { 0 };
	int err;

	memset(b, 0, sizeof *b);
	if (uv_loop_init(&b->loop))
		die("uv_loop_init failed");
	oo.ckpt_every = ckpt_every;
	oo.direct = 1; /* device against device: fio runs with --direct=1 */
	err = tdo_engine_open(&b->loop, opt.dev, &oo, &b->e);
	if (err)
		die("open %s: %s", opt.dev, tdo_strerror(err));
}

static void b_close(struct bench *b)
{
	struct waitc w = { 0, 0 };
	int err = tdo_engine_close(b->e, wait_cb, &w);

	if (!err)
		err = wait_on(&b->loop, &w);
	uv_run(&b->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&b->loop))
		note("warning: the loop still had handles at close");
	if (err)
		die("close: %s", tdo_strerror(err));
	b->e = NULL;
}

static void b_vol_create(struct bench *b, const char *name, uint64_t size)
{
	struct waitc w = { 0, 0 };
	struct tdo_vol_info vi;
	int err = tdo_vol_create(b->e, name, size, 0, wait_cb, &w);

	if (!err)
		err = wait_on(&b->loop, &w);
	if (err)
		die("create volume %s of %" PRIu64 " bytes: %s", name, size, tdo_strerror(err));
	if (tdo_vol_lookup(b->e, name, &vi))
		die("volume %s vanished", name);
	b->vol = vi.id;
}

static void b_checkpoint(struct bench *b)
{
	struct waitc w = { 0, 0 };
	int err = tdo_engine_checkpoint(b->e, wait_cb, &w);

	if (!err)
		err = wait_on(&b->loop, &w);
	if (err)
		die("checkpoint: %s", tdo_strerror(err));
}

static void b_stats(struct bench *b, struct tdo_engine_stats *st)
{
	tdo_engine_stats(b->e, st);
}

/* The volume size: --vol-size when given (it must fit), else DFLT but at
 * most FRAC of what volumes may total, in whole MiB. */
static uint64_t vol_size_for(struct bench *b, uint64_t dflt, double frac)
{
	struct tdo_engine_stats st;
	uint64_t cap;

	b_stats(b, &st);
	if (opt.vol_size) {
		if (opt.vol_size > st.capacity)
			die("a volume of %" PRIu64 " MiB does not fit: volumes may total %" PRIu64 " MiB on this device",
			    opt.vol_size >> 20, st.capacity >> 20);
		return opt.vol_size;
	}
	cap = (uint64_t)((double)st.capacity * frac) >> 20 << 20;
	if (cap == 0)
		die("the device is too small for a volume");
	return dflt < cap ? dflt : cap;
}

/* ---- a closed-loop workload at a fixed queue depth ------------------------ */

enum { PAT_RANDOM, PAT_SEQ, PAT_PERM };

struct job;
struct slot {
	struct job *j;
	uint8_t *buf;
	uint64_t t0, off;
	uint32_t len;
};

struct job {
	struct bench *b;
	const char *what;
	int read;                   /* else write */
	int pattern;
	uint32_t bs;
	int qd;
	uint64_t vol_size;
	const uint32_t *perm;       /* PAT_PERM: unit numbers */
	uint64_t max_ops;           /* 0: unbounded */
	double time_s;              /* 0: no deadline */
	uint32_t min_free_segs;     /* stop when seg_free drops below (0: off) */
	bool stamp;                 /* writes: each 4 KiB block starts with its number */
	bool verify;                /* reads: check those stamps */
	bool record_lat;

	/* state */
	uint64_t rng, nunits, next_seq;
	uint64_t issued, done, inflight;
	uint64_t deadline;
	int err;
	bool stop;
	const char *stop_reason;
	uint64_t t_start, t_end;
	uint64_t *lat;
	size_t nlat, caplat;
	uint64_t verify_fail;
	struct slot *slots;
	uv_timer_t timer;
	bool timer_closed;
	uint64_t last_done;
	unsigned idle_ticks;
	unsigned ticks;
	uint64_t prog_done;         /* done at the last progress note */
};

static void job_stop(struct job *j, const char *why)
{
	if (!j->stop) {
		j->stop = true;
		j->stop_reason = why;
	}
}

static void job_done(void *arg, int status);

static void job_issue(struct slot *s)
{
	struct job *j = s->j;
	uint64_t unit, off;
	uint32_t len;
	int err;

	if (j->stop)
		return;
	if (j->max_ops && j->issued >= j->max_ops) {
		job_stop(j, "ops");
		return;
	}
	switch (j->pattern) {
	case PAT_SEQ:
		unit = j->next_seq++ % j->nunits;
		break;
	case PAT_PERM:
		unit = j->perm[j->issued % j->nunits];
		break;
	default:
		unit = rng_next(&j->rng) % j->nunits;
		break;
	}
	off = unit * j->bs;
	len = j->bs;
	if (off + len > j->vol_size)
		len = (uint32_t)(j->vol_size - off);
	if (!j->read && j->stamp) {
		for (uint32_t k = 0; k < len; k += BLK) {
			uint64_t blk = (off + k) / BLK;
			memcpy(s->buf + k, &blk, 8);
			memcpy(s->buf + k + 8, &j->issued, 8);
		}
	} else if (!j->read) {
		memcpy(s->buf + 8, &j->issued, 8); /* no two writes alike */
	}
	s->off = off;
	s->len = len;
	s->t0 = uv_hrtime();
	if (j->read)
		err = tdo_engine_read(j->b->e, j->b->vol, off, len, s->buf, job_done, s);
	else
		err = tdo_engine_write(j->b->e, j->b->vol, off, len, s->buf, job_done, s);
	if (err) {
		if (!j->err)
			j->err = err;
		job_stop(j, "error");
		return;
	}
	j->issued++;
	j->inflight++;
}

static void job_done(void *arg, int status)
{
	struct slot *s = arg;
	struct job *j = s->j;
	uint64_t now = uv_hrtime();

	j->inflight--;
	j->t_end = now;
	if (status) {
		if (!j->err)
			j->err = status;
		job_stop(j, "error");
		return;
	}
	j->done++;
	if (j->record_lat) {
		if (j->nlat == j->caplat) {
			size_t cap = j->caplat ? j->caplat * 2 : 65536;
			uint64_t *n = realloc(j->lat, cap * sizeof *n);
			if (!n)
				die("out of memory");
			j->lat = n;
			j->caplat = cap;
		}
		j->lat[j->nlat++] = now - s->t0;
	}
	if (j->read && j->verify) {
		for (uint32_t k = 0; k < s->len; k += BLK) {
			uint64_t blk = (s->off + k) / BLK, got;
			memcpy(&got, s->buf + k, 8);
			if (got != blk)
				j->verify_fail++;
		}
	}
	if (j->deadline && now >= j->deadline)
		job_stop(j, "time");
	job_issue(s);
}

static void job_timer(uv_timer_t *t)
{
	struct job *j = t->data;

	if (++j->ticks % 100 == 0) {
		/* a progress note every 10 s */
		struct tdo_engine_stats st;
		char pct[32] = "";
		b_stats(j->b, &st);
		if (j->max_ops)
			snprintf(pct, sizeof pct, " (%.0f%%)", 100.0 * (double)j->done / (double)j->max_ops);
		note("%s: %.0f s, %" PRIu64 " ops%s, %.1f MiB/s over the last 10 s, %u/%u segments free",
		     j->what, (double)(uv_hrtime() - j->t_start) / 1e9, j->done, pct,
		     (double)(j->done - j->prog_done) * j->bs / 1048576.0 / 10, st.seg_free, st.seg_count);
		j->prog_done = j->done;
	}

	if (j->min_free_segs) {
		struct tdo_engine_stats st;
		b_stats(j->b, &st);
		if (st.seg_free < j->min_free_segs)
			job_stop(j, "space");
	}
	if (j->done != j->last_done) {
		j->last_done = j->done;
		j->idle_ticks = 0;
		return;
	}
	if (++j->idle_ticks * 0.1 >= opt.stall_s) {
		struct tdo_engine_stats st;
		struct out o;

		b_stats(j->b, &st);
		out_begin(&o, j->what);
		out_str(&o, "status", "stall");
		out_u64(&o, "done", j->done);
		out_u64(&o, "inflight", j->inflight);
		out_u64(&o, "seg_free", st.seg_free);
		out_u64(&o, "seg_used", st.seg_used);
		out_u64(&o, "seg_count", st.seg_count);
		out_u64(&o, "live_mib", st.live_bytes >> 20);
		out_u64(&o, "segs_cleaned", st.segs_cleaned);
		out_u64(&o, "ckpt_count", st.ckpt_count);
		out_u64(&o, "poisoned", (uint64_t)st.poisoned);
		out_end(&o);
		note("%s: no I/O completed for %.0f s with %" PRIu64 " in flight: the engine stalled",
		     j->what, opt.stall_s, j->inflight);
		_exit(3);
	}
}

static void job_timer_closed(uv_handle_t *h)
{
	struct job *j = h->data;

	j->timer_closed = true;
}

static void job_init(struct job *j, struct bench *b, const char *what, int read, int pattern,
                     uint32_t bs, int qd, uint64_t vol_size)
{
	memset(j, 0, sizeof *j);
	j->b = b;
	j->what = what;
	j->read = read;
	j->pattern = pattern;
	j->bs = bs;
	j->qd = qd;
	j->vol_size = vol_size;
	j->rng = opt.seed ^ (uint64_t)(uintptr_t)what ^ ((uint64_t)read << 40) ^ 0x9e3779b97f4a7c15ull;
	j->record_lat = true;
}

static void job_run(struct job *j)
{
	if (j->qd < 1 || j->qd > MAX_QD || j->bs % 512 || j->bs == 0)
		die("bad queue depth %d or block size %u", j->qd, j->bs);
	j->nunits = (j->vol_size + j->bs - 1) / j->bs;
	if (!j->nunits)
		die("empty volume");
	j->slots = calloc((size_t)j->qd, sizeof *j->slots);
	if (!j->slots)
		die("out of memory");
	for (int i = 0; i < j->qd; i++) {
		struct slot *s = &j->slots[i];
		s->j = j;
		s->buf = aligned_alloc(BLK, (j->bs + BLK - 1) / BLK * BLK);
		if (!s->buf)
			die("out of memory");
		fill_random(s->buf, j->bs, j->rng + (uint64_t)i * 7919);
	}
	uv_timer_init(&j->b->loop, &j->timer);
	j->timer.data = j;
	uv_timer_start(&j->timer, job_timer, 100, 100);

	j->t_start = uv_hrtime();
	j->t_end = j->t_start;
	if (j->time_s > 0)
		j->deadline = j->t_start + (uint64_t)(j->time_s * 1e9);
	for (int i = 0; i < j->qd; i++)
		job_issue(&j->slots[i]);
	while (j->inflight)
		uv_run(&j->b->loop, UV_RUN_ONCE);
	if (!j->stop)
		job_stop(j, "ops");

	uv_timer_stop(&j->timer);
	uv_close((uv_handle_t *)&j->timer, job_timer_closed);
	while (!j->timer_closed)
		uv_run(&j->b->loop, UV_RUN_NOWAIT);
	for (int i = 0; i < j->qd; i++)
		free(j->slots[i].buf);
	free(j->slots);
	j->slots = NULL;
	if (j->err) {
		note("%s: %s failed: %s", j->what, j->read ? "a read" : "a write", tdo_strerror(j->err));
		exit(2);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double job_secs(const struct job *j)
{
	return (double)(j->t_end - j->t_start) / 1e9;
}

/* IOPS, bandwidth and latency of J onto O. */
static void out_job(struct out *o, struct job *j)
{
	double secs = job_secs(j), sum = 0;

	out_u64(o, "qd", (uint64_t)j->qd);
	out_u64(o, "bs", j->bs);
	out_dbl(o, "secs", secs, 2);
	out_u64(o, "ops", j->done);
	out_dbl(o, "iops", secs > 0 ? (double)j->done / secs : 0, 0);
	out_dbl(o, "mib_s", secs > 0 ? (double)j->done * j->bs / secs / 1048576.0 : 0, 1);
	if (j->nlat) {
		qsort(j->lat, j->nlat, sizeof *j->lat, cmp_u64);
		for (size_t i = 0; i < j->nlat; i++)
			sum += (double)j->lat[i];
		out_dbl(o, "lat_mean_us", sum / (double)j->nlat / 1e3, 1);
		out_dbl(o, "lat_p50_us", (double)j->lat[j->nlat / 2] / 1e3, 1);
		out_dbl(o, "lat_p99_us", (double)j->lat[j->nlat * 99 / 100] / 1e3, 1);
		out_dbl(o, "lat_max_us", (double)j->lat[j->nlat - 1] / 1e3, 1);
	}
	out_str(o, "stop", j->stop_reason ? j->stop_reason : "ops");
}

static void job_free(struct job *j)
{
	free(j->lat);
	j->lat = NULL;
	j->nlat = j->caplat = 0;
}

/* Write every block of the volume once, in order, with large writes. */
static void seq_fill(struct bench *b, uint64_t vol_size, const char *figure)
{
	struct tdo_engine_stats s0, s1;
	struct job j;
	struct out o;

	job_init(&j, b, figure ? figure : "fill", 0, PAT_SEQ, (uint32_t)opt.fill_bs, opt.fill_qd, vol_size);
	j.max_ops = (vol_size + opt.fill_bs - 1) / opt.fill_bs;
	j.stamp = true;
	b_stats(b, &s0);
	job_run(&j);
	b_stats(b, &s1);
	if (figure) {
		out_begin(&o, figure);
		out_job(&o, &j);
		out_u64(&o, "vol_mib", vol_size >> 20);
		out_u64(&o, "batches", s1.batches - s0.batches);
		out_end(&o);
	} else {
		note("filled %" PRIu64 " MiB in %.1f s (%.0f MiB/s)", vol_size >> 20, job_secs(&j),
		     (double)vol_size / 1048576.0 / job_secs(&j));
	}
	job_free(&j);
}

/* ---- randwrite ------------------------------------------------------------ */

static void cmd_randwrite(void)
{
	struct tdo_engine_stats s0, s1;
	struct bench b;
	struct job j;
	struct out o;
	uint64_t vsz;

	do_format();
	b_open(&b, opt.ckpt_every);
	vsz = vol_size_for(&b, 1ull << 30, 0.5);
	b_vol_create(&b, VOL_NAME, vsz);
	b_stats(&b, &s0);
	job_init(&j, &b, "randwrite", 0, PAT_RANDOM, (uint32_t)opt.bs, opt.qd, vsz);
	j.time_s = opt.time_s;
	if (opt.max_bytes)
		j.max_ops = opt.max_bytes / opt.bs;
	/* measure the log before the cleaner has to run: stop well above the
	 * point where it would start */
	j.min_free_segs = s0.seg_count / 16 + 8;
	job_run(&j);
	b_stats(&b, &s1);
	out_begin(&o, opt.label ? opt.label : "randwrite");
	out_job(&o, &j);
	out_u64(&o, "vol_mib", vsz >> 20);
	out_u64(&o, "batches", s1.batches - s0.batches);
	out_dbl(&o, "recs_per_batch", s1.batches > s0.batches
	        ? (double)(s1.batch_recs - s0.batch_recs) / (double)(s1.batches - s0.batches) : 0, 1);
	out_dbl(&o, "log_mib_s", (double)(s1.log_bytes - s0.log_bytes) / 1048576.0 / job_secs(&j), 1);
	out_u64(&o, "ckpts", s1.ckpt_count - s0.ckpt_count);
	out_u64(&o, "clean_bytes", s1.clean_bytes - s0.clean_bytes);
	out_end(&o);
	job_free(&j);
	b_close(&b);
}

/* ---- randread ------------------------------------------------------------- */

static void cmd_randread(void)
{
	struct bench b;
	struct job j;
	struct out o;
	uint64_t vsz;

	do_format();
	b_open(&b, opt.ckpt_every);
	vsz = vol_size_for(&b, 1ull << 30, 0.6);
	b_vol_create(&b, VOL_NAME, vsz);
	seq_fill(&b, vsz, "seqfill");

	job_init(&j, &b, "randread", 1, PAT_RANDOM, (uint32_t)opt.bs, opt.qd, vsz);
	j.time_s = opt.time_s;
	j.verify = true;
	job_run(&j);
	out_begin(&o, "randread");
	out_job(&o, &j);
	out_u64(&o, "vol_mib", vsz >> 20);
	out_u64(&o, "verify_fail", j.verify_fail);
	{
		const char *tp = getenv("UV_THREADPOOL_SIZE");
		out_str(&o, "uv_threadpool", tp ? tp : "default");
	}
	out_end(&o);
	job_free(&j);
	b_close(&b);
	if (j.verify_fail) {
		note("randread: %" PRIu64 " blocks read back with the wrong content", j.verify_fail);
		exit(2);
	}
}

/* ---- recovery ------------------------------------------------------------- */

struct child_report {
	int ok;
	uint64_t ops, user_bytes, log_bytes, batches, lsn, ckpt_count;
	double write_secs, ckpt_secs;
};

static void write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t r = write(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			_exit(1);
		p = (const char *)p + r;
		n -= (size_t)r;
	}
}

/* The child: write, maybe checkpoint, report, die by SIGKILL. */
static void recovery_child(int fd, bool ckpt)
{
	struct child_report rep;
	struct tdo_engine_stats st;
	struct tdo_vol_info vi;
	struct bench b;
	struct job j;
	uint64_t vsz, t0;

	memset(&rep, 0, sizeof rep);
	b_open(&b, UINT64_MAX / 4); /* checkpoints effectively off */
	vsz = vol_size_for(&b, 1ull << 30, 0.6);
	b_vol_create(&b, VOL_NAME, vsz);
	job_init(&j, &b, "recovery-writes", 0, PAT_RANDOM, BLK, opt.qd, vsz);
	j.max_ops = opt.bytes / BLK;
	j.record_lat = false;
	job_run(&j);
	rep.write_secs = job_secs(&j);
	if (ckpt) {
		t0 = uv_hrtime();
		b_checkpoint(&b);
		rep.ckpt_secs = (double)(uv_hrtime() - t0) / 1e9;
	}
	b_stats(&b, &st);
	tdo_vol_lookup(b.e, VOL_NAME, &vi);
	rep.ok = 1;
	rep.ops = j.done;
	rep.user_bytes = st.user_bytes;
	rep.log_bytes = st.log_bytes;
	rep.batches = st.batches;
	rep.lsn = vi.lsn;
	rep.ckpt_count = st.ckpt_count;
	write_all(fd, &rep, sizeof rep);
	raise(SIGKILL);
	_exit(1); /* not reached */
}

static void recovery_one(bool ckpt)
{
	struct child_report rep;
	struct tdo_engine_stats st;
	struct tdo_vol_info vi;
	struct bench b;
	struct out o;
	int fds[2], wst;
	size_t got = 0;
	pid_t pid;
	uint64_t t0, t1;

	do_format();
	if (pipe(fds))
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(fds[0]);
		recovery_child(fds[1], ckpt);
	}
	close(fds[1]);
	memset(&rep, 0, sizeof rep);
	while (got < sizeof rep) {
		ssize_t r = read(fds[0], (char *)&rep + got, sizeof rep - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fds[0]);
	if (waitpid(pid, &wst, 0) < 0)
		die("waitpid: %s", strerror(errno));
	if (got != sizeof rep || !rep.ok)
		die("recovery: the writing child failed before reporting (status 0x%x)", wst);
	if (!WIFSIGNALED(wst) || WTERMSIG(wst) != SIGKILL)
		die("recovery: the child was not killed by SIGKILL (status 0x%x)", wst);
	note("recovery%s: child wrote %" PRIu64 " MiB in %.1f s (%.0f MiB/s), %" PRIu64 " batches, killed",
	     ckpt ? " (checkpoint)" : "", rep.user_bytes >> 20, rep.write_secs,
	     (double)rep.user_bytes / 1048576.0 / rep.write_secs, rep.batches);

	t0 = uv_hrtime();
	b_open(&b, opt.ckpt_every);
	t1 = uv_hrtime();
	b_stats(&b, &st);
	if (tdo_vol_lookup(b.e, VOL_NAME, &vi))
		die("recovery: the volume is gone after recovery");
	out_begin(&o, ckpt ? "recovery_ckpt" : "recovery_nockpt");
	out_u64(&o, "ckpt", ckpt);
	out_u64(&o, "written_mib", rep.user_bytes >> 20);
	out_u64(&o, "log_mib", rep.log_bytes >> 20);
	out_u64(&o, "qd", (uint64_t)opt.qd);
	out_dbl(&o, "recovery_s", (double)st.recovery_usec / 1e6, 3);
	out_dbl(&o, "open_s", (double)(t1 - t0) / 1e9, 3);
	out_u64(&o, "replayed_batches", st.replayed_batches);
	out_u64(&o, "child_batches", rep.batches);
	out_dbl(&o, "replay_mib_s", st.replayed_batches && st.recovery_usec
	        ? (double)rep.log_bytes / 1048576.0 / ((double)st.recovery_usec / 1e6) : 0, 0);
	out_u64(&o, "user_mib_before", rep.user_bytes >> 20);
	out_u64(&o, "user_mib_after", st.user_bytes >> 20);
	out_u64(&o, "log_mib_after", st.log_bytes >> 20);
	out_u64(&o, "lsn_written", rep.lsn);
	out_u64(&o, "lsn_recovered", vi.lsn);
	out_str(&o, "lsn_ok", vi.lsn >= rep.lsn ? "yes" : "no");
	out_dbl(&o, "child_write_s", rep.write_secs, 1);
	if (ckpt)
		out_dbl(&o, "child_ckpt_s", rep.ckpt_secs, 3);
	out_end(&o);
	b_close(&b);
	if (vi.lsn < rep.lsn) {
		note("recovery: volume LSN %" PRIu64 " after recovery, but %" PRIu64 " writes were acknowledged",
		     vi.lsn, rep.lsn);
		exit(2);
	}
}

static void cmd_recovery(void)
{
	if (opt.no_format)
		die("recovery formats the device itself");
	if (!strcmp(opt.mode, "nockpt") || !strcmp(opt.mode, "both"))
		recovery_one(false);
	if (!strcmp(opt.mode, "ckpt") || !strcmp(opt.mode, "both"))
		recovery_one(true);
	if (strcmp(opt.mode, "nockpt") && strcmp(opt.mode, "ckpt") && strcmp(opt.mode, "both"))
		die("--mode: nockpt, ckpt or both");
}

/* ---- index memory --------------------------------------------------------- */

static size_t heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
#else
	return 0;
#endif
}

static void index_one(bool random)
{
	struct tdo_engine_stats s0, s1;
	struct bench b;
	struct job j;
	struct out o;
	uint64_t vsz, nblk;
	uint32_t *perm = NULL;
	size_t h0, h1;

	do_format();
	b_open(&b, opt.ckpt_every);
	vsz = vol_size_for(&b, 1ull << 30, 1.0);
	nblk = vsz / BLK;
	if (nblk > UINT32_MAX)
		die("volume too large for the permutation");
	b_stats(&b, &s0);
	h0 = heap_in_use();
	b_vol_create(&b, VOL_NAME, vsz);
	if (random) {
		uint64_t s = opt.seed ^ 0xa5a5a5a5ull;
		perm = malloc(nblk * sizeof *perm);
		if (!perm)
			die("out of memory");
		for (uint64_t i = 0; i < nblk; i++)
			perm[i] = (uint32_t)i;
		for (uint64_t i = nblk - 1; i > 0; i--) {
			uint64_t k = rng_next(&s) % (i + 1);
			uint32_t t = perm[i];
			perm[i] = perm[k];
			perm[k] = t;
		}
		job_init(&j, &b, "index-random", 0, PAT_PERM, BLK, opt.qd, vsz);
		j.perm = perm;
		j.max_ops = nblk;
	} else {
		job_init(&j, &b, "index-seq", 0, PAT_SEQ, (uint32_t)opt.seq_bs, opt.qd, vsz);
		j.max_ops = (vsz + opt.seq_bs - 1) / opt.seq_bs;
	}
	j.record_lat = false;
	job_run(&j);
	/* the permutation is ours, not the engine's: leave it out of the heap figure */
	free(perm);
	/* settle: no checkpoint buffer in flight while the heap is measured */
	b_checkpoint(&b);
	h1 = heap_in_use();
	b_stats(&b, &s1);
	out_begin(&o, random ? "index_random" : "index_seq");
	out_u64(&o, "vol_mib", vsz >> 20);
	out_u64(&o, "blocks", nblk);
	out_u64(&o, "live_blocks", s1.live_bytes / BLK);
	out_u64(&o, "index_bytes", s1.index_bytes);
	out_dbl(&o, "bytes_per_block", (double)s1.index_bytes / (double)nblk, 3);
	out_dbl(&o, "heap_bytes_per_block", h1 > h0 ? (double)(h1 - h0) / (double)nblk : 0, 3);
	out_dbl(&o, "write_secs", job_secs(&j), 1);
	out_end(&o);
	job_free(&j);
	b_close(&b);
	if (s1.live_bytes / BLK != nblk)
		note("index: %" PRIu64 " live blocks, expected %" PRIu64, s1.live_bytes / BLK, nblk);
}

static void cmd_index(void)
{
	bool r = !strcmp(opt.order, "random") || !strcmp(opt.order, "both");
	bool s = !strcmp(opt.order, "seq") || !strcmp(opt.order, "both");

	if (!r && !s)
		die("--order: random, seq or both");
	if (opt.no_format)
		die("index formats the device itself");
	if (r)
		index_one(true);
	if (s)
		index_one(false);
}

/* ---- write amplification --------------------------------------------------- */

static void wa_one(double util)
{
	struct tdo_engine_stats s0, s1;
	struct bench b;
	struct job j;
	struct out o;
	char name[32];
	uint64_t seg_space, vsz;
	double user, clean, logb;

	snprintf(name, sizeof name, "wa_%.0f", util * 100);
	do_format();
	b_open(&b, opt.ckpt_every);
	b_stats(&b, &s0);
	seg_space = (uint64_t)s0.seg_count * s0.seg_size;
	vsz = (uint64_t)((double)seg_space * util) / BLK * BLK;
	if (vsz > s0.capacity) {
		out_begin(&o, name);
		out_dbl(&o, "util", util, 2);
		out_str(&o, "fits", "no");
		out_u64(&o, "vol_mib", vsz >> 20);
		out_u64(&o, "capacity_mib", s0.capacity >> 20);
		out_dbl(&o, "max_util", (double)s0.capacity / (double)seg_space, 3);
		out_end(&o);
		note("%.0f%% utilisation needs volumes of %" PRIu64 " MiB; the engine lets them total %" PRIu64
		     " MiB (%.1f%% of %u x %" PRIu64 " MiB segments): not measured",
		     util * 100, vsz >> 20, s0.capacity >> 20, 100.0 * (double)s0.capacity / (double)seg_space,
		     s0.seg_count, s0.seg_size >> 20);
		b_close(&b);
		return;
	}
	b_vol_create(&b, VOL_NAME, vsz);
	seq_fill(&b, vsz, NULL);
	b_stats(&b, &s0);
	job_init(&j, &b, name, 0, PAT_RANDOM, BLK, opt.qd, vsz);
	j.max_ops = (uint64_t)((double)vsz * opt.overwrite) / BLK;
	j.time_s = opt.max_time;
	job_run(&j);
	b_stats(&b, &s1);
	user = (double)(s1.user_bytes - s0.user_bytes);
	clean = (double)(s1.clean_bytes - s0.clean_bytes);
	logb = (double)(s1.log_bytes - s0.log_bytes);
	out_begin(&o, name);
	out_dbl(&o, "util", util, 2);
	out_str(&o, "fits", "yes");
	out_u64(&o, "vol_mib", vsz >> 20);
	out_u64(&o, "seg_count", s1.seg_count);
	out_u64(&o, "seg_mib", s1.seg_size >> 20);
	out_dbl(&o, "overwrite", opt.overwrite, 1);
	out_dbl(&o, "overwrite_done", (double)j.done * BLK / (double)vsz, 2);
	out_dbl(&o, "wa", user > 0 ? (user + clean) / user : 0, 3);
	out_dbl(&o, "log_wa", user > 0 ? logb / user : 0, 3);
	out_u64(&o, "user_mib", (uint64_t)user >> 20);
	out_u64(&o, "clean_mib", (uint64_t)clean >> 20);
	out_u64(&o, "segs_cleaned", s1.segs_cleaned - s0.segs_cleaned);
	out_u64(&o, "ckpts", s1.ckpt_count - s0.ckpt_count);
	{
		/* checkpoints are written outside the log: header block, volume
		 * table, segment ages and one 32-byte entry per written block */
		uint64_t one = 4096 + 128 + 8ull * s1.seg_count + 32 * (vsz / BLK);
		double ck = (double)(s1.ckpt_count - s0.ckpt_count) * (double)((one + 4095) / 4096 * 4096);
		out_u64(&o, "ckpt_mib_est", (uint64_t)ck >> 20);
		out_dbl(&o, "device_wa_est", user > 0 ? (logb + ck) / user : 0, 3);
	}
	out_u64(&o, "seg_free_end", s1.seg_free);
	out_job(&o, &j);
	out_end(&o);
	job_free(&j);
	b_close(&b);
}

static void cmd_wa(void)
{
	const char *p = opt.utils;

	if (opt.no_format)
		die("wa formats the device itself");
	while (*p) {
		char *end;
		double u = strtod(p, &end);
		if (end == p || u <= 0 || u >= 100)
			die("--util: percentages separated by commas, e.g. 50,80,90");
		wa_one(u / 100);
		p = end;
		if (*p == ',')
			p++;
		else if (*p)
			die("--util: percentages separated by commas, e.g. 50,80,90");
	}
}

/* ---- command line ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: engine_bench COMMAND --dev FILE [options]\n"
	        "commands:\n"
	        "  randwrite  durable random writes      [--qd 32] [--bs 4k] [--time 20] [--vol-size 1G] [--max-bytes SZ]\n"
	        "                                        [--label NAME (the figure's name)]\n"
	        "  randread   random reads after a fill  [--qd 32] [--bs 4k] [--time 20] [--vol-size 1G] [--fill-bs 1M] [--fill-qd 8]\n"
	        "  recovery   open time after SIGKILL    [--bytes 1G] [--qd 32] [--mode both|nockpt|ckpt] [--vol-size 1G]\n"
	        "  index      index bytes per block      [--vol-size 1G] [--order both|random|seq] [--seq-bs 128k]\n"
	        "  wa         write amplification        [--util 50,80,90] [--overwrite 3] [--qd 32] [--max-time S]\n"
	        "common: --format-size SZ (0: whole file)  --seg-size SZ (0: default)  --seed N\n"
	        "        --ckpt-every SZ (log bytes between checkpoints; 0: the engine's default)\n"
	        "        --stall S (abort after S s without progress, default 60)  --json  --no-format\n"
	        "        --verbose (the engine's info log on standard error)\n"
	        "Sizes take K, M, G suffixes (powers of 1024). FILE is formatted afresh (its data is lost).\n");
}

static uint64_t size_arg(const char *what, const char *s)
{
	uint64_t v;

	if (tdo_parse_size(s, &v) < 0)
		die("invalid %s '%s'", what, s);
	return v;
}

static double num_arg(const char *what, const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0)
		die("invalid %s '%s'", what, s);
	return v;
}

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2;
	}
	cmd = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--json")) {
			opt.json = 1;
			continue;
		}
		if (!strcmp(a, "--no-format")) {
			opt.no_format = 1;
			continue;
		}
		if (!strcmp(a, "--verbose")) {
			opt.verbose = 1;
			continue;
		}
		if (!v)
			die("%s: needs a value (or is unknown); see --help", a);
		i++;
		if (!strcmp(a, "--dev"))
			opt.dev = v;
		else if (!strcmp(a, "--format-size"))
			opt.fmt_size = size_arg("size", v);
		else if (!strcmp(a, "--seg-size"))
			opt.seg_size = size_arg("segment size", v);
		else if (!strcmp(a, "--time"))
			opt.time_s = num_arg("time", v);
		else if (!strcmp(a, "--qd"))
			opt.qd = (int)num_arg("queue depth", v);
		else if (!strcmp(a, "--bs"))
			opt.bs = size_arg("block size", v);
		else if (!strcmp(a, "--vol-size"))
			opt.vol_size = size_arg("volume size", v) >> 20 << 20;
		else if (!strcmp(a, "--max-bytes"))
			opt.max_bytes = size_arg("byte count", v);
		else if (!strcmp(a, "--bytes"))
			opt.bytes = size_arg("byte count", v);
		else if (!strcmp(a, "--mode"))
			opt.mode = v;
		else if (!strcmp(a, "--order"))
			opt.order = v;
		else if (!strcmp(a, "--seq-bs"))
			opt.seq_bs = size_arg("block size", v);
		else if (!strcmp(a, "--fill-bs"))
			opt.fill_bs = size_arg("block size", v);
		else if (!strcmp(a, "--fill-qd"))
			opt.fill_qd = (int)num_arg("queue depth", v);
		else if (!strcmp(a, "--util"))
			opt.utils = v;
		else if (!strcmp(a, "--max-time"))
			opt.max_time = num_arg("time", v);
		else if (!strcmp(a, "--overwrite"))
			opt.overwrite = num_arg("overwrite factor", v);
		else if (!strcmp(a, "--seed"))
			opt.seed = (uint64_t)strtoull(v, NULL, 0);
		else if (!strcmp(a, "--label"))
			opt.label = v;
		else if (!strcmp(a, "--ckpt-every"))
			opt.ckpt_every = size_arg("checkpoint interval", v);
		else if (!strcmp(a, "--stall"))
			opt.stall_s = num_arg("stall time", v);
		else
			die("unknown option %s; see --help", a);
	}
	if (!opt.dev)
		die("--dev FILE is required");
	/* the engine's info lines (recovery summaries and the like) only on request */
	tdo_log_set_level(opt.verbose ? TDO_LOG_INFO : TDO_LOG_WARN);
	if (opt.qd < 1 || opt.qd > MAX_QD || opt.fill_qd < 1 || opt.fill_qd > MAX_QD)
		die("queue depths are 1..%d", MAX_QD);
	if (!opt.bs || opt.bs % 512 || opt.bs > (64u << 20) || !opt.fill_bs || opt.fill_bs % BLK ||
	    opt.fill_bs > (64u << 20) || !opt.seq_bs || opt.seq_bs % BLK || opt.seq_bs > (64u << 20))
		die("block sizes are multiples of 512 (4 KiB for --fill-bs/--seq-bs), at most 64 MiB");
	if (!strcmp(cmd, "randwrite"))
		cmd_randwrite();
	else if (!strcmp(cmd, "randread"))
		cmd_randread();
	else if (!strcmp(cmd, "recovery"))
		cmd_recovery();
	else if (!strcmp(cmd, "index"))
		cmd_index();
	else if (!strcmp(cmd, "wa"))
		cmd_wa();
	else {
		usage(stderr);
		die("unknown command %s", cmd);
	}
	return 0;
}
