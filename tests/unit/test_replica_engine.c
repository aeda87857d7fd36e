/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine calls a replica uses, through the public API on a temporary
 * file: tdo_engine_submit_at (writes, zeroes and trims that carry the
 * caller's LSN and epoch), tdo_vol_set_lsn (set, also lower, a volume's
 * LSN and epoch, durably) and tdo_engine_scan (allocated blocks newer than
 * an LSN). Every property is checked live, after a clean close and reopen
 * (the final checkpoint: nothing to replay) and after an unclean stop (a
 * child process dies without closing, so the reopen replays the log), with
 * and without a checkpoint in between. The cleaner is not exercised.
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
#define VOL_NAME   "rep"
#define VOL_SIZE   (1 * MiB)
#define WAIT_MS    20000
#define LSN_LIMIT  (1ull << 48)   /* LSNs are 48 bits: this one is too big */

/* ---- waiting on callbacks ------------------------------------------------ */
/*
 * The helpers up to the fixture use no cmocka assertion: they also run in
 * the child that stops uncleanly, where a failed assertion would jump
 * back into the parent's test runner. They return 0 or an error.
 */

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

/* Run LOOP until D's callback has run: its status, or -ETIMEDOUT. */
static int run_until(uv_loop_t *loop, struct done *d)
{
	uv_timer_t t;
	int expired = 0;

	if (uv_timer_init(loop, &t))
		return -EIO;
	t.data = &expired;
	if (uv_timer_start(&t, timeout_cb, WAIT_MS, 0))
		return -EIO;
	while (!d->called && !expired)
		uv_run(loop, UV_RUN_ONCE);
	uv_timer_stop(&t);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT); /* finish closing the timer */
	if (!d->called)
		return -ETIMEDOUT;
	return d->called == 1 ? d->status : -EPROTO;
}

struct eng {
	uv_loop_t *loop;
	struct tdo_engine *e;
	uint32_t vol;
};

/* A submission's error, or its callback's status. */
#define SUBMIT_AND_WAIT(g, call) \
	do { \
		struct done d_ = { 0 }; \
		int r_ = (call); \
		return r_ ? r_ : run_until((g)->loop, &d_); \
	} while (0)

static int at(struct eng *g, int op, uint64_t off, uint64_t len, const void *buf,
              unsigned flags, uint64_t lsn, uint32_t epoch)
{
	SUBMIT_AND_WAIT(g, tdo_engine_submit_at(g->e, op, g->vol, off, len, buf, flags, lsn, epoch,
	                                        done_cb, &d_));
}

static int wr(struct eng *g, uint64_t off, uint32_t len, const void *buf)
{
	SUBMIT_AND_WAIT(g, tdo_engine_write(g->e, g->vol, off, len, buf, done_cb, &d_));
}

static int set_lsn(struct eng *g, uint64_t lsn, uint32_t epoch)
{
	SUBMIT_AND_WAIT(g, tdo_vol_set_lsn(g->e, VOL_NAME, lsn, epoch, done_cb, &d_));
}

static int checkpoint(struct eng *g)
{
	SUBMIT_AND_WAIT(g, tdo_engine_checkpoint(g->e, done_cb, &d_));
}

static int create(struct eng *g)
{
	struct tdo_vol_info vi;
	struct done d = { 0 };
	int r = tdo_vol_create(g->e, VOL_NAME, VOL_SIZE, 0, done_cb, &d);

	if (r || (r = run_until(g->loop, &d)) || (r = tdo_vol_lookup(g->e, VOL_NAME, &vi)))
		return r;
	g->vol = vi.id;
	return 0;
}

/* Block-sized contents: A and B are the two versions of case 2. */
static const uint8_t *content(int which)
{
	static uint8_t buf[4][BLK] __attribute__((aligned(4096)));
	static int ready;

	if (!ready) {
		for (int i = 0; i < 4; i++)
			for (unsigned j = 0; j < BLK; j++)
				buf[i][j] = (uint8_t)(0x41 + i + (j % 13) * 16);
		ready = 1;
	}
	return buf[which];
}
enum { CA, CB, CC, CD };

#define ROLL_BLOCK 5
#define ROLL_HI    100   /* LSN of version A */
#define ROLL_LO    50    /* LSN of version B, written after A */
#define ROLL_EPOCH 2

enum {
	ROLL_CKPT_BETWEEN = 1,   /* a checkpoint between A and B */
	ROLL_SAME_BATCH   = 2,   /* A and B submitted together */
};

