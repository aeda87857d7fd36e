/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the NBD request validator (server/nbd_validate.c) on its
 * own: no socket, no loop, no engine. Each test is one rule: which flags
 * each command takes, lengths, alignment, the export's end, the payload
 * limit, read-only exports, the negotiated meta context, FLUSH, unknown
 * commands, and the largest request the protocol allows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "nbd_internal.h"

/* An 8 GiB export, so a TRIM of the largest 32-bit length fits in it. */
#define SIZE (UINT64_C(8) << 30)
/* the largest 512-aligned 32-bit length */
#define MAX_LEN 0xfffffe00u

/* What nbd_handshake.c's pick_export() advertises. */
static const uint16_t TFLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                               NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF |
                               NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_FAST_ZERO;

/* The commands that address a range (all but FLUSH). */
static const uint16_t RANGED[] = { NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_CACHE,
                                   NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS };
#define NRANGED (sizeof RANGED / sizeof RANGED[0])

/* A connection that negotiated everything, on a writable export. */
static struct nbd_terms full(void)
{
	return (struct nbd_terms){ .size = SIZE, .tflags = TFLAGS, .structured = true, .meta_base = true };
}

/* nbd_validate() on the request; *CLOSE says whether it asked to hang up. */
static uint32_t check_t(const struct nbd_terms *t, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
                        bool *close)
{
	struct nbd_request rq = { .rq_magic = NBD_REQUEST_MAGIC, .rq_flags = flags, .rq_type = type,
	                          .rq_cookie = 42, .rq_offset = off, .rq_length = len };

	*close = true; /* nbd_validate() must clear it */
	return nbd_validate(t, &rq, close);
}

/* The same against full(), for a request that must not close. */
static uint32_t check(uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
	struct nbd_terms t = full();
	bool close;
	uint32_t err = check_t(&t, type, flags, off, len, &close);

	assert_false(close);
	return err;
}

/* TYPE takes every flag in ALLOWED, alone and together, and refuses each
 * of the 16 bits outside it with EINVAL. */
static void assert_flags(uint16_t type, uint64_t off, uint32_t len, uint16_t allowed)
{
	assert_int_equal(check(type, allowed, off, len), 0);
	for (int bit = 0; bit < 16; bit++) {
		uint16_t f = (uint16_t)(1u << bit);
		assert_int_equal(check(type, f, off, len), f & allowed ? 0 : NBD_EINVAL);
	}
}

/* ---- flags, one command each ---- */

static void test_read_takes_df_and_fua(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_READ, 0, 4096, NBD_CMD_FLAG_DF | NBD_CMD_FLAG_FUA);
}

static void test_write_takes_fua_only(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_WRITE, 0, 4096, NBD_CMD_FLAG_FUA);
}

static void test_trim_takes_fua_only(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_TRIM, 0, 4096, NBD_CMD_FLAG_FUA);
}

static void test_write_zeroes_takes_fua_no_hole_fast_zero(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_WRITE_ZEROES, 0, 4096,
	             NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO);
}

static void test_block_status_takes_req_one_and_fua(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_BLOCK_STATUS, 0, 4096, NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FUA);
}

/* the protocol: with SEND_FUA advertised the server MUST accept FUA on
 * every command (clients are known to set it on others than writes) */
static void test_cache_takes_fua_only(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_CACHE, 0, 4096, NBD_CMD_FLAG_FUA);
}

static void test_flush_takes_fua_only(void **state)
{
	(void)state;
	assert_flags(NBD_CMD_FLUSH, 0, 0, NBD_CMD_FLAG_FUA);
}

/* ---- lengths and alignment ---- */

static void test_length_zero_is_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < NRANGED; i++)
		assert_int_equal(check(RANGED[i], 0, 4096, 0), NBD_EINVAL);
}

static void test_misaligned_offset_is_invalid(void **state)
{
	static const uint64_t offs[] = { 1, 256, 511, 513, 4097, SIZE - 4096 - 1 };

	(void)state;
	for (size_t i = 0; i < NRANGED; i++)
		for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++)
			assert_int_equal(check(RANGED[i], 0, offs[k], 4096), NBD_EINVAL);
}

static void test_misaligned_length_is_invalid(void **state)
{
	static const uint32_t lens[] = { 1, 511, 513, 4095, 4097 };

	(void)state;
	for (size_t i = 0; i < NRANGED; i++)
		for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
			assert_int_equal(check(RANGED[i], 0, 4096, lens[k]), NBD_EINVAL);
}

