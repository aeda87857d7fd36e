/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: sealing and checking every on-disk structure, and the lz4 form of
 * a block. Pure functions on buffers, so the unit tests can drive them with
 * no device. A structure that fails a check here is never trusted: callers
 * treat it as the end of the log (a batch with no valid later batch after
 * it, recovery.c) or as damage (everything else).
 */
#include <errno.h>
#include <lz4.h>
#include <string.h>

#include "internal.h"

void rec_seal(struct tdo_rec_hdr *r)
{
	r->rec_hcsum = 0;
	r->rec_hcsum = tdo_csum(r, sizeof *r);
}

bool rec_valid(const struct tdo_rec_hdr *r)
{
	struct tdo_rec_hdr c = *r;

	c.rec_hcsum = 0;
	if (tdo_csum(&c, sizeof c) != r->rec_hcsum)
		return false;
	if (r->rec_type < TDO_REC_DATA || r->rec_type > TDO_REC_VOL_DELETE)
		return false;
	if (r->rec_type == TDO_REC_DATA && r->rec_count != 1)
		return false;
	return true;
}

void batch_seal(void *hdr, uint32_t hdr_len)
{
	struct tdo_batch_hdr *bh = hdr;

	bh->bh_csum = 0;
	bh->bh_csum = tdo_csum(hdr, hdr_len);
}

int batch_check_head(const struct tdo_batch_hdr *bh, const uint8_t uuid[16],
                     uint64_t want_seq, uint64_t limit)
{
	if (bh->bh_magic != TDO_BATCH_MAGIC || bh->bh_version != TDO_FORMAT_VERSION)
		return -EILSEQ;
	if (memcmp(bh->bh_uuid, uuid, 16) != 0)
		return -EILSEQ;
	if (want_seq && bh->bh_seq != want_seq)
		return -EILSEQ;
	if (bh->bh_nrec == 0 || bh->bh_nrec > TDO_BATCH_MAX_REC)
		return -EILSEQ;
	if (bh->bh_hdr_len != batch_hdr_len(bh->bh_nrec))
		return -EILSEQ;
	if (bh->bh_len < bh->bh_hdr_len || bh->bh_len % TDO_BLOCK_SIZE || bh->bh_len > limit)
		return -EILSEQ;
	return 0;
}

int batch_check_area(const void *hdr)
{
	const struct tdo_batch_hdr *bh = hdr;
	const struct tdo_rec_hdr *r = (const void *)(bh + 1);
	struct tdo_batch_hdr first = *bh;
	uint64_t got;

	/* bh_csum was computed over the area with itself zero */
	first.bh_csum = 0;
	got = tdo_csum_two(&first, sizeof first, bh + 1, bh->bh_hdr_len - sizeof first);
	if (got != bh->bh_csum)
		return -EILSEQ;
	for (uint32_t i = 0; i < bh->bh_nrec; i++) {
		if (!rec_valid(&r[i]))
			return -EILSEQ;
		if (r[i].rec_seq != bh->bh_seq)
			return -EILSEQ;
		if (r[i].rec_plen && ((uint64_t)r[i].rec_poff < bh->bh_hdr_len ||
		                      (uint64_t)r[i].rec_poff + r[i].rec_plen > bh->bh_len))
			return -EILSEQ;
	}
	return 0;
}

void sb_seal(struct tdo_sb *sb)
{
	sb->sb_csum = 0;
	sb->sb_csum = tdo_csum(sb, sizeof *sb);
}

bool sb_valid(const struct tdo_sb *sb)
{
	struct tdo_sb c = *sb;

	if (sb->sb_magic != TDO_SB_MAGIC)
		return false;
	c.sb_csum = 0;
	return tdo_csum(&c, sizeof c) == sb->sb_csum;
}

void ckpt_hdr_seal(struct tdo_ckpt_hdr *h)
{
	h->ck_csum = 0;
	h->ck_csum = tdo_csum(h, sizeof *h);
}

bool ckpt_hdr_valid(const struct tdo_ckpt_hdr *h)
{
	struct tdo_ckpt_hdr c = *h;

	if (h->ck_magic != TDO_CKPT_MAGIC || h->ck_version != TDO_FORMAT_VERSION)
		return false;
	c.ck_csum = 0;
	return tdo_csum(&c, sizeof c) == h->ck_csum;
}

uint32_t rec_compress(const void *block, void *out)
{
	char *o = out;
	int n = LZ4_compress_default(block, o + 2, (int)TDO_BLOCK_SIZE,
	                             (int)(LZ4_MAX_NSECT * TDO_SECTOR_SIZE - 2));
	uint16_t len;

	if (n <= 0)
		return 0;
	len = (uint16_t)n;
	memcpy(o, &len, 2);
	return (uint32_t)n + 2;
}

int rec_decompress(const void *in, uint32_t len, void *block)
{
	const char *i = in;
	uint16_t clen;

	if (len < 2)
		return -EIO;
	memcpy(&clen, i, 2);
	if ((uint32_t)clen + 2 > len)
		return -EIO;
	if (LZ4_decompress_safe(i + 2, block, clen, (int)TDO_BLOCK_SIZE) != (int)TDO_BLOCK_SIZE)
		return -EIO;
	return 0;
}