/* Case 2: block 5 gets A at LSN 100, then B at the lower LSN 50. */
static int do_rollback(struct eng *g, unsigned how)
{
	struct done da = { 0 }, db = { 0 };
	int r;

	if ((r = create(g)))
		return r;
	if (how & ROLL_SAME_BATCH) {
		/* both queued before the loop runs: one batch, A's record first */
		r = tdo_engine_submit_at(g->e, TDO_OP_WRITE, g->vol, ROLL_BLOCK * BLK, BLK, content(CA), 0,
		                         ROLL_HI, ROLL_EPOCH, done_cb, &da);
		if (r)
			return r;
		r = tdo_engine_submit_at(g->e, TDO_OP_WRITE, g->vol, ROLL_BLOCK * BLK, BLK, content(CB), 0,
		                         ROLL_LO, ROLL_EPOCH, done_cb, &db);
		if (r) {
			run_until(g->loop, &da);
			return r;
		}
		if ((r = run_until(g->loop, &da)))
			return r;
		return run_until(g->loop, &db);
	}
	if ((r = at(g, TDO_OP_WRITE, ROLL_BLOCK * BLK, BLK, content(CA), 0, ROLL_HI, ROLL_EPOCH)))
		return r;
	if ((how & ROLL_CKPT_BETWEEN) && (r = checkpoint(g)))
		return r;
	return at(g, TDO_OP_WRITE, ROLL_BLOCK * BLK, BLK, content(CB), 0, ROLL_LO, ROLL_EPOCH);
}

/* ---- an unclean stop ----------------------------------------------------- */

typedef int (*scenario_fn)(struct eng *g, unsigned how);

/*
 * In a child: open the device at PATH, run FN, then die without closing
 * (no final checkpoint), so that the next open must replay. The child's
 * exit status is 0 when FN succeeded.
 */
static void run_and_crash(const char *path, scenario_fn fn, unsigned how)
{
	pid_t pid;
	int ws = 0;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uv_loop_t loop;
		struct eng g = { &loop, NULL, 0 };
		int r;

		if (uv_loop_init(&loop) || tdo_engine_sigbus_install() ||
		    tdo_engine_open(&loop, path, NULL, &g.e))
			_exit(2);
		r = fn(&g, how);
		if (r) {
			fprintf(stderr, "child: scenario failed: %s\n", tdo_strerror(r));
			_exit(3);
		}
		_exit(0); /* every write durable, and no final checkpoint */
	}
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
}

/* ---- fixture ------------------------------------------------------------- */

struct fx {
	char path[PATH_MAX];
	uv_loop_t loop;
	struct eng g;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	struct tdo_format_opts fo = { .size = DEV_SIZE, .seg_size = SEG_SIZE, .sparse = 1 };
	const char *dir = getenv("TMPDIR");
	int fd;

	if (!f)
		return -1;
	if (!dir || !*dir)
		dir = "/tmp";
	snprintf(f->path, sizeof f->path, "%s/testudo-replica-XXXXXX", dir);
	fd = mkstemp(f->path);
	if (fd < 0) {
		free(f);
		return -1;
	}
	close(fd);
	if (tdo_format(f->path, &fo) != 0 || uv_loop_init(&f->loop)) {
		unlink(f->path);
		free(f);
		return -1;
	}
	f->g.loop = &f->loop;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	int r;

	if (f->g.e) {
		struct done d = { 0 };
		if (tdo_engine_close(f->g.e, done_cb, &d) == 0)
			run_until(&f->loop, &d);
		f->g.e = NULL;
	}
	uv_run(&f->loop, UV_RUN_NOWAIT);
	r = uv_loop_close(&f->loop);
	unlink(f->path);
	free(f);
	return r == 0 ? 0 : -1;   /* a handle left open is a failure */
}

static void eng_open(struct fx *f)
{
	struct tdo_vol_info vi;

	assert_null(f->g.e);
	/* here, not in main: cmocka sets its own SIGBUS handler for each test */
	assert_int_equal(tdo_engine_sigbus_install(), 0);
	assert_int_equal(tdo_engine_open(&f->loop, f->path, NULL, &f->g.e), 0);
	assert_non_null(f->g.e);
	/* the volume, when a previous open made it */
	if (tdo_vol_lookup(f->g.e, VOL_NAME, &vi) == 0)
		f->g.vol = vi.id;
}

static void eng_close(struct fx *f)
{
	struct done d = { 0 };

	assert_int_equal(tdo_engine_close(f->g.e, done_cb, &d), 0);
	assert_int_equal(run_until(&f->loop, &d), 0);
	f->g.e = NULL;
}

static void reopen(struct fx *f)
{
	eng_close(f);
	eng_open(f);
}

static uint64_t replayed(struct fx *f)
{
	struct tdo_engine_stats st;

	tdo_engine_stats(f->g.e, &st);
	assert_int_equal(st.poisoned, 0);
	return st.replayed_batches;
}

