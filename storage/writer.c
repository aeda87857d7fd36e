/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the write path and group commit.
 *
 * A write-side request (write, zero, trim, volume op, cleaner copy) is
 * first ordered against overlapping requests of its volume: one that must
 * read-modify-write a partial 4 KiB block, or that overlaps one waiting,
 * waits until the overlap is gone, so overlapping requests take effect in
 * submission order. Then it gets its LSN and joins the pending queue.
 *
 * Group commit is a loop phase: after the loop has gathered requests
 * (eng_kick), wr_schedule turns everything pending into one batch — one
 * buffer, one write, one sync — sent through io_uring as a write linked
 * to an fdatasync (or run by a worker without it). Only one batch is in
 * flight; what arrives meanwhile forms the next one. That ordering is what
 * lets recovery treat only the newest batch as possibly torn.
 *
 * When the batch is durable the index is updated in record order and the
 * requests whose last record it held complete. A small batch with nothing
 * to compress is built on the loop; compression and the checksums of a
 * large batch are computed by a worker, off the loop.
 *
 * Must never: acknowledge before the sync returned; let client writes take
 * the segments reserved for the cleaner; retry a failed write or sync.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BATCH_MAX_BYTES (8u << 20)
/* With io_uring, a batch up to this size is built on the loop thread
 * (copies and checksums, a few microseconds per block); bigger ones and
 * any with blocks to compress are built by a worker. */
#define BATCH_INLINE_BYTES (256u << 10)

struct bitem {
	struct wreq *w;
	uint8_t type, flags;
	uint32_t vol, count, epoch;
	uint64_t block, lsn;
	const uint8_t *src;         /* payload source */
	uint32_t srclen;
	bool compress;
	bool keep_pcsum;            /* a cleaner copy keeps the original checksum */
	uint64_t pcsum;
	bool last;                  /* the request's last record */
};

struct batch {
	uv_work_t work;
	struct ur_op op;            /* io_uring: the write and its fdatasync */
	struct tdo_engine *e;
	uint32_t seg, off;
	uint64_t seq;
	struct bitem *items;
	uint32_t n, cap;
	uint32_t nraw, nsmall_sect; /* for the size bound */
	uint32_t ncomp;             /* items to compress */
	uint8_t *buf;
	uint32_t bound, len;
	int status;
	bool client;                /* holds client requests (not only copies) */
};

/* ---- ordering ---------------------------------------------------------- */

static bool overlaps(const struct wreq *a, const struct wreq *b)
{
	return a->b0 < b->b1 && b->b0 < a->b1;
}

static bool blocked_by_active(struct vol *v, struct wreq *w)
{
	for (struct tdo_list *l = v->active.next; l != &v->active; l = l->next) {
		struct wreq *x = tdo_list_item(l, struct wreq, vlink);
		if (x != w && overlaps(w, x) && (w->rmw || x->rmw))
			return true;
	}
	return false;
}

static bool blocked_by_waiting(struct vol *v, struct wreq *w)
{
	for (struct tdo_list *l = v->waiting.next; l != &v->waiting; l = l->next) {
		struct wreq *x = tdo_list_item(l, struct wreq, link);
		if (x == w)
			break; /* only those ahead of it */
		if (overlaps(w, x))
			return true;
	}
	return false;
}

static void enqueue(struct tdo_engine *e, struct wreq *w)
{
	struct vol *v = eng_vol(e, w->vol);

	if (v && w->tagged) {
		if (w->lsn >= v->d.vd_lsn) {
			v->d.vd_lsn = w->lsn;
			v->d.vd_epoch = w->epoch;
		}
	} else if (v && (w->kind == WR_WRITE || w->kind == WR_ZERO || w->kind == WR_TRIM)) {
		w->lsn = ++v->d.vd_lsn;
		w->epoch = v->d.vd_epoch;
	}
	w->next_b = w->b0;
	tdo_list_add_tail(w->kind == WR_RELOC ? &e->pending_reloc : &e->pending, &w->link);
	eng_kick(e);
}

