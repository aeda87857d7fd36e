/* SPDX-License-Identifier: Apache-2.0 */
/*
 * torture: the engine's crash, power-cut, corruption and cleaner tests.
 *
 *   torture crash    --dev F [--iterations N] [--seed S] [--backend pmem]
 *   torture powercut --dev F [--iterations N] [--seed S] [--backend pmem]
 *   torture corrupt  --dev F [--backend pmem]
 *   torture midcut   --dev F [--backend pmem]
 *   torture cleaner  --dev F [--util PCT] [--overwrite X] [--greedy] [--backend pmem]
 *
 * crash/powercut: each iteration forks a child that writes random data
 * (512-byte to 64 KiB, mostly 4 KiB aligned, some trims) through the engine
 * at queue depth 16, journalling every write before it is submitted and
 * again once acknowledged. The child is SIGKILLed at a random moment
 * (crash) or cuts its own power at a random device operation, throwing away
 * a random part of what was not yet durable (powercut, see device.c). The
 * parent reopens the device and checks every 512-byte sector: it holds the
 * newest acknowledged write that covers it, or a write that was in flight,
 * never anything older; and every 4 KiB block written whole holds one
 * write's content, not a mix.
 *
 * midcut: a child makes 40 acknowledged 64 KiB writes, one batch each,
 * and exits without closing, so they all sit in the log after the
 * checkpoint. Then, each time from that image, the header of one batch is
 * damaged: one inside a segment (its magic), one that starts a segment (a
 * record header, so the area's checksum fails), both with later batches
 * after them: testudo check must exit 1 naming the segment and offset,
 * the engine's open must fail with TDO_ELOGDAMAGED, and neither may change
 * the device file. Last the newest batch's header, then its payload (a
 * torn tail): open cuts it and every write before it reads back.
 *
 * Every sector written carries a stamp (write id, sector number) followed
 * by bytes derived from both, so any sector names the write it came from.
 *
 * Debugging: TDO_LOG_INFO=1 shows recovery's log lines; TDO_DEBUG_COPY=1
 * keeps a copy of the device as the crash left it (FILE.pre) and stops at
 * the first failed iteration, so the image can be examined.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testudo/engine.h"
#include "testudo/util.h"

#define VOL_NAME "torture"
#define SECT 512u
#define QD 16
#define MAXW (64u << 10)

static const char *dev_path;
static int backend = TDO_BACKEND_FILE;
static uint64_t vol_size = 48ull << 20;
static int cleaner_policy = TDO_CLEAN_COST_BENEFIT;

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* The content write ID puts into sector SEC. */
static void fill_sector(uint8_t *p, uint64_t id, uint64_t sec)
{
	uint64_t s = id * 0x9e3779b97f4a7c15ull ^ (sec + 1) * 0xbf58476d1ce4e5b9ull;

	memcpy(p, &id, 8);
	memcpy(p + 8, &sec, 8);
	for (unsigned i = 16; i < SECT; i += 8) {
		uint64_t v = rng_next(&s);
		memcpy(p + i, &v, 8);
	}
}

static bool sector_is(const uint8_t *p, uint64_t id, uint64_t sec)
{
	uint8_t want[SECT];

	fill_sector(want, id, sec);
	return memcmp(p, want, SECT) == 0;
}

static bool is_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* ---- running the engine synchronously ---------------------------------- */

struct sync_ctx {
	int done, status;
};

static void sync_cb(void *arg, int status)
{
	struct sync_ctx *c = arg;
	c->status = status;
	c->done = 1;
}

static int run_until(uv_loop_t *loop, struct sync_ctx *c)
{
	while (!c->done)
		uv_run(loop, UV_RUN_ONCE);
	return c->status;
}

static int eng_open(uv_loop_t *loop, struct tdo_engine **e, struct tdo_open_opts *o)
{
	int err;

	struct tdo_open_opts def = { 0 };

	if (!o)
		o = &def;
	o->cleaner = cleaner_policy;
	uv_loop_init(loop);
	err = tdo_engine_open(loop, dev_path, o, e);
	if (err)
		fprintf(stderr, "torture: open %s: %s\n", dev_path, tdo_strerror(err));
	return err;
}

static int eng_close(uv_loop_t *loop, struct tdo_engine *e)
{
	struct sync_ctx c = { 0 };
	int err = tdo_engine_close(e, sync_cb, &c);

	if (!err)
		err = run_until(loop, &c);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	return err;
}

static int read_volume(struct tdo_engine *e, uv_loop_t *loop, uint32_t vol, uint8_t *buf, uint64_t size)
{
	for (uint64_t off = 0; off < size; off += 1u << 20) {
		struct sync_ctx c = { 0 };
		uint32_t n = size - off < (1u << 20) ? (uint32_t)(size - off) : 1u << 20;
		int err = tdo_engine_read(e, vol, off, n, buf + off, sync_cb, &c);
		if (!err)
			err = run_until(loop, &c);
		if (err)
			return err;
	}
	return 0;
}