/* After run_and_crash: open, and make sure the log was replayed. */
static void open_after_crash(struct fx *f)
{
	eng_open(f);
	assert_true(replayed(f) >= 1);
}

static void open_with_volume(struct fx *f)
{
	eng_open(f);
	assert_int_equal(create(&f->g), 0);
}

/* ---- checks -------------------------------------------------------------- */

static void expect_vol(struct fx *f, uint64_t lsn, uint32_t epoch)
{
	struct tdo_vol_info vi;

	assert_int_equal(tdo_vol_lookup(f->g.e, VOL_NAME, &vi), 0);
	if (vi.lsn != lsn || vi.epoch != epoch)
		fail_msg("volume LSN/epoch %llu/%u, expected %llu/%u", (unsigned long long)vi.lsn,
		         vi.epoch, (unsigned long long)lsn, epoch);
}

struct hit {
	uint64_t block, lsn;
	unsigned state;
};

struct hits {
	struct hit h[64];
	int n;
	int stop_after;             /* return 99 after this many (0: never) */
};

static int scan_cb(void *arg, uint64_t block, uint64_t lsn, unsigned state)
{
	struct hits *hs = arg;

	if (hs->n == (int)(sizeof hs->h / sizeof hs->h[0]))
		return -ENOSPC;
	hs->h[hs->n].block = block;
	hs->h[hs->n].lsn = lsn;
	hs->h[hs->n].state = state;
	hs->n++;
	return hs->stop_after && hs->n >= hs->stop_after ? 99 : 0;
}

/* scan(MIN_LSN) must report exactly the N hits in WANT, in that order. */
static void expect_scan(struct fx *f, uint64_t min_lsn, const struct hit *want, int n)
{
	struct hits hs;

	memset(&hs, 0, sizeof hs);
	assert_int_equal(tdo_engine_scan(f->g.e, f->g.vol, min_lsn, scan_cb, &hs), 0);
	for (int i = 0; i < hs.n || i < n; i++) {
		if (i >= hs.n || i >= n || hs.h[i].block != want[i].block || hs.h[i].lsn != want[i].lsn ||
		    hs.h[i].state != want[i].state) {
			for (int j = 0; j < hs.n; j++)
				print_message("  scan(%llu) reported block %llu lsn %llu state %u\n",
				              (unsigned long long)min_lsn, (unsigned long long)hs.h[j].block,
				              (unsigned long long)hs.h[j].lsn, hs.h[j].state);
			fail_msg("scan(%llu): %d blocks reported, %d expected; first difference at %d",
			         (unsigned long long)min_lsn, hs.n, n, i);
		}
	}
}

#define EXPECT_SCAN(f, min_lsn, ...) \
	do { \
		const struct hit w_[] = { __VA_ARGS__ }; \
		expect_scan((f), (min_lsn), w_, (int)(sizeof w_ / sizeof w_[0])); \
	} while (0)
#define EXPECT_SCAN_EMPTY(f, min_lsn) expect_scan((f), (min_lsn), NULL, 0)

static void expect_read(struct fx *f, uint64_t off, uint32_t len, const void *want)
{
	static uint8_t buf[64 * KiB] __attribute__((aligned(4096)));
	struct done d = { 0 };

	assert_true(len <= sizeof buf);
	memset(buf, 0xee, len);
	assert_int_equal(tdo_engine_read(f->g.e, f->g.vol, off, len, buf, done_cb, &d), 0);
	assert_int_equal(run_until(&f->loop, &d), 0);
	assert_memory_equal(buf, want, len);
}

static void expect_zeros(struct fx *f, uint64_t off, uint32_t len)
{
	static const uint8_t zeros[64 * KiB];

	assert_true(len <= sizeof zeros);
	expect_read(f, off, len, zeros);
}

/* Case 2's outcome: B, whose LSN is the lower one, is what the block holds. */
static void expect_rolled_back(struct fx *f)
{
	expect_read(f, ROLL_BLOCK * BLK, BLK, content(CB));
	expect_vol(f, ROLL_HI, ROLL_EPOCH);    /* the volume's LSN was not lowered */
	EXPECT_SCAN(f, 0, { ROLL_BLOCK, ROLL_LO, 0 });
	EXPECT_SCAN(f, ROLL_LO - 1, { ROLL_BLOCK, ROLL_LO, 0 });
	EXPECT_SCAN_EMPTY(f, ROLL_LO);
}

/* ---- case 1: tagged writes, zeroes and trims ----------------------------- */