static void complete(struct tdo_engine *e, struct wreq *w);

static void merge_partial(struct wreq *w, uint8_t *blk, uint64_t b)
{
	uint64_t bstart = b * TDO_BLOCK_SIZE;
	uint64_t from = w->off > bstart ? w->off - bstart : 0;
	uint64_t to = w->off + w->len - bstart;

	if (to > TDO_BLOCK_SIZE)
		to = TDO_BLOCK_SIZE;
	if (w->kind == WR_WRITE)
		memcpy(blk + from, w->buf + (bstart + from - w->off), to - from);
	else
		memset(blk + from, 0, to - from);
}

static void rmw_read_done(void *arg, int status)
{
	struct wreq *w = arg;
	struct tdo_engine *e = w->e;

	if (status && !w->status)
		w->status = status;
	if (--w->rmw_pending > 0)
		return;
	if (w->status) {
		w->next_b = w->b1;
		complete(e, w);
		return;
	}
	if (w->head_blk)
		merge_partial(w, w->head_blk, w->b0);
	if (w->tail_blk)
		merge_partial(w, w->tail_blk, w->b1 - 1);
	enqueue(e, w);
}

static void activate(struct tdo_engine *e, struct vol *v, struct wreq *w)
{
	bool head_part, tail_part;
	int err;

	tdo_list_add_tail(&v->active, &w->vlink);
	if (!w->rmw) {
		enqueue(e, w);
		return;
	}
	head_part = w->off % TDO_BLOCK_SIZE != 0 || w->b1 - w->b0 == 1;
	tail_part = (w->off + w->len) % TDO_BLOCK_SIZE != 0 && w->b1 - 1 != w->b0;
	w->head_blk = head_part ? dev_alloc(TDO_BLOCK_SIZE) : NULL;
	w->tail_blk = tail_part ? dev_alloc(TDO_BLOCK_SIZE) : NULL;
	/* one extra count, dropped on a later loop turn, so that completion
	 * never runs inside the caller's submit */
	w->rmw_pending = 1;
	if ((head_part && !w->head_blk) || (tail_part && !w->tail_blk)) {
		w->status = -ENOMEM;
	} else {
		if (head_part) {
			w->rmw_pending++;
			if ((err = rd_blocks(e, v, w->b0, 1, w->head_blk, rmw_read_done, w)))
				rmw_read_done(w, err);
		}
		if (tail_part) {
			w->rmw_pending++;
			if ((err = rd_blocks(e, v, w->b1 - 1, 1, w->tail_blk, rmw_read_done, w)))
				rmw_read_done(w, err);
		}
	}
	if (eng_defer(e, rmw_read_done, w, 0))
		rmw_read_done(w, -ENOMEM);
}

static void release_waiters(struct tdo_engine *e, struct vol *v)
{
	struct tdo_list *l = v->waiting.next;

	while (l != &v->waiting) {
		struct wreq *x = tdo_list_item(l, struct wreq, link);
		l = l->next;
		if (blocked_by_active(v, x) || blocked_by_waiting(v, x))
			continue;
		tdo_list_del(&x->link);
		activate(e, v, x);
	}
}

