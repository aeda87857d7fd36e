/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for segment.c: the segment life cycle on a bare engine (only
 * the segment table, the head and the checkpoint's replay start are set).
 * Each transition of the diagram on struct seg, the cases that must not
 * free a segment, and a random walk through the engine's calls that checks
 * after every step that the free count matches, exactly one segment is
 * open and only the diagram's transitions happened.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define NSEG 16

static int setup(void **state)
{
	struct tdo_engine *e = calloc(1, sizeof *e);

	if (!e || !(e->segs = calloc(NSEG, sizeof *e->segs))) {
		free(e);
		return -1;
	}
	e->sb.sb_seg_count = NSEG;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct tdo_engine *e = *state;

	free(e->segs);
	free(e);
	return 0;
}

static uint32_t count(const struct tdo_engine *e, int st)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < NSEG; i++)
		n += e->segs[i].state == st;
	return n;
}

/* The invariants on struct seg. */
static void check_invariants(const struct tdo_engine *e)
{
	assert_int_equal(e->seg_free, count(e, SEG_FREE));
	assert_int_equal(count(e, SEG_OPEN), 1);
	assert_int_equal(e->segs[e->head_seg].state, SEG_OPEN);
	for (uint32_t i = 0; i < NSEG; i++) {
		const struct seg *s = &e->segs[i];
		if (s->state == SEG_FREE) {
			assert_int_equal(s->live, 0);
			assert_int_equal(s->readers, 0);
		}
		if (s->state == SEG_FREEING)
			assert_int_equal(s->live, 0);
	}
}

/* Head 0 with data, 1..3 sealed with data, the rest empty: as recovery
 * leaves it. The durable checkpoint's replay start is 100. */
static void recovered(struct tdo_engine *e)
{
	for (uint32_t i = 0; i < 4; i++) {
		e->segs[i].live = 4096;
		e->segs[i].age = 10 + i;
	}
	e->head_seg = 0;
	e->ckpt_log_seq = 100;
	seg_set_from_recovery(e);
}

/* ---- one transition each ---------------------------------------------- */

static void test_set_from_recovery(void **state)
{
	struct tdo_engine *e = *state;

	e->seg_free = 99; /* recounted */
	e->segs[5].live = 0;
	e->head_seg = 5;  /* the head is OPEN even when empty */
	e->segs[7].live = 1;
	seg_set_from_recovery(e);
	assert_int_equal(e->segs[5].state, SEG_OPEN);
	assert_int_equal(e->segs[7].state, SEG_SEALED);
	assert_int_equal(e->segs[0].state, SEG_FREE);
	assert_int_equal(e->seg_free, NSEG - 2);
	check_invariants(e);
}

static void test_open_next_seals_head_and_takes_first_free(void **state)
{
	struct tdo_engine *e = *state;

	recovered(e);
	e->segs[4].live = 123; /* stale: a new head starts empty */
	assert_true(seg_open_next(e));
	assert_int_equal(e->head_seg, 4);
	assert_int_equal(e->segs[4].state, SEG_OPEN);
	assert_int_equal(e->segs[4].live, 0);
	assert_int_equal(e->segs[0].state, SEG_SEALED);
	assert_int_equal(e->seg_free, NSEG - 5);
	check_invariants(e);
}

static void test_open_next_without_free_changes_nothing(void **state)
{
	struct tdo_engine *e = *state;

	for (uint32_t i = 0; i < NSEG; i++)
		e->segs[i].live = 4096;
	e->head_seg = 3;
	seg_set_from_recovery(e);
	assert_int_equal(e->seg_free, 0);
	assert_false(seg_open_next(e));
	assert_int_equal(e->head_seg, 3);
	assert_int_equal(e->segs[3].state, SEG_OPEN);
	check_invariants(e);
}

