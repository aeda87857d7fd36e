/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the volume table. Create, resize and delete change the table in
 * memory at once (so a second create of the same name fails at once) and
 * append a record to the log; the caller hears back when that record is
 * durable. Replay applies the same records in log order, and checkpoints
 * carry the table, so the table needs no area of its own on disk.
 *
 * Must never: reuse a volume id (records of a deleted volume may still sit
 * in the log), or let volumes total more than the device's capacity.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

struct vol *vol_new(const struct tdo_vol_desc *d)
{
	struct vol *v = calloc(1, sizeof *v);

	if (!v)
		return NULL;
	v->d = *d;
	v->dur_lsn = d->vd_lsn;
	v->dur_epoch = d->vd_epoch;
	tdo_list_init(&v->active);
	tdo_list_init(&v->waiting);
	if (idx_init(&v->idx, (d->vd_size + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE)) {
		free(v);
		return NULL;
	}
	return v;
}

static void drop_entry(void *arg, struct tdo_ie old)
{
	void **a = arg;
	struct tdo_ie hole = { 0, 0, 0 };

	eng_account(a[0], a[1], old, hole);
}

void vol_destroy(struct tdo_engine *e, struct vol *v)
{
	void *a[2] = { e, v };

	/* give back the segments' live bytes */
	idx_resize(&v->idx, 0, drop_entry, a);
	idx_free(&v->idx);
	free(v);
}

int vol_add(struct tdo_engine *e, struct vol *v)
{
	struct vol **nv;
	uint32_t i;

	if (e->nvols >= e->sb.sb_max_vols)
		return -ENOSPC;
	if (eng_vol(e, v->d.vd_id) || eng_vol_by_name(e, v->d.vd_name))
		return TDO_EVOLEXIST;
	nv = realloc(e->vols, (e->nvols + 1) * sizeof *nv);
	if (!nv)
		return -ENOMEM;
	e->vols = nv;
	for (i = e->nvols; i > 0 && nv[i - 1]->d.vd_id > v->d.vd_id; i--)
		nv[i] = nv[i - 1];
	nv[i] = v;
	e->nvols++;
	return 0;
}

void vol_remove(struct tdo_engine *e, struct vol *v)
{
	uint32_t i;

	for (i = 0; i < e->nvols && e->vols[i] != v; i++)
		;
	if (i == e->nvols)
		return;
	memmove(&e->vols[i], &e->vols[i + 1], (e->nvols - i - 1) * sizeof *e->vols);
	e->nvols--;
}

int vol_apply_resize(struct tdo_engine *e, struct vol *v, uint64_t size)
{
	void *a[2] = { e, v };
	int err = idx_resize(&v->idx, (size + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE, drop_entry, a);

	if (err)
		return err;
	v->d.vd_size = size;
	return 0;
}

uint64_t vol_total_bytes(struct tdo_engine *e)
{
	uint64_t t = 0;

	for (uint32_t i = 0; i < e->nvols; i++)
		t += round_up(e->vols[i]->d.vd_size, TDO_BLOCK_SIZE);
	return t;
}

static int check_size(struct tdo_engine *e, uint64_t size, uint64_t others)
{
	if (size == 0 || size % TDO_SECTOR_SIZE)
		return -EINVAL;
	if (round_up(size, TDO_BLOCK_SIZE) + others > eng_capacity(&e->sb) ||
	    round_up(size, TDO_BLOCK_SIZE) < size)
		return TDO_ENOSPACE;
	return 0;
}

static int volop_submit(struct tdo_engine *e, int type, const struct tdo_vol_desc *d,
                        tdo_done_cb cb, void *arg)
{
	struct wreq *w = calloc(1, sizeof *w);

	if (!w)
		return -ENOMEM;
	w->kind = WR_VOLOP;
	w->rec_type = type;
	w->desc = *d;
	w->vol = d->vd_id;
	w->cb = cb;
	w->arg = arg;
	wr_submit(e, w);
	return 0;
}

/* 0 when E takes volume changes: open and not poisoned. */
static int vol_change_ok(struct tdo_engine *e)
{
	if (e->closing)
		return -ESHUTDOWN;
	return e->poison;
}

/* Volume NAME for a change: 0 with *OUT, or why not (IDLE: nothing of it
 * may be in flight, -EBUSY otherwise). */
static int vol_for_change(struct tdo_engine *e, const char *name, bool idle, struct vol **out)
{
	struct vol *v;
	int err = vol_change_ok(e);

	if (err)
		return err;
	if (!name || !(v = eng_vol_by_name(e, name)))
		return TDO_ENOVOL;
	if (idle && (!tdo_list_empty(&v->active) || !tdo_list_empty(&v->waiting)))
		return -EBUSY;
	*out = v;
	return 0;
}

int tdo_vol_create(struct tdo_engine *e, const char *name, uint64_t size,
                   uint32_t flags, tdo_done_cb cb, void *arg)
{
	struct tdo_vol_desc d;
	struct vol *v;
	int err = vol_change_ok(e);

	if (err)
		return err;
	if (!name || !tdo_vol_name_valid(name) || (flags & ~(uint32_t)TDO_VOL_LZ4))
		return -EINVAL;
	if (eng_vol_by_name(e, name))
		return TDO_EVOLEXIST;
	if (e->nvols >= e->sb.sb_max_vols)
		return -ENOSPC;
	err = check_size(e, size, vol_total_bytes(e));
	if (err)
		return err;
	memset(&d, 0, sizeof d);
	d.vd_id = e->next_vol_id;
	d.vd_flags = flags;
	d.vd_size = size;
	d.vd_epoch = 1;
	d.vd_ctime = (uint64_t)time(NULL);
	strcpy(d.vd_name, name);
	v = vol_new(&d);
	if (!v)
		return -ENOMEM;
	err = vol_add(e, v);
	if (err) {
		vol_destroy(e, v);
		return err;
	}
	e->next_vol_id++;
	err = volop_submit(e, TDO_REC_VOL_CREATE, &d, cb, arg);
	if (err) {
		vol_remove(e, v);
		vol_destroy(e, v);
	}
	return err;
}

int tdo_vol_resize(struct tdo_engine *e, const char *name, uint64_t size,
                   tdo_done_cb cb, void *arg)
{
	struct vol *v;
	int err = vol_for_change(e, name, false, &v);

	if (err)
		return err;
	err = check_size(e, size, vol_total_bytes(e) - round_up(v->d.vd_size, TDO_BLOCK_SIZE));
	if (err)
		return err;
	if (!tdo_list_empty(&v->active) || !tdo_list_empty(&v->waiting))
		return -EBUSY; /* writes in flight would land past a shrunk end */
	err = vol_apply_resize(e, v, size);
	if (err)
		return err;
	return volop_submit(e, TDO_REC_VOL_RESIZE, &v->d, cb, arg);
}

int tdo_vol_set_lsn(struct tdo_engine *e, const char *name, uint64_t lsn, uint32_t epoch,
                    tdo_done_cb cb, void *arg)
{
	struct vol *v;
	int err = vol_for_change(e, name, false, &v);

	if (err)
		return err;
	if (lsn > IE_LSN_MASK || epoch == 0)
		return -EINVAL;
	if (!tdo_list_empty(&v->active) || !tdo_list_empty(&v->waiting))
		return -EBUSY;
	uint64_t old_lsn = v->d.vd_lsn;
	uint32_t old_epoch = v->d.vd_epoch;
	v->d.vd_lsn = lsn;
	v->d.vd_epoch = epoch;
	err = volop_submit(e, TDO_REC_VOL_RESIZE, &v->d, cb, arg);
	if (err) {
		v->d.vd_lsn = old_lsn;
		v->d.vd_epoch = old_epoch;
	} else {
		v->dur_lsn = lsn; /* nothing of the volume is in flight (checked above) */
		v->dur_epoch = epoch;
	}
	return err;
}

int tdo_vol_delete(struct tdo_engine *e, const char *name, tdo_done_cb cb, void *arg)
{
	struct tdo_vol_desc d;
	struct vol *v;
	int err = vol_for_change(e, name, true, &v);

	if (err)
		return err;
	d = v->d;
	vol_remove(e, v);
	vol_destroy(e, v);
	return volop_submit(e, TDO_REC_VOL_DELETE, &d, cb, arg);
}

static void fill_info(const struct vol *v, struct tdo_vol_info *o)
{
	memset(o, 0, sizeof *o);
	o->id = v->d.vd_id;
	o->flags = v->d.vd_flags;
	o->size = v->d.vd_size;
	o->lsn = v->d.vd_lsn;
	o->epoch = v->d.vd_epoch;
	o->durable_lsn = v->dur_lsn;
	o->durable_epoch = v->dur_epoch;
	o->used_bytes = v->live;
	o->ctime = v->d.vd_ctime;
	strcpy(o->name, v->d.vd_name);
}

int tdo_vol_lookup(struct tdo_engine *e, const char *name, struct tdo_vol_info *out)
{
	struct vol *v = name ? eng_vol_by_name(e, name) : NULL;

	if (!v)
		return TDO_ENOVOL;
	fill_info(v, out);
	return 0;
}

static int cmp_info(const void *a, const void *b)
{
	return strcmp(((const struct tdo_vol_info *)a)->name, ((const struct tdo_vol_info *)b)->name);
}

int tdo_vol_list(struct tdo_engine *e, struct tdo_vol_info *out, int max)
{
	int n = 0;

	for (uint32_t i = 0; i < e->nvols && n < max; i++)
		fill_info(e->vols[i], &out[n++]);
	if (n > 1)
		qsort(out, (size_t)n, sizeof *out, cmp_info);
	return (int)e->nvols;
}
