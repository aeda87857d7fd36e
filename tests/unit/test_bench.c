/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for testudo-bench's pieces that decide what is reported:
 * the latency histogram (accurate to 1%), URI parsing, the stamped-block
 * check (every kind of damage is caught, nothing good is flagged) and
 * the journal (a torn tail is ignored, damage before it is refused).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

/* ---- histogram ---- */

static void test_hist_quantiles_within_half_percent(void **st)
{
	(void)st;
	static struct tb_hist h;
	tb_hist_reset(&h);
	/* 1..1e6 ns uniformly, then check quantiles against the exact values */
	for (uint64_t v = 1; v <= 1000000; v++)
		tb_hist_add(&h, v * 97);
	double qs[] = { 0.01, 0.5, 0.9, 0.99, 0.999 };
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		double exact = (double)(uint64_t)(qs[i] * 1e6 + 0.5) * 97;
		double got = (double)tb_hist_quantile(&h, qs[i]);
		assert_true(got >= exact * 0.995 && got <= exact * 1.005);
	}
	assert_int_equal(h.count, 1000000);
	assert_int_equal(h.min, 97);
	assert_int_equal(h.max, 97000000);
	assert_int_equal(tb_hist_quantile(&h, 1.0), 97000000);
}

static void test_hist_every_value_near_its_bucket(void **st)
{
	(void)st;
	static struct tb_hist h;
	/* single values across the whole range come back within 0.4% */
	for (uint64_t v = 1; v < (1ull << 62); v = v * 3 + 1) {
		tb_hist_reset(&h);
		tb_hist_add(&h, v);
		tb_hist_add(&h, v);
		uint64_t q = tb_hist_quantile(&h, 0.5);
		assert_true((double)q >= (double)v * 0.996 && (double)q <= (double)v * 1.004);
	}
}

static void test_hist_empty_and_merge(void **st)
{
	(void)st;
	static struct tb_hist a, b;
	tb_hist_reset(&a);
	tb_hist_reset(&b);
	assert_int_equal(tb_hist_quantile(&a, 0.99), 0);
	tb_hist_add(&a, 1000);
	tb_hist_add(&b, 5000000);
	tb_hist_merge(&a, &b);
	assert_int_equal(a.count, 2);
	assert_int_equal(a.min, 1000);
	assert_int_equal(a.max, 5000000);
	assert_in_range(tb_hist_quantile(&a, 0.5), 996, 1004);   /* a bucket midpoint */
}

/* ---- URIs ---- */

