/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the rules of a volume configuration
 * (replication/vconf.c) on their own, no loop, no engine and no peers:
 * which configuration is newer, which is valid, and which changes
 * vconf_change makes and refuses, down to the epoch history of a promote
 * when the history is full, and a resync's bound (vconf_resync_bound),
 * down to a replica whose epoch the history no longer holds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* A valid live configuration: "vol" on a, b, c, primary a, all in-sync,
 * epoch 3 version 10, two epochs of history. */
static struct tdo_rm_vconf base(void)
{
	struct tdo_rm_vconf c = { .vc_size = 1 << 20, .vc_epoch = 3, .vc_version = 10, .vc_nrep = 3,
	                          .vc_primary = 0, .vc_nhist = 2 };
	snprintf(c.vc_name, sizeof(c.vc_name), "vol");
	snprintf(c.vc_rep[0], sizeof(c.vc_rep[0]), "a");
	snprintf(c.vc_rep[1], sizeof(c.vc_rep[1]), "b");
	snprintf(c.vc_rep[2], sizeof(c.vc_rep[2]), "c");
	for (int i = 0; i < 3; i++)
		c.vc_state[i] = TDO_REP_IN_SYNC;
	c.vc_hist[0] = (struct tdo_rm_vhist){ .vh_epoch = 1, .vh_start_lsn = 0 };
	c.vc_hist[1] = (struct tdo_rm_vhist){ .vh_epoch = 3, .vh_start_lsn = 500 };
	return c;
}

/* vconf_change of CH on CUR as node NODE (PRIMARY, RS_ACTIVE, LSN: what it
 * knows of itself): what it returned, its result in OUT, why not in WHY. */
static bool change(const struct tdo_rm_vconf *cur, const struct change *ch, const char *node, bool primary,
                   bool rs_active, uint64_t lsn, struct tdo_rm_vconf *out, char *why)
{
	struct vconf_self self = { .node = node, .primary = primary, .rs_active = rs_active, .lsn = lsn };
	why[0] = 0;
	memset(out, 0xa5, sizeof(*out));
	bool ok = vconf_change(cur, ch, &self, out, why, 160);
	if (!ok)
		assert_true(why[0] != 0);   /* every refusal says why */
	return ok;
}

static void test_newer_orders_by_epoch_then_version(void **state)
{
	(void)state;
	struct tdo_rm_vconf a = base(), b = base();
	assert_false(vconf_newer(&a, &b));          /* equal: neither */
	b.vc_version++;
	assert_true(vconf_newer(&b, &a));
	assert_false(vconf_newer(&a, &b));
	a.vc_epoch++;                               /* a higher epoch wins over any version */
	a.vc_version = 1;
	assert_true(vconf_newer(&a, &b));
	assert_false(vconf_newer(&b, &a));
}

static void test_live_rep_index_and_state_names(void **state)
{
	(void)state;
	struct tdo_rm_vconf c = base();
	assert_true(vconf_live(&c));
	c.vc_deleted = 1;
	assert_false(vconf_live(&c));
	struct tdo_rm_vconf none = { .vc_deleted = 0, .vc_version = 0 };
	assert_false(vconf_live(&none));            /* the empty tombstone */
	c = base();
	assert_int_equal(vconf_rep_index(&c, "a"), 0);
	assert_int_equal(vconf_rep_index(&c, "c"), 2);
	assert_int_equal(vconf_rep_index(&c, "d"), -1);
	c.vc_nrep = 2;
	assert_int_equal(vconf_rep_index(&c, "c"), -1);  /* only the first vc_nrep count */
	assert_string_equal(vconf_state_name(TDO_REP_IN_SYNC), "in-sync");
	assert_string_equal(vconf_state_name(TDO_REP_CATCHING_UP), "catching-up");
	assert_string_equal(vconf_state_name(TDO_REP_OUT_OF_DATE), "out-of-date");
	assert_string_equal(vconf_state_name(0), "unknown");
}