void wr_submit(struct tdo_engine *e, struct wreq *w)
{
	struct vol *v;

	w->e = e;
	w->wid = ++e->next_wid;
	tdo_list_init(&w->link);
	tdo_list_init(&w->vlink);
	tdo_list_init(&w->olink);
	if (w->kind != WR_RELOC)
		tdo_list_add_tail(&e->outstanding, &w->olink);
	if (w->kind == WR_VOLOP || w->kind == WR_RELOC) {
		enqueue(e, w);
		return;
	}
	v = eng_vol(e, w->vol);
	w->b0 = w->off / TDO_BLOCK_SIZE;
	w->b1 = (w->off + w->len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE;
	w->rmw = w->off % TDO_BLOCK_SIZE || (w->off + w->len) % TDO_BLOCK_SIZE;
	if (blocked_by_active(v, w) || blocked_by_waiting(v, w)) {
		tdo_list_add_tail(&v->waiting, &w->link);
		return;
	}
	activate(e, v, w);
}

/* ---- completion -------------------------------------------------------- */

static void complete(struct tdo_engine *e, struct wreq *w)
{
	struct vol *v;

	if (w->parts || w->next_b < w->b1 || (w->kind == WR_VOLOP && !w->meta_done) ||
	    w->rmw_pending)
		return;
	if (w->kind == WR_RELOC) {
		cln_reloc_done(e, w);
		return;
	}
	tdo_list_del(&w->olink);
	if (!tdo_list_empty(&w->vlink)) {
		tdo_list_del(&w->vlink);
		v = eng_vol(e, w->vol);
		if (v)
			release_waiters(e, v);
	}
	free(w->head_blk);
	free(w->tail_blk);
	if (w->cb)
		w->cb(w->arg, w->status);
	free(w);
	wr_check_flushes(e);
}

void wr_check_flushes(struct tdo_engine *e)
{
	uint64_t oldest = tdo_list_empty(&e->outstanding) ? UINT64_MAX
	                  : tdo_list_item(e->outstanding.next, struct wreq, olink)->wid;

	while (!tdo_list_empty(&e->flushes)) {
		struct wreq *f = tdo_list_item(e->flushes.next, struct wreq, link);
		if (f->wid > oldest)
			break;
		tdo_list_del(&f->link);
		f->cb(f->arg, e->poison ? -EIO : 0);
		free(f);
	}
}

/* ---- batches ----------------------------------------------------------- */

static bool next_item(struct tdo_engine *e, struct wreq *w, struct bitem *it)
{
	struct vol *v;

	memset(it, 0, sizeof *it);
	it->w = w;
	switch (w->kind) {
	case WR_VOLOP:
		if (w->meta_done)
			return false;
		it->type = (uint8_t)w->rec_type;
		it->vol = w->desc.vd_id;
		it->epoch = w->desc.vd_epoch;
		it->lsn = w->desc.vd_lsn;
		if (w->rec_type != TDO_REC_VOL_DELETE) {
			it->src = (const uint8_t *)&w->desc;
			it->srclen = sizeof w->desc;
		}
		it->last = true;
		return true;
	case WR_RELOC:
		if (w->meta_done)
			return false;
		it->type = TDO_REC_DATA;
		it->flags = (uint8_t)(w->rh.rec_flags | TDO_RECF_RELOC);
		it->vol = w->rh.rec_vol;
		it->block = w->rh.rec_block;
		it->count = 1;
		it->lsn = w->rh.rec_lsn;
		it->epoch = w->rh.rec_epoch;
		it->src = w->payload;
		it->srclen = w->rh.rec_plen;
		it->keep_pcsum = true;
		it->pcsum = w->rh.rec_pcsum;
		it->last = true;
		return true;
	default:
		break;
	}
	if (w->next_b >= w->b1)
		return false;
	v = eng_vol(e, w->vol);
	it->vol = w->vol;
	it->lsn = w->lsn;
	it->epoch = w->epoch;
	it->block = w->next_b;
	it->count = 1;
	if (w->head_blk && w->next_b == w->b0) {
		it->type = TDO_REC_DATA;
		it->src = w->head_blk;
	} else if (w->tail_blk && w->next_b == w->b1 - 1) {
		it->type = TDO_REC_DATA;
		it->src = w->tail_blk;
	} else if (w->kind == WR_WRITE) {
		it->type = TDO_REC_DATA;
		it->src = w->buf + (w->next_b * TDO_BLOCK_SIZE - w->off);
	} else {
		uint64_t end = w->tail_blk ? w->b1 - 1 : w->b1;
		it->type = (w->kind == WR_ZERO && (w->flags & TDO_ZERO_NO_HOLE)) ? TDO_REC_ZERO : TDO_REC_TRIM;
		if (end - w->next_b > UINT32_MAX)
			end = w->next_b + UINT32_MAX;
		it->count = (uint32_t)(end - w->next_b);
	}
	if (it->type == TDO_REC_DATA) {
		it->srclen = TDO_BLOCK_SIZE;
		it->compress = v && (v->d.vd_flags & TDO_VOL_LZ4);
	}
	it->last = w->next_b + it->count >= w->b1;
	return true;
}

static void advance(struct wreq *w, const struct bitem *it)
{
	if (w->kind == WR_VOLOP || w->kind == WR_RELOC)
		w->meta_done = true;
	else
		w->next_b += it->count;
}

/* A whole uncompressed block: it goes at a 4 KiB-aligned offset. */
static bool is_raw(const struct bitem *it)
{
	return it->type == TDO_REC_DATA && !(it->flags & TDO_RECF_LZ4) && it->srclen == TDO_BLOCK_SIZE;
}

static uint32_t item_bound(const struct bitem *it, uint32_t *raw, uint32_t *small_sect)
{
	if (is_raw(it)) {
		(*raw)++;
		return TDO_BLOCK_SIZE;
	}
	*small_sect += (it->srclen + TDO_SECTOR_SIZE - 1) / TDO_SECTOR_SIZE;
	return (uint32_t)round_up(it->srclen, TDO_SECTOR_SIZE);
}

static uint32_t batch_bound(uint32_t n, uint32_t raw, uint32_t small_sect)
{
	return (uint32_t)round_up((uint64_t)batch_hdr_len(n) + (uint64_t)raw * TDO_BLOCK_SIZE +
	                          (uint64_t)small_sect * TDO_SECTOR_SIZE, TDO_BLOCK_SIZE);
}

/* Compress, lay out, checksum and seal batch B into b->buf (loop or
 * worker). Sets b->len, or b->status on failure. */
static void batch_build(struct batch *b)
{
	struct tdo_engine *e = b->e;
	struct tdo_batch_hdr *bh = (void *)b->buf;
	struct tdo_rec_hdr *rh = (void *)(bh + 1);
	uint32_t hdr_len = batch_hdr_len(b->n);
	uint32_t raw_off = hdr_len, small_off, nraw = 0;
	uint8_t *cbuf = NULL;
	uint32_t ncomp = 0;

	/* compress first: an lz4 payload that saves a sector goes in the
	 * small area, the rest stays raw */
	for (uint32_t i = 0; i < b->n; i++)
		if (b->items[i].compress)
			ncomp++;
	if (ncomp) {
		cbuf = malloc((size_t)ncomp * LZ4_MAX_NSECT * TDO_SECTOR_SIZE);
		if (!cbuf) {
			b->status = -ENOMEM;
			return;
		}
	}
	ncomp = 0;
	for (uint32_t i = 0; i < b->n; i++) {
		struct bitem *it = &b->items[i];
		if (it->compress) {
			uint8_t *slot = cbuf + (size_t)ncomp * LZ4_MAX_NSECT * TDO_SECTOR_SIZE;
			uint32_t clen = rec_compress(it->src, slot);
			if (clen) {
				it->src = slot;
				it->srclen = clen;
				it->flags |= TDO_RECF_LZ4;
				ncomp++;
			}
		}
		if (is_raw(it))
			nraw++;
	}
	small_off = hdr_len + nraw * TDO_BLOCK_SIZE;

	memset(bh, 0, hdr_len);
	for (uint32_t i = 0; i < b->n; i++) {
		struct bitem *it = &b->items[i];
		struct tdo_rec_hdr *r = &rh[i];
		uint32_t poff = 0;

		if (it->srclen) {
			if (is_raw(it)) {
				poff = raw_off;
				raw_off += TDO_BLOCK_SIZE;
			} else {
				poff = small_off;
				small_off += (uint32_t)round_up(it->srclen, TDO_SECTOR_SIZE);
			}
			memcpy(b->buf + poff, it->src, it->srclen);
			if (it->srclen % TDO_SECTOR_SIZE)
				memset(b->buf + poff + it->srclen, 0, TDO_SECTOR_SIZE - it->srclen % TDO_SECTOR_SIZE);
		}
		r->rec_type = it->type;
		r->rec_flags = it->flags;
		r->rec_vol = it->vol;
		r->rec_block = it->block;
		r->rec_count = it->count;
		r->rec_epoch = it->epoch;
		r->rec_lsn = it->lsn;
		r->rec_seq = b->seq;
		r->rec_poff = poff;
		r->rec_plen = it->srclen;
		r->rec_pcsum = it->keep_pcsum ? it->pcsum : it->srclen ? tdo_csum(b->buf + poff, it->srclen) : 0;
		rec_seal(r);
	}
	b->len = (uint32_t)round_up(small_off, TDO_BLOCK_SIZE);
	if (b->len > small_off)
		memset(b->buf + small_off, 0, b->len - small_off);
	bh->bh_magic = TDO_BATCH_MAGIC;
	memcpy(bh->bh_uuid, e->sb.sb_uuid, 16);
	bh->bh_seq = b->seq;
	bh->bh_nrec = b->n;
	bh->bh_hdr_len = hdr_len;
	bh->bh_len = b->len;
	bh->bh_version = TDO_FORMAT_VERSION;
	batch_seal(bh, hdr_len);
	free(cbuf);
}

static uint64_t batch_dev_off(const struct batch *b)
{
	return b->e->sb.sb_seg_start + (uint64_t)b->seg * b->e->sb.sb_seg_size + b->off;
}

/* Worker threads without io_uring: build, write, fdatasync. */
static void batch_work(uv_work_t *wk)
{
	struct batch *b = wk->data;

	batch_build(b);
	if (!b->status)
		b->status = dev_pwrite(&b->e->dev, b->buf, b->len, batch_dev_off(b));
	if (!b->status)
		b->status = dev_sync(&b->e->dev);
}

static void batch_done(struct batch *b, int status)
{
	struct tdo_engine *e = b->e;
	const struct tdo_rec_hdr *rh = (const void *)(b->buf + sizeof(struct tdo_batch_hdr));
	int err = status ? status : b->status;

	e->inflight = NULL;
	if (err)
		eng_poison(e, err, "log write");
	if (!err) {
		e->st.batches++;
		e->st.batch_recs += b->n;
		e->st.log_bytes += b->len;
		e->log_since_ckpt += b->len;
		e->segs[b->seg].age = b->seq;
		if (e->head_seg == b->seg)
			e->head_off = b->off + b->len; /* give back what compression saved */
		e->applied_seg = b->seg;
		e->applied_off = b->off + b->len;
		e->applied_seq = b->seq + 1;
	}
	/* first the whole batch into the index, then the callbacks: a
	 * callback may start a checkpoint, whose snapshot must see every
	 * record up to e->applied_* and none after */
	for (uint32_t i = 0; i < b->n && !err; i++) {
		struct wreq *w = b->items[i].w;
		uint64_t sector;
		int r;

		if (rh[i].rec_type == TDO_REC_VOL_CREATE || rh[i].rec_type == TDO_REC_VOL_RESIZE ||
		    rh[i].rec_type == TDO_REC_VOL_DELETE)
			continue;
		sector = (e->sb.sb_seg_start + (uint64_t)b->seg * e->sb.sb_seg_size + b->off +
		          rh[i].rec_poff) / TDO_SECTOR_SIZE;
		r = rcv_apply(e, &rh[i], NULL, sector, false,
		              w->kind == WR_RELOC ? w->old_sector : UINT64_MAX);
		if (r && !w->status)
			w->status = r;
		if (w->kind == WR_RELOC)
			e->st.clean_bytes += rh[i].rec_plen;
		else if (rh[i].rec_type == TDO_REC_DATA)
			e->st.user_bytes += TDO_BLOCK_SIZE;
	}
	for (uint32_t i = 0; i < b->n; i++) {
		struct wreq *w = b->items[i].w;

		if (err && !w->status)
			w->status = -EIO;
		w->parts--;
		complete(e, w);
	}
	free(b->buf);
	free(b->items);
	free(b);
	if (e->log_since_ckpt >= e->opts.ckpt_every)
		ckpt_request(e, NULL, NULL);
	ckpt_poll(e);
	wr_schedule(e);
	cln_maybe_start(e);
	eng_maybe_finish_close(e);
}

static void batch_after(uv_work_t *wk, int status)
{
	batch_done(wk->data, status);
}

static void batch_written(struct ur_op *op)
{
	batch_done(op->arg, op->status);
}

static void batch_failed(void *arg, int status)
{
	batch_done(arg, status);
}

/* io_uring: the built batch goes out as a write linked to an fdatasync. */
static void batch_issue(struct batch *b)
{
	int err = b->status;

	b->op.kind = UR_WRITE_SYNC;
	b->op.buf = b->buf;
	b->op.len = b->len;
	b->op.off = batch_dev_off(b);
	b->op.cb = batch_written;
	b->op.arg = b;
	if (!err)
		err = ur_submit(b->e, &b->op, false);
	if (err && eng_defer(b->e, batch_failed, b, err))
		eng_poison(b->e, -ENOMEM, "failing a batch");
}

static void build_work(uv_work_t *wk)
{
	batch_build(wk->data);
}

static void build_after(uv_work_t *wk, int status)
{
	struct batch *b = wk->data;

	if (status && !b->status)
		b->status = status;
	batch_issue(b);
}

/* Move the head to a free segment; CLIENT says whether the reserve is off
 * limits. Returns false when there is none to take. */
static bool new_head(struct tdo_engine *e, bool client)
{
	if (client && e->seg_free <= e->reserve)
		return false;
	if (!seg_open_next(e))
		return false;
	e->head_off = 0;
	/* a segment taken from the reserve carries cleaner copies only */
	e->head_for_cleaner = !client && e->seg_free < e->reserve;
	return true;
}

/* Segments that only wait for a checkpoint to become free. */
static uint32_t reclaimable(struct tdo_engine *e)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++)
		if (seg_reclaimable(e, i))
			n++;
	return n;
}

