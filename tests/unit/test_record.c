/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for record.c and the pure helpers it relies on: sealing and
 * checking record headers, batch header areas, superblocks and checkpoint
 * headers; the checksum helpers; index entry packing; size parsing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <xxhash.h>

#include "internal.h"

static const uint8_t test_uuid[16] = {
	0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
};

#define TEST_SEQ   77u
#define TEST_NREC  3u
#define TEST_LIMIT (1u << 20)

/* ---- helpers ------------------------------------------------------------ */

static struct tdo_rec_hdr make_rec(void)
{
	struct tdo_rec_hdr r;

	memset(&r, 0, sizeof r);
	r.rec_type = TDO_REC_DATA;
	r.rec_flags = 0;
	r.rec_vol = 3;
	r.rec_block = 12345;
	r.rec_count = 1;
	r.rec_epoch = 2;
	r.rec_lsn = 999;
	r.rec_seq = TEST_SEQ;
	r.rec_poff = 4096;
	r.rec_plen = 4096;
	r.rec_pcsum = 0x0123456789abcdefull;
	rec_seal(&r);
	return r;
}

/*
 * A batch header area of TEST_NREC records: a DATA record with a raw
 * block, an lz4 DATA record in the small area, and a TRIM (no payload).
 * bh_len covers the header area and two payload blocks.
 */
struct batch_buf {
	uint8_t *area;
	uint32_t hdr_len;
};

static struct tdo_batch_hdr *bh_of(struct batch_buf *b)
{
	return (struct tdo_batch_hdr *)(void *)b->area;
}

static struct tdo_rec_hdr *recs_of(struct batch_buf *b)
{
	return (struct tdo_rec_hdr *)(void *)(b->area + sizeof(struct tdo_batch_hdr));
}

static void build_batch(struct batch_buf *b)
{
	struct tdo_batch_hdr *bh;
	struct tdo_rec_hdr *r;

	b->hdr_len = batch_hdr_len(TEST_NREC);
	b->area = calloc(1, b->hdr_len);
	assert_non_null(b->area);
	bh = bh_of(b);
	r = recs_of(b);

	bh->bh_magic = TDO_BATCH_MAGIC;
	memcpy(bh->bh_uuid, test_uuid, 16);
	bh->bh_seq = TEST_SEQ;
	bh->bh_nrec = TEST_NREC;
	bh->bh_hdr_len = b->hdr_len;
	bh->bh_len = b->hdr_len + 2 * TDO_BLOCK_SIZE;
	bh->bh_version = TDO_FORMAT_VERSION;

	r[0] = make_rec();
	r[0].rec_poff = b->hdr_len;
	r[0].rec_plen = TDO_BLOCK_SIZE;
	rec_seal(&r[0]);

	r[1] = make_rec();
	r[1].rec_flags = TDO_RECF_LZ4;
	r[1].rec_block = 7;
	r[1].rec_poff = b->hdr_len + TDO_BLOCK_SIZE;
	r[1].rec_plen = 700;
	rec_seal(&r[1]);

	r[2] = make_rec();
	r[2].rec_type = TDO_REC_TRIM;
	r[2].rec_block = 100;
	r[2].rec_count = 50;
	r[2].rec_poff = 0;
	r[2].rec_plen = 0;
	rec_seal(&r[2]);

	batch_seal(b->area, b->hdr_len);
}

static int batch_setup(void **state)
{
	struct batch_buf *b = calloc(1, sizeof *b);

	if (!b)
		return -1;
	build_batch(b);
	*state = b;
	return 0;
}

static int batch_teardown(void **state)
{
	struct batch_buf *b = *state;

	free(b->area);
	free(b);
	return 0;
}

static void reseal_batch(struct batch_buf *b)
{
	batch_seal(b->area, b->hdr_len);
}

static struct tdo_sb make_sb(void)
{
	struct tdo_sb sb;