static void test_wire_name(void **state)
{
	(void)state;
	char field[64], out[TDO_NAME_MAX + 1];
	memset(field, 0, sizeof(field));
	strcpy(field, "data-1");
	assert_true(vconf_wire_name(field, out));
	assert_string_equal(out, "data-1");
	memset(field, 'x', sizeof(field));          /* no NUL within the field */
	assert_false(vconf_wire_name(field, out));
	memset(field, 0, sizeof(field));            /* empty */
	assert_false(vconf_wire_name(field, out));
	strcpy(field, "a/b");
	assert_false(vconf_wire_name(field, out));
}

static void test_valid(void **state)
{
	(void)state;
	struct tdo_rm_vconf c = base();
	assert_true(vconf_valid(&c));
	c.vc_nrep = TDO_REP_MAX;                    /* the largest set, names still unique */
	for (int i = 3; i < TDO_REP_MAX; i++) {
		snprintf(c.vc_rep[i], sizeof(c.vc_rep[i]), "n%d", i);
		c.vc_state[i] = TDO_REP_OUT_OF_DATE;
	}
	assert_true(vconf_valid(&c));
	c = base();
	c.vc_nhist = TDO_VHIST_MAX;
	assert_true(vconf_valid(&c));

	/* each rule on its own: spoil one field of a valid configuration */
	for (int k = 0; k < 15; k++) {
		c = base();
		switch (k) {
		case 0: c.vc_nrep = 0; break;
		case 1: c.vc_nrep = TDO_REP_MAX + 1; break;
		case 2: c.vc_primary = 3; break;                    /* not a replica */
		case 3: c.vc_epoch = 0; break;
		case 4: c.vc_nhist = TDO_VHIST_MAX + 1; break;
		case 5: c.vc_size = 0; break;
		case 6: c.vc_size = 4096 + 100; break;              /* not whole sectors */
		case 7: c.vc_name[0] = 0; break;
		case 8: memset(c.vc_name, 'v', sizeof(c.vc_name)); break; /* no NUL */
		case 9: strcpy(c.vc_rep[1], "b b"); break;
		case 10: memset(c.vc_rep[1], 'b', sizeof(c.vc_rep[1])); break;
		case 11: c.vc_rep[2][0] = 0; break;
		case 12: strcpy(c.vc_rep[2], "a"); break;           /* a node twice */
		case 13: c.vc_state[1] = 0; break;
		case 14: c.vc_state[1] = TDO_REP_OUT_OF_DATE + 1; break;
		}
		if (vconf_valid(&c))
			fail_msg("spoiled configuration %d taken as valid", k);
	}
}

static void test_create(void **state)
{
	(void)state;
	char why[160];
	struct tdo_rm_vconf out, want = base();
	struct change ch = { .kind = CH_CREATE, .conf = want };

	/* a name never seen: the empty tombstone */
	struct tdo_rm_vconf none = { .vc_deleted = 1 };
	snprintf(none.vc_name, sizeof(none.vc_name), "vol");
	assert_true(change(&none, &ch, "a", false, false, 0, &out, why));
	assert_int_equal(out.vc_epoch, 1);
	assert_int_equal(out.vc_version, 1);
	assert_int_equal(out.vc_nhist, 1);
	assert_int_equal(out.vc_hist[0].vh_epoch, 1);
	assert_int_equal(out.vc_hist[0].vh_start_lsn, 0);
	assert_int_equal(out.vc_nrep, 3);
	assert_true(vconf_valid(&out));
	assert_true(vconf_newer(&out, &none));

	/* over a deleted volume of the same name: newer than its tombstone */
	struct tdo_rm_vconf dead = base();
	dead.vc_deleted = 1;
	assert_true(change(&dead, &ch, "a", false, false, 0, &out, why));
	assert_int_equal(out.vc_epoch, dead.vc_epoch + 1);
	assert_int_equal(out.vc_version, dead.vc_version + 1);
	assert_false(out.vc_deleted);
	assert_true(vconf_newer(&out, &dead));

	/* never over a live one */
	struct tdo_rm_vconf live = base();
	assert_false(change(&live, &ch, "a", true, false, 0, &out, why));
	assert_non_null(strstr(why, "already exists"));
}