static int setup_device(uint64_t dev_size, uint64_t vsize)
{
	struct tdo_format_opts fo = { 0 };
	struct tdo_engine *e;
	uv_loop_t loop;
	struct sync_ctx c = { 0 };
	int err;

	{
		struct stat bst;
		/* a block device has its own size */
		fo.size = stat(dev_path, &bst) == 0 && S_ISBLK(bst.st_mode) ? 0 : dev_size;
	}
	fo.seg_size = 1u << 20;
	fo.backend = backend;
	fo.force = 1;
	err = tdo_format(dev_path, &fo);
	if (err) {
		fprintf(stderr, "torture: format %s: %s\n", dev_path, tdo_strerror(err));
		return err;
	}
	if ((err = eng_open(&loop, &e, NULL)))
		return err;
	err = tdo_vol_create(e, VOL_NAME, vsize, 0, sync_cb, &c);
	if (!err)
		err = run_until(&loop, &c);
	if (err)
		fprintf(stderr, "torture: volume create: %s\n", tdo_strerror(err));
	eng_close(&loop, e);
	return err;
}

/* ---- the child: writes until it dies ------------------------------------ */

struct jrec {
	uint64_t id;
	uint64_t off;
	uint32_t len;
	uint8_t ack;                /* 0 issued, 1 acknowledged */
	uint8_t trim;
	uint8_t pad[2];
};

struct slot {
	struct jrec r;
	uint8_t *buf;
};

struct child {
	uv_loop_t loop;
	struct tdo_engine *e;
	uint32_t vol;
	int jfd;
	uint64_t rng, next_id;
	struct slot slots[QD];
};

static void jwrite(struct child *c, const struct jrec *r)
{
	if (write(c->jfd, r, sizeof *r) != sizeof *r)
		_exit(3);
}

static void child_issue(struct child *c, struct slot *s);

static void child_done(void *arg, int status)
{
	struct slot *s = arg;
	struct child *c = *(struct child **)(s->buf + MAXW); /* stashed past the data */

	if (status) {
		fprintf(stderr, "torture child: write failed: %s\n", tdo_strerror(status));
		_exit(4);
	}
	s->r.ack = 1;
	jwrite(c, &s->r);
	child_issue(c, s);
}

static void child_issue(struct child *c, struct slot *s)
{
	uint64_t r = rng_next(&c->rng);
	uint64_t nsect = vol_size / SECT;
	uint32_t len;
	uint64_t off;
	int err;

	if (r % 10 < 7) {
		/* 4 KiB aligned, 1..16 blocks */
		len = (uint32_t)((rng_next(&c->rng) % 16 + 1) * 4096);
		off = rng_next(&c->rng) % (vol_size / 4096) * 4096;
	} else {
		len = (uint32_t)((rng_next(&c->rng) % (MAXW / SECT) + 1) * SECT);
		off = rng_next(&c->rng) % nsect * SECT;
	}
	if (off + len > vol_size)
		off = vol_size - len;
	s->r.id = ++c->next_id;
	s->r.off = off;
	s->r.len = len;
	s->r.ack = 0;
	s->r.trim = r % 20 == 19;
	for (uint32_t i = 0; i < len; i += SECT)
		fill_sector(s->buf + i, s->r.id, (off + i) / SECT);
	jwrite(c, &s->r);
	if (s->r.trim)
		err = tdo_engine_trim(c->e, c->vol, off, len, child_done, s);
	else
		err = tdo_engine_write(c->e, c->vol, off, len, s->buf, child_done, s);
	if (err) {
		fprintf(stderr, "torture child: submit: %s\n", tdo_strerror(err));
		_exit(5);
	}
}

