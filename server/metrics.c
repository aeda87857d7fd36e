/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: per-volume request counters and latency histograms, kept in
 * memory for /metrics (admin_render.c renders them).
 *
 * What: one struct met_vol per volume name, found by met_vol() and fed by
 * met_record() for every NBD request. A histogram's bucket i counts every
 * latency below 2^i microseconds (cumulative, as Prometheus wants them);
 * latencies of 2^MET_BUCKETS µs (about 16.8 s) and more are only in count.
 *
 * Why this way: the NBD front end keeps the pointer met_vol() returns for
 * the life of its connection, so entries must never move. The table is
 * allocated once, at its full size (TDO_MAX_VOLS entries, about 1.5 MiB
 * of which only the pages in use are touched), and never reallocated;
 * "grown on demand" means nvols, the high-water mark of slots in use,
 * rises. A deleted volume's slot is forgotten by met_forget() (main.c's
 * vol_gone) and freed for the next new name once the last connection
 * that holds it (met_vol_get()) has let go: a connection still closing
 * records into its own volume's slot, never into another's.
 *
 * Must never: allocate on the request path after the first call, or fail
 * a request because metrics could not be kept (met_record(NULL, ...) is a
 * no-op).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "admin.h"

#define MET_MAX_VOLS TDO_MAX_VOLS

static const char *const op_names[MET_NOPS] = {
	[MET_READ] = "read",
	[MET_WRITE] = "write",
	[MET_FLUSH] = "flush",
	[MET_TRIM] = "trim",
	[MET_ZERO] = "write_zeroes",
	[MET_CACHE] = "cache",
	[MET_BLOCK_STATUS] = "block_status",
};

const char *met_op_name(int op)
{
	if (op < 0 || op >= MET_NOPS)
		return "unknown";
	return op_names[op];
}

struct met_vol *met_vol(struct metrics *m, const char *name)
{
	struct met_vol *free_slot = NULL;
	size_t len;

	if (!name || !name[0] || (len = strlen(name)) > TDO_NAME_MAX)
		return NULL;
	if (!m->vols) {
		m->vols = calloc(MET_MAX_VOLS, sizeof *m->vols);
		if (!m->vols)
			return NULL;
		m->nvols = 0;
	}
	for (uint32_t i = 0; i < m->nvols; i++) {
		struct met_vol *v = &m->vols[i];
		if (!v->name[0]) {
			if (!free_slot)
				free_slot = v;
		} else if (!v->forgotten && strcmp(v->name, name) == 0) {
			return v;
		}
	}
	if (!free_slot) {
		if (m->nvols >= MET_MAX_VOLS)
			return NULL;
		free_slot = &m->vols[m->nvols++];
	}
	memset(free_slot, 0, sizeof *free_slot);
	memcpy(free_slot->name, name, len + 1);
	return free_slot;
}

struct met_vol *met_vol_get(struct metrics *m, const char *name)
{
	struct met_vol *v = met_vol(m, name);

	if (v)
		v->refs++;
	return v;
}

static void slot_free(struct metrics *m, struct met_vol *v)
{
	memset(v, 0, sizeof *v);
	while (m->nvols > 0 && !m->vols[m->nvols - 1].name[0])
		m->nvols--;
}

void met_vol_put(struct metrics *m, struct met_vol *v)
{
	if (v && --v->refs == 0 && v->forgotten)
		slot_free(m, v);
}

void met_forget(struct metrics *m, const char *name)
{
	if (!m->vols || !name)
		return;
	for (uint32_t i = 0; i < m->nvols; i++) {
		struct met_vol *v = &m->vols[i];
		if (v->name[0] && !v->forgotten && strcmp(v->name, name) == 0) {
			if (v->refs)
				v->forgotten = true; /* freed by the last met_vol_put() */
			else
				slot_free(m, v);
			break;
		}
	}
}

void met_record(struct met_vol *v, int op, uint64_t usec, uint64_t bytes, int err)
{
	struct met_hist *h;
	int i = 0;

	if (!v || op < 0 || op >= MET_NOPS)
		return;
	v->ops[op]++;
	if (err) {
		v->errors[op]++;
	} else if (op == MET_READ) {
		v->bytes_read += bytes;
	} else if (op == MET_WRITE) {
		v->bytes_written += bytes;
	}
	h = &v->lat[op];
	h->count++;
	h->sum_usec += usec;
	/* the first bucket whose bound exceeds usec, and every one above it */
	while (i < MET_BUCKETS && usec >= (UINT64_C(1) << i))
		i++;
	for (; i < MET_BUCKETS; i++)
		h->bucket[i]++;
}