static void fail_pending(struct tdo_engine *e, struct tdo_list *q)
{
	while (!tdo_list_empty(q)) {
		struct wreq *w = tdo_list_item(q->next, struct wreq, link);
		tdo_list_del(&w->link);
		w->status = e->poison;
		w->next_b = w->b1;
		w->meta_done = true;
		complete(e, w);
	}
}

/* Every batch before this one is applied, so the index tells whether the
 * version a copy carries is still the newest. */
static bool reloc_still_live(struct tdo_engine *e, struct wreq *w)
{
	struct tdo_ie ie;

	return eng_record_live(e, &w->rh, w->old_sector, NULL, &ie) && ie_lsn(ie) == w->rh.rec_lsn;
}

/* Fill B from queue Q while it fits in ROOM bytes. */
static void fill(struct tdo_engine *e, struct batch *b, struct tdo_list *q, uint32_t room)
{
	while (!tdo_list_empty(q) && b->n < TDO_BATCH_MAX_REC) {
		struct wreq *w = tdo_list_item(q->next, struct wreq, link);
		struct bitem it;
		uint32_t raw, small;

		if (w->kind == WR_RELOC && !reloc_still_live(e, w)) {
			/* superseded since the cleaner read it: copying it now would
			 * put an old version after the newer one in the log */
			tdo_list_del(&w->link);
				w->meta_done = true;
			complete(e, w);
			continue;
		}
		if (!next_item(e, w, &it)) {
			/* nothing left to place (e.g. a zero-length op) */
			tdo_list_del(&w->link);
				complete(e, w);
			continue;
		}
		raw = b->nraw;
		small = b->nsmall_sect;
		item_bound(&it, &raw, &small);
		if (batch_bound(b->n + 1, raw, small) > room)
			return;
		if (b->n == b->cap) {
			uint32_t cap = b->cap ? b->cap * 2 : 64;
			struct bitem *ni = realloc(b->items, cap * sizeof *ni);
			if (!ni)
				return;
			b->items = ni;
			b->cap = cap;
		}
		b->items[b->n++] = it;
		b->ncomp += it.compress;
		b->nraw = raw;
		b->nsmall_sect = small;
		w->parts++;
		advance(w, &it);
		if (it.last) {
			tdo_list_del(&w->link);
			}
		if (w->kind != WR_RELOC)
			b->client = true;
	}
}

