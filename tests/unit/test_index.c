/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for index.c: the per-volume block -> newest version table.
 * Chunks of IDX_CHUNK entries exist only while one of their entries is not
 * a hole; x->mem counts every byte the table holds. Entries are packed to
 * 15 bytes around a per-chunk LSN base, or stored whole in a wide chunk.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define NBLOCKS (4 * IDX_CHUNK + 100)   /* four full chunks and a partial one */

/* ---- helpers ------------------------------------------------------------ */

/* A distinct DATA entry for block B (the LSN says which block it was). */
static struct tdo_ie ent(uint64_t b)
{
	return ie_make(TDO_IE_DATA, b + 1, 4096 + b * 8, 8, (uint32_t)(b * 2654435761u));
}

static const struct tdo_ie hole = { 0, 0, 0 };

static void assert_ie_equal(struct tdo_ie a, struct tdo_ie b)
{
	assert_int_equal(a.ie_a, b.ie_a);
	assert_int_equal(a.ie_b, b.ie_b);
	assert_int_equal(a.ie_c, b.ie_c);
}

static void assert_hole(struct tdo_ie e)
{
	assert_int_equal(ie_kind(e), TDO_IE_HOLE);
}

static int setup_idx(void **state)
{
	struct idx *x = calloc(1, sizeof *x);

	if (!x || idx_init(x, NBLOCKS)) {
		free(x);
		return -1;
	}
	*state = x;
	return 0;
}

static int teardown_idx(void **state)
{
	struct idx *x = *state;

	idx_free(x);
	free(x);
	return 0;
}

static void set_ok(struct idx *x, uint64_t b, struct tdo_ie e)
{
	assert_int_equal(idx_set(x, b, e, NULL), 0);
}

/* idx_walk visitor: records the blocks it is shown. */
struct seen {
	uint64_t *b;
	size_t n, cap;
	int stop_after;             /* return 7 once this many seen (0: never) */
	int bad;                    /* an entry that was not ent(b) */
};

static int record_cb(void *arg, uint64_t b, struct tdo_ie e)
{
	struct seen *s = arg;

	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->b = realloc(s->b, s->cap * sizeof *s->b);
		if (!s->b)
			return -ENOMEM;
	}
	s->b[s->n++] = b;
	if (e.ie_a != ent(b).ie_a || e.ie_b != ent(b).ie_b || e.ie_c != ent(b).ie_c)
		s->bad++;
	if (s->stop_after && (int)s->n == s->stop_after)
		return 7;
	return 0;
}

/* idx_walk visitor: counts entries. */
static int count_cb(void *arg, uint64_t b, struct tdo_ie e)
{
	(void)b;
	(void)e;
	((struct seen *)arg)->n++;
	return 0;
}

/* drop callback for idx_resize: records the LSNs it is given. */
struct dropped {
	uint64_t lsn[4 * IDX_CHUNK];
	size_t n;
};