	memset(&sb, 0, sizeof sb);
	sb.sb_magic = TDO_SB_MAGIC;
	sb.sb_version = TDO_FORMAT_VERSION;
	sb.sb_backend = TDO_BACKEND_FILE;
	memcpy(sb.sb_uuid, test_uuid, 16);
	sb.sb_seq = 1;
	sb.sb_dev_size = 64ull << 20;
	sb.sb_seg_size = 1u << 20;
	sb.sb_seg_start = 2u << 20;
	sb.sb_seg_count = 62;
	sb.sb_max_vols = TDO_MAX_VOLS;
	sb.sb_ckpt_off[0] = 8192;
	sb.sb_ckpt_off[1] = 8192 + 655360;
	sb.sb_ckpt_size = 655360;
	sb.sb_format_time = 1700000000;
	sb_seal(&sb);
	return sb;
}

static struct tdo_ckpt_hdr make_ckpt(void)
{
	struct tdo_ckpt_hdr h;

	memset(&h, 0, sizeof h);
	h.ck_magic = TDO_CKPT_MAGIC;
	h.ck_version = TDO_FORMAT_VERSION;
	h.ck_nvols = 2;
	memcpy(h.ck_uuid, test_uuid, 16);
	h.ck_seq = 5;
	h.ck_log_seq = 40;
	h.ck_log_seg = 3;
	h.ck_log_off = 8192;
	h.ck_next_vol_id = 3;
	h.ck_nsegs = 62;
	h.ck_nents = 10;
	h.ck_body_len = 2 * 128 + 62 * 8 + 10 * 32;
	h.ck_body_csum = 0xfeedfacecafebeefull;
	h.ck_user_bytes = 1;
	h.ck_log_bytes = 2;
	h.ck_clean_bytes = 3;
	ckpt_hdr_seal(&h);
	return h;
}

/* ---- record headers ----------------------------------------------------- */

static void test_rec_seal_then_valid(void **state)
{
	struct tdo_rec_hdr r = make_rec();

	(void)state;
	assert_true(rec_valid(&r));
}

static void test_rec_seal_is_idempotent(void **state)
{
	struct tdo_rec_hdr r = make_rec();
	uint64_t first = r.rec_hcsum;

	(void)state;
	rec_seal(&r);
	assert_int_equal(r.rec_hcsum, first);
	assert_true(rec_valid(&r));
}

static void test_rec_any_flipped_byte_invalid(void **state)
{
	const struct tdo_rec_hdr good = make_rec();

	(void)state;
	for (size_t i = 0; i < sizeof good; i++) {
		struct tdo_rec_hdr r = good;
		((uint8_t *)&r)[i] ^= 0x01;
		assert_false(rec_valid(&r));
	}
}

static void test_rec_unknown_type_invalid(void **state)
{
	struct tdo_rec_hdr r = make_rec();

	(void)state;
	r.rec_type = 0;
	rec_seal(&r);
	assert_false(rec_valid(&r));
	r.rec_type = TDO_REC_VOL_DELETE + 1;
	rec_seal(&r);
	assert_false(rec_valid(&r));
}

static void test_rec_data_count_must_be_one(void **state)
{
	struct tdo_rec_hdr r = make_rec();

	(void)state;
	r.rec_count = 2;
	rec_seal(&r);
	assert_false(rec_valid(&r));
}

static void test_rec_every_known_type_valid(void **state)
{
	(void)state;
	for (int t = TDO_REC_DATA; t <= TDO_REC_VOL_DELETE; t++) {
		struct tdo_rec_hdr r = make_rec();
		r.rec_type = (uint8_t)t;
		r.rec_count = t == TDO_REC_DATA ? 1 : 9;
		rec_seal(&r);
		assert_true(rec_valid(&r));
	}
}

/* ---- batches ------------------------------------------------------------- */

static void test_batch_hdr_len_rounds_to_blocks(void **state)
{
	(void)state;
	assert_int_equal(batch_hdr_len(1), TDO_BLOCK_SIZE);
	/* 64 bytes of batch header + 63 records fill exactly one block */
	assert_int_equal(batch_hdr_len(63), TDO_BLOCK_SIZE);
	assert_int_equal(batch_hdr_len(64), 2 * TDO_BLOCK_SIZE);
	assert_int_equal(batch_hdr_len(TDO_BATCH_MAX_REC),
	                 sizeof(struct tdo_batch_hdr) + TDO_BATCH_MAX_REC * sizeof(struct tdo_rec_hdr));
	assert_int_equal(batch_hdr_len(TDO_BATCH_MAX_REC) % TDO_BLOCK_SIZE, 0);
}

