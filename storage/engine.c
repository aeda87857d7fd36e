/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the engine object: open (superblock, checkpoint, replay, fresh
 * checkpoint), close, deferred callbacks, accounting and figures. The
 * write path, reads, checkpoints and the cleaner each live in their own
 * file; this one ties them to the caller's loop through one idle handle
 * ("soon", started by eng_kick) that runs deferred callbacks and the
 * scheduler, and one async handle that is never sent and only keeps the
 * caller's loop running while the engine is open.
 *
 * Must never: call a user callback from inside the API call that queued it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct deferred {
	struct tdo_list link;
	tdo_done_cb cb;
	void *arg;
	int status;
};

void ckpt_poll(struct tdo_engine *e);

struct vol *eng_vol(struct tdo_engine *e, uint32_t id)
{
	/* volumes are kept sorted by id: binary search */
	uint32_t lo = 0, hi = e->nvols;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (e->vols[mid]->d.vd_id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < e->nvols && e->vols[lo]->d.vd_id == id)
		return e->vols[lo];
	return NULL;
}

struct vol *eng_vol_by_name(struct tdo_engine *e, const char *name)
{
	for (uint32_t i = 0; i < e->nvols; i++)
		if (strcmp(e->vols[i]->d.vd_name, name) == 0)
			return e->vols[i];
	return NULL;
}

bool eng_record_live(struct tdo_engine *e, const struct tdo_rec_hdr *r, uint64_t sector,
                     struct vol **vp, struct tdo_ie *iep)
{
	struct vol *v;
	struct tdo_ie ie;

	if (r->rec_type != TDO_REC_DATA)
		return false;
	v = eng_vol(e, r->rec_vol);
	if (!v || r->rec_block >= v->idx.nblocks)
		return false;
	ie = idx_get(&v->idx, r->rec_block);
	if (!ie_has_payload(ie) || ie_sector(ie) != sector)
		return false;
	if (vp)
		*vp = v;
	if (iep)
		*iep = ie;
	return true;
}

uint64_t eng_sector_to_seg(struct tdo_engine *e, uint64_t sector)
{
	uint64_t off = sector * TDO_SECTOR_SIZE;

	if (off < e->sb.sb_seg_start)
		return UINT64_MAX;
	return (off - e->sb.sb_seg_start) / e->sb.sb_seg_size;
}

static uint64_t payload_bytes(struct tdo_ie e)
{
	return ie_has_payload(e) ? (uint64_t)ie_nsect(e) * TDO_SECTOR_SIZE : 0;
}

void eng_account(struct tdo_engine *e, struct vol *v, struct tdo_ie old, struct tdo_ie neu)
{
	uint64_t s;

	if (ie_has_payload(old)) {
		s = eng_sector_to_seg(e, ie_sector(old));
		if (s < e->sb.sb_seg_count && (e->segs[s].live -= payload_bytes(old)) == 0)
			seg_try_free(e, (uint32_t)s);
		v->live -= payload_bytes(old);
		e->st.live_bytes -= payload_bytes(old);
	}
	if (ie_has_payload(neu)) {
		s = eng_sector_to_seg(e, ie_sector(neu));
		if (s < e->sb.sb_seg_count)
			e->segs[s].live += payload_bytes(neu);
		v->live += payload_bytes(neu);
		e->st.live_bytes += payload_bytes(neu);
	}
}

uint64_t eng_capacity(const struct tdo_sb *sb)
{
	/* volumes may total 15/16 of the segments beyond the cleaner's reserve */
	uint64_t reserve = 4 + sb->sb_seg_count / 64;

	if (sb->sb_seg_count <= reserve)
		return 0;
	return (sb->sb_seg_count - reserve) * sb->sb_seg_size / 16 * 15 / TDO_BLOCK_SIZE * TDO_BLOCK_SIZE;
}

/* Deferred callbacks, then a batch from what is pending, checkpoints,
 * the cleaner, closing: run once per loop turn that asked for it. */