static void test_state(void **state)
{
	(void)state;
	char why[160];
	struct tdo_rm_vconf cur = base(), out;
	struct change ch = { .kind = CH_STATE, .rep = 1, .state = TDO_REP_OUT_OF_DATE };

	/* only the primary marks replicas */
	assert_false(change(&cur, &ch, "a", false, false, 0, &out, why));
	assert_non_null(strstr(why, "not the primary"));
	struct tdo_rm_vconf dead = base();
	dead.vc_deleted = 1;
	assert_false(change(&dead, &ch, "a", true, false, 0, &out, why));

	assert_true(change(&cur, &ch, "a", true, false, 0, &out, why));
	assert_int_equal(out.vc_state[1], TDO_REP_OUT_OF_DATE);
	assert_int_equal(out.vc_epoch, cur.vc_epoch);          /* the primary stays */
	assert_int_equal(out.vc_version, cur.vc_version + 1);
	assert_true(vconf_newer(&out, &cur));

	/* already so: nothing to do, the same configuration back */
	ch.state = TDO_REP_IN_SYNC;
	assert_true(change(&cur, &ch, "a", true, false, 0, &out, why));
	assert_memory_equal(&out, &cur, sizeof(cur));
}

static void test_promote(void **state)
{
	(void)state;
	char why[160];
	struct tdo_rm_vconf cur = base(), out;
	struct change ch = { .kind = CH_PROMOTE };

	assert_true(change(&cur, &ch, "b", false, false, 777, &out, why));
	assert_int_equal(out.vc_primary, 1);
	assert_int_equal(out.vc_epoch, cur.vc_epoch + 1);
	assert_int_equal(out.vc_version, cur.vc_version + 1);
	assert_int_equal(out.vc_state[1], TDO_REP_IN_SYNC);
	assert_int_equal(out.vc_state[0], TDO_REP_OUT_OF_DATE); /* the old primary resyncs too */
	assert_int_equal(out.vc_state[2], TDO_REP_OUT_OF_DATE);
	assert_int_equal(out.vc_nhist, 3);
	assert_int_equal(out.vc_hist[2].vh_epoch, out.vc_epoch);
	assert_int_equal(out.vc_hist[2].vh_start_lsn, 777);
	assert_memory_equal(out.vc_hist, cur.vc_hist, 2 * sizeof(cur.vc_hist[0]));
	assert_true(vconf_valid(&out));
	assert_true(vconf_newer(&out, &cur));

	/* refused: not a replica, not in-sync, a resync into it not ended, deleted */
	assert_false(change(&cur, &ch, "d", false, false, 0, &out, why));
	assert_non_null(strstr(why, "holds no copy"));
	struct tdo_rm_vconf behind = base();
	behind.vc_state[2] = TDO_REP_CATCHING_UP;
	assert_false(change(&behind, &ch, "c", false, false, 0, &out, why));
	assert_non_null(strstr(why, "only an in-sync replica"));
	assert_false(change(&cur, &ch, "c", false, true, 0, &out, why));
	assert_non_null(strstr(why, "only an in-sync replica"));
	struct tdo_rm_vconf dead = base();
	dead.vc_deleted = 1;
	assert_false(change(&dead, &ch, "b", false, false, 0, &out, why));
}