static void tagged_two_blocks(struct fx *f)
{
	assert_int_equal(at(&f->g, TDO_OP_WRITE, 0, BLK, content(CA), 0, 10, 2), 0);
	assert_int_equal(at(&f->g, TDO_OP_WRITE, BLK, BLK, content(CB), 0, 11, 2), 0);
}

static void expect_two_blocks(struct fx *f)
{
	expect_vol(f, 11, 2);
	EXPECT_SCAN(f, 10, { 1, 11, 0 });
	EXPECT_SCAN(f, 0, { 0, 10, 0 }, { 1, 11, 0 });
	EXPECT_SCAN(f, 9, { 0, 10, 0 }, { 1, 11, 0 });
	EXPECT_SCAN_EMPTY(f, 11);
	expect_read(f, 0, BLK, content(CA));
	expect_read(f, BLK, BLK, content(CB));
}

static void test_tagged_writes_set_lsn_and_scan(void **state)
{
	struct fx *f = *state;

	open_with_volume(f);
	expect_vol(f, 0, 1);
	EXPECT_SCAN_EMPTY(f, 0);
	tagged_two_blocks(f);
	expect_two_blocks(f);
}

static void test_tagged_writes_survive_close(void **state)
{
	struct fx *f = *state;

	open_with_volume(f);
	tagged_two_blocks(f);
	reopen(f);
	assert_int_equal(replayed(f), 0);
	expect_two_blocks(f);
}

static int scen_two_blocks(struct eng *g, unsigned how)
{
	int r;

	(void)how;
	if ((r = create(g)) ||
	    (r = at(g, TDO_OP_WRITE, 0, BLK, content(CA), 0, 10, 2)) ||
	    (r = at(g, TDO_OP_WRITE, BLK, BLK, content(CB), 0, 11, 2)))
		return r;
	return 0;
}

static void test_tagged_writes_survive_replay(void **state)
{
	struct fx *f = *state;

	run_and_crash(f->path, scen_two_blocks, 0);
	open_after_crash(f);
	expect_two_blocks(f);
}

static void test_tagged_zero_in_scan_as_zero(void **state)
{
	struct fx *f = *state;
	struct hits hs;

	open_with_volume(f);
	tagged_two_blocks(f);
	assert_int_equal(at(&f->g, TDO_OP_ZERO, 2 * BLK, BLK, NULL, TDO_ZERO_NO_HOLE, 12, 2), 0);
	/* zeroing over data, too */
	assert_int_equal(at(&f->g, TDO_OP_ZERO, 0, BLK, NULL, TDO_ZERO_NO_HOLE, 13, 2), 0);
	expect_vol(f, 13, 2);
	EXPECT_SCAN(f, 0, { 0, 13, TDO_MAP_ZERO }, { 1, 11, 0 }, { 2, 12, TDO_MAP_ZERO });
	EXPECT_SCAN(f, 11, { 0, 13, TDO_MAP_ZERO }, { 2, 12, TDO_MAP_ZERO });
	expect_zeros(f, 0, BLK);
	expect_zeros(f, 2 * BLK, BLK);
	expect_read(f, BLK, BLK, content(CB));
	/* and still after a reopen */
	reopen(f);
	EXPECT_SCAN(f, 0, { 0, 13, TDO_MAP_ZERO }, { 1, 11, 0 }, { 2, 12, TDO_MAP_ZERO });
	/* the scan stops when its callback says so, and returns what it said */
	memset(&hs, 0, sizeof hs);
	hs.stop_after = 2;
	assert_int_equal(tdo_engine_scan(f->g.e, f->g.vol, 0, scan_cb, &hs), 99);
	assert_int_equal(hs.n, 2);
}

static void test_tagged_zero_allowing_holes_leaves_scan(void **state)
{
	struct fx *f = *state;

	open_with_volume(f);
	tagged_two_blocks(f);
	/* without NO_HOLE a zeroed block becomes a hole: no LSN, not scanned */
	assert_int_equal(at(&f->g, TDO_OP_ZERO, BLK, BLK, NULL, 0, 12, 2), 0);
	expect_vol(f, 12, 2);
	EXPECT_SCAN(f, 0, { 0, 10, 0 });
	expect_zeros(f, BLK, BLK);
}

static void test_tagged_trim_leaves_scan(void **state)
{
	struct fx *f = *state;

	open_with_volume(f);
	tagged_two_blocks(f);
	assert_int_equal(at(&f->g, TDO_OP_TRIM, BLK, BLK, NULL, 0, 12, 3), 0);
	expect_vol(f, 12, 3);
	EXPECT_SCAN(f, 0, { 0, 10, 0 });
	EXPECT_SCAN_EMPTY(f, 10);
	expect_zeros(f, BLK, BLK);
	expect_read(f, 0, BLK, content(CA));
	reopen(f);
	expect_vol(f, 12, 3);
	EXPECT_SCAN(f, 0, { 0, 10, 0 });
	expect_zeros(f, BLK, BLK);
}