static void test_reclaimable(void **state)
{
	struct tdo_engine *e = *state;

	recovered(e);
	assert_false(seg_reclaimable(e, 1));  /* live data */
	e->segs[1].live = 0;
	assert_true(seg_reclaimable(e, 1));
	e->segs[1].cleaning = true;
	assert_false(seg_reclaimable(e, 1));
	e->segs[0].live = 0;
	assert_false(seg_reclaimable(e, 0));  /* the head */
	assert_false(seg_reclaimable(e, 9));  /* free */
	e->segs[2].live = 0;
	assert_true(seg_mark_freeing(e, 2));
	assert_false(seg_reclaimable(e, 2));  /* already on its way */
}

static void test_try_free_before_replay_start(void **state)
{
	struct tdo_engine *e = *state;

	recovered(e);
	e->segs[1].live = 0;
	assert_true(seg_try_free(e, 1));
	assert_int_equal(e->segs[1].state, SEG_FREE);
	assert_int_equal(e->seg_free, NSEG - 3);
	check_invariants(e);
	assert_false(seg_try_free(e, 1)); /* once */
	assert_int_equal(e->seg_free, NSEG - 3);
}

static void test_try_free_refuses(void **state)
{
	struct tdo_engine *e = *state;
	uint32_t nfree;

	recovered(e);
	nfree = e->seg_free;
	assert_false(seg_try_free(e, 1));          /* live data */
	e->segs[1].live = 0;
	e->segs[1].age = 100;                      /* on the replay path */
	assert_false(seg_try_free(e, 1));
	e->segs[1].age = 99;
	e->segs[1].readers = 1;                    /* a read in flight */
	assert_false(seg_try_free(e, 1));
	e->segs[1].readers = 0;
	e->segs[1].cleaning = true;                /* the cleaner reads it */
	assert_false(seg_try_free(e, 1));
	e->segs[1].cleaning = false;
	e->closing = 2;                            /* the final checkpoint */
	assert_false(seg_try_free(e, 1));
	e->closing = 0;
	e->segs[0].live = 0;                       /* the head */
	assert_false(seg_try_free(e, 0));
	assert_int_equal(e->segs[1].state, SEG_SEALED);
	assert_int_equal(e->seg_free, nfree);
	check_invariants(e);
	assert_true(seg_try_free(e, 1));
}

static void test_checkpoint_frees_after_it_is_durable(void **state)
{
	struct tdo_engine *e = *state;
	uint32_t nfree;

	recovered(e);
	nfree = e->seg_free;
	e->segs[2].live = 0;
	e->segs[2].age = 200;                      /* after the replay start */
	assert_false(seg_try_free(e, 2));
	assert_false(seg_mark_freeing(e, 1));      /* has data */
	assert_true(seg_mark_freeing(e, 2));
	assert_int_equal(e->segs[2].state, SEG_FREEING);
	assert_false(seg_try_free(e, 2));
	assert_int_equal(e->seg_free, nfree);
	seg_release(e, 2);
	assert_int_equal(e->segs[2].state, SEG_FREE);
	assert_int_equal(e->seg_free, nfree + 1);
	check_invariants(e);
	seg_release(e, 2);                         /* not FREEING: nothing */
	assert_int_equal(e->seg_free, nfree + 1);
}

static void test_failed_checkpoint_keeps_segment(void **state)
{
	struct tdo_engine *e = *state;
	uint32_t nfree;

	recovered(e);
	nfree = e->seg_free;
	e->segs[2].live = 0;
	e->segs[2].age = 200;
	assert_true(seg_mark_freeing(e, 2));
	seg_unmark_freeing(e, 2);
	assert_int_equal(e->segs[2].state, SEG_SEALED);
	assert_int_equal(e->seg_free, nfree);
	check_invariants(e);
	assert_true(seg_mark_freeing(e, 2));       /* the next checkpoint tries again */
}