/* A full history drops its oldest epoch and keeps the rest in order. */
static void test_promote_with_a_full_history(void **state)
{
	(void)state;
	char why[160];
	struct tdo_rm_vconf cur = base(), out;
	cur.vc_nhist = TDO_VHIST_MAX;
	for (uint32_t i = 0; i < TDO_VHIST_MAX; i++)
		cur.vc_hist[i] = (struct tdo_rm_vhist){ .vh_epoch = i + 1, .vh_start_lsn = 100 * i };
	cur.vc_epoch = TDO_VHIST_MAX;
	struct change ch = { .kind = CH_PROMOTE };

	assert_true(change(&cur, &ch, "c", false, false, 9999, &out, why));
	assert_int_equal(out.vc_nhist, TDO_VHIST_MAX);
	for (uint32_t i = 0; i < TDO_VHIST_MAX - 1; i++) {
		assert_int_equal(out.vc_hist[i].vh_epoch, cur.vc_hist[i + 1].vh_epoch);
		assert_int_equal(out.vc_hist[i].vh_start_lsn, cur.vc_hist[i + 1].vh_start_lsn);
	}
	assert_int_equal(out.vc_hist[TDO_VHIST_MAX - 1].vh_epoch, TDO_VHIST_MAX + 1);
	assert_int_equal(out.vc_hist[TDO_VHIST_MAX - 1].vh_start_lsn, 9999);
	assert_true(vconf_valid(&out));

	/* and once more (a caught up meanwhile): still full, still in order */
	struct tdo_rm_vconf again;
	assert_false(change(&out, &ch, "a", false, false, 12345, &again, why)); /* not yet */
	out.vc_state[0] = TDO_REP_IN_SYNC;
	out.vc_version++;
	assert_true(change(&out, &ch, "a", false, false, 12345, &again, why));
	assert_int_equal(again.vc_nhist, TDO_VHIST_MAX);
	assert_int_equal(again.vc_hist[0].vh_epoch, 3);
	assert_int_equal(again.vc_hist[TDO_VHIST_MAX - 2].vh_epoch, TDO_VHIST_MAX + 1);
	assert_int_equal(again.vc_hist[TDO_VHIST_MAX - 1].vh_epoch, TDO_VHIST_MAX + 2);
	assert_int_equal(again.vc_hist[TDO_VHIST_MAX - 1].vh_start_lsn, 12345);
}

/* A resync's bound: a replica keeps its log up to the start of the epoch
 * after its own, and no more than the primary has. */
static void test_resync_bound(void **state)
{
	(void)state;
	struct tdo_rm_vconf c = base();            /* epochs 1 (from LSN 0) and 3 (from 500), now 3 */
	c.vc_hist[1].vh_epoch = 2;
	c.vc_hist[2] = (struct tdo_rm_vhist){ .vh_epoch = 3, .vh_start_lsn = 700 };
	c.vc_nhist = 3;                            /* 1 from 0, 2 from 500, 3 from 700 */

	assert_int_equal(vconf_hist_index(&c, 1), 0);
	assert_int_equal(vconf_hist_index(&c, 3), 2);
	assert_int_equal(vconf_hist_index(&c, 4), -1);
	/* of the current epoch: all of it, up to the primary's LSN */
	assert_int_equal(vconf_resync_bound(&c, 800, 3, 900), 800);
	assert_int_equal(vconf_resync_bound(&c, 950, 3, 900), 900);
	/* of an older epoch: cut where the next one began */
	assert_int_equal(vconf_resync_bound(&c, 600, 1, 900), 500);
	assert_int_equal(vconf_resync_bound(&c, 400, 1, 900), 400);
	assert_int_equal(vconf_resync_bound(&c, 750, 2, 900), 700);
	assert_int_equal(vconf_resync_bound(&c, 650, 2, 900), 650);
	/* an epoch this configuration never had: nothing trusted */
	assert_int_equal(vconf_resync_bound(&c, 800, 4, 900), 0);
	assert_int_equal(vconf_resync_bound(&c, 0, 0, 900), 0);
	/* an epoch the history does not hold (a gap in it): nothing trusted */
	struct tdo_rm_vconf gap = base();          /* epochs 1 and 3: where 2 began is not known */
	assert_int_equal(vconf_resync_bound(&gap, 450, 2, 900), 0);
}

