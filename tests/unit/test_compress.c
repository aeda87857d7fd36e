/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the lz4 form of a block (record.c): rec_compress stores a
 * u16 length and an lz4 block, only when that saves at least one sector;
 * rec_decompress turns a stored payload back into exactly one block and
 * rejects anything else with -EIO without reading or writing out of
 * bounds (run these under AddressSanitizer too).
 */
#include <errno.h>
#include <lz4.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define BLK       TDO_BLOCK_SIZE
#define MAX_STORE (LZ4_MAX_NSECT * TDO_SECTOR_SIZE)

/* ---- helpers ------------------------------------------------------------ */

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x1234567;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 32);
	}
}

static void fill_text(uint8_t *p, size_t n)
{
	static const char line[] = "the quick brown fox jumps over the lazy dog 0123456789\n";

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)line[i % (sizeof line - 1)];
}

/* The stored length prefix. */
static uint16_t stored_clen(const uint8_t *out)
{
	uint16_t c;

	memcpy(&c, out, 2);
	return c;
}

/* Exactly LEN bytes on the heap, so ASan sees any read past them. */
static uint8_t *exact_copy(const uint8_t *src, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	memcpy(p, src, len);
	return p;
}

struct cbuf {
	uint8_t in[BLK];
	uint8_t out[BLK];           /* rec_compress wants room for 4096 */
	uint8_t back[BLK];
	uint32_t n;                 /* stored length */
};

static int setup_zeros(void **state)
{
	struct cbuf *c = calloc(1, sizeof *c);

	if (!c)
		return -1;
	c->n = rec_compress(c->in, c->out);
	if (c->n == 0)
		return -1;
	*state = c;
	return 0;
}

static int setup_text(void **state)
{
	struct cbuf *c = calloc(1, sizeof *c);

	if (!c)
		return -1;
	fill_text(c->in, BLK);
	c->n = rec_compress(c->in, c->out);
	if (c->n == 0)
		return -1;
	*state = c;
	return 0;
}

static int teardown_buf(void **state)
{
	free(*state);
	return 0;
}

/* ---- compression --------------------------------------------------------- */

static void test_zeros_round_trip(void **state)
{
	struct cbuf *c = *state;

	memset(c->back, 0xa5, BLK);
	assert_int_equal(rec_decompress(c->out, c->n, c->back), 0);
	assert_memory_equal(c->back, c->in, BLK);
}

static void test_text_round_trip(void **state)
{
	struct cbuf *c = *state;

	memset(c->back, 0xa5, BLK);
	assert_int_equal(rec_decompress(c->out, c->n, c->back), 0);
	assert_memory_equal(c->back, c->in, BLK);
}

static void test_stored_length_has_prefix(void **state)
{
	struct cbuf *c = *state;

	assert_int_equal(stored_clen(c->out) + 2u, c->n);
}

static void test_compressed_saves_a_sector(void **state)
{
	struct cbuf *c = *state;

	assert_true(c->n > 2);
	assert_true(c->n <= MAX_STORE);
	assert_true((c->n + TDO_SECTOR_SIZE - 1) / TDO_SECTOR_SIZE < BLK / TDO_SECTOR_SIZE);
}

static void test_zeros_compress_small(void **state)
{
	struct cbuf *c = *state;

	/* a zero block is the best case: well under one sector */
	assert_true(c->n <= TDO_SECTOR_SIZE);
}

static void test_random_not_compressed(void **state)
{
	uint8_t in[BLK], out[BLK];

	(void)state;
	for (uint64_t seed = 1; seed <= 16; seed++) {
		fill_random(in, BLK, seed);
		assert_int_equal(rec_compress(in, out), 0);
	}
}

static void test_small_saving_not_compressed(void **state)
{
	/* compresses a little, but not by a whole sector */
	uint8_t in[BLK], out[BLK];

	(void)state;
	fill_random(in, BLK, 99);
	memset(in + BLK - 300, 0, 300);
	assert_int_equal(rec_compress(in, out), 0);
}