void wr_schedule(struct tdo_engine *e)
{
	struct batch *b;
	uint32_t room, max;

	wr_check_flushes(e);
	if (e->inflight)
		return;
	if (e->poison) {
		fail_pending(e, &e->pending_reloc);
		fail_pending(e, &e->pending);
		return;
	}
	ckpt_poll(e);
	if (tdo_list_empty(&e->pending) && tdo_list_empty(&e->pending_reloc))
		return;

	b = calloc(1, sizeof *b);
	if (!b)
		return;
	b->e = e;
	max = (uint32_t)(e->sb.sb_seg_size < BATCH_MAX_BYTES ? e->sb.sb_seg_size : BATCH_MAX_BYTES);
	for (int attempt = 0; attempt < 2; attempt++) {
		room = (uint32_t)(e->sb.sb_seg_size - e->head_off);
		if (room > max)
			room = max;
		fill(e, b, &e->pending_reloc, room);
		if (!e->head_for_cleaner)
			fill(e, b, &e->pending, room);
		if (b->n)
			break;
		/* nothing fitted: open a new segment (clients may not use the
		 * cleaner's reserve) */
		if (!new_head(e, tdo_list_empty(&e->pending_reloc)))
			break;
	}
	if (!b->n) {
		free(b->items);
		free(b);
		/* out of segments: empty ones need a checkpoint to become free,
		 * and the cleaner must make more */
		if (reclaimable(e))
			ckpt_request(e, NULL, NULL);
		cln_maybe_start(e);
		return;
	}
	b->seg = e->head_seg;
	b->off = e->head_off;
	b->seq = e->next_seq++;
	b->bound = batch_bound(b->n, b->nraw, b->nsmall_sect);
	b->buf = dev_alloc(b->bound);
	if (!b->buf) {
		eng_poison(e, -ENOMEM, "batch allocation");
		return;
	}
	/* the head moves by the bound now; the gap to the real length (when
	 * compression saved space) is given back in batch_after */
	e->head_off += b->bound;
	e->inflight = b;
	b->work.data = b;
	if (e->ur && !b->ncomp && b->bound <= BATCH_INLINE_BYTES) {
		/* small and nothing to compress: cheaper here than a handoff */
		batch_build(b);
		batch_issue(b);
		return;
	}
	if (uv_queue_work(e->loop, &b->work, e->ur ? build_work : batch_work,
	                  e->ur ? build_after : batch_after)) {
		eng_poison(e, -EIO, "queueing a batch");
		return;
	}
}

