/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: a volume's index, block number -> newest version (struct tdo_ie).
 * A two-level table: chunks of 1024 entries are allocated when a block in
 * them is first set, and freed when every entry is a hole again, so a
 * sparse volume costs little. Lookups are two loads and a decode; no locks
 * (loop thread only).
 *
 * A chunk packs each entry into 15 bytes (layout in internal.h): the 48-bit
 * LSN is kept as a 40-bit offset from the chunk's base, and the rest of the
 * entry is stored whole. So a written block costs 15 bytes plus 1/1024 of a
 * chunk header and a pointer. A chunk's base sits 2^39 below the first LSN
 * it holds, so its window reaches 2^39 writes to the volume either side.
 * An LSN outside the window moves the base if every entry of the chunk fits
 * the new window, and otherwise turns the chunk wide (16-byte entries, no
 * base) for as long as it exists. Neither happens unless one chunk holds
 * versions 2^39 writes apart.
 *
 * Must never: allocate in idx_get, keep a chunk whose entries are all
 * holes, or store an LSN its chunk cannot give back exactly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DELTA_MAX  ((1ull << IDX_DELTA_BITS) - 1)
#define BASE_SLACK (1ull << (IDX_DELTA_BITS - 1))

/* E as a narrow entry at P, its LSN counted from BASE (idx_unpack's
 * inverse; the caller has checked that the LSN fits). */
static void idx_pack(uint8_t *p, uint64_t base, struct tdo_ie e)
{
	uint64_t lo, hi, sector;

	if (ie_kind(e) == TDO_IE_HOLE) {
		memset(p, 0, IDX_NARROW);
		return;
	}
	sector = ie_sector(e);
	lo = (ie_lsn(e) - base) | (uint64_t)ie_kind(e) << IDX_DELTA_BITS |
	     (uint64_t)ie_nsect(e) << 42 | (sector & 0x3ffff) << 46;
	hi = (sector >> 18) | (uint64_t)e.ie_c << 24;
	memcpy(p, &lo, 8);
	memcpy(p + 8, &hi, 7);
}

static void chunk_put(struct idx_chunk *c, uint32_t i, struct tdo_ie e)
{
	if (c->wide)
		memcpy(c->e + (size_t)i * sizeof e, &e, sizeof e);
	else
		idx_pack(c->e + (size_t)i * IDX_NARROW, c->base, e);
}

static bool chunk_fits(const struct idx_chunk *c, uint64_t lsn)
{
	return c->wide || (lsn >= c->base && lsn - c->base <= DELTA_MAX);
}

static struct idx_chunk *chunk_new(bool wide, uint64_t lsn)
{
	struct idx_chunk *c = calloc(1, IDX_CHUNK_BYTES(wide));

	if (c) {
		c->wide = wide;
		c->base = lsn > BASE_SLACK ? lsn - BASE_SLACK : 0;
	}
	return c;
}

/* Make room in chunk CI for LSN, about to go into slot SLOT: a new base
 * when every other entry fits one window with it, else wide entries. */
static int chunk_make_room(struct idx *x, uint64_t ci, uint32_t slot, uint64_t lsn)
{
	struct idx_chunk *c = x->chunks[ci], *w;
	uint64_t lo = lsn, hi = lsn;

	for (uint32_t i = 0; i < IDX_CHUNK; i++) {
		struct tdo_ie e = idx_chunk_get(c, i);

		if (i == slot || ie_kind(e) == TDO_IE_HOLE)
			continue;
		lo = ie_lsn(e) < lo ? ie_lsn(e) : lo;
		hi = ie_lsn(e) > hi ? ie_lsn(e) : hi;
	}
	if (hi - lo <= DELTA_MAX) {
		/* a quarter of the spare room below, the rest above: LSNs grow */
		uint64_t below = (DELTA_MAX - (hi - lo)) / 4;
		uint64_t base = lo - (lo < below ? lo : below);

		for (uint32_t i = 0; i < IDX_CHUNK; i++) {
			uint8_t *p = c->e + (size_t)i * IDX_NARROW;

			if (i != slot) /* the slot is overwritten next */
				idx_pack(p, base, idx_unpack(p, c->base));
		}
		c->base = base;
		return 0;
	}
	w = chunk_new(true, 0);
	if (!w)
		return -ENOMEM;
	w->used = c->used;
	for (uint32_t i = 0; i < IDX_CHUNK; i++)
		chunk_put(w, i, idx_chunk_get(c, i));
	x->chunks[ci] = w;
	x->mem += IDX_CHUNK_BYTES(true) - IDX_CHUNK_BYTES(false);
	free(c);
	return 0;
}

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
	uint32_t i = (uint32_t)(b & (IDX_CHUNK - 1));
	struct idx_chunk *c = x->chunks[ci];
	struct tdo_ie was_e;
	bool was, is = ie_kind(e) != TDO_IE_HOLE;

	if (!c) {
		if (old)
			memset(old, 0, sizeof *old);
		if (!is)
			return 0;
		c = chunk_new(false, ie_lsn(e));
		if (!c)
			return -ENOMEM;
		x->chunks[ci] = c;
		x->mem += IDX_CHUNK_BYTES(false);
	}
	was_e = idx_chunk_get(c, i);
	if (old)
		*old = was_e;
	was = ie_kind(was_e) != TDO_IE_HOLE;
	if (is && !chunk_fits(c, ie_lsn(e))) {
		int err = chunk_make_room(x, ci, i, ie_lsn(e));

		if (err)
			return err;
		c = x->chunks[ci];
	}
	chunk_put(c, i, e);
	if (is && !was)
		c->used++;
	else if (!is && was)
		c->used--;
	if (!is && !c->used) {
		x->mem -= IDX_CHUNK_BYTES(c->wide);
		free(c);
		x->chunks[ci] = NULL;
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
		const struct idx_chunk *c = x->chunks[b >> IDX_CHUNK_SHIFT];
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
			struct tdo_ie e = idx_chunk_get(c, i);
			int r;

			if (ie_kind(e) == TDO_IE_HOLE)
				continue;
			r = fn(arg, (ci << IDX_CHUNK_SHIFT) + i, e);
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