static void drop_cb(void *arg, struct tdo_ie e)
{
	struct dropped *d = arg;

	assert_true(ie_has_payload(e) || ie_kind(e) == TDO_IE_ZERO);
	assert_true(d->n < sizeof d->lsn / sizeof d->lsn[0]);
	d->lsn[d->n++] = ie_lsn(e);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ---- init / get / set ---------------------------------------------------- */

static void test_init_geometry(void **state)
{
	struct idx *x = *state;

	assert_int_equal(x->nblocks, NBLOCKS);
	assert_int_equal(x->nchunks, 5);
	assert_int_equal(x->mem, 5 * sizeof(struct idx_chunk *));
	for (uint64_t c = 0; c < x->nchunks; c++)
		assert_null(x->chunks[c]);
}

static void test_init_zero_blocks(void **state)
{
	struct idx x;

	(void)state;
	assert_int_equal(idx_init(&x, 0), 0);
	assert_int_equal(x.nchunks, 0);
	assert_non_null(x.chunks);
	assert_int_equal(idx_walk(&x, record_cb, NULL), 0);
	idx_free(&x);
}

static void test_holes_by_default(void **state)
{
	struct idx *x = *state;

	for (uint64_t b = 0; b < NBLOCKS; b++)
		assert_hole(idx_get(x, b));
}

static void test_set_then_get(void **state)
{
	struct idx *x = *state;
	const uint64_t blocks[] = { 0, 1, IDX_CHUNK - 1, IDX_CHUNK, 3 * IDX_CHUNK + 17, NBLOCKS - 1 };

	for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
		set_ok(x, blocks[i], ent(blocks[i]));
	for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
		assert_ie_equal(idx_get(x, blocks[i]), ent(blocks[i]));
	/* neighbours untouched */
	assert_hole(idx_get(x, 2));
	assert_hole(idx_get(x, IDX_CHUNK + 1));
	assert_hole(idx_get(x, NBLOCKS - 2));
}

static void test_set_returns_old(void **state)
{
	struct idx *x = *state;
	struct tdo_ie old;

	memset(&old, 0xff, sizeof old);
	assert_int_equal(idx_set(x, 5, ent(5), &old), 0);
	assert_hole(old);
	assert_int_equal(old.ie_a, 0);
	assert_int_equal(idx_set(x, 5, ent(6), &old), 0);
	assert_ie_equal(old, ent(5));
	assert_int_equal(idx_set(x, 5, hole, &old), 0);
	assert_ie_equal(old, ent(6));
	assert_hole(idx_get(x, 5));
}

static void test_set_zero_kind_is_not_a_hole(void **state)
{
	struct idx *x = *state;
	struct tdo_ie z = ie_make(TDO_IE_ZERO, 42, 0, 0, 0);

	set_ok(x, 9, z);
	assert_int_equal(ie_kind(idx_get(x, 9)), TDO_IE_ZERO);
	assert_int_equal(ie_lsn(idx_get(x, 9)), 42);
	assert_non_null(x->chunks[0]);
}

static void test_set_hole_in_empty_chunk_allocates_nothing(void **state)
{
	struct idx *x = *state;
	uint64_t mem = x->mem;
	struct tdo_ie old;

	memset(&old, 0xff, sizeof old);
	assert_int_equal(idx_set(x, 2 * IDX_CHUNK + 3, hole, &old), 0);
	assert_int_equal(old.ie_a, 0);
	assert_null(x->chunks[2]);
	assert_int_equal(x->mem, mem);
}

static void test_first_set_allocates_one_chunk(void **state)
{
	struct idx *x = *state;
	uint64_t mem = x->mem;

	set_ok(x, IDX_CHUNK + 1, ent(IDX_CHUNK + 1));
	assert_int_equal(x->mem, mem + IDX_CHUNK_BYTES(false));
	set_ok(x, IDX_CHUNK + 2, ent(IDX_CHUNK + 2));
	set_ok(x, 2 * IDX_CHUNK - 1, ent(2 * IDX_CHUNK - 1));
	assert_int_equal(x->mem, mem + IDX_CHUNK_BYTES(false));
	assert_int_equal(x->chunks[1]->used, 3);
}

static void test_chunk_freed_when_all_holes_again(void **state)
{
	struct idx *x = *state;
	uint64_t mem = x->mem;
	const uint64_t b[] = { 3 * IDX_CHUNK, 3 * IDX_CHUNK + 500, 4 * IDX_CHUNK - 1 };

	for (size_t i = 0; i < 3; i++)
		set_ok(x, b[i], ent(b[i]));
	assert_int_equal(x->mem, mem + IDX_CHUNK_BYTES(false));
	set_ok(x, b[0], hole);
	set_ok(x, b[2], hole);
	/* one entry left: chunk still there */
	assert_non_null(x->chunks[3]);
	assert_int_equal(x->mem, mem + IDX_CHUNK_BYTES(false));
	set_ok(x, b[1], hole);
	assert_null(x->chunks[3]);
	assert_int_equal(x->mem, mem);
}

static void test_overwrite_does_not_double_count(void **state)
{
	struct idx *x = *state;
	uint64_t mem = x->mem;

	set_ok(x, 10, ent(10));
	set_ok(x, 10, ent(11));
	set_ok(x, 10, ie_make(TDO_IE_ZERO, 12, 0, 0, 0));
	assert_int_equal(x->chunks[0]->used, 1);
	set_ok(x, 10, hole);
	assert_null(x->chunks[0]);
	assert_int_equal(x->mem, mem);
}

static void test_hole_over_hole_in_live_chunk(void **state)
{
	struct idx *x = *state;

	set_ok(x, 10, ent(10));
	set_ok(x, 11, hole);        /* was a hole already */
	assert_non_null(x->chunks[0]);
	assert_int_equal(x->chunks[0]->used, 1);
	assert_ie_equal(idx_get(x, 10), ent(10));
}

/* ---- walk ---------------------------------------------------------------- */

static void test_walk_in_block_order(void **state)
{
	struct idx *x = *state;
	/* set out of order, across chunks */
	const uint64_t blocks[] = { NBLOCKS - 1, 7, 2 * IDX_CHUNK, 0, IDX_CHUNK - 1, 3 * IDX_CHUNK + 9, 8 };
	const size_t n = sizeof blocks / sizeof blocks[0];
	uint64_t want[sizeof blocks / sizeof blocks[0]];
	struct seen s = { 0 };

	for (size_t i = 0; i < n; i++) {
		set_ok(x, blocks[i], ent(blocks[i]));
		want[i] = blocks[i];
	}
	qsort(want, n, sizeof want[0], cmp_u64);
	assert_int_equal(idx_walk(x, record_cb, &s), 0);
	assert_int_equal(s.n, n);
	assert_int_equal(s.bad, 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(s.b[i], want[i]);
	free(s.b);
}

static void test_walk_skips_holes(void **state)
{
	struct idx *x = *state;
	struct seen s = { 0 };

	set_ok(x, 1, ent(1));
	set_ok(x, 2, ent(2));
	set_ok(x, 3, ent(3));
	set_ok(x, 2, hole);
	assert_int_equal(idx_walk(x, record_cb, &s), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.b[0], 1);
	assert_int_equal(s.b[1], 3);
	free(s.b);
}

static void test_walk_empty_calls_nothing(void **state)
{
	struct idx *x = *state;
	struct seen s = { 0 };

	assert_int_equal(idx_walk(x, record_cb, &s), 0);
	assert_int_equal(s.n, 0);
}

static void test_walk_stops_early(void **state)
{
	struct idx *x = *state;
	struct seen s = { 0 };

	for (uint64_t b = 0; b < NBLOCKS; b += 100)
		set_ok(x, b, ent(b));
	s.stop_after = 3;
	assert_int_equal(idx_walk(x, record_cb, &s), 7);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.b[2], 200);
	free(s.b);
}

static void test_walk_stops_at_last_entry_of_chunk(void **state)
{
	struct idx *x = *state;
	struct seen s = { 0 };

	set_ok(x, IDX_CHUNK - 1, ent(IDX_CHUNK - 1));
	set_ok(x, IDX_CHUNK, ent(IDX_CHUNK));
	s.stop_after = 1;
	assert_int_equal(idx_walk(x, record_cb, &s), 7);
	assert_int_equal(s.n, 1);
	free(s.b);
}

/* ---- resize -------------------------------------------------------------- */

static void test_shrink_drops_entries_past_end(void **state)
{
	struct idx *x = *state;
	struct dropped *d = calloc(1, sizeof *d);
	const uint64_t newn = IDX_CHUNK + 10;
	size_t want = 0;

	assert_non_null(d);
	for (uint64_t b = 0; b < NBLOCKS; b += 3) {
		set_ok(x, b, ent(b));
		want += b >= newn;
	}
	assert_int_equal(idx_resize(x, newn, drop_cb, d), 0);
	assert_int_equal(x->nblocks, newn);
	assert_int_equal(d->n, want);
	/* each dropped entry once, and only those past the end */
	qsort(d->lsn, d->n, sizeof d->lsn[0], cmp_u64);
	for (size_t i = 0; i < d->n; i++) {
		assert_true(d->lsn[i] - 1 >= newn);
		assert_int_equal((d->lsn[i] - 1) % 3, 0);
		if (i)
			assert_true(d->lsn[i] > d->lsn[i - 1]);
	}
	free(d);
}

static void test_shrink_keeps_entries_before_end(void **state)
{
	struct idx *x = *state;
	const uint64_t newn = IDX_CHUNK + 10;

	for (uint64_t b = 0; b < NBLOCKS; b += 3)
		set_ok(x, b, ent(b));
	assert_int_equal(idx_resize(x, newn, NULL, NULL), 0);
	for (uint64_t b = 0; b < newn; b++) {
		if (b % 3 == 0)
			assert_ie_equal(idx_get(x, b), ent(b));
		else
			assert_hole(idx_get(x, b));
	}
}

static void test_shrink_releases_memory(void **state)
{
	struct idx *x = *state;

	for (uint64_t b = 0; b < NBLOCKS; b += 3)
		set_ok(x, b, ent(b));
	assert_int_equal(idx_resize(x, IDX_CHUNK + 10, NULL, NULL), 0);
	assert_int_equal(x->nchunks, 2);
	assert_int_equal(x->mem, 2 * sizeof(struct idx_chunk *) + 2 * IDX_CHUNK_BYTES(false));
}

static void test_shrink_then_grow_leaves_holes(void **state)
{
	struct idx *x = *state;
	const uint64_t mid = 2 * IDX_CHUNK + 300;   /* inside a chunk */

	for (uint64_t b = 0; b < NBLOCKS; b++)
		set_ok(x, b, ent(b));
	assert_int_equal(idx_resize(x, mid, NULL, NULL), 0);
	assert_int_equal(idx_resize(x, NBLOCKS, NULL, NULL), 0);
	for (uint64_t b = 0; b < NBLOCKS; b++) {
		if (b < mid)
			assert_ie_equal(idx_get(x, b), ent(b));
		else
			assert_hole(idx_get(x, b));
	}
}

static void test_shrink_to_zero_drops_all(void **state)
{
	struct idx *x = *state;
	struct dropped *d = calloc(1, sizeof *d);

	assert_non_null(d);
	for (uint64_t b = 0; b < NBLOCKS; b += 7)
		set_ok(x, b, ent(b));
	assert_int_equal(idx_resize(x, 0, drop_cb, d), 0);
	assert_int_equal(d->n, (NBLOCKS + 6) / 7);
	assert_int_equal(x->nblocks, 0);
	assert_int_equal(x->nchunks, 0);
	assert_int_equal(x->mem, sizeof(struct idx_chunk *));
	free(d);
}

static void test_shrink_drops_zero_entries(void **state)
{
	struct idx *x = *state;
	struct dropped *d = calloc(1, sizeof *d);

	assert_non_null(d);
	set_ok(x, NBLOCKS - 1, ie_make(TDO_IE_ZERO, 5, 0, 0, 0));
	assert_int_equal(idx_resize(x, NBLOCKS - 1, drop_cb, d), 0);
	assert_int_equal(d->n, 1);
	assert_int_equal(d->lsn[0], 5);
	free(d);
}

static void test_grow_keeps_entries(void **state)
{
	struct idx *x = *state;
	const uint64_t big = 10 * IDX_CHUNK + 1;

	for (uint64_t b = 0; b < NBLOCKS; b += 5)
		set_ok(x, b, ent(b));
	assert_int_equal(idx_resize(x, big, NULL, NULL), 0);
	assert_int_equal(x->nblocks, big);
	assert_int_equal(x->nchunks, 11);
	for (uint64_t b = 0; b < NBLOCKS; b++) {
		if (b % 5 == 0)
			assert_ie_equal(idx_get(x, b), ent(b));
		else
			assert_hole(idx_get(x, b));
	}
	for (uint64_t b = NBLOCKS; b < big; b++)
		assert_hole(idx_get(x, b));
	/* the new range is usable */
	set_ok(x, big - 1, ent(big - 1));
	assert_ie_equal(idx_get(x, big - 1), ent(big - 1));
}

static void test_grow_calls_no_drop(void **state)
{
	struct idx *x = *state;
	struct dropped *d = calloc(1, sizeof *d);

	assert_non_null(d);
	set_ok(x, 1, ent(1));
	assert_int_equal(idx_resize(x, 2 * NBLOCKS, drop_cb, d), 0);
	assert_int_equal(d->n, 0);
	free(d);
}

static void test_grow_within_chunk(void **state)
{
	struct idx *x = *state;
	uint64_t mem;

	/* NBLOCKS ends inside chunk 4: growing to that chunk's end adds no chunk */
	set_ok(x, NBLOCKS - 1, ent(NBLOCKS - 1));
	mem = x->mem;
	assert_int_equal(idx_resize(x, 5 * IDX_CHUNK, NULL, NULL), 0);
	assert_int_equal(x->nchunks, 5);
	assert_int_equal(x->mem, mem);
	assert_ie_equal(idx_get(x, NBLOCKS - 1), ent(NBLOCKS - 1));
	set_ok(x, 5 * IDX_CHUNK - 1, ent(5 * IDX_CHUNK - 1));
	assert_ie_equal(idx_get(x, 5 * IDX_CHUNK - 1), ent(5 * IDX_CHUNK - 1));
}

/* ---- packed entries ------------------------------------------------------ */

/* Every field at its widest, and at its smallest, comes back exactly. */
static void test_fields_round_trip(void **state)
{
	struct idx *x = *state;
	const uint64_t lsn_max = (1ull << 48) - 1, sector_max = (1ull << 42) - 1;
	const struct tdo_ie e[] = {
		ie_make(TDO_IE_DATA, lsn_max, sector_max, 15, 0xffffffffu),
		ie_make(TDO_IE_LZ4, lsn_max - 1, 1, 1, 0),
		ie_make(TDO_IE_DATA, lsn_max - 2, 0x2aaaaaaaaaaull, 8, 0x5a5a5a5au),
		ie_make(TDO_IE_LZ4, lsn_max - 3, 0x15555555555ull, 9, 0xa5a5a5a5u),
		ie_make(TDO_IE_ZERO, lsn_max - 4, 0, 0, 0),
		ie_make(TDO_IE_DATA, lsn_max, 0x3ffff, 8, 1),      /* sector bits that straddle */
		ie_make(TDO_IE_DATA, lsn_max, 0x40000, 8, 2),
	};
	const size_t n = sizeof e / sizeof e[0];

	/* neighbours in one chunk: a packed entry must not spill into the next */
	for (size_t i = 0; i < n; i++)
		set_ok(x, IDX_CHUNK - n + i, e[i]);
	for (size_t i = 0; i < n; i++)
		assert_ie_equal(idx_get(x, IDX_CHUNK - n + i), e[i]);
	assert_int_equal(x->chunks[0]->wide, 0);
	assert_hole(idx_get(x, IDX_CHUNK - n - 1));
}

/* LSN 0 and small LSNs: the base cannot go below 0. */
static void test_small_lsns(void **state)
{
	struct idx *x = *state;

	set_ok(x, 0, ie_make(TDO_IE_ZERO, 0, 0, 0, 0));
	set_ok(x, 1, ie_make(TDO_IE_DATA, 1, 77, 8, 3));
	assert_int_equal(ie_lsn(idx_get(x, 0)), 0);
	assert_int_equal(ie_kind(idx_get(x, 0)), TDO_IE_ZERO);
	assert_ie_equal(idx_get(x, 1), ie_make(TDO_IE_DATA, 1, 77, 8, 3));
	assert_int_equal(x->chunks[0]->base, 0);
}

/* An LSN below the chunk's window moves the base; nothing changes value. */
static void test_lsn_below_window_rebases(void **state)
{
	struct idx *x = *state;
	const uint64_t hi = 5ull << 40, lo = hi - (3ull << 38);   /* 0.75 of a window */
	uint64_t mem;

	set_ok(x, 10, ie_make(TDO_IE_DATA, hi, 100, 8, 10));
	set_ok(x, 11, ie_make(TDO_IE_ZERO, hi + 1, 0, 0, 0));
	mem = x->mem;
	assert_true(x->chunks[0]->base > lo);
	set_ok(x, 12, ie_make(TDO_IE_LZ4, lo, 200, 3, 12));
	assert_int_equal(x->chunks[0]->wide, 0);
	assert_true(x->chunks[0]->base <= lo);
	assert_int_equal(x->mem, mem);
	assert_ie_equal(idx_get(x, 10), ie_make(TDO_IE_DATA, hi, 100, 8, 10));
	assert_ie_equal(idx_get(x, 11), ie_make(TDO_IE_ZERO, hi + 1, 0, 0, 0));
	assert_ie_equal(idx_get(x, 12), ie_make(TDO_IE_LZ4, lo, 200, 3, 12));
	assert_int_equal(x->chunks[0]->used, 3);
}

/* An LSN above the window moves it up when the old entries still fit. */
static void test_lsn_above_window_rebases(void **state)
{
	struct idx *x = *state;
	const uint64_t a = 1000, b = a + (1ull << 39) + 5;

	set_ok(x, 3, ie_make(TDO_IE_DATA, a, 8, 8, 1));
	set_ok(x, 4, ie_make(TDO_IE_DATA, b, 16, 8, 2));
	assert_int_equal(x->chunks[0]->wide, 0);
	assert_ie_equal(idx_get(x, 3), ie_make(TDO_IE_DATA, a, 8, 8, 1));
	assert_ie_equal(idx_get(x, 4), ie_make(TDO_IE_DATA, b, 16, 8, 2));
}

/* Versions further apart than one window: the chunk turns wide, keeps
 * every entry, and its memory is counted and given back. */
static void test_lsns_too_far_apart_widen(void **state)
{
	struct idx *x = *state;
	const uint64_t mem0 = x->mem;
	const uint64_t far = (1ull << 48) - 1;
	struct seen s = { 0 };

	for (uint64_t b = IDX_CHUNK; b < 2 * IDX_CHUNK; b += 2)
		set_ok(x, b, ent(b));
	set_ok(x, IDX_CHUNK + 1, ie_make(TDO_IE_DATA, far, 9, 8, 9));
	assert_int_equal(x->chunks[1]->wide, 1);
	assert_int_equal(x->mem, mem0 + IDX_CHUNK_BYTES(true));
	assert_int_equal(x->chunks[1]->used, IDX_CHUNK / 2 + 1);
	assert_ie_equal(idx_get(x, IDX_CHUNK + 1), ie_make(TDO_IE_DATA, far, 9, 8, 9));
	for (uint64_t b = IDX_CHUNK; b < 2 * IDX_CHUNK; b += 2)
		assert_ie_equal(idx_get(x, b), ent(b));
	/* a wide chunk still walks, and goes away when emptied */
	set_ok(x, IDX_CHUNK + 1, hole);
	assert_int_equal(idx_walk(x, record_cb, &s), 0);
	assert_int_equal(s.n, IDX_CHUNK / 2);
	assert_int_equal(s.bad, 0);
	free(s.b);
	for (uint64_t b = IDX_CHUNK; b < 2 * IDX_CHUNK; b += 2)
		set_ok(x, b, hole);
	assert_null(x->chunks[1]);
	assert_int_equal(x->mem, mem0);
	/* and comes back narrow */
	set_ok(x, IDX_CHUNK, ent(IDX_CHUNK));
	assert_int_equal(x->chunks[1]->wide, 0);
}

/* The entry being replaced does not count: a lone entry overwritten by a
 * version two windows newer moves the base instead of widening. */
static void test_replaced_entry_does_not_widen(void **state)
{
	struct idx *x = *state;
	const uint64_t far = 5ull << 40;

	set_ok(x, 7, ent(7));
	set_ok(x, 7, ie_make(TDO_IE_DATA, far, 64, 8, 5));
	assert_int_equal(x->chunks[0]->wide, 0);
	assert_ie_equal(idx_get(x, 7), ie_make(TDO_IE_DATA, far, 64, 8, 5));
	assert_int_equal(x->chunks[0]->used, 1);
}

/* Random sets, holes and far-off LSNs against a plain array of entries:
 * rebasing and widening never change what a block reads back. */
static void test_random_against_model(void **state)
{
	struct idx *x = *state;
	struct tdo_ie *model = calloc(NBLOCKS, sizeof *model);
	uint64_t rng = 0x9e3779b97f4a7c15ull, lsn = 1ull << 41;
	struct seen s = { 0 };
	size_t live = 0, wide = 0;

	assert_non_null(model);
	for (int op = 0; op < 200000; op++) {
		uint64_t r, b;

		if (op == 150000)       /* from here on, some chunks turn wide */
			lsn += 3ull << 40;
		struct tdo_ie e, old;

		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		r = rng;
		b = (r >> 8) % NBLOCKS;
		switch (r & 15) {
		case 0: case 1:
			e = hole;
			break;
		case 2:     /* an old version, up to most of a window back (rebases) */
			e = ie_make(TDO_IE_DATA, lsn - ((r >> 24) % (3ull << 38)), r >> 30, 8, (uint32_t)r);
			break;
		case 3:
			e = ie_make(TDO_IE_ZERO, ++lsn, 0, 0, 0);
			break;
		default:
			lsn += 1 + ((r >> 40) & 3);
			e = ie_make((r & 16) ? TDO_IE_LZ4 : TDO_IE_DATA, lsn, (r >> 20) & ((1ull << 42) - 1),
			            1 + ((r >> 5) & 7), (uint32_t)(r >> 32));
			break;
		}
		assert_int_equal(idx_set(x, b, e, &old), 0);
		assert_ie_equal(old, model[b]);
		model[b] = e;
		if (op == 149999) {
			for (uint64_t c = 0; c < x->nchunks; c++)
				assert_true(!x->chunks[c] || !x->chunks[c]->wide);
		}
	}
	for (uint64_t c = 0; c < x->nchunks; c++)
		wide += x->chunks[c] && x->chunks[c]->wide;
	assert_true(wide > 0);
	for (uint64_t b = 0; b < NBLOCKS; b++) {
		assert_ie_equal(idx_get(x, b), model[b]);
		live += ie_kind(model[b]) != TDO_IE_HOLE;
	}
	s.stop_after = 0;
	assert_int_equal(idx_walk(x, count_cb, &s), 0);
	assert_int_equal(s.n, live);
	free(model);
}

/* ---- memory -------------------------------------------------------------- */

static void test_mem_per_block_full_index(void **state)
{
	struct idx x;
	const uint64_t n = 64 * IDX_CHUNK;

	(void)state;
	assert_int_equal(idx_init(&x, n), 0);
	for (uint64_t b = 0; b < n; b++)
		set_ok(&x, b, ent(b));
	assert_true((double)x.mem / (double)n <= 15.1);
	idx_free(&x);
}

static void test_mem_per_block_filled_region(void **state)
{
	struct idx x;
	const uint64_t n = 1024 * IDX_CHUNK;     /* a 4 GiB volume */
	const uint64_t from = 100 * IDX_CHUNK, cnt = 8 * IDX_CHUNK;
	uint64_t before;

	(void)state;
	assert_int_equal(idx_init(&x, n), 0);
	before = x.mem;
	for (uint64_t b = from; b < from + cnt; b++)
		set_ok(&x, b, ent(b));
	assert_true((double)(x.mem - before) / (double)cnt <= 15.1);
	/* and the sparse rest costs only the pointer table */
	assert_int_equal(before, (n / IDX_CHUNK) * sizeof(struct idx_chunk *));
	idx_free(&x);
}

static void test_free_resets(void **state)
{
	struct idx x;

	(void)state;
	assert_int_equal(idx_init(&x, NBLOCKS), 0);
	set_ok(&x, 3, ent(3));
	idx_free(&x);
	assert_null(x.chunks);
	assert_int_equal(x.mem, 0);
	assert_int_equal(x.nblocks, 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_idx, teardown_idx)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_init_geometry),
		cmocka_unit_test(test_init_zero_blocks),
		T(test_holes_by_default),
		T(test_set_then_get),
		T(test_set_returns_old),
		T(test_set_zero_kind_is_not_a_hole),
		T(test_set_hole_in_empty_chunk_allocates_nothing),
		T(test_first_set_allocates_one_chunk),
		T(test_chunk_freed_when_all_holes_again),
		T(test_overwrite_does_not_double_count),
		T(test_hole_over_hole_in_live_chunk),

		T(test_walk_in_block_order),
		T(test_walk_skips_holes),
		T(test_walk_empty_calls_nothing),
		T(test_walk_stops_early),
		T(test_walk_stops_at_last_entry_of_chunk),

		T(test_shrink_drops_entries_past_end),
		T(test_shrink_keeps_entries_before_end),
		T(test_shrink_releases_memory),
		T(test_shrink_then_grow_leaves_holes),
		T(test_shrink_to_zero_drops_all),
		T(test_shrink_drops_zero_entries),
		T(test_grow_keeps_entries),
		T(test_grow_calls_no_drop),
		T(test_grow_within_chunk),

		T(test_fields_round_trip),
		T(test_small_lsns),
		T(test_lsn_below_window_rebases),
		T(test_lsn_above_window_rebases),
		T(test_lsns_too_far_apart_widen),
		T(test_replaced_entry_does_not_widen),
		T(test_random_against_model),

		cmocka_unit_test(test_mem_per_block_full_index),
		cmocka_unit_test(test_mem_per_block_filled_region),
		cmocka_unit_test(test_free_resets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