bool wr_idle(struct tdo_engine *e)
{
	return !e->inflight && tdo_list_empty(&e->pending) && tdo_list_empty(&e->pending_reloc) &&
	       tdo_list_empty(&e->outstanding) && tdo_list_empty(&e->flushes);
}

/* ---- public entry points ------------------------------------------------ */

static int check_range(struct tdo_engine *e, uint32_t vol, uint64_t off, uint64_t len, struct vol **vp)
{
	struct vol *v;

	if (e->closing)
		return -ESHUTDOWN;
	v = eng_vol(e, vol);
	if (!v)
		return TDO_ENOVOL;
	if (len == 0 || off % TDO_SECTOR_SIZE || len % TDO_SECTOR_SIZE ||
	    off + len < off || off + len > v->d.vd_size)
		return -EINVAL;
	if (vp)
		*vp = v;
	return 0;
}

static int submit_tagged(struct tdo_engine *e, int kind, uint32_t vol, uint64_t off, uint64_t len,
                         const void *buf, unsigned flags, uint64_t lsn, uint32_t epoch,
                         tdo_done_cb cb, void *arg)
{
	struct wreq *w;
	int err = check_range(e, vol, off, len, NULL);

	if (err)
		return err;
	if (e->poison)
		return e->poison;
	w = malloc(sizeof *w);
	if (!w)
		return -ENOMEM;
	/* untagged (LSN 0): the engine gives it the volume's next LSN */
	*w = (struct wreq){ .kind = kind, .vol = vol, .off = off, .len = len, .buf = buf, .flags = flags,
	                    .cb = cb, .arg = arg, .tagged = lsn != 0, .lsn = lsn, .epoch = lsn ? epoch : 0 };
	wr_submit(e, w);
	return 0;
}