static int scen_trim(struct eng *g, unsigned how)
{
	int r;

	(void)how;
	if ((r = scen_two_blocks(g, 0)) ||
	    (r = at(g, TDO_OP_ZERO, 2 * BLK, BLK, NULL, TDO_ZERO_NO_HOLE, 12, 2)) ||
	    (r = at(g, TDO_OP_TRIM, BLK, BLK, NULL, 0, 13, 3)))
		return r;
	return 0;
}

static void test_tagged_zero_and_trim_survive_replay(void **state)
{
	struct fx *f = *state;

	run_and_crash(f->path, scen_trim, 0);
	open_after_crash(f);
	expect_vol(f, 13, 3);
	EXPECT_SCAN(f, 0, { 0, 10, 0 }, { 2, 12, TDO_MAP_ZERO });
	expect_zeros(f, BLK, 2 * BLK);
	expect_read(f, 0, BLK, content(CA));
}

static void test_tagged_multi_block_and_partial(void **state)
{
	struct fx *f = *state;
	static uint8_t three[3 * BLK] __attribute__((aligned(4096)));
	static uint8_t want[BLK];
	const uint8_t *sector = content(CD);

	memcpy(three, content(CA), BLK);
	memcpy(three + BLK, content(CB), BLK);
	memcpy(three + 2 * BLK, content(CC), BLK);
	open_with_volume(f);
	/* one request, three records: every block carries the request's LSN */
	assert_int_equal(at(&f->g, TDO_OP_WRITE, 10 * BLK, 3 * BLK, three, 0, 20, 2), 0);
	/* a partial block is read, merged and written whole, at the given LSN */
	assert_int_equal(at(&f->g, TDO_OP_WRITE, 11 * BLK + 1024, 512, sector, 0, 21, 2), 0);
	expect_vol(f, 21, 2);
	EXPECT_SCAN(f, 0, { 10, 20, 0 }, { 11, 21, 0 }, { 12, 20, 0 });
	EXPECT_SCAN(f, 20, { 11, 21, 0 });
	memcpy(want, content(CB), BLK);
	memcpy(want + 1024, sector, 512);
	expect_read(f, 11 * BLK, BLK, want);
	expect_read(f, 10 * BLK, BLK, content(CA));
	expect_read(f, 12 * BLK, BLK, content(CC));
}

static void test_tagged_lower_lsn_keeps_volume_lsn(void **state)
{
	struct fx *f = *state;

	open_with_volume(f);
	assert_int_equal(at(&f->g, TDO_OP_WRITE, 0, BLK, content(CA), 0, 40, 3), 0);
	/* a resync copy: older LSN and epoch, the volume's stay */
	assert_int_equal(at(&f->g, TDO_OP_WRITE, BLK, BLK, content(CB), 0, 35, 2), 0);
	expect_vol(f, 40, 3);
	EXPECT_SCAN(f, 0, { 0, 40, 0 }, { 1, 35, 0 });
	reopen(f);
	expect_vol(f, 40, 3);
	EXPECT_SCAN(f, 0, { 0, 40, 0 }, { 1, 35, 0 });
}

static void test_untagged_write_continues_after_tagged(void **state)
{
	struct fx *f = *state;

	open_with_volume(f);
	tagged_two_blocks(f);
	assert_int_equal(wr(&f->g, 3 * BLK, BLK, content(CC)), 0);
	expect_vol(f, 12, 2);
	EXPECT_SCAN(f, 11, { 3, 12, 0 });
}

/*
 * The volume's LSN and epoch follow a write whose LSN is not lower, so one
 * with the same LSN and a newer epoch (a new primary's version of that
 * LSN) moves the epoch. That must hold after a replay as after a clean
 * close, or the volume reports an epoch it has left behind.
 */
static int scen_same_lsn_new_epoch(struct eng *g, unsigned how)
{
	int r;

	(void)how;
	if ((r = create(g)) ||
	    (r = at(g, TDO_OP_WRITE, 0, BLK, content(CA), 0, 100, 2)) ||
	    (r = at(g, TDO_OP_WRITE, 0, BLK, content(CB), 0, 100, 3)))
		return r;
	return 0;
}

static void test_same_lsn_newer_epoch_live_and_close(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(scen_same_lsn_new_epoch(&f->g, 0), 0);
	expect_vol(f, 100, 3);
	reopen(f);
	expect_vol(f, 100, 3);
	expect_read(f, 0, BLK, content(CB));
}