static void test_batch_good_passes_head(void **state)
{
	struct batch_buf *b = *state;

	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), 0);
}

static void test_batch_good_passes_area(void **state)
{
	struct batch_buf *b = *state;

	assert_int_equal(batch_check_area(b->area), 0);
}

static void test_batch_head_any_seq_when_zero(void **state)
{
	struct batch_buf *b = *state;

	assert_int_equal(batch_check_head(bh_of(b), test_uuid, 0, TEST_LIMIT), 0);
}

static void test_batch_head_wrong_uuid(void **state)
{
	struct batch_buf *b = *state;
	uint8_t other[16];

	memcpy(other, test_uuid, 16);
	other[15] ^= 0x80;
	assert_int_equal(batch_check_head(bh_of(b), other, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_wrong_seq(void **state)
{
	struct batch_buf *b = *state;

	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ + 1, TEST_LIMIT), -EILSEQ);
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ - 1, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_bad_magic(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_magic ^= 1;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_bad_version(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_version = TDO_FORMAT_VERSION + 1;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_len_past_limit(void **state)
{
	struct batch_buf *b = *state;
	uint32_t len = bh_of(b)->bh_len;

	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, len), 0);
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, len - 1), -EILSEQ);
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, len - TDO_BLOCK_SIZE), -EILSEQ);
}

static void test_batch_head_len_unaligned(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_len += TDO_SECTOR_SIZE;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_len_below_hdr_len(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_len = 0;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_hdr_len_mismatch(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_hdr_len = b->hdr_len + TDO_BLOCK_SIZE;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
	bh_of(b)->bh_hdr_len = b->hdr_len - 64;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_nrec_zero(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_nrec = 0;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT), -EILSEQ);
}

static void test_batch_head_nrec_too_many(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_nrec = TDO_BATCH_MAX_REC + 1;
	bh_of(b)->bh_hdr_len = batch_hdr_len(TDO_BATCH_MAX_REC + 1);
	bh_of(b)->bh_len = bh_of(b)->bh_hdr_len;
	assert_int_equal(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, 64u << 20), -EILSEQ);
}

static void test_batch_any_flipped_byte_rejected(void **state)
{
	struct batch_buf *b = *state;

	/* every byte of the header area, checked the way the engine does:
	 * the head first (it vouches for the lengths the area check uses) */
	for (uint32_t i = 0; i < b->hdr_len; i++) {
		b->area[i] ^= 0x40;
		assert_true(batch_check_head(bh_of(b), test_uuid, TEST_SEQ, TEST_LIMIT) != 0 ||
		            batch_check_area(b->area) == -EILSEQ);
		b->area[i] ^= 0x40;
	}
	assert_int_equal(batch_check_area(b->area), 0);
}

static void test_batch_area_flipped_byte_after_header(void **state)
{
	struct batch_buf *b = *state;

	/* record headers and the padding after them: the area check alone */
	for (uint32_t i = sizeof(struct tdo_batch_hdr); i < b->hdr_len; i++) {
		b->area[i] ^= 0x01;
		assert_int_equal(batch_check_area(b->area), -EILSEQ);
		b->area[i] ^= 0x01;
	}
	assert_int_equal(batch_check_area(b->area), 0);
}