static void test_half_random_round_trip(void **state)
{
	uint8_t in[BLK], out[BLK], back[BLK];
	uint32_t n;

	(void)state;
	fill_random(in, BLK / 2, 7);
	memset(in + BLK / 2, 'x', BLK / 2);
	n = rec_compress(in, out);
	assert_true(n > 2 && n <= MAX_STORE);
	assert_int_equal(rec_decompress(out, n, back), 0);
	assert_memory_equal(back, in, BLK);
}

static void test_many_patterns_round_trip(void **state)
{
	uint8_t in[BLK], out[BLK], back[BLK];

	(void)state;
	for (unsigned period = 1; period <= 512; period *= 2) {
		uint32_t n;

		fill_random(in, period, period);
		for (size_t i = period; i < BLK; i++)
			in[i] = in[i % period];
		n = rec_compress(in, out);
		assert_true(n > 2 && n <= MAX_STORE);
		assert_int_equal(rec_decompress(out, n, back), 0);
		assert_memory_equal(back, in, BLK);
	}
}

static void test_decompress_accepts_sector_padding(void **state)
{
	struct cbuf *c = *state;
	uint8_t padded[MAX_STORE];
	uint32_t plen = (uint32_t)round_up(c->n, TDO_SECTOR_SIZE);

	/* as it sits on the device: zero padded to a sector */
	memset(padded, 0, sizeof padded);
	memcpy(padded, c->out, c->n);
	assert_int_equal(rec_decompress(padded, plen, c->back), 0);
	assert_memory_equal(c->back, c->in, BLK);
}

/* ---- decompression of bad input ------------------------------------------ */

static void test_decompress_shorter_than_prefix(void **state)
{
	struct cbuf *c = *state;
	uint8_t *p = exact_copy(c->out, 2);

	assert_int_equal(rec_decompress(p, 0, c->back), -EIO);
	assert_int_equal(rec_decompress(p, 1, c->back), -EIO);
	free(p);
}

static void test_decompress_truncated_payload(void **state)
{
	struct cbuf *c = *state;

	/* every length short of the stored one: the prefix promises more */
	for (uint32_t len = 2; len < c->n; len++) {
		uint8_t *p = exact_copy(c->out, len);
		assert_int_equal(rec_decompress(p, len, c->back), -EIO);
		free(p);
	}
}

static void test_decompress_truncated_stream(void **state)
{
	struct cbuf *c = *state;
	uint16_t full = stored_clen(c->out);

	/* a consistent prefix over a cut lz4 stream */
	for (uint16_t clen = 0; clen < full; clen++) {
		uint8_t *p = exact_copy(c->out, (size_t)clen + 2);
		memcpy(p, &clen, 2);
		assert_int_equal(rec_decompress(p, (uint32_t)clen + 2, c->back), -EIO);
		free(p);
	}
}

static void test_decompress_prefix_past_len(void **state)
{
	struct cbuf *c = *state;
	uint8_t *p = exact_copy(c->out, c->n);
	uint16_t big = (uint16_t)(c->n - 1); /* clen + 2 == n + 1 */

	memcpy(p, &big, 2);
	assert_int_equal(rec_decompress(p, c->n, c->back), -EIO);
	big = UINT16_MAX;
	memcpy(p, &big, 2);
	assert_int_equal(rec_decompress(p, c->n, c->back), -EIO);
	free(p);
}

static void test_decompress_garbage_stream(void **state)
{
	uint8_t back[BLK];
	uint8_t *p = malloc(MAX_STORE);
	uint16_t clen = MAX_STORE - 2;

	(void)state;
	assert_non_null(p);
	memset(p, 0xff, MAX_STORE);
	memcpy(p, &clen, 2);
	assert_int_equal(rec_decompress(p, MAX_STORE, back), -EIO);
	free(p);
}

static void test_decompress_bad_match_offset(void **state)
{
	struct cbuf *c = *state;
	uint8_t *p = exact_copy(c->out, c->n);
	const uint8_t *s = c->out + 2;
	size_t lit = s[0] >> 4, at = 1;

	/* zero block: first sequence has a few literals, then a match whose
	 * 16-bit offset we point far before the start of the output */
	assert_true(lit < 15);
	at += lit;
	p[2 + at] = 0xff;
	p[2 + at + 1] = 0xff;
	assert_int_equal(rec_decompress(p, c->n, c->back), -EIO);
	free(p);
}