static void kicked(struct tdo_engine *e)
{
	struct tdo_list q;

	/* callbacks may defer more; run only those queued before now */
	tdo_list_init(&q);
	if (!tdo_list_empty(&e->deferred)) {
		q.next = e->deferred.next;
		q.prev = e->deferred.prev;
		q.next->prev = &q;
		q.prev->next = &q;
		tdo_list_init(&e->deferred);
	}
	while (!tdo_list_empty(&q)) {
		struct deferred *d = tdo_list_item(q.next, struct deferred, link);
		tdo_list_del(&d->link);
		d->cb(d->arg, d->status);
		free(d);
	}
	wr_schedule(e);
	ckpt_poll(e);
	cln_maybe_start(e);
	eng_maybe_finish_close(e);
}

static void soon_cb(uv_idle_t *h)
{
	uv_idle_stop(h);
	kicked(h->data);
}

/*
 * Run kicked() early in the next loop turn, after every request of this
 * turn's callbacks has been queued (that is the group commit), without a
 * system call: an active idle handle runs before the loop polls and keeps
 * the poll from sleeping.
 */
void eng_kick(struct tdo_engine *e)
{
	uv_idle_start(&e->soon, soon_cb);
}

int eng_defer(struct tdo_engine *e, tdo_done_cb cb, void *arg, int status)
{
	struct deferred *d = malloc(sizeof *d);

	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	d->status = status;
	tdo_list_add_tail(&e->deferred, &d->link);
	eng_kick(e);
	return 0;
}

void eng_poison(struct tdo_engine *e, int err, const char *what)
{
	if (!e->poison) {
		tdo_log(TDO_LOG_ERROR, "engine", "%s failed: %s; the engine refuses all writes from now on",
		        what, tdo_strerror(err));
		e->poison = TDO_EPOISON;
		e->st.poisoned = 1;
	}
}

bool tdo_vol_name_valid(const char *name)
{
	return name[0] != '.' && name[0] != '-' && tdo_name_chars_ok(name, TDO_NAME_MAX);
}

static void eng_free(struct tdo_engine *e)
{
	for (uint32_t i = 0; i < e->nvols; i++)
		vol_destroy(e, e->vols[i]);
	free(e->vols);
	free(e->segs);
	free(e->path);
	free(e);
}

int tdo_engine_open(uv_loop_t *loop, const char *path,
                    const struct tdo_open_opts *opts, struct tdo_engine **out)
{
	return eng_open(loop, path, opts, out, NULL);
}

int eng_open(uv_loop_t *loop, const char *path, const struct tdo_open_opts *opts,
             struct tdo_engine **out, struct rcv_damage *dmg)
{
	struct tdo_engine *e;
	uint64_t t0 = tdo_now_usec(), seq;
	uint32_t seg, off;
	int err;

	/* more workers than libuv's default 4, so reads overlap with the
	 * batch being synced; must be set before the pool starts */
	setenv("UV_THREADPOOL_SIZE", "16", 0);

	e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->loop = loop;
	if (opts)
		e->opts = *opts;
	/* a checkpoint rewrites the whole index; 256 MiB of log between them
	 * replays in well under a second (bench/engine: 1 GiB in 0.4-0.6 s) */
	if (!e->opts.ckpt_every)
		e->opts.ckpt_every = 256ull << 20;
	e->path = strdup(path);
	tdo_list_init(&e->pending);
	tdo_list_init(&e->pending_reloc);
	tdo_list_init(&e->outstanding);
	tdo_list_init(&e->flushes);
	tdo_list_init(&e->deferred);
	tdo_list_init(&e->ckpt_waiters);

	dev_fi_env_check(); /* a TDO_FAULT_* this build ignores: say so */
	err = dev_open(&e->dev, path, TDO_BACKEND_FILE, false, 0, e->opts.direct);
	if (err)
		goto fail_free;
	err = fmt_read_sb(&e->dev, &e->sb);
	if (err)
		goto fail_close;
	if (e->sb.sb_backend == TDO_BACKEND_PMEM) {
		dev_close(&e->dev);
		err = dev_open(&e->dev, path, TDO_BACKEND_PMEM, false, 0, false);
		if (err)
			goto fail_free;
	}
	e->segs = calloc(e->sb.sb_seg_count, sizeof *e->segs);
	if (!e->segs) {
		err = -ENOMEM;
		goto fail_close;
	}
	e->reserve = 2 + e->sb.sb_seg_count / 128;
	e->clean_low = e->reserve + 2 + e->sb.sb_seg_count / 256;
	e->clean_high = e->clean_low + 2 + e->sb.sb_seg_count / 128;

