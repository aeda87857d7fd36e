/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: laying out a new device and finding the superblock of an
 * existing one. Format computes the layout (superblocks, two checkpoint
 * areas sized for the worst-case index, segments), writes an empty
 * checkpoint (seq 1, so area B) and then both superblock copies, each made
 * durable before the next, so a format cut short is never mistaken for a
 * device. Before that it fills a regular file's holes with zeros (unless
 * asked not to), so that the running log writes only allocated space.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int fmt_read_sb(struct dev *d, struct tdo_sb *out)
{
	uint8_t *buf = dev_alloc(2 * TDO_BLOCK_SIZE);
	const struct tdo_sb *a, *b, *best = NULL;
	bool magic = false;
	int err;

	if (!buf)
		return -ENOMEM;
	if (d->size < 2 * TDO_BLOCK_SIZE) {
		free(buf);
		return TDO_EFORMAT;
	}
	err = dev_pread(d, buf, 2 * TDO_BLOCK_SIZE, 0);
	if (err) {
		free(buf);
		return err;
	}
	a = (const void *)buf;
	b = (const void *)(buf + TDO_BLOCK_SIZE);
	magic = a->sb_magic == TDO_SB_MAGIC || b->sb_magic == TDO_SB_MAGIC;
	if (sb_valid(a))
		best = a;
	if (sb_valid(b) && (!best || b->sb_seq > best->sb_seq))
		best = b;
	if (!best) {
		free(buf);
		return magic ? TDO_EDAMAGED : TDO_EFORMAT;
	}
	if (best->sb_version != TDO_FORMAT_VERSION) {
		free(buf);
		return TDO_EFORMAT;
	}
	*out = *best;
	free(buf);
	/* sanity: the layout must fit the device we opened */
	if (out->sb_seg_size < SEG_MIN_SIZE || out->sb_seg_size % TDO_BLOCK_SIZE ||
	    out->sb_seg_count < 4 ||
	    out->sb_seg_start + (uint64_t)out->sb_seg_count * out->sb_seg_size > out->sb_dev_size ||
	    out->sb_dev_size > d->size ||
	    out->sb_ckpt_off[0] < 2 * TDO_BLOCK_SIZE ||
	    out->sb_ckpt_off[1] < out->sb_ckpt_off[0] + out->sb_ckpt_size ||
	    out->sb_ckpt_off[1] + out->sb_ckpt_size > out->sb_seg_start ||
	    out->sb_max_vols == 0 || out->sb_max_vols > TDO_MAX_VOLS)
		return TDO_EDAMAGED;
	return 0;
}

/* Write zeros into every hole of the first SIZE bytes of regular file FD
 * (SEEK_HOLE reports unwritten extents as holes too, unless their pages are
 * cached), then make them durable. A file system without SEEK_HOLE reports
 * no hole. The caller has synced what it wrote. */
static int fill_holes(int fd, uint64_t size, const struct tdo_format_opts *o)
{
	const uint64_t chunk = 1u << 20, sync_every = 256u << 20;
	uint64_t total = 0, done = 0, unsynced = 0;
	uint8_t *zero = NULL;
	int err = 0;

	/* an unwritten extent with pages in the cache reads as data to
	 * SEEK_HOLE: drop the (clean, synced) pages that reading the
	 * superblocks brought in */
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	for (int pass = 0; pass < 2 && !err; pass++) {
		off_t pos = 0;

		if (pass == 1) {
			if (!total)
				return 0;
			zero = calloc(1, chunk);
			if (!zero)
				return -ENOMEM;
		}
		while ((uint64_t)pos < size && !err) {
			off_t hole = lseek(fd, pos, SEEK_HOLE), data;

			if (hole < 0) {
				err = errno == ENXIO ? 0 : -errno;
				break;
			}
			if ((uint64_t)hole >= size)
				break;
			data = lseek(fd, hole, SEEK_DATA);
			if (data < 0 && errno != ENXIO) {
				err = -errno;
				break;
			}
			if (data < 0 || (uint64_t)data > size)
				data = (off_t)size;
			if (data <= hole) {
				err = -EIO; /* a file system that contradicts itself */
				break;
			}
			if (pass == 0) {
				total += (uint64_t)(data - hole);
				pos = data;
				continue;
			}
			for (pos = hole; pos < data;) {
				size_t n = (size_t)((uint64_t)(data - pos) < chunk ? (uint64_t)(data - pos) : chunk);
				ssize_t w = pwrite(fd, zero, n, pos);

				if (w <= 0) {
					err = w < 0 ? -errno : -EIO;
					break;
				}
				pos += w;
				done += (uint64_t)w;
				unsynced += (uint64_t)w;
				/* keep the dirty pages bounded */
				if (unsynced >= sync_every) {
					if (fdatasync(fd) < 0) {
						err = -errno;
						break;
					}
					unsynced = 0;
				}
				if (o->progress)
					o->progress(o->progress_arg, done, total);
			}
		}
	}
	free(zero);
	if (!err && fdatasync(fd) < 0)
		err = -errno;
	return err;
}

static void fill_uuid(uint8_t u[16])
{
	if (getrandom(u, 16, 0) != 16) {
		uint64_t t = tdo_now_usec() ^ (uint64_t)getpid() << 32;
		memcpy(u, &t, 8);
		t = (uint64_t)time(NULL) * 6364136223846793005ull;
		memcpy(u + 8, &t, 8);
	}
}