static void test_uri_forms(void **st)
{
	(void)st;
	struct tb_uri u;
	char err[256];
	assert_int_equal(tb_uri_parse("nbd://127.0.0.1:10900/vol1", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_string_equal(u.port, "10900");
	assert_string_equal(u.export_name, "vol1");
	assert_false(u.unix_socket);
	assert_int_equal(tb_uri_parse("nbd://localhost", &u, err, sizeof(err)), 0);
	assert_string_equal(u.port, "10809");
	assert_string_equal(u.export_name, "");
	assert_int_equal(tb_uri_parse("nbd://[::1]:99/a%20b", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.port, "99");
	assert_string_equal(u.export_name, "a b");
	assert_int_equal(tb_uri_parse("nbd+unix:///disk?socket=/tmp/s.sock", &u, err, sizeof(err)), 0);
	assert_true(u.unix_socket);
	assert_string_equal(u.path, "/tmp/s.sock");
	assert_string_equal(u.export_name, "disk");
}

static void test_uri_rejects(void **st)
{
	(void)st;
	struct tb_uri u;
	char err[256];
	const char *bad[] = {
		"", "http://x/y", "nbd://", "nbd://:10809/x", "nbd://h:port/x", "nbd://h:/x",
		"nbd://[::1/x", "nbd://[::1]x/y", "nbds://h/x", "nbd+unix:///x", "nbd+unix://h/x?socket=/s",
		"nbd+unix:///x?socket=", "nbd://h/%zz", "nbd://h/%4", "nbd://h/%00",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(tb_uri_parse(bad[i], &u, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
}

/* ---- stamped blocks ---- */

#define W 0x1234567887654321ull

static void test_vblk_good(void **st)
{
	(void)st;
	static unsigned char b[3 * TDO_VBLK_SIZE];
	uint64_t found;
	tb_vblk_fill(b, sizeof(b), 8192, W, 7);
	for (int i = 0; i < 3; i++) {
		uint64_t off = 8192 + (uint64_t)i * TDO_VBLK_SIZE;
		assert_int_equal(tb_vblk_check(b + i * TDO_VBLK_SIZE, off, W, 7, &found), TB_OK);
		assert_int_equal(found, 7);
		/* in flight: newer than the newest acknowledged */
		assert_int_equal(tb_vblk_check(b + i * TDO_VBLK_SIZE, off, W, 3, &found), TB_OK);
		/* nothing acknowledged yet: anything goes */
		assert_int_equal(tb_vblk_check(b + i * TDO_VBLK_SIZE, off, W, 0, &found), TB_OK);
	}
	/* two writes to one offset differ beyond the header */
	static unsigned char c[TDO_VBLK_SIZE];
	tb_vblk_fill(c, sizeof(c), 8192, W, 8);
	assert_memory_not_equal(b + 64, c + 64, TDO_VBLK_SIZE - 64);
}

static void test_vblk_damage(void **st)
{
	(void)st;
	static unsigned char b[TDO_VBLK_SIZE], z[TDO_VBLK_SIZE];
	uint64_t found;
	tb_vblk_fill(b, sizeof(b), 4096, W, 5);
	assert_int_equal(tb_vblk_check(b, 4096, W, 6, &found), TB_STALE);
	assert_int_equal(found, 5);
	assert_int_equal(tb_vblk_check(b, 0, W, 5, &found), TB_MISPLACED);
	assert_int_equal(tb_vblk_check(b, 0, W, 0, &found), TB_MISPLACED);
	assert_int_equal(tb_vblk_check(b, 4096, W + 1, 5, &found), TB_FOREIGN);
	assert_int_equal(tb_vblk_check(z, 4096, W, 5, &found), TB_MISSING);
	assert_int_equal(tb_vblk_check(z, 4096, W, 0, &found), TB_OK);
	/* a torn block: its second half from another write */
	static unsigned char t[TDO_VBLK_SIZE];
	tb_vblk_fill(t, sizeof(t), 4096, W, 9);
	memcpy(t + 2048, b + 2048, 2048);
	assert_int_equal(tb_vblk_check(t, 4096, W, 5, &found), TB_CORRUPT);
	/* ours and torn is damage even when nothing was acknowledged */
	assert_int_equal(tb_vblk_check(t, 4096, W, 0, &found), TB_CORRUPT);
	/* one flipped bit anywhere */
	for (size_t i = 0; i < TDO_VBLK_SIZE; i += 509) {
		tb_vblk_fill(t, sizeof(t), 4096, W, 9);
		t[i] ^= 0x10;
		assert_int_not_equal(tb_vblk_check(t, 4096, W, 9, &found), TB_OK);
	}
}

/* ---- journal ---- */

static char jpath[] = "/tmp/tb-journal-XXXXXX";

static void test_journal_round_trip_and_torn_tail(void **st)
{
	(void)st;
	int fd = mkstemp(jpath);
	assert_true(fd >= 0);
	close(fd);
	struct tb_journal j;
	assert_int_equal(tb_journal_create(&j, jpath, W, 1 << 20, "vol"), 0);
	tb_journal_add(&j, 0, 8192, 1);
	tb_journal_add(&j, 4096, 4096, 3);
	tb_journal_add(&j, 4096, 4096, 2);      /* acknowledged later, older */
	tb_journal_add(&j, 65536, 4096, 4);
	assert_int_equal(tb_journal_close(&j), 0);

	struct tb_map m;
	uint64_t writer, recs, tail, doubt;
	char err[256];
	assert_int_equal(tb_journal_load(jpath, &m, &writer, &recs, &doubt, &tail, err, sizeof(err)), 0);
	assert_int_equal(writer, W);
	assert_int_equal(recs, 4);
	assert_int_equal(tail, 0);
	assert_int_equal(m.nblocks, 17);
	assert_int_equal(m.acked[0], 1);
	assert_int_equal(m.acked[1], 3);
	assert_int_equal(m.acked[2], 0);
	assert_int_equal(m.acked[16], 4);
	tb_map_free(&m);

	/* a torn last record (the bench killed mid-append) is ignored */
	assert_int_equal(truncate(jpath, sizeof(struct tdo_bj_header) + 3 * sizeof(struct tdo_bj_rec) + 10), 0);
	assert_int_equal(tb_journal_load(jpath, &m, &writer, &recs, &doubt, &tail, err, sizeof(err)), 0);
	assert_int_equal(recs, 3);
	assert_int_equal(tail, 10);
	tb_map_free(&m);

	/* a tail of several zeroed records (a host crash mid-append) is ignored */
	fd = open(jpath, O_WRONLY);
	assert_true(fd >= 0);
	static const char zero[2 * sizeof(struct tdo_bj_rec)];
	assert_int_equal(pwrite(fd, zero, sizeof(zero), sizeof(struct tdo_bj_header) + sizeof(struct tdo_bj_rec)),
			 (ssize_t)sizeof(zero));
	close(fd);
	assert_int_equal(tb_journal_load(jpath, &m, &writer, &recs, &doubt, &tail, err, sizeof(err)), 0);
	assert_int_equal(recs, 1);
	tb_map_free(&m);

	/* damage before valid records is refused */
	assert_int_equal(tb_journal_create(&j, jpath, W, 1 << 20, "vol"), 0);
	tb_journal_add(&j, 0, 8192, 1);
	tb_journal_add(&j, 4096, 4096, 3);
	tb_journal_add(&j, 65536, 4096, 4);
	assert_int_equal(tb_journal_close(&j), 0);
	fd = open(jpath, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, sizeof(struct tdo_bj_header) + 2), 1);
	close(fd);
	assert_int_equal(tb_journal_load(jpath, &m, &writer, &recs, &doubt, &tail, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "damaged"));

	/* not a journal at all */
	fd = open(jpath, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "hello, world, this is not a journal at all, not even close......", 64), 64);
	close(fd);
	assert_int_equal(tb_journal_load(jpath, &m, &writer, &recs, &doubt, &tail, err, sizeof(err)), -EINVAL);
	unlink(jpath);
}

/* An in-doubt write (its connection dropped) that lands after a newer
 * acknowledged one is "resurrected", not merely stale. */
static void test_journal_in_doubt(void **st)
{
	(void)st;
	char path[] = "/tmp/tb-doubt-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	struct tb_journal j;
	assert_int_equal(tb_journal_create(&j, path, W, 1 << 20, "vol"), 0);
	tb_journal_add(&j, 0, 4096, 1);
	tb_journal_add(&j, 0, 4096 | TDO_BJ_IN_DOUBT, 3);
	tb_journal_add(&j, 0, 4096, 5);
	assert_int_equal(tb_journal_close(&j), 0);
	struct tb_map m;
	uint64_t writer, recs, tail, doubt, found;
	char err[256];
	assert_int_equal(tb_journal_load(path, &m, &writer, &recs, &doubt, &tail, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(recs, 3);
	assert_int_equal(doubt, 1);
	assert_int_equal(m.acked[0], 5);
	static unsigned char b[TDO_VBLK_SIZE];
	tb_vblk_fill(b, sizeof(b), 0, W, 3);
	assert_int_equal(tb_map_check(&m, b, 0, W, &found), TB_RESURRECTED);
	tb_vblk_fill(b, sizeof(b), 0, W, 1);
	assert_int_equal(tb_map_check(&m, b, 0, W, &found), TB_STALE);
	tb_vblk_fill(b, sizeof(b), 0, W, 5);
	assert_int_equal(tb_map_check(&m, b, 0, W, &found), TB_OK);
	tb_map_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_quantiles_within_half_percent),
		cmocka_unit_test(test_hist_every_value_near_its_bucket),
		cmocka_unit_test(test_hist_empty_and_merge),
		cmocka_unit_test(test_uri_forms),
		cmocka_unit_test(test_uri_rejects),
		cmocka_unit_test(test_vblk_good),
		cmocka_unit_test(test_vblk_damage),
		cmocka_unit_test(test_journal_round_trip_and_torn_tail),
		cmocka_unit_test(test_journal_in_doubt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