static void child_main(const char *journal, uint64_t seed, uint64_t first_id)
{
	static struct child c;
	struct tdo_vol_info vi;

	c.rng = seed | 1;
	c.next_id = first_id;
	c.jfd = open(journal, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	if (c.jfd < 0)
		_exit(2);
	if (eng_open(&c.loop, &c.e, NULL))
		_exit(2);
	if (tdo_vol_lookup(c.e, VOL_NAME, &vi))
		_exit(2);
	c.vol = vi.id;
	for (int i = 0; i < QD; i++) {
		c.slots[i].buf = aligned_alloc(4096, MAXW + 4096);
		*(struct child **)(c.slots[i].buf + MAXW) = &c;
		child_issue(&c, &c.slots[i]);
	}
	uv_run(&c.loop, UV_RUN_DEFAULT);
	_exit(6);
}

/* ---- the verifier -------------------------------------------------------- */

struct cand {
	uint64_t id;                /* 0: the baseline content */
	bool trim;
};

static int verify(const char *journal, uint8_t *base, uint64_t *max_id, bool quiet)
{
	uint64_t nsect = vol_size / SECT;
	struct jrec *recs = NULL;
	size_t n = 0, cap = 0;
	uint64_t *acked;            /* per sector: index+1 of the newest acked write */
	uint8_t *cur;
	struct tdo_engine *e;
	struct tdo_vol_info vi;
	uv_loop_t loop;
	FILE *f = fopen(journal, "rb");
	struct jrec r;
	uint64_t bad = 0, checked_acked = 0;
	int err;

	if (!f)
		return -errno;
	while (fread(&r, sizeof r, 1, f) == 1) {
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			recs = realloc(recs, cap * sizeof *recs);
		}
		recs[n++] = r;
		if (r.id > *max_id)
			*max_id = r.id;
	}
	fclose(f);

	/* issue order = id order; mark which ids were acknowledged */
	acked = calloc(nsect, sizeof *acked);
	{
		/* ids are dense from first issue; map id -> issue index */
		uint64_t first = n ? recs[0].id : 0;
		uint64_t span = n ? *max_id - first + 1 : 0;
		int64_t *issue = malloc((span + 1) * sizeof *issue);
		bool *ack = calloc(span + 1, 1);
		for (uint64_t i = 0; i <= span; i++)
			issue[i] = -1;
		for (size_t i = 0; i < n; i++) {
			if (recs[i].ack)
				ack[recs[i].id - first] = true;
			else
				issue[recs[i].id - first] = (int64_t)i;
		}
		/* newest acked write per sector, in issue (= id) order */
		for (uint64_t id = 0; id < span; id++) {
			struct jrec *w;
			if (issue[id] < 0 || !ack[id])
				continue;
			w = &recs[issue[id]];
			for (uint64_t s = w->off / SECT; s < (w->off + w->len) / SECT; s++)
				acked[s] = (uint64_t)issue[id] + 1;
			checked_acked++;
		}

		if ((err = eng_open(&loop, &e, NULL))) {
			uv_loop_close(&loop);
			free(issue);
			free(ack);
			free(acked);
			free(recs);
			return err;
		}
		tdo_vol_lookup(e, VOL_NAME, &vi);
		cur = aligned_alloc(4096, vol_size);
		err = read_volume(e, &loop, vi.id, cur, vol_size);
		if (err) {
			fprintf(stderr, "torture: reading the volume back: %s\n", tdo_strerror(err));
			eng_close(&loop, e);
			free(cur);
			free(issue);
			free(ack);
			free(acked);
			free(recs);
			return err;
		}
		for (uint64_t s = 0; s < nsect; s++) {
			const uint8_t *p = cur + s * SECT;
			uint64_t a = acked[s];
			uint64_t newest_id = a ? recs[a - 1].id : 0;
			bool ok = false;

			/* the newest acknowledged write, or the baseline */
			if (a) {
				ok = recs[a - 1].trim ? is_zero(p, SECT) : sector_is(p, newest_id, s);
			} else {
				ok = memcmp(p, base + s * SECT, SECT) == 0;
			}
			/* or any write issued after it that was in flight */
			for (uint64_t id = newest_id ? newest_id - first + 1 : 0; !ok && id < span; id++) {
				struct jrec *w;
				if (issue[id] < 0 || ack[id])
					continue;
				w = &recs[issue[id]];
				if (s < w->off / SECT || s >= (w->off + w->len) / SECT)
					continue;
				ok = w->trim ? is_zero(p, SECT) : sector_is(p, w->id, s);
			}
			if (!ok) {
				if (bad < 10 && !quiet) {
					uint64_t got_id, got_sec;
					memcpy(&got_id, p, 8);
					memcpy(&got_sec, p + 8, 8);
					fprintf(stderr, "torture: LOST sector %" PRIu64 " (offset %" PRIu64 "): newest acked write %" PRIu64
					        ", device holds stamp id %" PRIu64 " sector %" PRIu64 "\n",
					        s, s * SECT, newest_id, got_id, got_sec);
				}
				bad++;
			}
		}
		/* whole 4 KiB blocks written whole by every candidate: one version */
		for (uint64_t b = 0; b < vol_size / 4096; b++) {
			uint64_t id0;
			const uint8_t *p = cur + b * 4096;
			memcpy(&id0, p, 8);
			if (is_zero(p, SECT))
				continue;
			for (int k = 1; k < 8; k++) {
				uint64_t idk;
				memcpy(&idk, p + k * SECT, 8);
				if (idk != id0) {
					/* mixed: legal only if some write covering it was partial */
					bool partial = false;
					for (size_t i = 0; i < n && !partial; i++) {
						struct jrec *w = &recs[i];
						if (w->ack || w->off >= (b + 1) * 4096 || w->off + w->len <= b * 4096)
							continue;
						if (w->off % 4096 || w->len % 4096)
							partial = true;
					}
					if (!partial && memcmp(p, base + b * 4096, 4096) != 0) {
						if (!quiet)
							fprintf(stderr, "torture: TORN block %" PRIu64 ": sectors from writes %" PRIu64 " and %" PRIu64 "\n",
							        b, id0, idk);
						bad++;
					}
					break;
				}
			}
		}
		eng_close(&loop, e);
		free(issue);
		free(ack);
	}
	memcpy(base, cur, vol_size);
	free(cur);
	free(acked);
	free(recs);
	if (!quiet)
		printf("  verified %" PRIu64 " sectors, %" PRIu64 " acknowledged writes: %s\n", nsect,
		       checked_acked, bad ? "LOST DATA" : "ok");
	return bad ? 1 : 0;
}