static void test_same_lsn_newer_epoch_replay(void **state)
{
	struct fx *f = *state;

	run_and_crash(f->path, scen_same_lsn_new_epoch, 0);
	open_after_crash(f);
	expect_read(f, 0, BLK, content(CB));
	expect_vol(f, 100, 3);
}

/* ---- case 2: log order wins over LSN ------------------------------------- */

static void test_rollback_live(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(do_rollback(&f->g, 0), 0);
	expect_rolled_back(f);
}

static void test_rollback_live_same_batch(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(do_rollback(&f->g, ROLL_SAME_BATCH), 0);
	expect_rolled_back(f);
}

static void test_rollback_survives_close(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(do_rollback(&f->g, 0), 0);
	reopen(f);
	assert_int_equal(replayed(f), 0);
	expect_rolled_back(f);
}

static void test_rollback_survives_close_ckpt_between(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(do_rollback(&f->g, ROLL_CKPT_BETWEEN), 0);
	reopen(f);
	expect_rolled_back(f);
}

static void test_rollback_survives_replay(void **state)
{
	struct fx *f = *state;

	/* replay applies A then B */
	run_and_crash(f->path, do_rollback, 0);
	open_after_crash(f);
	expect_rolled_back(f);
}

static void test_rollback_survives_replay_ckpt_between(void **state)
{
	struct fx *f = *state;

	/* A comes from the checkpoint, replay applies B over it */
	run_and_crash(f->path, do_rollback, ROLL_CKPT_BETWEEN);
	open_after_crash(f);
	expect_rolled_back(f);
}

static void test_rollback_survives_replay_same_batch(void **state)
{
	struct fx *f = *state;

	run_and_crash(f->path, do_rollback, ROLL_SAME_BATCH);
	open_after_crash(f);
	expect_rolled_back(f);
}

/* ---- case 3: tdo_vol_set_lsn lowers -------------------------------------- */

#define SET_LSN   60
#define SET_EPOCH 3
#define NEW_BLOCK 7

/* after set_lsn(60, 3): the next untagged write is LSN 61, epoch 3 */
static void write_after_set(struct fx *f)
{
	assert_int_equal(wr(&f->g, NEW_BLOCK * BLK, BLK, content(CC)), 0);
}

static void expect_written_after_set(struct fx *f)
{
	expect_vol(f, SET_LSN + 1, SET_EPOCH);
	EXPECT_SCAN(f, SET_LSN, { NEW_BLOCK, SET_LSN + 1, 0 });
	EXPECT_SCAN(f, 0, { ROLL_BLOCK, ROLL_LO, 0 }, { NEW_BLOCK, SET_LSN + 1, 0 });
	expect_read(f, NEW_BLOCK * BLK, BLK, content(CC));
	expect_read(f, ROLL_BLOCK * BLK, BLK, content(CB));
}

static void test_set_lsn_lowers_live(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(do_rollback(&f->g, 0), 0);
	assert_int_equal(set_lsn(&f->g, SET_LSN, SET_EPOCH), 0);
	expect_vol(f, SET_LSN, SET_EPOCH);
	/* the blocks keep their own LSNs */
	EXPECT_SCAN(f, 0, { ROLL_BLOCK, ROLL_LO, 0 });
	write_after_set(f);
	expect_written_after_set(f);
}

static void test_set_lsn_survives_close(void **state)
{
	struct fx *f = *state;

	eng_open(f);
	assert_int_equal(do_rollback(&f->g, 0), 0);
	assert_int_equal(set_lsn(&f->g, SET_LSN, SET_EPOCH), 0);
	reopen(f);
	expect_vol(f, SET_LSN, SET_EPOCH);
	write_after_set(f);
	expect_written_after_set(f);
	reopen(f);
	expect_written_after_set(f);
}

/* How the replay scenario ends. */
enum {
	SET_CKPT_BEFORE = 1,    /* checkpoint after the writes, before set_lsn */
	SET_CKPT_AFTER  = 2,    /* checkpoint after set_lsn */
	SET_THEN_WRITE  = 4,    /* an untagged write after set_lsn */
};

static int scen_set_lsn(struct eng *g, unsigned how)
{
	int r;

	if ((r = do_rollback(g, 0)))
		return r;
	if ((how & SET_CKPT_BEFORE) && (r = checkpoint(g)))
		return r;
	if ((r = set_lsn(g, SET_LSN, SET_EPOCH)))
		return r;
	if ((how & SET_CKPT_AFTER) && (r = checkpoint(g)))
		return r;
	if ((how & SET_THEN_WRITE) && (r = wr(g, NEW_BLOCK * BLK, BLK, content(CC))))
		return r;
	return 0;
}

