/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the read path. The loop looks each block up in the index and
 * plans the device reads (plan): one per run of adjacent raw blocks, one
 * per compressed block. With io_uring (uring.c) the loop submits them and
 * verifies every block's checksum and decompresses once they are back
 * (check); without it a worker does both. A read scattered over many
 * places of a buffered file goes to a worker as well, which copies from
 * the device mapping (RD_SCATTERED). Holes and zero blocks never touch the
 * device.
 *
 * A segment that a read is using cannot be freed (seg->readers), since a
 * free segment may be overwritten while the read is still in flight.
 *
 * Must never: return a block whose checksum failed (the read gets -EIO and
 * the event is logged with volume, block and location), or block the loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct rjob {
	uv_work_t work;
	struct tdo_engine *e;
	uint32_t vol;
	uint64_t b0;
	uint32_t n;
	struct tdo_ie *blk;         /* each block's index entry at dispatch */
	uint8_t *dst;               /* n blocks */
	uint8_t *bounce;            /* owned; dst == bounce when set */
	void *user;                 /* copy out of the bounce buffer */
	uint32_t user_skip, user_len;
	uint8_t *lz;                /* a 4 KiB slot per compressed block */
	uint32_t nlz;
	struct ur_op *ops;          /* io_uring: one per device read */
	uint32_t nops, ops_left;
	int status;
	uint64_t bad_block, bad_sector;
	tdo_done_cb cb;
	void *arg;
};

/* What one device read of a job does: pread it now (worker), count it, or
 * queue it (io_uring). */
typedef int (*rd_io_fn)(struct rjob *j, uint8_t *buf, uint32_t len, uint64_t off);

static int io_count(struct rjob *j, uint8_t *buf, uint32_t len, uint64_t off)
{
	(void)buf;
	(void)len;
	(void)off;
	j->nops++;
	return 0;
}

/*
 * Walk the job's blocks in order: a run of raw blocks back to back on the
 * device is one read into DST; a compressed block is one read into its
 * slot in j->lz; holes and zero blocks need none. check() walks the same
 * way afterwards.
 */
static int plan(struct rjob *j, rd_io_fn io)
{
	uint32_t lz = 0;
	int err;

	for (uint32_t i = 0; i < j->n; i++) {
		struct tdo_ie ie = j->blk[i];
		uint8_t *out = j->dst + (size_t)i * TDO_BLOCK_SIZE;
		int k = ie_kind(ie);

		if (k == TDO_IE_DATA) {
			uint32_t run = 1;
			while (i + run < j->n && ie_kind(j->blk[i + run]) == TDO_IE_DATA &&
			       ie_sector(j->blk[i + run]) == ie_sector(ie) + (uint64_t)run * 8 &&
			       run < 256)
				run++;
			if ((err = io(j, out, run * TDO_BLOCK_SIZE, ie_sector(ie) * TDO_SECTOR_SIZE)))
				return err;
			i += run - 1;
		} else if (k == TDO_IE_LZ4) {
			uint8_t *slot = j->lz ? j->lz + (size_t)lz * TDO_BLOCK_SIZE : NULL;
			lz++;
			if ((err = io(j, slot, ie_nsect(ie) * TDO_SECTOR_SIZE, ie_sector(ie) * TDO_SECTOR_SIZE)))
				return err;
		}
	}
	return 0;
}

/* Every block read: verify checksums, decompress; zero-fill holes and
 * zero blocks. Sets j->status. */
static void check(struct rjob *j)
{
	uint32_t lz = 0;

	for (uint32_t i = 0; i < j->n; i++) {
		struct tdo_ie ie = j->blk[i];
		uint8_t *out = j->dst + (size_t)i * TDO_BLOCK_SIZE;
		int k = ie_kind(ie);

		if (k == TDO_IE_HOLE || k == TDO_IE_ZERO) {
			memset(out, 0, TDO_BLOCK_SIZE);
		} else if (k == TDO_IE_DATA) {
			if ((uint32_t)tdo_csum(out, TDO_BLOCK_SIZE) != ie.ie_c)
				goto bad;
		} else {
			uint8_t *slot = j->lz + (size_t)lz++ * TDO_BLOCK_SIZE;
			uint16_t clen;

			memcpy(&clen, slot, 2);
			if ((uint32_t)clen + 2 > ie_nsect(ie) * TDO_SECTOR_SIZE ||
			    (uint32_t)tdo_csum(slot, (size_t)clen + 2) != ie.ie_c ||
			    rec_decompress(slot, (uint32_t)clen + 2, out))
				goto bad;
		}
		continue;
bad:
		j->status = -EIO;
		j->bad_block = j->b0 + i;
		j->bad_sector = ie_sector(ie);
		return;
	}
}

static int io_pread(struct rjob *j, uint8_t *buf, uint32_t len, uint64_t off)
{
	return dev_pread(&j->e->dev, buf, len, off);
}