static int run_kill(bool powercut, int iterations, uint64_t seed)
{
	char journal[4096];
	uint8_t *base = aligned_alloc(4096, vol_size);
	uint64_t max_id = 0, rng = seed | 1;
	int failures = 0;

	snprintf(journal, sizeof journal, "%s.journal", dev_path);
	if (setup_device(vol_size * 2 + (16u << 20), vol_size))
		return 1;
	memset(base, 0, vol_size);
	for (int it = 0; it < iterations; it++) {
		uint64_t r = rng_next(&rng);
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			if (powercut) {
				char env[64];
				snprintf(env, sizeof env, "%" PRIu64 ":%" PRIu64, 20 + r % 600, r >> 20);
				setenv("TDO_FAULT_POWERCUT", env, 1);
			}
			child_main(journal, r, max_id + 1000000);
		}
		if (!powercut) {
			struct timespec ts = { 0, (long)((50 + r % 700) * 1000000) };
			nanosleep(&ts, NULL);
			kill(pid, SIGKILL);
		}
		waitpid(pid, &st, 0);
		if (powercut && !(WIFEXITED(st) && WEXITSTATUS(st) == 99)) {
			fprintf(stderr, "torture: child did not cut power (status %d)\n", st);
			failures++;
			continue;
		}
		if (!powercut && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
			fprintf(stderr, "torture: child ended on its own (status %d)\n", st);
			failures++;
			continue;
		}
		if (getenv("TDO_DEBUG_COPY")) {
			char cmd[8192];
			snprintf(cmd, sizeof cmd, "cp --sparse=always '%s' '%s.pre'", dev_path, dev_path);
			if (system(cmd) != 0)
				return 1;
		}
		printf("iteration %d/%d (%s)\n", it + 1, iterations, powercut ? "power cut" : "SIGKILL");
		fflush(stdout);
		if (verify(journal, base, &max_id, false)) {
			failures++;
			if (getenv("TDO_DEBUG_COPY"))
				return 1;
		}
		max_id += 1000000;
	}
	unlink(journal);
	free(base);
	printf("%s: %d iterations, %d failed\n", powercut ? "powercut" : "crash", iterations, failures);
	return failures ? 1 : 0;
}

/* ---- corruption --------------------------------------------------------- */

static int run_corrupt(void)
{
	struct tdo_engine *e;
	struct tdo_vol_info vi;
	uv_loop_t loop;
	uint8_t *buf;
	uint64_t targets[3] = { 5, 700, 2047 };  /* blocks to damage */
	uint64_t found[3] = { 0, 0, 0 };
	int failures = 0, fd;
	struct stat st;
	char cmd[8192];

	vol_size = 8ull << 20;
	if (setup_device(64ull << 20, vol_size))
		return 1;
	buf = aligned_alloc(4096, vol_size);
	for (uint64_t s = 0; s < vol_size / SECT; s++)
		fill_sector(buf + s * SECT, 7, s);
	if (eng_open(&loop, &e, NULL))
		return 1;
	tdo_vol_lookup(e, VOL_NAME, &vi);
	for (uint64_t off = 0; off < vol_size; off += 1u << 20) {
		struct sync_ctx c = { 0 };
		if (tdo_engine_write(e, vi.id, off, 1u << 20, buf + off, sync_cb, &c) || run_until(&loop, &c))
			return 1;
	}
	eng_close(&loop, e);

	/* find each target block's payload on the device by its stamp */
	fd = open(dev_path, O_RDWR);
	fstat(fd, &st);
	st.st_size = lseek(fd, 0, SEEK_END); /* block devices have no st_size */
	{
		uint8_t *img = malloc((size_t)st.st_size);
		if (pread(fd, img, (size_t)st.st_size, 0) != st.st_size)
			return 1;
		for (int t = 0; t < 3; t++) {
			uint8_t want[SECT];
			fill_sector(want, 7, targets[t] * 8 + 3);
			for (uint64_t o = 0; o + SECT <= (uint64_t)st.st_size; o += SECT)
				if (memcmp(img + o, want, SECT) == 0) {
					found[t] = o + 100;
					break;
				}
			if (!found[t]) {
				fprintf(stderr, "torture: block %" PRIu64 " not found on the device\n", targets[t]);
				return 1;
			}
			img[found[t]] ^= 0x5a;
			if (pwrite(fd, img + found[t], 1, (off_t)found[t]) != 1)
				return 1;
		}
		free(img);
	}
	close(fd);

	/* reads of exactly those blocks fail with -EIO, every other block reads back */
	if (eng_open(&loop, &e, NULL))
		return 1;
	for (uint64_t b = 0; b < vol_size / 4096; b++) {
		struct sync_ctx c = { 0 };
		uint8_t *blk = aligned_alloc(4096, 4096);
		bool target = b == targets[0] || b == targets[1] || b == targets[2];
		int err = tdo_engine_read(e, vi.id, b * 4096, 4096, blk, sync_cb, &c);
		if (!err)
			err = run_until(&loop, &c);
		if (target && err != -EIO) {
			fprintf(stderr, "torture: damaged block %" PRIu64 " read returned %d, want -EIO\n", b, err);
			failures++;
		}
		if (!target && (err || memcmp(blk, buf + b * 4096, 4096) != 0)) {
			fprintf(stderr, "torture: undamaged block %" PRIu64 " did not read back (%d)\n", b, err);
			failures++;
		}
		free(blk);
	}
	eng_close(&loop, e);

	/* testudo check reports them and exits 1 */
	snprintf(cmd, sizeof cmd, "%s/testudo check '%s' > '%s.check' 2>&1", getenv("BUILD") ? getenv("BUILD") : "build",
	         dev_path, dev_path);
	{
		int rc = system(cmd);
		char line[512];
		int lines = 0;
		FILE *f;
		snprintf(cmd, sizeof cmd, "%s.check", dev_path);
		f = fopen(cmd, "r");
		while (f && fgets(line, sizeof line, f)) {
			fputs("  check: ", stdout);
			fputs(line, stdout);
			for (int t = 0; t < 3; t++) {
				char pat[64];
				snprintf(pat, sizeof pat, "block %" PRIu64 ":", targets[t]);
				if (strstr(line, pat) && strstr(line, "damaged"))
					lines++;
			}
		}
		if (f)
			fclose(f);
		unlink(cmd);
		if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 1 || lines != 3) {
			fprintf(stderr, "torture: testudo check exit %d, named %d of 3 damaged blocks\n",
			        WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, lines);
			failures++;
		}
	}
	free(buf);
	printf("corrupt: 3 blocks damaged: %s\n", failures ? "FAILED" : "reads fail with EIO, check reports them, the rest intact");
	return failures ? 1 : 0;
}