static void set_lsn_replay(struct fx *f, unsigned how)
{
	run_and_crash(f->path, scen_set_lsn, how);
	eng_open(f);
	if (!(how & SET_CKPT_AFTER) || (how & SET_THEN_WRITE))
		assert_true(replayed(f) >= 1);
	if (how & SET_THEN_WRITE) {
		expect_written_after_set(f);
		return;
	}
	expect_vol(f, SET_LSN, SET_EPOCH);
	EXPECT_SCAN(f, 0, { ROLL_BLOCK, ROLL_LO, 0 });
	write_after_set(f);
	expect_written_after_set(f);
}

static void test_set_lsn_survives_replay(void **state)
{
	set_lsn_replay(*state, 0);
}

static void test_set_lsn_survives_replay_ckpt_before(void **state)
{
	/* the checkpoint says 100/2; replaying set_lsn's record lowers it */
	set_lsn_replay(*state, SET_CKPT_BEFORE);
}

static void test_set_lsn_survives_replay_ckpt_after(void **state)
{
	set_lsn_replay(*state, SET_CKPT_AFTER);
}

static void test_set_lsn_then_write_survives_replay(void **state)
{
	set_lsn_replay(*state, SET_THEN_WRITE);
}

static void test_set_lsn_then_write_survives_replay_ckpt_before(void **state)
{
	set_lsn_replay(*state, SET_CKPT_BEFORE | SET_THEN_WRITE);
}

static void test_set_lsn_busy_while_writing(void **state)
{
	struct fx *f = *state;
	/* static: should set_lsn be wrongly accepted, its late callback must
	 * not land on a dead stack frame */
	static struct done dw, ds;

	open_with_volume(f);
	tagged_two_blocks(f);
	memset(&dw, 0, sizeof dw);
	memset(&ds, 0, sizeof ds);
	assert_int_equal(tdo_engine_write(f->g.e, f->g.vol, 4 * BLK, BLK, content(CC), done_cb, &dw), 0);
	assert_int_equal(tdo_vol_set_lsn(f->g.e, VOL_NAME, 5, 5, done_cb, &ds), -EBUSY);
	assert_int_equal(run_until(&f->loop, &dw), 0);
	assert_int_equal(ds.called, 0);
	expect_vol(f, 12, 2);
	/* once the write is done it goes through */
	assert_int_equal(set_lsn(&f->g, 5, 5), 0);
	expect_vol(f, 5, 5);
}

/* ---- case 4: arguments --------------------------------------------------- */