/*
 * A read scattered over the log (after random writes a 128 KiB read is
 * some 30 runs) on a buffered file is copied from the device mapping by a
 * worker. Through io_uring every run is an entry and a page-cache lookup
 * of its own, all on the loop thread, which made such reads half as fast
 * as contiguous ones; the mapping costs a memcpy, and the worker, not the
 * loop, waits if a page has to come from the disk. Reads of few runs stay
 * on io_uring: its page-cache hits complete inline, sooner than a trip
 * through the worker pool (4 KiB random reads lose a third that way).
 * A page the disk cannot read is -EIO, as from pread (dev_map_read).
 * There is no mapping, and such reads take the same path as others, when
 * the program did not call tdo_engine_sigbus_install or sets
 * TDO_NO_MAPPED_READS=1.
 */
#define RD_SCATTERED 8u

static int io_map(struct rjob *j, uint8_t *buf, uint32_t len, uint64_t off)
{
	return dev_map_read(&j->e->dev, buf, len, off);
}

static int io_queue(struct rjob *j, uint8_t *buf, uint32_t len, uint64_t off)
{
	struct ur_op *op = &j->ops[j->nops++];

	op->kind = UR_READ;
	op->buf = buf;
	op->len = len;
	op->off = off;
	op->arg = j;
	return 0;
}

static void read_work(uv_work_t *wk)
{
	struct rjob *j = wk->data;

	j->status = plan(j, j->e->dev.map ? io_map : io_pread);
	if (!j->status)
		check(j);
}

static void seg_refs(struct tdo_engine *e, struct rjob *j, int delta)
{
	for (uint32_t i = 0; i < j->n; i++) {
		uint64_t s;

		if (!ie_has_payload(j->blk[i]))
			continue;
		s = eng_sector_to_seg(e, ie_sector(j->blk[i]));
		if (s >= e->sb.sb_seg_count)
			continue;
		if (delta > 0)
			seg_reader_get(e, (uint32_t)s);
		else
			seg_reader_put(e, (uint32_t)s);
	}
}

static void read_finish(struct rjob *j, int status)
{
	struct tdo_engine *e = j->e;
	int err = status ? status : j->status;

	seg_refs(e, j, -1);
	e->reads_inflight--;
	if (err == -EIO && j->bad_sector) {
		struct vol *v = eng_vol(e, j->vol);
		uint64_t s = eng_sector_to_seg(e, j->bad_sector);
		e->st.read_errors++;
		tdo_log(TDO_LOG_ERROR, "read",
		        "volume %s block %llu: checksum mismatch, record at segment %llu offset %llu (device byte %llu)",
		        v ? v->d.vd_name : "?", (unsigned long long)j->bad_block, (unsigned long long)s,
		        (unsigned long long)(j->bad_sector * TDO_SECTOR_SIZE - e->sb.sb_seg_start -
		                             s * e->sb.sb_seg_size),
		        (unsigned long long)(j->bad_sector * TDO_SECTOR_SIZE));
	} else if (err) {
		tdo_log(TDO_LOG_ERROR, "read", "volume %u block %llu: %s", j->vol,
		        (unsigned long long)j->b0, tdo_strerror(err));
	}
	if (!err && j->user)
		memcpy(j->user, j->bounce + j->user_skip, j->user_len);
	j->cb(j->arg, err);
	free(j->bounce);
	free(j->blk);
	free(j->lz);
	free(j->ops);
	free(j);
	eng_maybe_finish_close(e);
}

static void read_after(uv_work_t *wk, int status)
{
	read_finish(wk->data, status);
}

/* io_uring: every read of J is back (or none was needed). */
static void read_checked(struct rjob *j)
{
	if (!j->status)
		check(j);
	read_finish(j, 0);
}

static void op_done(struct ur_op *op)
{
	struct rjob *j = op->arg;

	if (op->status && !j->status)
		j->status = op->status;
	if (--j->ops_left == 0)
		read_checked(j);
}

static void deferred_checked(void *arg, int status)
{
	(void)status;
	read_checked(arg);
}

/* io_uring: the reads go out from this loop turn's prepare handle.
 * j->nops holds their count (plan with io_count). */
static int dispatch_ring(struct tdo_engine *e, struct rjob *j)
{
	int err;

	if (j->nops && !(j->ops = calloc(j->nops, sizeof *j->ops)))
		return -ENOMEM;
	j->nops = 0;
	plan(j, io_queue);
	if (!j->nops)
		return eng_defer(e, deferred_checked, j, 0); /* holes and zeroes only */
	j->ops_left = j->nops;
	for (uint32_t i = 0; i < j->nops; i++) {
		j->ops[i].cb = op_done;
		if ((err = ur_submit(e, &j->ops[i], i + 1 < j->nops))) {
			if (i == 0)
				return err; /* nothing issued yet */
			/* the rest completes as failed once the issued ones are back */
			j->status = err;
			j->ops_left -= j->nops - i;
			break;
		}
	}
	return 0;
}

