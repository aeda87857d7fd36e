/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checkpoint round trip through the public API on a temporary file: format,
 * open, create volumes, write, trim and zero, checkpoint, close, reopen, and
 * compare what the engine reports before and after (volume table, data,
 * allocation map) with each other and with a model kept by the test. Also
 * the synchronous argument checks of the I/O calls and the device lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#include "testudo/engine.h"

#define MiB (1ull << 20)
#define KiB (1ull << 10)
#define BLK TDO_BLOCK_SIZE

#define DEV_SIZE   (64 * MiB)
#define SEG_SIZE   (1 * MiB)
#define WAIT_MS    20000

/* ---- model of a volume --------------------------------------------------- */

enum mstate { M_HOLE = 0, M_ZERO, M_DATA };

struct model {
	const char *name;
	uint64_t size;
	uint32_t flags;
	uint32_t id;
	uint8_t *img;               /* size bytes: what reads must return */
	uint8_t *st;                /* per 4 KiB block: enum mstate */
	uint64_t nblocks;
};

static void model_init(struct model *m, const char *name, uint64_t size, uint32_t flags)
{
	m->name = name;
	m->size = size;
	m->flags = flags;
	m->nblocks = (size + BLK - 1) / BLK;
	m->img = calloc(1, size);
	m->st = calloc(1, m->nblocks);
	assert_non_null(m->img);
	assert_non_null(m->st);
}

static void model_free(struct model *m)
{
	free(m->img);
	free(m->st);
	m->img = m->st = NULL;
}

static void model_write(struct model *m, uint64_t off, uint64_t len, const void *buf)
{
	memcpy(m->img + off, buf, len);
	for (uint64_t b = off / BLK; b < (off + len + BLK - 1) / BLK; b++)
		m->st[b] = M_DATA;
}

/* trim (and zeroing without NO_HOLE) and zeroing with NO_HOLE, on whole
 * blocks only: a partial block would become a DATA block of zeros */
static void model_unmap(struct model *m, uint64_t off, uint64_t len, enum mstate s)
{
	assert_int_equal(off % BLK, 0);
	assert_int_equal(len % BLK, 0);
	memset(m->img + off, 0, len);
	for (uint64_t b = off / BLK; b < (off + len) / BLK; b++)
		m->st[b] = (uint8_t)s;
}

/* ---- fixture ------------------------------------------------------------- */

struct fx {
	char path[PATH_MAX];
	uv_loop_t loop;
	struct tdo_engine *e;
	struct model alpha, beta;
};

