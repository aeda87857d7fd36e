/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Latency histogram. DESIGN: values below 256 ns have a bucket each;
 * above, every power of two is split into 128 buckets, so a bucket's
 * midpoint is within 1/256 (0.4%) of any value in it, over the whole
 * 64-bit range, in 60 KiB and with no floating point on the hot path.
 */
#include <string.h>

#include "internal.h"

static unsigned bucket_of(uint64_t v)
{
	if (v < 256)
		return (unsigned)v;
	unsigned msb = 63 - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - 7;
	return 256 + (shift - 1) * 128 + (unsigned)((v >> shift) - 128);
}

static uint64_t bucket_mid(unsigned i)
{
	if (i < 256)
		return i;
	unsigned shift = (i - 256) / 128 + 1;
	uint64_t mant = (i - 256) % 128 + 128;
	return (mant << shift) + ((1ull << shift) >> 1);
}

void tb_hist_reset(struct tb_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void tb_hist_add(struct tb_hist *h, uint64_t v)
{
	h->b[bucket_of(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void tb_hist_merge(struct tb_hist *into, const struct tb_hist *h)
{
	for (unsigned i = 0; i < TB_HIST_BUCKETS; i++)
		into->b[i] += h->b[i];
	into->count += h->count;
	into->sum += h->sum;
	if (h->min < into->min)
		into->min = h->min;
	if (h->max > into->max)
		into->max = h->max;
}

uint64_t tb_hist_quantile(const struct tb_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	/* the smallest value with at least ceil(q * count) values at or below it */
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < TB_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = bucket_mid(i);
			/* never outside what was seen */
			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}