static void test_last_reader_frees_released_segment(void **state)
{
	struct tdo_engine *e = *state;
	uint32_t nfree;

	recovered(e);
	nfree = e->seg_free;
	seg_reader_get(e, 2);
	seg_reader_get(e, 2);
	e->segs[2].live = 0;                       /* overwritten while read */
	e->segs[2].age = 200;
	assert_true(seg_mark_freeing(e, 2));
	seg_release(e, 2);
	assert_int_equal(e->segs[2].state, SEG_FREEING);
	assert_true(e->segs[2].free_when_idle);
	assert_int_equal(e->seg_free, nfree);
	seg_reader_put(e, 2);
	assert_int_equal(e->segs[2].state, SEG_FREEING);
	seg_reader_put(e, 2);
	assert_int_equal(e->segs[2].state, SEG_FREE);
	assert_false(e->segs[2].free_when_idle);
	assert_int_equal(e->seg_free, nfree + 1);
	check_invariants(e);
}

static void test_reader_on_freeing_segment_before_release(void **state)
{
	struct tdo_engine *e = *state;
	uint32_t nfree;

	recovered(e);
	nfree = e->seg_free;
	seg_reader_get(e, 2);
	e->segs[2].live = 0;
	e->segs[2].age = 200;
	assert_true(seg_mark_freeing(e, 2));
	seg_reader_put(e, 2);                      /* the checkpoint is not durable yet */
	assert_int_equal(e->segs[2].state, SEG_FREEING);
	assert_int_equal(e->seg_free, nfree);
	seg_release(e, 2);                         /* now it is, and no reader is left */
	assert_int_equal(e->segs[2].state, SEG_FREE);
	check_invariants(e);
}

static void test_last_reader_frees_old_segment(void **state)
{
	struct tdo_engine *e = *state;

	recovered(e);
	seg_reader_get(e, 1);
	e->segs[1].live = 0;                       /* emptied while read, before the replay start */
	assert_false(seg_try_free(e, 1));
	seg_reader_put(e, 1);
	assert_int_equal(e->segs[1].state, SEG_FREE);
	check_invariants(e);
	/* one after the replay start waits for a checkpoint */
	seg_reader_get(e, 2);
	e->segs[2].live = 0;
	e->segs[2].age = 200;
	seg_reader_put(e, 2);
	assert_int_equal(e->segs[2].state, SEG_SEALED);
}

/* ---- random walk -------------------------------------------------------- */

enum { OP_OPEN, OP_WRITE, OP_DROP, OP_CKPT, OP_CKPT_DONE, OP_READ, OP_READ_DONE, OP_CLEAN, NOPS };

static uint64_t rnd_state = 88172645463325252ull;

static uint32_t rnd(uint32_t n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (uint32_t)(rnd_state % n);
}

/* Is FROM -> TO a transition that operation OP may make? */
static bool allowed(int op, bool ckpt_ok, int from, int to)
{
	if (from == to)
		return true;
	if (from == SEG_FREE && to == SEG_OPEN)
		return op == OP_OPEN;
	if (from == SEG_OPEN && to == SEG_SEALED)
		return op == OP_OPEN;
	if (from == SEG_SEALED && to == SEG_FREE)
		return op == OP_DROP || op == OP_READ_DONE || op == OP_CLEAN;
	if (from == SEG_SEALED && to == SEG_FREEING)
		return op == OP_CKPT;
	if (from == SEG_FREEING && to == SEG_SEALED)
		return op == OP_CKPT_DONE && !ckpt_ok;
	if (from == SEG_FREEING && to == SEG_FREE)
		return (op == OP_CKPT_DONE && ckpt_ok) || op == OP_READ_DONE;
	return false;
}