static void test_one_sector_at_a_sector_offset_is_accepted(void **state)
{
	(void)state;
	for (size_t i = 0; i < NRANGED; i++)
		assert_int_equal(check(RANGED[i], 0, NBD_MIN_BLOCK, NBD_MIN_BLOCK), 0);
}

/* ---- the export's end ---- */

static void test_past_the_end_write_and_zeroes_are_enospc(void **state)
{
	static const uint16_t w[] = { NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES };

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(check(w[i], 0, SIZE, 512), NBD_ENOSPC);           /* starts at the end */
		assert_int_equal(check(w[i], 0, SIZE - 512, 1024), NBD_ENOSPC);    /* runs over it */
		assert_int_equal(check(w[i], 0, SIZE + 4096, 512), NBD_ENOSPC);    /* starts beyond it */
	}
}

static void test_past_the_end_others_are_einval(void **state)
{
	static const uint16_t o[] = { NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_CACHE, NBD_CMD_BLOCK_STATUS };

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(check(o[i], 0, SIZE, 512), NBD_EINVAL);
		assert_int_equal(check(o[i], 0, SIZE - 512, 1024), NBD_EINVAL);
		assert_int_equal(check(o[i], 0, SIZE + 4096, 512), NBD_EINVAL);
	}
}

/* On an export that reaches to 2^64 - 512, a request that starts inside
 * it and runs past its end would wrap offset + length around to a small
 * number: still past the end. */
static void test_offset_plus_length_does_not_wrap(void **state)
{
	struct nbd_terms t = full();
	bool close;

	(void)state;
	t.size = UINT64_MAX - 511; /* 512-aligned */
	assert_int_equal(check_t(&t, NBD_CMD_READ, 0, t.size - 512, 1024, &close), NBD_EINVAL);
	assert_int_equal(check_t(&t, NBD_CMD_WRITE, 0, t.size - 512, 1024, &close), NBD_ENOSPC);
	assert_int_equal(check_t(&t, NBD_CMD_TRIM, 0, t.size - 512, MAX_LEN, &close), NBD_EINVAL);
	assert_int_equal(check_t(&t, NBD_CMD_READ, 0, t.size - 512, 512, &close), 0);
}

/* ---- the payload limit ---- */

static void test_largest_read_and_write_end_at_the_end(void **state)
{
	(void)state;
	assert_int_equal(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, SIZE - NBD_MAX_PAYLOAD, NBD_MAX_PAYLOAD), 0);
	assert_int_equal(check(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, SIZE - NBD_MAX_PAYLOAD, NBD_MAX_PAYLOAD), 0);
}

static void test_read_over_the_max_payload_is_eoverflow(void **state)
{
	(void)state;
	assert_int_equal(check(NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 512), NBD_EOVERFLOW);
	assert_int_equal(check(NBD_CMD_READ, 0, 0, MAX_LEN), NBD_EOVERFLOW);
}

static void test_write_over_the_max_payload_closes(void **state)
{
	struct nbd_terms t = full();
	bool close;

	(void)state;
	assert_int_equal(check_t(&t, NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 512, &close), NBD_EINVAL);
	assert_true(close);
	assert_int_equal(check_t(&t, NBD_CMD_WRITE, 0, 0, MAX_LEN, &close), NBD_EINVAL);
	assert_true(close);
}

/* TRIM, WRITE_ZEROES, CACHE and BLOCK_STATUS carry no payload: any length
 * that fits the export. */
static void test_payload_free_commands_take_any_length(void **state)
{
	static const uint16_t o[] = { NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES, NBD_CMD_CACHE, NBD_CMD_BLOCK_STATUS };

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(check(o[i], 0, 0, NBD_MAX_PAYLOAD + 512), 0);
		assert_int_equal(check(o[i], 0, SIZE - MAX_LEN, MAX_LEN), 0);
	}
}

/* ---- read-only exports ---- */

static void test_read_only_refuses_writes_with_eperm(void **state)
{
	static const uint16_t w[] = { NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES };
	struct nbd_terms t = full();
	bool close;

	(void)state;
	t.tflags |= NBD_FLAG_READ_ONLY;
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(check_t(&t, w[i], 0, 0, 4096, &close), NBD_EPERM);
		assert_false(close);
	}
}