int tdo_format(const char *path, const struct tdo_format_opts *o)
{
	struct tdo_format_opts opts = { 0 };
	struct tdo_engine *e;
	struct tdo_sb sb;
	uint64_t size, seg_size, seg_start = 0, ckpt_size = 0;
	uint32_t nsegs = 0;
	bool blk = false, exists;
	uint64_t orig_size;
	uint8_t *page;
	int err;

	if (o)
		opts = *o;
	if (!opts.backend)
		opts.backend = TDO_BACKEND_FILE;
	if (opts.backend != TDO_BACKEND_FILE && opts.backend != TDO_BACKEND_PMEM)
		return -EINVAL;
	seg_size = opts.seg_size ? opts.seg_size : SEG_DEFAULT_SIZE;
	if (seg_size < SEG_MIN_SIZE || seg_size % SEG_MIN_SIZE || seg_size > (1ull << 31))
		return -EINVAL;

	exists = dev_probe_size(path, &size, &blk) == 0;
	orig_size = exists ? size : 0;
	if (!exists && !opts.size)
		return -ENOENT;
	if (blk && opts.size && opts.size != size)
		return -EINVAL; /* a block device's size is its own */

	e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	err = dev_open(&e->dev, path, opts.backend, true, blk ? 0 : opts.size, false);
	if (err)
		goto out_free;
	if (!opts.force && fmt_read_sb(&e->dev, &sb) != TDO_EFORMAT) {
		err = TDO_EEXISTS;
		goto out_close;
	}
	size = opts.size && !blk ? opts.size : e->dev.size;
	if (size > e->dev.size)
		size = e->dev.size;

	/* the checkpoint areas depend on the segment count and vice versa */
	for (int i = 0; i < 4; i++) {
		seg_start = round_up(2 * TDO_BLOCK_SIZE + 2 * ckpt_size, SEG_MIN_SIZE);
		nsegs = size > seg_start ? (uint32_t)((size - seg_start) / seg_size) : 0;
		ckpt_size = ckpt_area_size(nsegs * (seg_size / TDO_BLOCK_SIZE), nsegs, TDO_MAX_VOLS);
	}
	seg_start = round_up(2 * TDO_BLOCK_SIZE + 2 * ckpt_size, SEG_MIN_SIZE);
	nsegs = size > seg_start ? (uint32_t)((size - seg_start) / seg_size) : 0;
	if (nsegs < 8) {
		err = TDO_ETOOSMALL; /* for this segment size */
		goto out_close;
	}

	memset(&sb, 0, sizeof sb);
	sb.sb_magic = TDO_SB_MAGIC;
	sb.sb_version = TDO_FORMAT_VERSION;
	sb.sb_backend = (uint32_t)opts.backend;
	fill_uuid(sb.sb_uuid);
	sb.sb_seq = 1;
	sb.sb_dev_size = size;
	sb.sb_seg_size = seg_size;
	sb.sb_seg_start = seg_start;
	sb.sb_seg_count = nsegs;
	sb.sb_max_vols = TDO_MAX_VOLS;
	sb.sb_ckpt_off[0] = 2 * TDO_BLOCK_SIZE;
	sb.sb_ckpt_off[1] = 2 * TDO_BLOCK_SIZE + ckpt_size;
	sb.sb_ckpt_size = ckpt_size;
	sb.sb_format_time = (uint64_t)time(NULL);
	sb_seal(&sb);

	page = dev_alloc(2 * TDO_BLOCK_SIZE);
	if (!page) {
		err = -ENOMEM;
		goto out_close;
	}
	/* invalidate what was there first: both superblocks, checkpoint B */
	if ((err = dev_pwrite(&e->dev, page, 2 * TDO_BLOCK_SIZE, 0)) ||
	    (err = dev_pwrite(&e->dev, page, TDO_BLOCK_SIZE, sb.sb_ckpt_off[1])) ||
	    (err = dev_sync(&e->dev)))
		goto out_page;

	if (opts.backend == TDO_BACKEND_FILE && !blk && !opts.sparse &&
	    (err = fill_holes(e->dev.fd, size, &opts)))
		goto out_page;

	/* an empty engine state, written as checkpoint 1 */
	e->sb = sb;
	e->segs = calloc(nsegs, sizeof *e->segs);
	if (!e->segs) {
		err = -ENOMEM;
		goto out_page;
	}
	e->next_vol_id = 1;
	e->applied_seg = 0;
	e->applied_off = 0;
	e->applied_seq = 1;
	e->ckpt_seq = 0;
	err = ckpt_write_sync(e);
	if (err)
		goto out_page;

	memcpy(page, &sb, sizeof sb);
	memcpy(page + TDO_BLOCK_SIZE, &sb, sizeof sb);
	if ((err = dev_pwrite(&e->dev, page, TDO_BLOCK_SIZE, 0)) ||
	    (err = dev_sync(&e->dev)) ||
	    (err = dev_pwrite(&e->dev, page + TDO_BLOCK_SIZE, TDO_BLOCK_SIZE, TDO_BLOCK_SIZE)) ||
	    (err = dev_sync(&e->dev)))
		goto out_page;
out_page:
	free(page);
out_close:
	/* a format that failed leaves a regular file as it found it: removed
	 * when this call made it, its old length back when it lengthened it */
	if (err && !blk) {
		if (!exists)
			unlink(path);
		else if (opts.size > orig_size && ftruncate(e->dev.fd, (off_t)orig_size) < 0)
			tdo_log(TDO_LOG_WARN, "format", "%s: could not cut it back to %llu bytes: %s", path,
			        (unsigned long long)orig_size, strerror(errno));
	}
	free(e->segs);
	dev_close(&e->dev);
out_free:
	free(e);
	return err;
}