static int submit_io(struct tdo_engine *e, int kind, uint32_t vol, uint64_t off, uint64_t len,
                     const void *buf, unsigned flags, tdo_done_cb cb, void *arg)
{
	return submit_tagged(e, kind, vol, off, len, buf, flags, 0, 0, cb, arg);
}

int tdo_engine_submit_at(struct tdo_engine *e, int op, uint32_t vol, uint64_t off, uint64_t len,
                         const void *buf, unsigned flags, uint64_t lsn, uint32_t epoch,
                         tdo_done_cb cb, void *arg)
{
	if (lsn == 0 || lsn > IE_LSN_MASK || epoch == 0)
		return -EINVAL;
	switch (op) {
	case TDO_OP_WRITE:
		if (!buf || len > UINT32_MAX || flags)
			return -EINVAL;
		return submit_tagged(e, WR_WRITE, vol, off, len, buf, 0, lsn, epoch, cb, arg);
	case TDO_OP_ZERO:
		if (flags & ~TDO_ZERO_NO_HOLE)
			return -EINVAL;
		return submit_tagged(e, WR_ZERO, vol, off, len, NULL, flags, lsn, epoch, cb, arg);
	case TDO_OP_TRIM:
		if (flags)
			return -EINVAL;
		return submit_tagged(e, WR_TRIM, vol, off, len, NULL, 0, lsn, epoch, cb, arg);
	}
	return -EINVAL;
}