static void test_batch_area_flipped_csum_or_reserved(void **state)
{
	struct batch_buf *b = *state;

	bh_of(b)->bh_csum ^= 1ull << 63;
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
	bh_of(b)->bh_csum ^= 1ull << 63;
	bh_of(b)->bh_reserved = 1;
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

static void test_batch_area_stale_csum_after_edit(void **state)
{
	struct batch_buf *b = *state;

	/* a record edited and resealed, but the batch not: still rejected */
	recs_of(b)[2].rec_count = 51;
	rec_seal(&recs_of(b)[2]);
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

static void test_batch_area_record_seq_mismatch(void **state)
{
	struct batch_buf *b = *state;

	recs_of(b)[1].rec_seq = TEST_SEQ + 1;
	rec_seal(&recs_of(b)[1]);
	reseal_batch(b);
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

static void test_batch_area_record_bad_hcsum(void **state)
{
	struct batch_buf *b = *state;

	recs_of(b)[0].rec_block++;   /* not resealed; the batch is */
	reseal_batch(b);
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

static void test_batch_area_payload_in_header(void **state)
{
	struct batch_buf *b = *state;

	recs_of(b)[0].rec_poff = b->hdr_len - TDO_SECTOR_SIZE;
	rec_seal(&recs_of(b)[0]);
	reseal_batch(b);
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

static void test_batch_area_payload_past_end(void **state)
{
	struct batch_buf *b = *state;
	struct tdo_rec_hdr *r = &recs_of(b)[1];

	/* ending exactly at bh_len is fine */
	r->rec_plen = bh_of(b)->bh_len - r->rec_poff;
	rec_seal(r);
	reseal_batch(b);
	assert_int_equal(batch_check_area(b->area), 0);
	/* one byte more is not */
	r->rec_plen++;
	rec_seal(r);
	reseal_batch(b);
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

static void test_batch_area_payload_offset_overflow(void **state)
{
	struct batch_buf *b = *state;
	struct tdo_rec_hdr *r = &recs_of(b)[1];

	/* poff + plen wraps in 32 bits; must still be caught */
	r->rec_poff = UINT32_MAX - 100;
	r->rec_plen = 200;
	rec_seal(r);
	reseal_batch(b);
	assert_int_equal(batch_check_area(b->area), -EILSEQ);
}

/* ---- superblock ---------------------------------------------------------- */

static void test_sb_seal_then_valid(void **state)
{
	struct tdo_sb sb = make_sb();

	(void)state;
	assert_true(sb_valid(&sb));
}

static void test_sb_any_flipped_byte_invalid(void **state)
{
	const struct tdo_sb good = make_sb();

	(void)state;
	for (size_t i = 0; i < sizeof good; i++) {
		struct tdo_sb sb = good;
		((uint8_t *)&sb)[i] ^= 0x08;
		assert_false(sb_valid(&sb));
	}
}

static void test_sb_wrong_magic_invalid_even_sealed(void **state)
{
	struct tdo_sb sb = make_sb();

	(void)state;
	sb.sb_magic = TDO_BATCH_MAGIC;
	sb_seal(&sb);
	assert_false(sb_valid(&sb));
}

static void test_sb_all_zero_invalid(void **state)
{
	struct tdo_sb sb;

	(void)state;
	memset(&sb, 0, sizeof sb);
	assert_false(sb_valid(&sb));
}

/* ---- checkpoint header --------------------------------------------------- */

static void test_ckpt_seal_then_valid(void **state)
{
	struct tdo_ckpt_hdr h = make_ckpt();

	(void)state;
	assert_true(ckpt_hdr_valid(&h));
}

static void test_ckpt_any_flipped_byte_invalid(void **state)
{
	const struct tdo_ckpt_hdr good = make_ckpt();

	(void)state;
	for (size_t i = 0; i < sizeof good; i++) {
		struct tdo_ckpt_hdr h = good;
		((uint8_t *)&h)[i] ^= 0x80;
		assert_false(ckpt_hdr_valid(&h));
	}
}

static void test_ckpt_wrong_version_invalid_even_sealed(void **state)
{
	struct tdo_ckpt_hdr h = make_ckpt();

	(void)state;
	h.ck_version = TDO_FORMAT_VERSION + 1;
	ckpt_hdr_seal(&h);
	assert_false(ckpt_hdr_valid(&h));
}

static void test_ckpt_wrong_magic_invalid_even_sealed(void **state)
{
	struct tdo_ckpt_hdr h = make_ckpt();

	(void)state;
	h.ck_magic = TDO_SB_MAGIC;
	ckpt_hdr_seal(&h);
	assert_false(ckpt_hdr_valid(&h));
}

/* ---- checksums ----------------------------------------------------------- */

static void fill_pseudo_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
}

static void test_csum_two_matches_csum_at_every_split(void **state)
{
	/* longer than xxh3's internal stripes and blocks, so the streaming
	 * state crosses its buffer boundaries */
	enum { N = 2500 };
	uint8_t *buf = malloc(N);
	uint64_t whole;

	(void)state;
	assert_non_null(buf);
	fill_pseudo_random(buf, N, 1);
	whole = tdo_csum(buf, N);
	for (size_t k = 0; k <= N; k++)
		assert_int_equal(tdo_csum_two(buf, k, buf + k, N - k), whole);
	free(buf);
}

static void test_csum_two_matches_csum_on_batch_sized_buffer(void **state)
{
	enum { N = 64 * 1024 };
	uint8_t *buf = malloc(N);
	const size_t splits[] = { 0, 1, 64, 4096, 4097, N - 1, N };

	(void)state;
	assert_non_null(buf);
	fill_pseudo_random(buf, N, 2);
	for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++)
		assert_int_equal(tdo_csum_two(buf, splits[i], buf + splits[i], N - splits[i]),
		                 tdo_csum(buf, N));
	free(buf);
}

/* tdo_csum is xxh3-64 whichever build of it runs (AVX2 where the CPU has
 * it): the same value as libxxhash's own, at every length and alignment,
 * or every checksum on a device written before would stop verifying. */
static void test_csum_is_libxxhash_xxh3(void **state)
{
	enum { N = 70000 };
	uint8_t *buf = malloc(N + 8);
	const size_t big[] = { 4095, 4096, 4097, 8192 + 5, 65536, 65536 + 3, N };

	(void)state;
	assert_non_null(buf);
	fill_pseudo_random(buf, N + 8, 3);
	for (size_t len = 0; len <= 1100; len++)
		assert_int_equal(tdo_csum(buf + (len & 7), len), XXH3_64bits(buf + (len & 7), len));
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
		for (size_t a = 0; a < 8; a++)
			assert_int_equal(tdo_csum(buf + a, big[i]), XXH3_64bits(buf + a, big[i]));
	free(buf);
}

static void test_csum_two_empty(void **state)
{
	uint8_t x = 0;

	(void)state;
	assert_int_equal(tdo_csum_two(&x, 0, &x, 0), tdo_csum(&x, 0));
}

static void test_csum_depends_on_every_byte(void **state)
{
	uint8_t buf[256];
	uint64_t base;

	(void)state;
	fill_pseudo_random(buf, sizeof buf, 3);
	base = tdo_csum(buf, sizeof buf);
	for (size_t i = 0; i < sizeof buf; i++) {
		buf[i] ^= 1;
		assert_int_not_equal(tdo_csum(buf, sizeof buf), base);
		buf[i] ^= 1;
	}
	assert_int_equal(tdo_csum(buf, sizeof buf), base);
}

/* ---- index entries ------------------------------------------------------- */

#define LSN_MAX    ((1ull << 48) - 1)
#define SECTOR_MAX ((1ull << 42) - 1)

static void check_ie(int kind, uint64_t lsn, uint64_t sector, unsigned nsect, uint32_t csum)
{
	struct tdo_ie e = ie_make(kind, lsn, sector, nsect, csum);

	assert_int_equal(ie_kind(e), kind);
	assert_int_equal(ie_lsn(e), lsn);
	assert_int_equal(ie_sector(e), sector);
	assert_int_equal(ie_nsect(e), nsect);
	assert_int_equal(e.ie_c, csum);
}

static void test_ie_all_fields_at_max(void **state)
{
	(void)state;
	check_ie(TDO_IE_LZ4, LSN_MAX, SECTOR_MAX, 9, UINT32_MAX);
}

static void test_ie_all_fields_zero_is_hole(void **state)
{
	struct tdo_ie e = ie_make(TDO_IE_HOLE, 0, 0, 0, 0);

	(void)state;
	assert_int_equal(e.ie_a, 0);
	assert_int_equal(e.ie_b, 0);
	assert_int_equal(e.ie_c, 0);
	assert_int_equal(ie_kind(e), TDO_IE_HOLE);
}

static void test_ie_fields_do_not_bleed(void **state)
{
	const uint64_t lsns[] = { 0, 1, 0x123456789abcull, LSN_MAX };
	const uint64_t sectors[] = { 0, 1, UINT32_MAX, 1ull << 32, (1ull << 32) + 1,
	                             0x2aa55aa55aaull, SECTOR_MAX };
	const uint32_t csums[] = { 0, 0xdeadbeef, UINT32_MAX };

	(void)state;
	for (int k = TDO_IE_HOLE; k <= TDO_IE_LZ4; k++)
		for (size_t l = 0; l < sizeof lsns / sizeof lsns[0]; l++)
			for (size_t s = 0; s < sizeof sectors / sizeof sectors[0]; s++)
				for (unsigned n = 1; n <= 9; n++)
					for (size_t c = 0; c < sizeof csums / sizeof csums[0]; c++)
						check_ie(k, lsns[l], sectors[s], n, csums[c]);
}

static void test_ie_high_sector_bits_in_ie_a(void **state)
{
	/* bits 32..41 of the sector live in the top 10 bits of ie_a */
	struct tdo_ie e = ie_make(TDO_IE_DATA, 0, SECTOR_MAX, 0, 0);

	(void)state;
	assert_int_equal(e.ie_a >> 54, 0x3ff);
	assert_int_equal(e.ie_b, UINT32_MAX);
	assert_int_equal(e.ie_a & LSN_MAX, 0);
}

static void test_ie_lsn_truncated_to_48_bits(void **state)
{
	struct tdo_ie e = ie_make(TDO_IE_DATA, LSN_MAX + 1 + 5, 0, 8, 0);

	(void)state;
	assert_int_equal(ie_lsn(e), 5);
	assert_int_equal(ie_kind(e), TDO_IE_DATA);
	assert_int_equal(ie_nsect(e), 8);
}

static void test_ie_has_payload_by_kind(void **state)
{
	(void)state;
	assert_false(ie_has_payload(ie_make(TDO_IE_HOLE, 1, 0, 0, 0)));
	assert_false(ie_has_payload(ie_make(TDO_IE_ZERO, 1, 0, 0, 0)));
	assert_true(ie_has_payload(ie_make(TDO_IE_DATA, 1, 100, 8, 0)));
	assert_true(ie_has_payload(ie_make(TDO_IE_LZ4, 1, 100, 3, 0)));
}

/* ---- size parsing -------------------------------------------------------- */

static void expect_size(const char *s, uint64_t want)
{
	uint64_t got = 0;

	if (tdo_parse_size(s, &got) != 0)
		fail_msg("tdo_parse_size(\"%s\") failed", s);
	if (got != want)
		fail_msg("tdo_parse_size(\"%s\") = %llu, want %llu", s,
		         (unsigned long long)got, (unsigned long long)want);
}

static void expect_bad_size(const char *s)
{
	uint64_t got = 12345;
	int r = tdo_parse_size(s, &got);

	if (r != -EINVAL)
		fail_msg("tdo_parse_size(\"%s\") = %d (value %llu), want -EINVAL", s, r,
		         (unsigned long long)got);
}

static void test_size_plain_bytes(void **state)
{
	(void)state;
	expect_size("4096", 4096);
	expect_size("0", 0);
	expect_size("1", 1);
}

static void test_size_unit_suffixes(void **state)
{
	(void)state;
	expect_size("64K", 64ull << 10);
	expect_size("1M", 1ull << 20);
	expect_size("3G", 3ull << 30);
	expect_size("1P", 1ull << 50);
	expect_size("64k", 64ull << 10);
}

static void test_size_iB_and_B_suffixes(void **state)
{
	(void)state;
	expect_size("2TiB", 2ull << 40);
	expect_size("2T", 2ull << 40);
	expect_size("8KB", 8ull << 10);
	expect_size("512B", 512);
}

static void test_size_fraction_with_unit(void **state)
{
	(void)state;
	expect_size("1.5G", 3ull << 29);
	expect_size("0.5K", 512);
}

static void test_size_rejects_empty(void **state)
{
	uint64_t v;

	(void)state;
	expect_bad_size("");
	assert_int_equal(tdo_parse_size(NULL, &v), -EINVAL);
}

static void test_size_rejects_negative(void **state)
{
	(void)state;
	expect_bad_size("-1");
	expect_bad_size("-1K");
	expect_bad_size("+1");
}

static void test_size_rejects_unknown_unit(void **state)
{
	(void)state;
	expect_bad_size("12Q");
	expect_bad_size("12KQ");
	expect_bad_size("12 K");
	expect_bad_size("K");
}

static void test_size_rejects_fractional_bytes(void **state)
{
	(void)state;
	expect_bad_size("1.3");
	expect_bad_size("0.1K");
}

static void test_size_rejects_overflow(void **state)
{
	(void)state;
	expect_bad_size("99999999999T");
	expect_bad_size("16384P");
	expect_bad_size("1e30");
}

static void test_size_rejects_non_finite(void **state)
{
	(void)state;
	expect_bad_size("inf");
	expect_bad_size("nan");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rec_seal_then_valid),
		cmocka_unit_test(test_rec_seal_is_idempotent),
		cmocka_unit_test(test_rec_any_flipped_byte_invalid),
		cmocka_unit_test(test_rec_unknown_type_invalid),
		cmocka_unit_test(test_rec_data_count_must_be_one),
		cmocka_unit_test(test_rec_every_known_type_valid),

		cmocka_unit_test(test_batch_hdr_len_rounds_to_blocks),
		cmocka_unit_test_setup_teardown(test_batch_good_passes_head, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_good_passes_area, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_any_seq_when_zero, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_wrong_uuid, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_wrong_seq, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_bad_magic, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_bad_version, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_len_past_limit, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_len_unaligned, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_len_below_hdr_len, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_hdr_len_mismatch, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_nrec_zero, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_head_nrec_too_many, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_any_flipped_byte_rejected, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_flipped_byte_after_header, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_flipped_csum_or_reserved, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_stale_csum_after_edit, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_record_seq_mismatch, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_record_bad_hcsum, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_payload_in_header, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_payload_past_end, batch_setup, batch_teardown),
		cmocka_unit_test_setup_teardown(test_batch_area_payload_offset_overflow, batch_setup, batch_teardown),

		cmocka_unit_test(test_sb_seal_then_valid),
		cmocka_unit_test(test_sb_any_flipped_byte_invalid),
		cmocka_unit_test(test_sb_wrong_magic_invalid_even_sealed),
		cmocka_unit_test(test_sb_all_zero_invalid),

		cmocka_unit_test(test_ckpt_seal_then_valid),
		cmocka_unit_test(test_ckpt_any_flipped_byte_invalid),
		cmocka_unit_test(test_ckpt_wrong_version_invalid_even_sealed),
		cmocka_unit_test(test_ckpt_wrong_magic_invalid_even_sealed),

		cmocka_unit_test(test_csum_two_matches_csum_at_every_split),
		cmocka_unit_test(test_csum_two_matches_csum_on_batch_sized_buffer),
		cmocka_unit_test(test_csum_two_empty),
		cmocka_unit_test(test_csum_is_libxxhash_xxh3),
		cmocka_unit_test(test_csum_depends_on_every_byte),

		cmocka_unit_test(test_ie_all_fields_at_max),
		cmocka_unit_test(test_ie_all_fields_zero_is_hole),
		cmocka_unit_test(test_ie_fields_do_not_bleed),
		cmocka_unit_test(test_ie_high_sector_bits_in_ie_a),
		cmocka_unit_test(test_ie_lsn_truncated_to_48_bits),
		cmocka_unit_test(test_ie_has_payload_by_kind),

		cmocka_unit_test(test_size_plain_bytes),
		cmocka_unit_test(test_size_unit_suffixes),
		cmocka_unit_test(test_size_iB_and_B_suffixes),
		cmocka_unit_test(test_size_fraction_with_unit),
		cmocka_unit_test(test_size_rejects_empty),
		cmocka_unit_test(test_size_rejects_negative),
		cmocka_unit_test(test_size_rejects_unknown_unit),
		cmocka_unit_test(test_size_rejects_fractional_bytes),
		cmocka_unit_test(test_size_rejects_overflow),
		cmocka_unit_test(test_size_rejects_non_finite),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