static int dispatch(struct tdo_engine *e, struct vol *v, struct rjob *j)
{
	bool scattered = false;
	int err;

	j->e = e;
	j->vol = v->d.vd_id;
	j->blk = malloc((size_t)j->n * sizeof *j->blk);
	if (!j->blk)
		return -ENOMEM;
	for (uint32_t i = 0; i < j->n; i++) {
		j->blk[i] = idx_get(&v->idx, j->b0 + i);
		j->nlz += ie_kind(j->blk[i]) == TDO_IE_LZ4;
	}
	if (j->nlz && !(j->lz = dev_alloc((size_t)j->nlz * TDO_BLOCK_SIZE))) {
		free(j->blk);
		return -ENOMEM;
	}
	seg_refs(e, j, +1);
	e->reads_inflight++;
	if (e->ur) {
		plan(j, io_count);
		scattered = e->dev.map && j->nops >= RD_SCATTERED;
	}
	if (e->ur && !scattered) {
		err = dispatch_ring(e, j);
	} else {
		j->nops = 0;
		j->work.data = j;
		err = uv_queue_work(e->loop, &j->work, read_work, read_after);
	}
	if (err) {
		seg_refs(e, j, -1);
		e->reads_inflight--;
		free(j->blk);
		free(j->lz);
		free(j->ops);
		j->blk = NULL;
		j->lz = NULL;
		j->ops = NULL;
		return err;
	}
	return 0;
}

int rd_blocks(struct tdo_engine *e, struct vol *v, uint64_t b0, uint32_t n,
              uint8_t *dst, tdo_done_cb cb, void *arg)
{
	struct rjob *j = malloc(sizeof *j);
	int err;

	if (!j)
		return -ENOMEM;
	*j = (struct rjob){ .b0 = b0, .n = n, .dst = dst, .cb = cb, .arg = arg };
	err = dispatch(e, v, j);
	if (err)
		free(j);
	return err;
}

int tdo_engine_read(struct tdo_engine *e, uint32_t vol, uint64_t off,
                    uint32_t len, void *buf, tdo_done_cb cb, void *arg)
{
	struct vol *v;
	struct rjob *j;
	int err;

	if (e->closing)
		return -ESHUTDOWN;
	if (!(v = eng_vol(e, vol)))
		return TDO_ENOVOL;
	if (!buf || len == 0 || off % TDO_SECTOR_SIZE || len % TDO_SECTOR_SIZE ||
	    off + len < off || off + len > v->d.vd_size)
		return -EINVAL;
	j = calloc(1, sizeof *j);
	if (!j)
		return -ENOMEM;
	j->b0 = off / TDO_BLOCK_SIZE;
	j->n = (uint32_t)((off + len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE - j->b0);
	j->cb = cb;
	j->arg = arg;
	if (off % TDO_BLOCK_SIZE == 0 && len % TDO_BLOCK_SIZE == 0 &&
	    ((uintptr_t)buf % TDO_BLOCK_SIZE == 0 || !e->dev.direct)) {
		j->dst = buf;
	} else {
		j->bounce = dev_alloc((size_t)j->n * TDO_BLOCK_SIZE);
		if (!j->bounce) {
			free(j);
			return -ENOMEM;
		}
		j->dst = j->bounce;
		j->user = buf;
		j->user_skip = (uint32_t)(off - j->b0 * TDO_BLOCK_SIZE);
		j->user_len = len;
	}
	err = dispatch(e, v, j);
	if (err) {
		free(j->bounce);
		free(j);
	}
	return err;
}

int tdo_engine_map(struct tdo_engine *e, uint32_t vol, uint64_t off,
                   uint64_t len, tdo_map_fn fn, void *arg)
{
	struct vol *v = eng_vol(e, vol);
	uint64_t end, b, run_start;
	unsigned run_state = 0;
	bool have = false;
	int r;

	if (!v)
		return TDO_ENOVOL;
	if (len == 0 || off + len < off || off + len > v->d.vd_size)
		return -EINVAL;
	end = off + len;
	run_start = off;
	for (b = off / TDO_BLOCK_SIZE; b * TDO_BLOCK_SIZE < end;) {
		struct idx_chunk *c = v->idx.chunks[b >> IDX_CHUNK_SHIFT];
		unsigned st;
		uint64_t next;

		if (!c) {
			st = TDO_MAP_HOLE | TDO_MAP_ZERO;
			next = ((b >> IDX_CHUNK_SHIFT) + 1) << IDX_CHUNK_SHIFT;
		} else {
			int k = ie_kind(idx_chunk_get(c, (uint32_t)(b & (IDX_CHUNK - 1))));
			st = k == TDO_IE_HOLE ? (TDO_MAP_HOLE | TDO_MAP_ZERO) : k == TDO_IE_ZERO ? TDO_MAP_ZERO : 0;
			next = b + 1;
		}
		if (have && st != run_state) {
			uint64_t at = b * TDO_BLOCK_SIZE;
			if ((r = fn(arg, run_start, at - run_start, run_state)))
				return r;
			run_start = at;
		}
		run_state = st;
		have = true;
		b = next;
	}
	return fn(arg, run_start, end - run_start, run_state);
}
