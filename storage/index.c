/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: a volume's index, block number -> newest version (struct tdo_ie,
 * 16 bytes). A two-level table: chunks of 1024 entries are allocated when a
 * block in them is first set, and freed when every entry is a hole again,
 * so a sparse volume costs little and a written block costs 16 bytes plus
 * 1/1024 of a pointer. Lookups are two loads; no locks (loop thread only).
 *
 * Must never: allocate in idx_get, or keep a chunk whose entries are all
 * holes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int idx_init(struct idx *x, uint64_t nblocks)
{
	memset(x, 0, sizeof *x);
	x->nblocks = nblocks;
	x->nchunks = (nblocks + IDX_CHUNK - 1) >> IDX_CHUNK_SHIFT;
	x->chunks = calloc(x->nchunks ? x->nchunks : 1, sizeof *x->chunks);
	if (!x->chunks)
		return -ENOMEM;
	x->mem = (x->nchunks ? x->nchunks : 1) * sizeof *x->chunks;
	return 0;
}

void idx_free(struct idx *x)
{
	for (uint64_t i = 0; i < x->nchunks; i++)
		free(x->chunks[i]);
	free(x->chunks);
	memset(x, 0, sizeof *x);
}

int idx_set(struct idx *x, uint64_t b, struct tdo_ie e, struct tdo_ie *old)
{
	uint64_t ci = b >> IDX_CHUNK_SHIFT;
	struct idx_chunk *c = x->chunks[ci];
	struct tdo_ie *slot;
	bool was, is = ie_kind(e) != TDO_IE_HOLE;

	if (!c) {
		if (old)
			memset(old, 0, sizeof *old);
		if (!is)
			return 0;
		c = calloc(1, sizeof *c);
		if (!c)
			return -ENOMEM;
		x->chunks[ci] = c;
		x->mem += sizeof *c;
	}
	slot = &c->e[b & (IDX_CHUNK - 1)];
	if (old)
		*old = *slot;
	was = ie_kind(*slot) != TDO_IE_HOLE;
	*slot = e;
	if (is && !was)
		c->used++;
	else if (!is && was)
		c->used--;
	if (!is && !c->used) {
		free(c);
		x->chunks[ci] = NULL;
		x->mem -= sizeof *c;
	}
	return 0;
}

int idx_resize(struct idx *x, uint64_t nblocks,
               void (*drop)(void *arg, struct tdo_ie e), void *arg)
{
	uint64_t nchunks = (nblocks + IDX_CHUNK - 1) >> IDX_CHUNK_SHIFT;
	struct idx_chunk **nc;

	/* drop entries past the new end */
	for (uint64_t b = nblocks; b < x->nblocks; b++) {
		struct idx_chunk *c = x->chunks[b >> IDX_CHUNK_SHIFT];
		struct tdo_ie old, hole = { 0, 0, 0 };

		if (!c) {
			b |= IDX_CHUNK - 1; /* skip the rest of an empty chunk */
			continue;
		}
		if (idx_set(x, b, hole, &old) == 0 && ie_kind(old) != TDO_IE_HOLE && drop)
			drop(arg, old);
	}
	if (nchunks != x->nchunks) {
		for (uint64_t i = nchunks; i < x->nchunks; i++) {
			/* all holes by now, so already freed */
			free(x->chunks[i]);
			x->chunks[i] = NULL;
		}
		nc = realloc(x->chunks, (nchunks ? nchunks : 1) * sizeof *nc);
		if (!nc)
			return -ENOMEM;
		for (uint64_t i = x->nchunks; i < nchunks; i++)
			nc[i] = NULL;
		x->mem = x->mem - (x->nchunks ? x->nchunks : 1) * sizeof *nc +
		         (nchunks ? nchunks : 1) * sizeof *nc;
		x->chunks = nc;
		x->nchunks = nchunks;
	}
	x->nblocks = nblocks;
	return 0;
}

int idx_walk(const struct idx *x, int (*fn)(void *arg, uint64_t b, struct tdo_ie e), void *arg)
{
	for (uint64_t ci = 0; ci < x->nchunks; ci++) {
		const struct idx_chunk *c = x->chunks[ci];

		if (!c)
			continue;
		for (uint32_t i = 0; i < IDX_CHUNK; i++) {
			int r;

			if (ie_kind(c->e[i]) == TDO_IE_HOLE)
				continue;
			r = fn(arg, (ci << IDX_CHUNK_SHIFT) + i, c->e[i]);
			if (r)
				return r;
		}
	}
	return 0;
}

struct scan_ctx {
	uint64_t min_lsn;
	tdo_scan_fn fn;
	void *arg;
};

static int scan_one(void *arg, uint64_t b, struct tdo_ie e)
{
	struct scan_ctx *x = arg;

	if (ie_lsn(e) <= x->min_lsn)
		return 0;
	return x->fn(x->arg, b, ie_lsn(e), ie_kind(e) == TDO_IE_ZERO ? TDO_MAP_ZERO : 0);
}

int tdo_engine_scan(struct tdo_engine *e, uint32_t vol, uint64_t min_lsn, tdo_scan_fn fn, void *arg)
{
	struct vol *v = eng_vol(e, vol);
	struct scan_ctx x = { min_lsn, fn, arg };

	if (!v)
		return TDO_ENOVOL;
	return idx_walk(&v->idx, scan_one, &x);
}