static void make_temp(char *path, size_t len)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	snprintf(path, len, "%s/testudo-ckpt-XXXXXX", dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	struct tdo_format_opts fo = { .size = DEV_SIZE, .seg_size = SEG_SIZE, .sparse = 1 };

	if (!f)
		return -1;
	make_temp(f->path, sizeof f->path);
	if (tdo_format(f->path, &fo) != 0) {
		unlink(f->path);
		free(f);
		return -1;
	}
	if (uv_loop_init(&f->loop)) {
		unlink(f->path);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

/* ---- waiting on callbacks ------------------------------------------------ */

struct done {
	int called;
	int status;
};

static void done_cb(void *arg, int status)
{
	struct done *d = arg;

	d->called++;
	d->status = status;
}

static void timeout_cb(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

/* Run the loop until D's callback has run (or the safety timer fires). */
static void wait_done(uv_loop_t *loop, struct done *d)
{
	uv_timer_t t;
	int expired = 0;

	assert_int_equal(uv_timer_init(loop, &t), 0);
	t.data = &expired;
	assert_int_equal(uv_timer_start(&t, timeout_cb, WAIT_MS, 0), 0);
	while (!d->called && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_timer_stop(&t);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT); /* finish closing the timer */
	if (expired)
		fail_msg("callback did not run within %d ms", WAIT_MS);
	assert_int_equal(d->called, 1);
}

static void eng_open(struct fx *f)
{
	assert_null(f->e);
	/* here, not in main: cmocka sets its own SIGBUS handler for each test */
	assert_int_equal(tdo_engine_sigbus_install(), 0);
	assert_int_equal(tdo_engine_open(&f->loop, f->path, NULL, &f->e), 0);
	assert_non_null(f->e);
}

static void eng_close(struct fx *f)
{
	struct done d = { 0 };

	assert_int_equal(tdo_engine_close(f->e, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	f->e = NULL;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	int r;

	if (f->e) {
		struct done d = { 0 };
		if (tdo_engine_close(f->e, done_cb, &d) == 0)
			wait_done(&f->loop, &d);
		f->e = NULL;
	}
	uv_run(&f->loop, UV_RUN_NOWAIT);
	r = uv_loop_close(&f->loop);
	unlink(f->path);
	model_free(&f->alpha);
	model_free(&f->beta);
	free(f);
	return r == 0 ? 0 : -1;   /* a handle left open is a failure */
}

static void do_create(struct fx *f, struct model *m)
{
	struct done d = { 0 };
	struct tdo_vol_info vi;

	assert_int_equal(tdo_vol_create(f->e, m->name, m->size, m->flags, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	assert_int_equal(tdo_vol_lookup(f->e, m->name, &vi), 0);
	m->id = vi.id;
}

static void do_write(struct fx *f, struct model *m, uint64_t off, uint32_t len, const void *buf)
{
	struct done d = { 0 };

	assert_int_equal(tdo_engine_write(f->e, m->id, off, len, buf, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	model_write(m, off, len, buf);
}

static void do_trim(struct fx *f, struct model *m, uint64_t off, uint64_t len)
{
	struct done d = { 0 };

	assert_int_equal(tdo_engine_trim(f->e, m->id, off, len, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	model_unmap(m, off, len, M_HOLE);
}

static void do_zero(struct fx *f, struct model *m, uint64_t off, uint64_t len, unsigned flags)
{
	struct done d = { 0 };

	assert_int_equal(tdo_engine_write_zeroes(f->e, m->id, off, len, flags, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	model_unmap(m, off, len, (flags & TDO_ZERO_NO_HOLE) ? M_ZERO : M_HOLE);
}

static void do_checkpoint(struct fx *f)
{
	struct done d = { 0 };

	assert_int_equal(tdo_engine_checkpoint(f->e, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
}

/* The whole volume, into a fresh 4 KiB aligned buffer. */
static uint8_t *read_all(struct fx *f, const struct model *m)
{
	struct done d = { 0 };
	void *buf = NULL;

	assert_int_equal(posix_memalign(&buf, BLK, m->size), 0);
	memset(buf, 0xee, m->size);
	assert_int_equal(tdo_engine_read(f->e, m->id, 0, (uint32_t)m->size, buf, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	return buf;
}

/* ---- allocation map ------------------------------------------------------ */

struct run {
	uint64_t off, len;
	unsigned state;
};

struct runs {
	struct run r[256];
	int n;
};

static int map_cb(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	struct runs *rs = arg;

	if (rs->n == (int)(sizeof rs->r / sizeof rs->r[0]))
		return -ENOSPC;
	rs->r[rs->n].off = off;
	rs->r[rs->n].len = len;
	rs->r[rs->n].state = state;
	rs->n++;
	return 0;
}

static void get_map(struct fx *f, const struct model *m, struct runs *rs)
{
	memset(rs, 0, sizeof *rs);
	assert_int_equal(tdo_engine_map(f->e, m->id, 0, m->size, map_cb, rs), 0);
}

static unsigned map_state(enum mstate s)
{
	return s == M_HOLE ? (TDO_MAP_HOLE | TDO_MAP_ZERO) : s == M_ZERO ? TDO_MAP_ZERO : 0;
}

static void model_map(const struct model *m, struct runs *rs)
{
	memset(rs, 0, sizeof *rs);
	for (uint64_t b = 0; b < m->nblocks; b++) {
		unsigned s = map_state((enum mstate)m->st[b]);
		uint64_t end = (b + 1) * BLK < m->size ? (b + 1) * BLK : m->size;

		if (rs->n && rs->r[rs->n - 1].state == s) {
			rs->r[rs->n - 1].len = end - rs->r[rs->n - 1].off;
			continue;
		}
		assert_true(rs->n < (int)(sizeof rs->r / sizeof rs->r[0]));
		rs->r[rs->n].off = b * BLK;
		rs->r[rs->n].len = end - b * BLK;
		rs->r[rs->n].state = s;
		rs->n++;
	}
}

static void assert_runs_equal(const struct runs *a, const struct runs *b)
{
	assert_int_equal(a->n, b->n);
	for (int i = 0; i < a->n; i++) {
		if (a->r[i].off != b->r[i].off || a->r[i].len != b->r[i].len ||
		    a->r[i].state != b->r[i].state)
			fail_msg("run %d: (%llu,%llu,%u) != (%llu,%llu,%u)", i,
			         (unsigned long long)a->r[i].off, (unsigned long long)a->r[i].len,
			         a->r[i].state, (unsigned long long)b->r[i].off,
			         (unsigned long long)b->r[i].len, b->r[i].state);
	}
}

/* ---- the scenario -------------------------------------------------------- */

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x5851f42d4c957f2dull;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 32);
	}
}

static void fill_text(uint8_t *p, size_t n, unsigned seed)
{
	char line[80];
	int l = snprintf(line, sizeof line, "volume beta, pattern %u: all work and no play\n", seed);

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)line[i % (size_t)l];
}

static uint8_t *pattern(size_t n, uint64_t seed, int text)
{
	uint8_t *p = malloc(n);

	assert_non_null(p);
	if (text)
		fill_text(p, n, (unsigned)seed);
	else
		fill_random(p, n, seed);
	return p;
}

static void write_pattern(struct fx *f, struct model *m, uint64_t off, uint32_t len,
                          uint64_t seed, int text)
{
	uint8_t *p = pattern(len, seed, text);

	do_write(f, m, off, len, p);
	free(p);
}

#define ALPHA_SIZE (4 * MiB)
#define BETA_SIZE  (2 * MiB + 1536)   /* ends inside a block */

/* Two volumes with data, holes, zero blocks and partial blocks. */
static void populate(struct fx *f)
{
	struct model *a = &f->alpha, *b = &f->beta;

	model_init(a, "alpha", ALPHA_SIZE, 0);
	model_init(b, "beta", BETA_SIZE, TDO_VOL_LZ4);
	do_create(f, a);
	do_create(f, b);

	/* alpha: plain blocks */
	write_pattern(f, a, 0, 16 * KiB, 1, 0);                     /* blocks 0-3 */
	write_pattern(f, a, 1 * MiB, 8 * KiB, 2, 0);                /* blocks 256-257 */
	write_pattern(f, a, 1 * MiB + 4 * KiB + 1024, 512, 3, 0);   /* inside 257 */
	write_pattern(f, a, 2 * MiB + 512, 512, 4, 0);              /* into a hole */
	do_trim(f, a, 4 * KiB, 4 * KiB);                            /* block 1 */
	do_zero(f, a, 8 * KiB, 8 * KiB, TDO_ZERO_NO_HOLE);          /* blocks 2-3 */
	do_zero(f, a, 3 * MiB, 12 * KiB, TDO_ZERO_NO_HOLE);         /* never written */
	do_zero(f, a, 1 * MiB, 4 * KiB, 0);                         /* block 256: hole */
	write_pattern(f, a, ALPHA_SIZE - 4 * KiB, 4 * KiB, 5, 0);   /* last block */

	/* beta: lz4, compressible and not */
	write_pattern(f, b, 0, 32 * KiB, 6, 1);                     /* blocks 0-7 */
	write_pattern(f, b, 64 * KiB, 8 * KiB, 7, 0);               /* raw */
	write_pattern(f, b, 4 * KiB + 2048, 512, 8, 0);             /* inside lz4 block 1 */
	do_trim(f, b, 16 * KiB, 8 * KiB);                           /* blocks 4-5 */
	do_zero(f, b, 24 * KiB, 4 * KiB, TDO_ZERO_NO_HOLE);         /* block 6 */
	write_pattern(f, b, 2 * MiB, 1536, 9, 1);                   /* volume tail */
}

/* What the engine says now, to compare after a reopen. */
struct snap {
	int nvols;
	struct tdo_vol_info vols[4];
	uint8_t *img[2];
	struct runs map[2];
};

static void take_snap(struct fx *f, struct snap *s)
{
	memset(s, 0, sizeof *s);
	s->nvols = tdo_vol_list(f->e, s->vols, 4);
	s->img[0] = read_all(f, &f->alpha);
	s->img[1] = read_all(f, &f->beta);
	get_map(f, &f->alpha, &s->map[0]);
	get_map(f, &f->beta, &s->map[1]);
}

static void free_snap(struct snap *s)
{
	free(s->img[0]);
	free(s->img[1]);
}

/* populate, checkpoint, snapshot, close, reopen */
static void round_trip(struct fx *f, struct snap *before)
{
	eng_open(f);
	populate(f);
	do_checkpoint(f);
	take_snap(f, before);
	eng_close(f);
	eng_open(f);
}

static void assert_vol_info_equal(const struct tdo_vol_info *a, const struct tdo_vol_info *b)
{
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->lsn, b->lsn);
	assert_int_equal(a->epoch, b->epoch);
	assert_int_equal(a->used_bytes, b->used_bytes);
	assert_int_equal(a->ctime, b->ctime);
}

/* ---- round trip tests ---------------------------------------------------- */

static void test_data_reads_back_before_close(void **state)
{
	struct fx *f = *state;
	uint8_t *img;

	eng_open(f);
	populate(f);
	img = read_all(f, &f->alpha);
	assert_memory_equal(img, f->alpha.img, f->alpha.size);
	free(img);
	img = read_all(f, &f->beta);
	assert_memory_equal(img, f->beta.img, f->beta.size);
	free(img);
}

static void test_map_matches_model_before_close(void **state)
{
	struct fx *f = *state;
	struct runs got, want;

	eng_open(f);
	populate(f);
	get_map(f, &f->alpha, &got);
	model_map(&f->alpha, &want);
	assert_runs_equal(&got, &want);
	get_map(f, &f->beta, &got);
	model_map(&f->beta, &want);
	assert_runs_equal(&got, &want);
}

static void test_volumes_survive_reopen(void **state)
{
	struct fx *f = *state;
	struct snap before;
	struct tdo_vol_info after[4], one;
	int n;

	round_trip(f, &before);
	assert_int_equal(before.nvols, 2);
	n = tdo_vol_list(f->e, after, 4);
	assert_int_equal(n, 2);
	for (int i = 0; i < n; i++)
		assert_vol_info_equal(&after[i], &before.vols[i]);
	assert_string_equal(after[0].name, "alpha");
	assert_int_equal(after[0].flags, 0);
	assert_int_equal(after[0].size, ALPHA_SIZE);
	assert_string_equal(after[1].name, "beta");
	assert_int_equal(after[1].flags, TDO_VOL_LZ4);
	assert_int_equal(after[1].size, BETA_SIZE);
	assert_int_equal(tdo_vol_lookup(f->e, "beta", &one), 0);
	assert_vol_info_equal(&one, &before.vols[1]);
	assert_int_equal(tdo_vol_lookup(f->e, "gamma", &one), TDO_ENOVOL);
	free_snap(&before);
}

static void test_data_survives_reopen(void **state)
{
	struct fx *f = *state;
	struct snap before;
	uint8_t *img;

	round_trip(f, &before);
	img = read_all(f, &f->alpha);
	assert_memory_equal(img, before.img[0], f->alpha.size);
	assert_memory_equal(img, f->alpha.img, f->alpha.size);
	free(img);
	img = read_all(f, &f->beta);
	assert_memory_equal(img, before.img[1], f->beta.size);
	assert_memory_equal(img, f->beta.img, f->beta.size);
	free(img);
	free_snap(&before);
}

static void test_partial_reads_survive_reopen(void **state)
{
	struct fx *f = *state;
	struct snap before;
	struct done d = { 0 };
	uint8_t buf[1024];
	const uint64_t off = 1 * MiB + 4 * KiB + 512;   /* around the 512-byte write */

	round_trip(f, &before);
	assert_int_equal(tdo_engine_read(f->e, f->alpha.id, off, sizeof buf, buf, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	assert_memory_equal(buf, f->alpha.img + off, sizeof buf);
	free_snap(&before);
}

static void test_map_survives_reopen(void **state)
{
	struct fx *f = *state;
	struct snap before;
	struct runs got, want;

	round_trip(f, &before);
	get_map(f, &f->alpha, &got);
	assert_runs_equal(&got, &before.map[0]);
	model_map(&f->alpha, &want);
	assert_runs_equal(&got, &want);
	get_map(f, &f->beta, &got);
	assert_runs_equal(&got, &before.map[1]);
	model_map(&f->beta, &want);
	assert_runs_equal(&got, &want);
	free_snap(&before);
}

static void test_map_distinguishes_hole_zero_data(void **state)
{
	struct fx *f = *state;
	struct snap before;
	struct runs r;
	const struct { uint64_t off; unsigned state; } probe[] = {
		{ 0, 0 },                                         /* data */
		{ 4 * KiB, TDO_MAP_HOLE | TDO_MAP_ZERO },         /* trimmed */
		{ 8 * KiB, TDO_MAP_ZERO },                        /* NO_HOLE zero */
		{ 1 * MiB, TDO_MAP_HOLE | TDO_MAP_ZERO },         /* zeroed, holes allowed */
		{ 2 * MiB, 0 },                                   /* partial write */
		{ 3 * MiB, TDO_MAP_ZERO },                        /* zeroed, never written */
		{ 3 * MiB + 12 * KiB, TDO_MAP_HOLE | TDO_MAP_ZERO }, /* never written */
	};

	round_trip(f, &before);
	for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
		memset(&r, 0, sizeof r);
		assert_int_equal(tdo_engine_map(f->e, f->alpha.id, probe[i].off, BLK, map_cb, &r), 0);
		assert_int_equal(r.n, 1);
		assert_int_equal(r.r[0].off, probe[i].off);
		assert_int_equal(r.r[0].len, BLK);
		assert_int_equal(r.r[0].state, probe[i].state);
	}
	free_snap(&before);
}

static void test_no_replay_after_checkpoint_and_close(void **state)
{
	struct fx *f = *state;
	struct snap before;
	struct tdo_engine_stats st;

	round_trip(f, &before);
	tdo_engine_stats(f->e, &st);
	assert_int_equal(st.replayed_batches, 0);
	assert_int_equal(st.poisoned, 0);
	free_snap(&before);
}

static void test_lz4_volume_uses_less_space(void **state)
{
	struct fx *f = *state;
	struct snap before;
	struct tdo_vol_info vi;
	uint64_t data_blocks = 0;

	round_trip(f, &before);
	for (uint64_t b = 0; b < f->beta.nblocks; b++)
		data_blocks += f->beta.st[b] == M_DATA;
	assert_int_equal(tdo_vol_lookup(f->e, "beta", &vi), 0);
	assert_true(vi.used_bytes > 0);
	assert_true(vi.used_bytes < data_blocks * BLK);
	/* alpha is not compressed: every data block costs a block */
	data_blocks = 0;
	for (uint64_t b = 0; b < f->alpha.nblocks; b++)
		data_blocks += f->alpha.st[b] == M_DATA;
	assert_int_equal(tdo_vol_lookup(f->e, "alpha", &vi), 0);
	assert_int_equal(vi.used_bytes, data_blocks * BLK);
	free_snap(&before);
}

static void test_second_round_trip_is_stable(void **state)
{
	struct fx *f = *state;
	struct snap before, again;

	round_trip(f, &before);
	eng_close(f);
	eng_open(f);
	take_snap(f, &again);
	assert_int_equal(again.nvols, before.nvols);
	for (int i = 0; i < again.nvols; i++)
		assert_vol_info_equal(&again.vols[i], &before.vols[i]);
	assert_memory_equal(again.img[0], before.img[0], f->alpha.size);
	assert_memory_equal(again.img[1], before.img[1], f->beta.size);
	assert_runs_equal(&again.map[0], &before.map[0]);
	assert_runs_equal(&again.map[1], &before.map[1]);
	free_snap(&before);
	free_snap(&again);
}

/* Child of test_replay_after_unclean_stop: write, then die without close. */
static void crash_child(const char *path)
{
	uv_loop_t loop;
	struct tdo_engine *e = NULL;
	struct done d = { 0 };
	uint8_t *p = pattern(8 * KiB, 42, 0);
	struct tdo_vol_info vi;

	if (uv_loop_init(&loop) || tdo_engine_sigbus_install() || tdo_engine_open(&loop, path, NULL, &e))
		_exit(2);
	if (tdo_vol_create(e, "crash", 1 * MiB, 0, done_cb, &d))
		_exit(3);
	while (!d.called)
		uv_run(&loop, UV_RUN_ONCE);
	if (d.status || tdo_vol_lookup(e, "crash", &vi))
		_exit(4);
	memset(&d, 0, sizeof d);
	if (tdo_engine_write(e, vi.id, 64 * KiB, 8 * KiB, p, done_cb, &d))
		_exit(5);
	while (!d.called)
		uv_run(&loop, UV_RUN_ONCE);
	_exit(d.status ? 6 : 0); /* durable, and no final checkpoint */
}

static void test_replay_after_unclean_stop(void **state)
{
	struct fx *f = *state;
	struct tdo_engine_stats st;
	struct tdo_vol_info vi;
	struct done d = { 0 };
	uint8_t *want = pattern(8 * KiB, 42, 0);
	uint8_t got[8 * KiB];
	pid_t pid;
	int ws = 0;

	/* the counterpart of the test above: without a final checkpoint the
	 * reopen does replay, and finds what was acknowledged */
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		crash_child(f->path);
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);

	eng_open(f);
	tdo_engine_stats(f->e, &st);
	assert_true(st.replayed_batches >= 2);
	assert_int_equal(tdo_vol_lookup(f->e, "crash", &vi), 0);
	assert_int_equal(tdo_engine_read(f->e, vi.id, 64 * KiB, sizeof got, got, done_cb, &d), 0);
	wait_done(&f->loop, &d);
	assert_int_equal(d.status, 0);
	assert_memory_equal(got, want, sizeof got);
	free(want);
}

/* ---- argument checks ----------------------------------------------------- */

struct io_args {
	uint64_t off, len;
};

/* Every I/O call with (OFF, LEN) on volume VOL: returns RET and never
 * calls back. */
static void expect_io_rejected(struct fx *f, uint32_t vol, uint64_t off, uint64_t len, int ret)
{
	static uint8_t buf[16 * KiB] __attribute__((aligned(4096)));
	/* static: should a call be wrongly accepted, its late callback must
	 * not land on a dead stack frame */
	static struct done d;
	uint32_t len32 = (uint32_t)len;

	assert_true(len <= sizeof buf);
	memset(&d, 0, sizeof d);
	assert_int_equal(tdo_engine_read(f->e, vol, off, len32, buf, done_cb, &d), ret);
	assert_int_equal(tdo_engine_write(f->e, vol, off, len32, buf, done_cb, &d), ret);
	assert_int_equal(tdo_engine_trim(f->e, vol, off, len, done_cb, &d), ret);
	assert_int_equal(tdo_engine_write_zeroes(f->e, vol, off, len, 0, done_cb, &d), ret);
	assert_int_equal(tdo_engine_write_zeroes(f->e, vol, off, len, TDO_ZERO_NO_HOLE, done_cb, &d), ret);
	for (int i = 0; i < 5; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(d.called, 0);
}

static void open_with_alpha(struct fx *f)
{
	eng_open(f);
	model_init(&f->alpha, "alpha", ALPHA_SIZE, 0);
	do_create(f, &f->alpha);
}

static void test_io_past_end_einval(void **state)
{
	struct fx *f = *state;

	open_with_alpha(f);
	expect_io_rejected(f, f->alpha.id, ALPHA_SIZE, 512, -EINVAL);
	expect_io_rejected(f, f->alpha.id, ALPHA_SIZE - 512, 1024, -EINVAL);
	expect_io_rejected(f, f->alpha.id, ALPHA_SIZE - 4 * KiB, 8 * KiB, -EINVAL);
	expect_io_rejected(f, f->alpha.id, 1ull << 40, 512, -EINVAL);
}

static void test_io_wrapping_range_einval(void **state)
{
	struct fx *f = *state;
	struct done d = { 0 };

	open_with_alpha(f);
	/* off + len wraps around 2^64 */
	assert_int_equal(tdo_engine_trim(f->e, f->alpha.id, 4096, UINT64_MAX - 4095, done_cb, &d), -EINVAL);
	assert_int_equal(tdo_engine_write_zeroes(f->e, f->alpha.id, 4096, UINT64_MAX - 4095, 0, done_cb, &d),
	                 -EINVAL);
	expect_io_rejected(f, f->alpha.id, UINT64_MAX - 511, 1024, -EINVAL);
	assert_int_equal(d.called, 0);
}

static void test_io_unaligned_offset_einval(void **state)
{
	struct fx *f = *state;

	open_with_alpha(f);
	expect_io_rejected(f, f->alpha.id, 1, 512, -EINVAL);
	expect_io_rejected(f, f->alpha.id, 511, 4096, -EINVAL);
	expect_io_rejected(f, f->alpha.id, 4096 + 100, 4096, -EINVAL);
}

static void test_io_unaligned_length_einval(void **state)
{
	struct fx *f = *state;

	open_with_alpha(f);
	expect_io_rejected(f, f->alpha.id, 0, 1, -EINVAL);
	expect_io_rejected(f, f->alpha.id, 0, 513, -EINVAL);
	expect_io_rejected(f, f->alpha.id, 4096, 4095, -EINVAL);
}

static void test_io_zero_length_einval(void **state)
{
	struct fx *f = *state;

	open_with_alpha(f);
	expect_io_rejected(f, f->alpha.id, 0, 0, -EINVAL);
}

static void test_io_unknown_volume(void **state)
{
	struct fx *f = *state;

	open_with_alpha(f);
	expect_io_rejected(f, f->alpha.id + 100, 0, 4096, TDO_ENOVOL);
}

static void test_io_bad_zero_flags_einval(void **state)
{
	struct fx *f = *state;
	struct done d = { 0 };

	open_with_alpha(f);
	assert_int_equal(tdo_engine_write_zeroes(f->e, f->alpha.id, 0, 4096, 2, done_cb, &d), -EINVAL);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(d.called, 0);
}

static void test_io_rejected_leaves_volume_usable(void **state)
{
	struct fx *f = *state;
	uint8_t *img;

	open_with_alpha(f);
	expect_io_rejected(f, f->alpha.id, ALPHA_SIZE - 512, 1024, -EINVAL);
	expect_io_rejected(f, f->alpha.id, 100, 512, -EINVAL);
	/* the last sector of the volume is in range */
	write_pattern(f, &f->alpha, ALPHA_SIZE - 512, 512, 11, 0);
	img = read_all(f, &f->alpha);
	assert_memory_equal(img, f->alpha.img, ALPHA_SIZE);
	free(img);
}

/* ---- device lock --------------------------------------------------------- */

static void test_open_twice_elocked(void **state)
{
	struct fx *f = *state;
	struct tdo_engine *e2 = NULL;

	eng_open(f);
	assert_int_equal(tdo_engine_open(&f->loop, f->path, NULL, &e2), TDO_ELOCKED);
	assert_null(e2);
}

static void test_open_twice_first_still_works(void **state)
{
	struct fx *f = *state;
	struct tdo_engine *e2 = NULL;
	uint8_t *img;

	open_with_alpha(f);
	assert_int_equal(tdo_engine_open(&f->loop, f->path, NULL, &e2), TDO_ELOCKED);
	write_pattern(f, &f->alpha, 0, 8 * KiB, 12, 0);
	img = read_all(f, &f->alpha);
	assert_memory_equal(img, f->alpha.img, ALPHA_SIZE);
	free(img);
}

static void test_lock_released_by_close(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	eng_close(f);
	eng_open(f);
}

static void test_open_missing_device_fails(void **state)
{
	struct fx *f = *state;
	struct tdo_engine *e2 = NULL;
	char missing[PATH_MAX + 16];

	snprintf(missing, sizeof missing, "%s.missing", f->path);
	assert_int_equal(tdo_engine_open(&f->loop, missing, NULL, &e2), -ENOENT);
	assert_null(e2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_data_reads_back_before_close),
		T(test_map_matches_model_before_close),
		T(test_volumes_survive_reopen),
		T(test_data_survives_reopen),
		T(test_partial_reads_survive_reopen),
		T(test_map_survives_reopen),
		T(test_map_distinguishes_hole_zero_data),
		T(test_no_replay_after_checkpoint_and_close),
		T(test_lz4_volume_uses_less_space),
		T(test_second_round_trip_is_stable),
		T(test_replay_after_unclean_stop),

		T(test_io_past_end_einval),
		T(test_io_wrapping_range_einval),
		T(test_io_unaligned_offset_einval),
		T(test_io_unaligned_length_einval),
		T(test_io_zero_length_einval),
		T(test_io_unknown_volume),
		T(test_io_bad_zero_flags_einval),
		T(test_io_rejected_leaves_volume_usable),

		T(test_open_twice_elocked),
		T(test_open_twice_first_still_works),
		T(test_lock_released_by_close),
		T(test_open_missing_device_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
