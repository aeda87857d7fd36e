/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the per-volume counters (server/metrics.c) on their own:
 * slots found and made by name, held by connections (met_vol_get/put),
 * forgotten when their volume goes (met_forget) and freed only when the
 * last holder lets go; met_record's counters and latency histogram.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "admin.h"

static int setup(void **state)
{
	struct metrics *m = calloc(1, sizeof *m);

	if (!m)
		return -1;
	*state = m;
	return 0;
}

static int teardown(void **state)
{
	struct metrics *m = *state;

	free(m->vols);
	free(m);
	return 0;
}

/* ---- slots by name ---- */

static void test_same_name_same_slot(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol_get(m, "a");

	assert_non_null(a);
	assert_ptr_equal(met_vol_get(m, "a"), a);
	assert_ptr_equal(met_vol(m, "a"), a);
	assert_int_equal(a->refs, 2); /* met_vol() takes no reference */
	assert_string_equal(a->name, "a");
}

static void test_names_get_their_own_slots(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol(m, "a"), *b = met_vol(m, "b");

	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	assert_int_equal(m->nvols, 2);
}

static void test_bad_names_get_no_slot(void **state)
{
	struct metrics *m = *state;
	char longest[TDO_NAME_MAX + 1], too_long[TDO_NAME_MAX + 2];

	memset(longest, 'x', TDO_NAME_MAX);
	longest[TDO_NAME_MAX] = 0;
	memset(too_long, 'x', TDO_NAME_MAX + 1);
	too_long[TDO_NAME_MAX + 1] = 0;
	assert_null(met_vol_get(m, NULL));
	assert_null(met_vol_get(m, ""));
	assert_null(met_vol_get(m, too_long));
	assert_non_null(met_vol_get(m, longest));
}

static void test_full_table_gives_null(void **state)
{
	struct metrics *m = *state;
	char name[16];

	for (unsigned i = 0; i < TDO_MAX_VOLS; i++) {
		snprintf(name, sizeof name, "v%u", i);
		assert_non_null(met_vol(m, name));
	}
	assert_null(met_vol(m, "one-more"));
	assert_non_null(met_vol(m, "v7")); /* the ones there are still found */
	met_forget(m, "v7");
	assert_non_null(met_vol(m, "one-more")); /* the freed slot serves */
}

/* ---- forgetting ---- */

static void test_forget_unheld_frees_at_once(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol(m, "a");

	met_forget(m, "a");
	assert_int_equal(a->name[0], 0);
	assert_int_equal(m->nvols, 0); /* the high-water mark drops with it */
}

static void test_forgotten_held_slot_is_not_found(void **state)
{
	struct metrics *m = *state;
	struct met_vol *old = met_vol_get(m, "a"), *fresh;

	met_forget(m, "a");
	assert_true(old->forgotten);
	assert_string_equal(old->name, "a"); /* still the holder's */
	fresh = met_vol(m, "a");
	assert_non_null(fresh);
	assert_ptr_not_equal(fresh, old);
}

static void test_forgotten_held_slot_is_not_reused(void **state)
{
	struct metrics *m = *state;
	struct met_vol *old = met_vol_get(m, "a");

	met_forget(m, "a");
	for (int i = 0; i < 8; i++) {
		char name[16];
		snprintf(name, sizeof name, "n%d", i);
		assert_ptr_not_equal(met_vol(m, name), old);
	}
	assert_true(old->forgotten);
	assert_string_equal(old->name, "a");
}

static void test_forgotten_slot_freed_when_last_holder_lets_go(void **state)
{
	struct metrics *m = *state;
	struct met_vol *old = met_vol_get(m, "a");

	assert_ptr_equal(met_vol_get(m, "a"), old);
	met_forget(m, "a");
	met_vol_put(m, old);
	assert_true(old->forgotten); /* one holder left */
	assert_string_equal(old->name, "a");
	met_vol_put(m, old);
	assert_int_equal(old->name[0], 0);
	assert_false(old->forgotten);
	assert_ptr_equal(met_vol(m, "b"), old); /* free again: the next new name takes it */
}

static void test_put_without_forget_keeps_the_slot(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol_get(m, "a");

	met_record(a, MET_READ, 10, 4096, 0);
	met_vol_put(m, a);
	assert_int_equal(a->refs, 0);
	assert_ptr_equal(met_vol(m, "a"), a);
	assert_int_equal(a->ops[MET_READ], 1); /* figures outlive connections */
}

static void test_new_volume_of_the_same_name_starts_at_zero(void **state)
{
	struct metrics *m = *state;
	struct met_vol *old = met_vol_get(m, "a"), *fresh;

	met_record(old, MET_WRITE, 100, 4096, 0);
	met_forget(m, "a");
	fresh = met_vol_get(m, "a");
	assert_ptr_not_equal(fresh, old);
	assert_int_equal(fresh->ops[MET_WRITE], 0);
	assert_int_equal(fresh->bytes_written, 0);
	assert_int_equal(fresh->refs, 1);
	/* the closing connection still records into its own slot only */
	met_record(old, MET_WRITE, 100, 4096, 0);
	assert_int_equal(old->ops[MET_WRITE], 2);
	assert_int_equal(fresh->ops[MET_WRITE], 0);
	/* the old slot goes when its holder lets go; the new one stays */
	met_vol_put(m, old);
	assert_int_equal(old->name[0], 0);
	assert_false(fresh->forgotten);
	assert_ptr_equal(met_vol(m, "a"), fresh);
}