static void test_read_only_serves_reads(void **state)
{
	static const uint16_t r[] = { NBD_CMD_READ, NBD_CMD_CACHE, NBD_CMD_BLOCK_STATUS };
	struct nbd_terms t = full();
	bool close;

	(void)state;
	t.tflags |= NBD_FLAG_READ_ONLY;
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(check_t(&t, r[i], 0, 0, 4096, &close), 0);
	assert_int_equal(check_t(&t, NBD_CMD_FLUSH, 0, 0, 0, &close), 0);
}

/* ---- BLOCK_STATUS and the meta context ---- */

static void test_block_status_without_structured_replies_is_invalid(void **state)
{
	struct nbd_terms t = full();
	bool close;

	(void)state;
	t.structured = false;
	t.meta_base = false;
	assert_int_equal(check_t(&t, NBD_CMD_BLOCK_STATUS, 0, 0, 4096, &close), NBD_EINVAL);
	assert_false(close);
}

static void test_block_status_without_base_allocation_is_invalid(void **state)
{
	struct nbd_terms t = full();
	bool close;

	(void)state;
	t.meta_base = false;
	assert_int_equal(check_t(&t, NBD_CMD_BLOCK_STATUS, 0, 0, 4096, &close), NBD_EINVAL);
	assert_false(close);
}

/* The other commands do not care what was negotiated. */
static void test_simple_replies_do_not_limit_other_commands(void **state)
{
	struct nbd_terms t = full();
	bool close;

	(void)state;
	t.structured = false;
	t.meta_base = false;
	for (size_t i = 0; i < NRANGED; i++)
		if (RANGED[i] != NBD_CMD_BLOCK_STATUS)
			assert_int_equal(check_t(&t, RANGED[i], 0, 0, 4096, &close), 0);
}

/* ---- FLUSH and unknown commands ---- */

static void test_flush_with_offset_or_length_is_invalid(void **state)
{
	(void)state;
	assert_int_equal(check(NBD_CMD_FLUSH, 0, 0, 0), 0);
	assert_int_equal(check(NBD_CMD_FLUSH, 0, 4096, 0), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_FLUSH, 0, 0, 4096), NBD_EINVAL);
	assert_int_equal(check(NBD_CMD_FLUSH, 0, 1, 1), NBD_EINVAL);
}

static void test_unknown_command_is_invalid(void **state)
{
	static const uint16_t u[] = { 8, 9, 11, 0x7fff, 0xffff };

	(void)state;
	for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
		assert_int_equal(check(u[i], 0, 0, 4096), NBD_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_takes_df_and_fua),
		cmocka_unit_test(test_write_takes_fua_only),
		cmocka_unit_test(test_trim_takes_fua_only),
		cmocka_unit_test(test_write_zeroes_takes_fua_no_hole_fast_zero),
		cmocka_unit_test(test_block_status_takes_req_one_and_fua),
		cmocka_unit_test(test_cache_takes_fua_only),
		cmocka_unit_test(test_flush_takes_fua_only),
		cmocka_unit_test(test_length_zero_is_invalid),
		cmocka_unit_test(test_misaligned_offset_is_invalid),
		cmocka_unit_test(test_misaligned_length_is_invalid),
		cmocka_unit_test(test_one_sector_at_a_sector_offset_is_accepted),
		cmocka_unit_test(test_past_the_end_write_and_zeroes_are_enospc),
		cmocka_unit_test(test_past_the_end_others_are_einval),
		cmocka_unit_test(test_offset_plus_length_does_not_wrap),
		cmocka_unit_test(test_largest_read_and_write_end_at_the_end),
		cmocka_unit_test(test_read_over_the_max_payload_is_eoverflow),
		cmocka_unit_test(test_write_over_the_max_payload_closes),
		cmocka_unit_test(test_payload_free_commands_take_any_length),
		cmocka_unit_test(test_read_only_refuses_writes_with_eperm),
		cmocka_unit_test(test_read_only_serves_reads),
		cmocka_unit_test(test_block_status_without_structured_replies_is_invalid),
		cmocka_unit_test(test_block_status_without_base_allocation_is_invalid),
		cmocka_unit_test(test_simple_replies_do_not_limit_other_commands),
		cmocka_unit_test(test_flush_with_offset_or_length_is_invalid),
		cmocka_unit_test(test_unknown_command_is_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