int tdo_engine_write(struct tdo_engine *e, uint32_t vol, uint64_t off,
                     uint32_t len, const void *buf, tdo_done_cb cb, void *arg)
{
	if (!buf)
		return -EINVAL;
	return submit_io(e, WR_WRITE, vol, off, len, buf, 0, cb, arg);
}

int tdo_engine_trim(struct tdo_engine *e, uint32_t vol, uint64_t off,
                    uint64_t len, tdo_done_cb cb, void *arg)
{
	return submit_io(e, WR_TRIM, vol, off, len, NULL, 0, cb, arg);
}

int tdo_engine_write_zeroes(struct tdo_engine *e, uint32_t vol, uint64_t off,
                            uint64_t len, unsigned flags, tdo_done_cb cb, void *arg)
{
	if (flags & ~TDO_ZERO_NO_HOLE)
		return -EINVAL;
	return submit_io(e, WR_ZERO, vol, off, len, NULL, flags, cb, arg);
}

int tdo_engine_flush(struct tdo_engine *e, tdo_done_cb cb, void *arg)
{
	struct wreq *f;

	if (e->closing)
		return -ESHUTDOWN;
	f = malloc(sizeof *f);
	if (!f)
		return -ENOMEM;
	*f = (struct wreq){ .kind = WR_FLUSH, .cb = cb, .arg = arg, .wid = ++e->next_wid };
	tdo_list_add_tail(&e->flushes, &f->link);
	eng_kick(e);
	return 0;
}