	err = ckpt_load(e, &seq, &seg, &off);
	if (err)
		goto fail_close;
	/* a failed replay writes nothing: damage stays as it was found */
	err = rcv_replay(e, seq, seg, off, dmg);
	if (err)
		goto fail_close;
	/* a fresh checkpoint: from here on nothing refers to the old replay
	 * path, so every empty segment is free */
	err = ckpt_write_sync(e);
	if (err)
		goto fail_close;
	seg_set_from_recovery(e);
	e->st.recovery_usec = tdo_now_usec() - t0;

	err = uv_async_init(loop, &e->alive, NULL);
	if (err)
		goto fail_close;
	e->alive.data = e;
	uv_idle_init(loop, &e->soon);
	e->soon.data = e;
	ur_init(e); /* without it, worker threads do the I/O */
	*out = e;
	return 0;
fail_close:
	dev_close(&e->dev);
fail_free:
	eng_free(e);
	return err;
}

static void close_done(uv_handle_t *h)
{
	struct tdo_engine *e = h->data;
	tdo_done_cb cb = e->close_cb;
	void *arg = e->close_arg;
	int status = e->poison;

	dev_close(&e->dev);
	eng_free(e);
	if (cb)
		cb(arg, status);
}

static void soon_closed(uv_handle_t *h)
{
	struct tdo_engine *e = h->data;

	uv_close((uv_handle_t *)&e->alive, close_done);
}

static void ring_closed(struct tdo_engine *e)
{
	uv_close((uv_handle_t *)&e->soon, soon_closed);
}

/* The engine's handles one after another, the ring's first; close_done
 * frees it all. */
static void close_handles(struct tdo_engine *e)
{
	if (e->ur)
		ur_close(e, ring_closed);
	else
		ring_closed(e);
}

static void close_ckpt_done(void *arg, int status)
{
	struct tdo_engine *e = arg;

	if (status && !e->poison)
		e->poison = status;
	close_handles(e);
}

/* Once nothing is in flight, write the final checkpoint and let go. */
void eng_maybe_finish_close(struct tdo_engine *e)
{
	if (!e->closing || e->closing == 2)
		return;
	if (!wr_idle(e) || e->reads_inflight || e->clean || e->ckpt || !tdo_list_empty(&e->deferred))
		return;
	e->closing = 2;
	if (e->poison) {
		close_handles(e);
		return;
	}
	ckpt_request(e, close_ckpt_done, e);
}

int tdo_engine_close(struct tdo_engine *e, tdo_done_cb cb, void *arg)
{
	if (e->closing)
		return -EALREADY;
	e->closing = 1;
	e->close_cb = cb;
	e->close_arg = arg;
	eng_kick(e);
	return 0;
}

void tdo_engine_stats(struct tdo_engine *e, struct tdo_engine_stats *out)
{
	uint32_t used = 0;

	*out = e->st;
	out->dev_size = e->sb.sb_dev_size;
	out->seg_size = e->sb.sb_seg_size;
	out->seg_count = e->sb.sb_seg_count;
	out->seg_free = e->seg_free;
	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++)
		if (e->segs[i].state != SEG_FREE)
			used++;
	out->seg_used = used;
	out->capacity = eng_capacity(&e->sb);
	out->vol_bytes = vol_total_bytes(e);
	out->index_bytes = 0;
	for (uint32_t i = 0; i < e->nvols; i++)
		out->index_bytes += e->vols[i]->idx.mem;
	out->poisoned = e->poison != 0;
}

int tdo_engine_checkpoint(struct tdo_engine *e, tdo_done_cb cb, void *arg)
{
	if (e->closing)
		return -ESHUTDOWN;
	if (e->poison)
		return e->poison;
	ckpt_request(e, cb, arg);
	return 0;
}