/* A replica away through more promotes than the history keeps: its epoch
 * fell out of the history, so where the epoch after it began is not known
 * any more, and its whole log is suspect: bound 0 (a full resync). */
static void test_resync_bound_older_than_the_history(void **state)
{
	(void)state;
	char why[160];
	struct tdo_rm_vconf none = { .vc_deleted = 1 }, c;
	snprintf(none.vc_name, sizeof(none.vc_name), "vol");
	struct tdo_rm_vconf want = base();
	struct change create = { .kind = CH_CREATE, .conf = want }, promote = { .kind = CH_PROMOTE };
	assert_true(change(&none, &create, "a", false, false, 0, &c, why));
	/* epoch 1 wrote LSN 1..100; "c" holds 1..110 (10 it alone got, never
	 * acknowledged) and is then away. "a" and "b" take turns as primary,
	 * ten promotes, each epoch writing 10 more. */
	uint64_t lsn = 100;
	for (int i = 0; i < TDO_VHIST_MAX + 2; i++) {
		const char *to = i % 2 ? "a" : "b";
		struct tdo_rm_vconf next;
		c.vc_state[vconf_rep_index(&c, to)] = TDO_REP_IN_SYNC;  /* it caught up meanwhile */
		assert_true(change(&c, &promote, to, false, false, lsn, &next, why));
		c = next;
		lsn += 10;
	}
	assert_int_equal(c.vc_epoch, TDO_VHIST_MAX + 3);
	assert_int_equal(c.vc_nhist, TDO_VHIST_MAX);
	assert_true(c.vc_hist[0].vh_epoch > 2);   /* epoch 2, which began at LSN 100, is forgotten */
	/* "c" at epoch 1, LSN 110: its writes after LSN 100 are not the history */
	assert_true(vconf_resync_bound(&c, 110, 1, lsn) <= 100);
	assert_int_equal(vconf_resync_bound(&c, 110, 1, lsn), 0);
	/* the oldest epoch still kept is still cut where the next began */
	uint32_t e0 = c.vc_hist[0].vh_epoch;
	assert_int_equal(vconf_resync_bound(&c, lsn, e0, lsn), c.vc_hist[1].vh_start_lsn);
}

static void test_delete_and_resize(void **state)
{
	(void)state;
	char why[160];
	struct tdo_rm_vconf cur = base(), out;
	struct change del = { .kind = CH_DELETE }, grow = { .kind = CH_RESIZE, .size = 8 << 20 };

	/* any node may ask, primary or not */
	assert_true(change(&cur, &del, "c", false, false, 0, &out, why));
	assert_true(out.vc_deleted);
	assert_int_equal(out.vc_version, cur.vc_version + 1);
	assert_int_equal(out.vc_epoch, cur.vc_epoch);
	assert_false(vconf_live(&out));
	assert_true(vconf_newer(&out, &cur));

	assert_true(change(&cur, &grow, "b", false, false, 0, &out, why));
	assert_int_equal(out.vc_size, 8 << 20);
	assert_false(out.vc_deleted);
	assert_int_equal(out.vc_version, cur.vc_version + 1);
	assert_true(vconf_valid(&out));

	/* nothing of a deleted volume */
	struct tdo_rm_vconf dead = out;
	dead.vc_deleted = 1;
	assert_false(change(&dead, &del, "a", true, false, 0, &out, why));
	assert_non_null(strstr(why, "no volume 'vol'"));
	assert_false(change(&dead, &grow, "a", true, false, 0, &out, why));
	assert_non_null(strstr(why, "no volume 'vol'"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_newer_orders_by_epoch_then_version),
		cmocka_unit_test(test_live_rep_index_and_state_names),
		cmocka_unit_test(test_wire_name),
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_state),
		cmocka_unit_test(test_promote),
		cmocka_unit_test(test_promote_with_a_full_history),
		cmocka_unit_test(test_delete_and_resize),
		cmocka_unit_test(test_resync_bound),
		cmocka_unit_test(test_resync_bound_older_than_the_history),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