static void test_forget_unknown_or_empty_is_harmless(void **state)
{
	struct metrics *m = *state;

	met_forget(m, "nothing yet"); /* before the table exists */
	met_forget(m, NULL);
	met_vol_put(m, NULL);
	assert_non_null(met_vol(m, "a"));
	met_forget(m, "b");
	assert_int_equal(m->nvols, 1);
}

/* ---- recording ---- */

static void test_record_into_null_is_a_no_op(void **state)
{
	(void)state;
	met_record(NULL, MET_READ, 1, 4096, 0);
	met_record(NULL, MET_WRITE, 1, 4096, 1);
}

static void test_record_ignores_unknown_ops(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol(m, "a"), before;

	memcpy(&before, a, sizeof before);
	met_record(a, -1, 1, 4096, 0);
	met_record(a, MET_NOPS, 1, 4096, 0);
	assert_memory_equal(a, &before, sizeof before);
}

static void test_record_counts_ops_errors_and_bytes(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol(m, "a");

	met_record(a, MET_READ, 5, 4096, 0);
	met_record(a, MET_READ, 5, 8192, 1);  /* failed: no bytes */
	met_record(a, MET_WRITE, 5, 512, 0);
	met_record(a, MET_FLUSH, 5, 0, 0);
	assert_int_equal(a->ops[MET_READ], 2);
	assert_int_equal(a->errors[MET_READ], 1);
	assert_int_equal(a->bytes_read, 4096);
	assert_int_equal(a->ops[MET_WRITE], 1);
	assert_int_equal(a->errors[MET_WRITE], 0);
	assert_int_equal(a->bytes_written, 512);
	assert_int_equal(a->ops[MET_FLUSH], 1);
	assert_int_equal(a->lat[MET_READ].count, 2);
	assert_int_equal(a->lat[MET_READ].sum_usec, 10);
}

/* Bucket i counts every latency below 2^i µs: cumulative. */
static void test_histogram_buckets(void **state)
{
	struct metrics *m = *state;
	struct met_vol *a = met_vol(m, "a");
	const struct met_hist *h = &a->lat[MET_TRIM];
	static const uint64_t lat[] = { 0, 1, 2, 3, 4, 1000, (UINT64_C(1) << 23) - 1, UINT64_C(1) << 23,
	                                UINT64_C(1) << MET_BUCKETS, UINT64_MAX };
	const int n = (int)(sizeof lat / sizeof lat[0]);

	for (int i = 0; i < n; i++)
		met_record(a, MET_TRIM, lat[i], 0, 0);
	assert_int_equal(h->count, n);
	for (int k = 0; k < MET_BUCKETS; k++) {
		uint64_t want = 0;
		for (int i = 0; i < n; i++)
			want += lat[i] < (UINT64_C(1) << k);
		assert_int_equal(h->bucket[k], want);
	}
	/* spot checks of the same rule */
	assert_int_equal(h->bucket[0], 1);                /* only 0 is below 1 µs */
	assert_int_equal(h->bucket[1], 2);                /* 0 and 1 */
	assert_int_equal(h->bucket[2], 4);                /* 0, 1, 2, 3 */
	assert_int_equal(h->bucket[MET_BUCKETS - 1], 7);  /* all below 2^23 */
	for (int k = 1; k < MET_BUCKETS; k++)
		assert_true(h->bucket[k] >= h->bucket[k - 1]);
	/* 2^24 µs and more are only in the count */
	assert_true(h->bucket[MET_BUCKETS - 1] < h->count);
}

static void test_op_names(void **state)
{
	(void)state;
	assert_string_equal(met_op_name(MET_READ), "read");
	assert_string_equal(met_op_name(MET_ZERO), "write_zeroes");
	assert_string_equal(met_op_name(MET_BLOCK_STATUS), "block_status");
	assert_string_equal(met_op_name(-1), "unknown");
	assert_string_equal(met_op_name(MET_NOPS), "unknown");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_same_name_same_slot),
		T(test_names_get_their_own_slots),
		T(test_bad_names_get_no_slot),
		T(test_full_table_gives_null),
		T(test_forget_unheld_frees_at_once),
		T(test_forgotten_held_slot_is_not_found),
		T(test_forgotten_held_slot_is_not_reused),
		T(test_forgotten_slot_freed_when_last_holder_lets_go),
		T(test_put_without_forget_keeps_the_slot),
		T(test_new_volume_of_the_same_name_starts_at_zero),
		T(test_forget_unknown_or_empty_is_harmless),
		T(test_record_into_null_is_a_no_op),
		T(test_record_ignores_unknown_ops),
		T(test_record_counts_ops_errors_and_bytes),
		T(test_histogram_buckets),
		T(test_op_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