static void test_random_walk(void **state)
{
	struct tdo_engine *e = *state;
	uint32_t freeing[NSEG], nfreeing = 0, held[64], nheld = 0;
	uint8_t before[NSEG];
	uint64_t seq = 1, snap_log_seq = 0;
	bool ckpt = false, ckpt_ok = false;
	int cleaning = -1;
	unsigned seen[4][4] = { { 0 } }, idle_frees = 0, failed_ckpts = 0;

	recovered(e);
	for (int step = 0; step < 200000; step++) {
		int op = (int)rnd(NOPS);
		uint32_t s = rnd(NSEG);

		for (uint32_t i = 0; i < NSEG; i++)
			before[i] = e->segs[i].state;
		switch (op) {
		case OP_OPEN:
			/* the writer fills the head and moves on */
			if (rnd(4) == 0)
				seg_open_next(e);
			break;
		case OP_WRITE:
			e->segs[e->head_seg].live += 4096;
			e->segs[e->head_seg].age = ++seq;
			break;
		case OP_DROP:
			/* an index entry moves away from S (eng_account) */
			if (e->segs[s].live && (e->segs[s].live -= 4096) == 0)
				seg_try_free(e, s);
			break;
		case OP_CKPT:
			if (ckpt)
				break;
			ckpt = true;
			snap_log_seq = seq + 1;
			nfreeing = 0;
			for (uint32_t i = 0; i < NSEG; i++)
				if (seg_mark_freeing(e, i))
					freeing[nfreeing++] = i;
			break;
		case OP_CKPT_DONE:
			if (!ckpt)
				break;
			ckpt = false;
			ckpt_ok = rnd(8) != 0;
			failed_ckpts += !ckpt_ok;
			if (ckpt_ok)
				e->ckpt_log_seq = snap_log_seq;
			for (uint32_t i = 0; i < nfreeing; i++) {
				if (ckpt_ok) {
					seg_release(e, freeing[i]);
					idle_frees += e->segs[freeing[i]].free_when_idle;
				} else {
					seg_unmark_freeing(e, freeing[i]);
				}
			}
			break;
		case OP_READ:
			/* a read looks S up: only a segment the index names */
			if (e->segs[s].live && nheld < 64) {
				seg_reader_get(e, s);
				held[nheld++] = s;
			}
			break;
		case OP_READ_DONE:
			if (nheld) {
				uint32_t k = rnd(nheld);
				s = held[k];
				held[k] = held[--nheld];
				seg_reader_put(e, s);
			}
			break;
		case OP_CLEAN:
			if (cleaning >= 0) {
				/* the copies moved everything out */
				e->segs[cleaning].cleaning = false;
				if (e->segs[cleaning].live == 0)
					seg_try_free(e, (uint32_t)cleaning);
				cleaning = -1;
			} else if (e->segs[s].state == SEG_SEALED && e->segs[s].live) {
				e->segs[s].cleaning = true;
				cleaning = (int)s;
			}
			break;
		}
		check_invariants(e);
		for (uint32_t i = 0; i < NSEG; i++) {
			if (!allowed(op, ckpt_ok, before[i], e->segs[i].state))
				fail_msg("step %d op %d: segment %u went %d -> %d", step, op, i, before[i],
				         e->segs[i].state);
			/* freed straight from SEALED: wholly before the replay start */
			if (before[i] == SEG_SEALED && e->segs[i].state == SEG_FREE)
				assert_true(e->segs[i].age < e->ckpt_log_seq);
			seen[before[i]][e->segs[i].state]++;
		}
	}
	/* every transition of the diagram happened */
	assert_true(seen[SEG_FREE][SEG_OPEN] > 0);
	assert_true(seen[SEG_OPEN][SEG_SEALED] > 0);
	assert_true(seen[SEG_SEALED][SEG_FREE] > 0);
	assert_true(seen[SEG_SEALED][SEG_FREEING] > 0);
	assert_true(seen[SEG_FREEING][SEG_SEALED] > 0);
	assert_true(seen[SEG_FREEING][SEG_FREE] > 0);
	assert_true(idle_frees > 0);
	assert_true(failed_ckpts > 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_set_from_recovery),
		T(test_open_next_seals_head_and_takes_first_free),
		T(test_open_next_without_free_changes_nothing),
		T(test_reclaimable),
		T(test_try_free_before_replay_start),
		T(test_try_free_refuses),
		T(test_checkpoint_frees_after_it_is_durable),
		T(test_failed_checkpoint_keeps_segment),
		T(test_last_reader_frees_released_segment),
		T(test_reader_on_freeing_segment_before_release),
		T(test_last_reader_frees_old_segment),
		T(test_random_walk),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