static void test_submit_at_rejects_bad_arguments(void **state)
{
	struct fx *f = *state;
	/* static: should a call be wrongly accepted, its late callback must
	 * not land on a dead stack frame */
	static struct done d;
	struct tdo_engine *e;
	uint32_t vol;
	const uint8_t *buf = content(CA);

	open_with_volume(f);
	e = f->g.e;
	vol = f->g.vol;
	memset(&d, 0, sizeof d);
	for (int op = TDO_OP_WRITE; op <= TDO_OP_TRIM; op++) {
		const void *b = op == TDO_OP_WRITE ? buf : NULL;

		assert_int_equal(tdo_engine_submit_at(e, op, vol, 0, BLK, b, 0, 0, 2, done_cb, &d), -EINVAL);
		assert_int_equal(tdo_engine_submit_at(e, op, vol, 0, BLK, b, 0, 10, 0, done_cb, &d), -EINVAL);
		assert_int_equal(tdo_engine_submit_at(e, op, vol, 0, BLK, b, 0, LSN_LIMIT, 2, done_cb, &d),
		                 -EINVAL);
		/* the usual range checks */
		assert_int_equal(tdo_engine_submit_at(e, op, vol, VOL_SIZE, BLK, b, 0, 10, 2, done_cb, &d),
		                 -EINVAL);
		assert_int_equal(tdo_engine_submit_at(e, op, vol, 100, BLK, b, 0, 10, 2, done_cb, &d), -EINVAL);
		assert_int_equal(tdo_engine_submit_at(e, op, vol, 0, 0, b, 0, 10, 2, done_cb, &d), -EINVAL);
		assert_int_equal(tdo_engine_submit_at(e, op, vol + 100, 0, BLK, b, 0, 10, 2, done_cb, &d),
		                 TDO_ENOVOL);
	}
	assert_int_equal(tdo_engine_submit_at(e, 0, vol, 0, BLK, buf, 0, 10, 2, done_cb, &d), -EINVAL);
	assert_int_equal(tdo_engine_submit_at(e, 4, vol, 0, BLK, buf, 0, 10, 2, done_cb, &d), -EINVAL);
	assert_int_equal(tdo_engine_submit_at(e, -1, vol, 0, BLK, buf, 0, 10, 2, done_cb, &d), -EINVAL);
	/* flags: only a zero's NO_HOLE */
	assert_int_equal(tdo_engine_submit_at(e, TDO_OP_WRITE, vol, 0, BLK, buf, TDO_ZERO_NO_HOLE, 10, 2,
	                                      done_cb, &d), -EINVAL);
	assert_int_equal(tdo_engine_submit_at(e, TDO_OP_TRIM, vol, 0, BLK, NULL, TDO_ZERO_NO_HOLE, 10, 2,
	                                      done_cb, &d), -EINVAL);
	assert_int_equal(tdo_engine_submit_at(e, TDO_OP_ZERO, vol, 0, BLK, NULL, 2, 10, 2, done_cb, &d),
	                 -EINVAL);
	assert_int_equal(tdo_engine_submit_at(e, TDO_OP_WRITE, vol, 0, BLK, NULL, 0, 10, 2, done_cb, &d),
	                 -EINVAL);
	assert_int_equal(tdo_engine_submit_at(e, TDO_OP_WRITE, vol, 0, 1ull << 32, buf, 0, 10, 2,
	                                      done_cb, &d), -EINVAL);
	for (int i = 0; i < 5; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(d.called, 0);
	/* nothing changed, and the largest LSN is fine */
	expect_vol(f, 0, 1);
	EXPECT_SCAN_EMPTY(f, 0);
	assert_int_equal(at(&f->g, TDO_OP_WRITE, 0, BLK, buf, 0, LSN_LIMIT - 1, 1), 0);
	expect_vol(f, LSN_LIMIT - 1, 1);
	EXPECT_SCAN(f, 0, { 0, LSN_LIMIT - 1, 0 });
}

static void test_set_lsn_rejects_bad_arguments(void **state)
{
	struct fx *f = *state;
	static struct done d;

	open_with_volume(f);
	tagged_two_blocks(f);
	memset(&d, 0, sizeof d);
	assert_int_equal(tdo_vol_set_lsn(f->g.e, "nosuch", 5, 2, done_cb, &d), TDO_ENOVOL);
	assert_int_equal(tdo_vol_set_lsn(f->g.e, NULL, 5, 2, done_cb, &d), TDO_ENOVOL);
	assert_int_equal(tdo_vol_set_lsn(f->g.e, VOL_NAME, 5, 0, done_cb, &d), -EINVAL);
	assert_int_equal(tdo_vol_set_lsn(f->g.e, VOL_NAME, LSN_LIMIT, 2, done_cb, &d), -EINVAL);
	for (int i = 0; i < 5; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(d.called, 0);
	expect_vol(f, 11, 2);
}

static void test_scan_unknown_volume(void **state)
{
	struct fx *f = *state;
	struct hits hs;

	open_with_volume(f);
	tagged_two_blocks(f);
	memset(&hs, 0, sizeof hs);
	assert_int_equal(tdo_engine_scan(f->g.e, f->g.vol + 100, 0, scan_cb, &hs), TDO_ENOVOL);
	assert_int_equal(hs.n, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_tagged_writes_set_lsn_and_scan),
		T(test_tagged_writes_survive_close),
		T(test_tagged_writes_survive_replay),
		T(test_tagged_zero_in_scan_as_zero),
		T(test_tagged_zero_allowing_holes_leaves_scan),
		T(test_tagged_trim_leaves_scan),
		T(test_tagged_zero_and_trim_survive_replay),
		T(test_tagged_multi_block_and_partial),
		T(test_tagged_lower_lsn_keeps_volume_lsn),
		T(test_untagged_write_continues_after_tagged),
		T(test_same_lsn_newer_epoch_live_and_close),
		T(test_same_lsn_newer_epoch_replay),

		T(test_rollback_live),
		T(test_rollback_live_same_batch),
		T(test_rollback_survives_close),
		T(test_rollback_survives_close_ckpt_between),
		T(test_rollback_survives_replay),
		T(test_rollback_survives_replay_ckpt_between),
		T(test_rollback_survives_replay_same_batch),

		T(test_set_lsn_lowers_live),
		T(test_set_lsn_survives_close),
		T(test_set_lsn_survives_replay),
		T(test_set_lsn_survives_replay_ckpt_before),
		T(test_set_lsn_survives_replay_ckpt_after),
		T(test_set_lsn_then_write_survives_replay),
		T(test_set_lsn_then_write_survives_replay_ckpt_before),
		T(test_set_lsn_busy_while_writing),

		T(test_submit_at_rejects_bad_arguments),
		T(test_set_lsn_rejects_bad_arguments),
		T(test_scan_unknown_volume),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