static void test_decompress_short_output(void **state)
{
	/* a valid lz4 stream of 2048 bytes is not a block */
	uint8_t src[BLK / 2], back[BLK];
	uint8_t *stored = calloc(1, BLK);
	int n;
	uint16_t clen;

	(void)state;
	assert_non_null(stored);
	fill_text(src, sizeof src);
	n = LZ4_compress_default((const char *)src, (char *)stored + 2, (int)sizeof src, BLK - 2);
	assert_true(n > 0);
	clen = (uint16_t)n;
	memcpy(stored, &clen, 2);
	assert_int_equal(rec_decompress(stored, (uint32_t)n + 2, back), -EIO);
	free(stored);
}

static void test_decompress_long_output(void **state)
{
	/* a valid lz4 stream of 8192 bytes must not overrun the block */
	uint8_t *src = calloc(1, 2 * BLK);
	uint8_t *stored = calloc(1, BLK);
	uint8_t *back = malloc(BLK); /* exact size: ASan catches an overrun */
	int n;
	uint16_t clen;

	(void)state;
	assert_non_null(src);
	assert_non_null(stored);
	assert_non_null(back);
	fill_text(src, 2 * BLK);
	n = LZ4_compress_default((const char *)src, (char *)stored + 2, 2 * BLK, BLK - 2);
	assert_true(n > 0);
	clen = (uint16_t)n;
	memcpy(stored, &clen, 2);
	assert_int_equal(rec_decompress(stored, (uint32_t)n + 2, back), -EIO);
	free(src);
	free(stored);
	free(back);
}

static void check_every_bit_flip(struct cbuf *c)
{
	uint8_t *back = malloc(BLK);
	int rejected = 0;

	/* a flipped literal may still decode (checksums catch that); the
	 * point is that no flip crashes or overruns, and most are caught */
	assert_non_null(back);
	for (uint32_t i = 0; i < c->n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			uint8_t *p = exact_copy(c->out, c->n);
			int r;

			p[i] ^= (uint8_t)(1u << bit);
			r = rec_decompress(p, c->n, back);
			assert_true(r == 0 || r == -EIO);
			rejected += r == -EIO;
			free(p);
		}
	}
	assert_true(rejected > 0);
	free(back);
}

static void test_decompress_bit_flips_text(void **state)
{
	check_every_bit_flip(*state);
}

static void test_decompress_bit_flips_zeros(void **state)
{
	check_every_bit_flip(*state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_zeros_round_trip, setup_zeros, teardown_buf),
		cmocka_unit_test_setup_teardown(test_text_round_trip, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_stored_length_has_prefix, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_compressed_saves_a_sector, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_zeros_compress_small, setup_zeros, teardown_buf),
		cmocka_unit_test(test_random_not_compressed),
		cmocka_unit_test(test_small_saving_not_compressed),
		cmocka_unit_test(test_half_random_round_trip),
		cmocka_unit_test(test_many_patterns_round_trip),
		cmocka_unit_test_setup_teardown(test_decompress_accepts_sector_padding, setup_text, teardown_buf),

		cmocka_unit_test_setup_teardown(test_decompress_shorter_than_prefix, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_decompress_truncated_payload, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_decompress_truncated_stream, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_decompress_prefix_past_len, setup_text, teardown_buf),
		cmocka_unit_test(test_decompress_garbage_stream),
		cmocka_unit_test_setup_teardown(test_decompress_bad_match_offset, setup_zeros, teardown_buf),
		cmocka_unit_test(test_decompress_short_output),
		cmocka_unit_test(test_decompress_long_output),
		cmocka_unit_test_setup_teardown(test_decompress_bit_flips_text, setup_text, teardown_buf),
		cmocka_unit_test_setup_teardown(test_decompress_bit_flips_zeros, setup_zeros, teardown_buf),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