/* ---- damage in the middle of the log ------------------------------------ */

#define MC_BATCHES 40
#define MC_WRITE   (64u << 10)  /* one synchronous write: one batch of 16 blocks */

struct mc_batch {
	uint64_t seq;
	uint32_t seg, off;
	uint32_t nrec;
	uint64_t blocks[16];        /* the blocks it holds (a write may be split at a segment's end) */
};

static int mc_cmp(const void *a, const void *b)
{
	const struct mc_batch *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The child: NB acknowledged writes, each its own batch, then exit without
 * closing, so that every batch sits in the log after the checkpoint. */
static void mc_child(void)
{
	uv_loop_t loop;
	struct tdo_engine *e;
	struct tdo_vol_info vi;
	uint8_t *buf = aligned_alloc(4096, MC_WRITE);

	if (eng_open(&loop, &e, NULL) || tdo_vol_lookup(e, VOL_NAME, &vi))
		_exit(2);
	for (uint64_t i = 0; i < MC_BATCHES; i++) {
		struct sync_ctx c = { 0 };
		for (uint32_t k = 0; k < MC_WRITE / SECT; k++)
			fill_sector(buf + k * SECT, i + 1, (i * MC_WRITE) / SECT + k);
		if (tdo_engine_write(e, vi.id, i * MC_WRITE, MC_WRITE, buf, sync_cb, &c) || run_until(&loop, &c))
			_exit(3);
	}
	_exit(0);
}

/* Read the image back whole into IMG (SIZE bytes). */
static int mc_read(int fd, uint8_t *img, size_t size)
{
	return pread(fd, img, size, 0) == (ssize_t)size ? 0 : -1;
}

static int mc_write(int fd, const uint8_t *img, size_t size)
{
	return pwrite(fd, img, size, 0) == (ssize_t)size && fsync(fd) == 0 ? 0 : -1;
}

/* How many blocks the writes covered do not hold what they wrote (those of
 * CUT, the batch cut off as a torn tail, must read as zeros instead). */
static uint64_t mc_lost(struct tdo_engine *e, uv_loop_t *loop, const struct mc_batch *cut)
{
	struct tdo_vol_info vi;
	uint8_t *cur = aligned_alloc(4096, vol_size);
	uint64_t lost = 0;

	tdo_vol_lookup(e, VOL_NAME, &vi);
	if (read_volume(e, loop, vi.id, cur, vol_size)) {
		free(cur);
		return UINT64_MAX;
	}
	for (uint64_t b = 0; b < (uint64_t)MC_BATCHES * MC_WRITE / 4096; b++) {
		bool in_cut = false;
		bool ok = true;

		for (uint32_t k = 0; cut && k < cut->nrec; k++)
			in_cut |= cut->blocks[k] == b;
		for (uint32_t k = 0; k < 4096 / SECT && ok; k++) {
			const uint8_t *p = cur + b * 4096 + k * SECT;
			ok = in_cut ? is_zero(p, SECT) : sector_is(p, b * 4096 / MC_WRITE + 1, b * 8 + k);
		}
		lost += !ok;
	}
	free(cur);
	return lost;
}

/* testudo check on the device: its exit status; its lines are shown, and
 * *NAMED is set when one of them names WANT. */
static int mc_check(const char *want, bool *named)
{
	char cmd[8192], line[1024];
	int rc;
	FILE *f;

	snprintf(cmd, sizeof cmd, "%s/testudo check '%s' > '%s.check' 2>&1", getenv("BUILD") ? getenv("BUILD") : "build",
	         dev_path, dev_path);
	rc = system(cmd);
	snprintf(cmd, sizeof cmd, "%s.check", dev_path);
	*named = false;
	f = fopen(cmd, "r");
	while (f && fgets(line, sizeof line, f)) {
		fputs("    check: ", stdout);
		fputs(line, stdout);
		if (strstr(line, want))
			*named = true;
	}
	if (f)
		fclose(f);
	unlink(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int run_midcut(void)
{
	struct mc_batch bs[MC_BATCHES + 8];
	struct tdo_sb sb;
	uint8_t *pristine, *img, *now;
	size_t size;
	int nb = 0, failures = 0, fd, st;
	int mid = -1, segstart = -1, last;
	pid_t pid;

	vol_size = 4ull << 20;
	if (setup_device(64ull << 20, vol_size))
		return 1;
	pid = fork();
	if (pid == 0)
		mc_child();
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "torture: midcut writer failed (status %d)\n", st);
		return 1;
	}

	/* find the batches on the device, through the format's structs */
	fd = open(dev_path, O_RDWR);
	size = (size_t)lseek(fd, 0, SEEK_END);
	pristine = malloc(size);
	img = malloc(size);
	now = malloc(size);
	if (fd < 0 || !pristine || !img || !now || mc_read(fd, pristine, size))
		return 1;
	memcpy(&sb, pristine, sizeof sb);
	for (uint32_t s = 0; s < sb.sb_seg_count; s++) {
		for (uint64_t off = 0; off + TDO_BLOCK_SIZE <= sb.sb_seg_size;) {
			const uint8_t *p = pristine + sb.sb_seg_start + s * sb.sb_seg_size + off;
			const struct tdo_batch_hdr *bh = (const void *)p;
			const struct tdo_rec_hdr *r = (const void *)(bh + 1);

			if (bh->bh_magic != TDO_BATCH_MAGIC || memcmp(bh->bh_uuid, sb.sb_uuid, 16) ||
			    bh->bh_len % TDO_BLOCK_SIZE || bh->bh_len == 0 || off + bh->bh_len > sb.sb_seg_size) {
				off += TDO_BLOCK_SIZE;
				continue;
			}
			if (r[0].rec_type == TDO_REC_DATA && bh->bh_nrec <= 16 && nb < MC_BATCHES + 8) {
				struct mc_batch *b = &bs[nb++];
				b->seq = bh->bh_seq;
				b->seg = s;
				b->off = (uint32_t)off;
				b->nrec = bh->bh_nrec;
				for (uint32_t k = 0; k < bh->bh_nrec; k++)
					b->blocks[k] = r[k].rec_block;
			}
			off += bh->bh_len;
		}
	}
	qsort(bs, (size_t)nb, sizeof *bs, mc_cmp);
	for (int i = 1; i < nb; i++)
		if (bs[i].seq != bs[i - 1].seq + 1) {
			fprintf(stderr, "torture: midcut: batches %" PRIu64 " and %" PRIu64 " are not consecutive\n",
			        bs[i - 1].seq, bs[i].seq);
			return 1;
		}
	last = nb - 1;
	/* the interesting cases must be there: a batch inside a segment and
	 * one that starts a segment, each with later batches in later segments */
	for (int i = 1; i < nb - 4; i++) {
		if (mid < 0 && i >= 4 && bs[i].off != 0 && bs[i].seg != bs[last].seg)
			mid = i;
		if (segstart < 0 && bs[i].off == 0 && bs[i].seg != bs[last].seg)
			segstart = i;
	}
	printf("  %d batches (seq %" PRIu64 "..%" PRIu64 "), in segments %u..%u\n", nb, bs[0].seq, bs[last].seq,
	       bs[0].seg, bs[last].seg);
	if (nb < MC_BATCHES || mid < 0 || segstart < 0) {
		fprintf(stderr, "torture: midcut: the log does not have the shape the test needs\n");
		return 1;
	}

	for (int c = 0; c < 4; c++) {
		int i = c == 0 ? mid : c == 1 ? segstart : last;
		const struct mc_batch *b = &bs[i];
		uint64_t at = sb.sb_seg_start + b->seg * sb.sb_seg_size + b->off;
		char want[64];
		bool named, changed;
		int rc, err;
		uv_loop_t loop;
		struct tdo_engine *e;

		memcpy(img, pristine, size);
		if (c == 0) {
			/* the magic: not a batch header any more */
			img[at] ^= 0xff;
		} else if (c < 3) {
			/* a record header: the header area's checksum fails */
			img[at + sizeof(struct tdo_batch_hdr) + 8] ^= 0xff;
		} else {
			/* a payload (the header area is one page here): the
			 * header checks out, the batch is torn after it */
			img[at + TDO_BLOCK_SIZE + 100] ^= 0xff;
		}
		snprintf(want, sizeof want, "segment %u offset %u", b->seg, b->off);
		printf("  %s: batch %" PRIu64 " at %s damaged, %d later batches\n",
		       c == 0 ? "inside a segment" : c == 1 ? "starting a segment" :
		       c == 2 ? "the last one (a torn tail)" : "the last one's payload (a torn tail)",
		       b->seq, want, last - i);
		if (mc_write(fd, img, size))
			return 1;

		rc = mc_check(want, &named);
		if (mc_read(fd, now, size))
			return 1;
		changed = memcmp(now, img, size) != 0;
		if (c < 2 && (rc != 1 || !named || changed)) {
			fprintf(stderr, "torture: midcut: testudo check exit %d, %s the place (%s), device %s\n", rc,
			        named ? "named" : "did not name", want, changed ? "CHANGED" : "unchanged");
			failures++;
		}
		if (c >= 2 && rc != 0) {
			fprintf(stderr, "torture: midcut: testudo check exit %d on a torn tail, want 0\n", rc);
			failures++;
		}
		if (changed && mc_write(fd, img, size)) /* open must see the damaged image */
			return 1;

		err = eng_open(&loop, &e, NULL);
		if (c < 2) {
			if (err == 0) {
				uint64_t lost = mc_lost(e, &loop, NULL);
				fprintf(stderr, "torture: midcut: open succeeded over damage in the middle of the log: "
				        "%" PRIu64 " of %u acknowledged blocks lost\n", lost, MC_BATCHES * MC_WRITE / 4096);
				eng_close(&loop, e);
				failures++;
			} else {
				uv_loop_close(&loop);
				if (err != TDO_ELOGDAMAGED) {
					fprintf(stderr, "torture: midcut: open failed with %d, want TDO_ELOGDAMAGED\n", err);
					failures++;
				}
				if (mc_read(fd, now, size))
					return 1;
				if (memcmp(now, img, size) != 0) {
					fprintf(stderr, "torture: midcut: the failed open changed the device\n");
					failures++;
				}
			}
		} else {
			uint64_t lost;
			if (err)
				return 1;
			lost = mc_lost(e, &loop, b);
			eng_close(&loop, e);
			if (lost) {
				fprintf(stderr, "torture: midcut: torn tail cut, but %" PRIu64 " blocks before it are wrong\n", lost);
				failures++;
			}
		}
	}
	close(fd);
	free(pristine);
	free(img);
	free(now);
	printf("midcut: %s\n", failures ? "FAILED" :
	       "damage before later batches refused by open and named by check, device unchanged; torn tail cut");
	return failures ? 1 : 0;
}

/* ---- cleaner ------------------------------------------------------------- */

struct cl {
	uv_loop_t *loop;
	struct tdo_engine *e;
	uint32_t vol;
	uint64_t rng, nblocks, issued, total, done;
	uint8_t *shadow;
	int err;
	struct cslot { struct cl *c; uint64_t b; uint8_t *buf; } s[32];
};

static void cl_issue(struct cslot *s);
static void cl_done(void *arg, int status)
{
	struct cslot *s = arg;
	struct cl *c = s->c;

	if (status && !c->err)
		c->err = status;
	c->done++;
	if (!c->err)
		cl_issue(s);
}

static void cl_issue(struct cslot *s)
{
	struct cl *c = s->c;
	int err;

	if (c->issued >= c->total)
		return;
	c->issued++;
	s->b = rng_next(&c->rng) % c->nblocks;
	for (int k = 0; k < 8; k++)
		fill_sector(s->buf + k * SECT, c->issued, s->b * 8 + (uint64_t)k);
	memcpy(c->shadow + s->b * 4096, s->buf, 4096);
	err = tdo_engine_write(c->e, c->vol, s->b * 4096, 4096, s->buf, cl_done, s);
	if (err && !c->err)
		c->err = err;
}

static int run_cleaner(int util_pct, int overwrite)
{
	struct tdo_engine_stats st0, st1;
	struct tdo_engine *e;
	struct tdo_vol_info vi;
	uv_loop_t loop;
	struct cl c;
	uint64_t seg_space, vbytes;
	uint8_t *cur;
	int failures = 0;

	if (setup_device(256ull << 20, 4096))
		return 1;
	/* one volume sized to UTIL% of the segment space */
	if (eng_open(&loop, &e, NULL))
		return 1;
	tdo_engine_stats(e, &st0);
	seg_space = (uint64_t)st0.seg_count * st0.seg_size;
	vbytes = seg_space * (uint64_t)util_pct / 100 / 4096 * 4096;
	{
		struct sync_ctx sc = { 0 };
		int err = tdo_vol_resize(e, VOL_NAME, vbytes, sync_cb, &sc);
		if (!err)
			err = run_until(&loop, &sc);
		if (err) {
			fprintf(stderr, "torture: %d%% of the device (%" PRIu64 " bytes) is over its capacity (%" PRIu64 "): %s\n",
			        util_pct, vbytes, st0.capacity, tdo_strerror(err));
			return 1;
		}
	}
	tdo_vol_lookup(e, VOL_NAME, &vi);
	memset(&c, 0, sizeof c);
	c.loop = &loop;
	c.e = e;
	c.vol = vi.id;
	c.rng = 12345;
	c.nblocks = vbytes / 4096;
	c.shadow = calloc(1, vbytes);
	/* fill once in order, then overwrite OVERWRITE x at random */
	c.total = c.nblocks;
	for (int i = 0; i < 32; i++) {
		c.s[i].c = &c;
		c.s[i].buf = aligned_alloc(4096, 4096);
	}
	for (uint64_t b = 0; b < c.nblocks; b += 256) {
		struct sync_ctx sc = { 0 };
		uint32_t n = (uint32_t)((c.nblocks - b < 256 ? c.nblocks - b : 256) * 4096);
		for (uint64_t k = 0; k < n / SECT; k++)
			fill_sector(c.shadow + b * 4096 + k * SECT, 1, b * 8 + k);
		if (tdo_engine_write(e, c.vol, b * 4096, n, c.shadow + b * 4096, sync_cb, &sc) || run_until(&loop, &sc))
			return 1;
	}
	tdo_engine_stats(e, &st0);
	c.issued = 1;
	c.total = 1 + c.nblocks * (uint64_t)overwrite;
	for (int i = 0; i < 32; i++)
		cl_issue(&c.s[i]);
	while (c.done < c.total - 1 && !c.err)
		uv_run(&loop, UV_RUN_ONCE);
	tdo_engine_stats(e, &st1);
	if (c.err) {
		fprintf(stderr, "torture: cleaner run: write failed: %s\n", tdo_strerror(c.err));
		failures++;
	}
	cur = aligned_alloc(4096, vbytes);
	if (read_volume(e, &loop, c.vol, cur, vbytes) || memcmp(cur, c.shadow, vbytes) != 0) {
		fprintf(stderr, "torture: cleaner run: data does not verify\n");
		failures++;
	}
	eng_close(&loop, e);
	/* and again after a reopen */
	if (eng_open(&loop, &e, NULL))
		return 1;
	if (read_volume(e, &loop, c.vol, cur, vbytes) || memcmp(cur, c.shadow, vbytes) != 0) {
		fprintf(stderr, "torture: cleaner run: data does not verify after reopen\n");
		failures++;
	}
	eng_close(&loop, e);
	{
		double user = (double)(st1.user_bytes - st0.user_bytes);
		double clean = (double)(st1.clean_bytes - st0.clean_bytes);
		double logb = (double)(st1.log_bytes - st0.log_bytes);
		printf("cleaner: utilisation %d%%, overwrote %dx %" PRIu64 " MiB: %" PRIu64 " segments cleaned, "
		       "write amplification %.2f (log bytes / user bytes %.2f), free segments at end %u/%u: %s\n",
		       util_pct, overwrite, vbytes >> 20, st1.segs_cleaned - st0.segs_cleaned,
		       (user + clean) / user, logb / user, st1.seg_free, st1.seg_count, failures ? "FAILED" : "ok");
	}
	free(cur);
	free(c.shadow);
	for (int i = 0; i < 32; i++)
		free(c.s[i].buf);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	int iterations = 25, util = 80, overwrite = 5;
	uint64_t seed = (uint64_t)time(NULL);

	tdo_log_set_level(getenv("TDO_LOG_INFO") ? TDO_LOG_INFO : TDO_LOG_WARN);
	if (tdo_engine_sigbus_install())
		return 2;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--dev") && i + 1 < argc)
			dev_path = argv[++i];
		else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
			iterations = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--util") && i + 1 < argc)
			util = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--overwrite") && i + 1 < argc)
			overwrite = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--greedy"))
			cleaner_policy = TDO_CLEAN_GREEDY;
		else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
			backend = !strcmp(argv[++i], "pmem") ? TDO_BACKEND_PMEM : TDO_BACKEND_FILE;
		else {
			fprintf(stderr, "torture: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (!dev_path) {
		fprintf(stderr, "usage: torture crash|powercut|corrupt|midcut|cleaner --dev FILE [options]\n");
		return 2;
	}
	printf("torture %s on %s (%s backend, seed %" PRIu64 ")\n", mode, dev_path,
	       backend == TDO_BACKEND_PMEM ? "pmem" : "file", seed);
	if (!strcmp(mode, "crash"))
		return run_kill(false, iterations, seed);
	if (!strcmp(mode, "powercut"))
		return run_kill(true, iterations, seed);
	if (!strcmp(mode, "corrupt"))
		return run_corrupt();
	if (!strcmp(mode, "midcut"))
		return run_midcut();
	if (!strcmp(mode, "cleaner"))
		return run_cleaner(util, overwrite);
	fprintf(stderr, "torture: unknown mode '%s'\n", mode);
	return 2;
}
