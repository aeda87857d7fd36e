/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the node's state file (format in testudo/repl.h): every
 * volume's configuration, and whether a resync into this node's copy has
 * begun and not ended. Loaded once at start; written whole (a temporary
 * file, fdatasync, rename, fsync of the directory), so it always holds
 * one complete version.
 *
 * Writes run on the libuv thread pool, never on the loop: a store takes
 * a snapshot when its write starts, one write is in flight at a time, and
 * every request that came in meanwhile waits for the next write, which
 * carries all of them (group commit). A configuration that must be
 * durable before it comes into force is staged: the snapshot holds it
 * (vvol.want) instead of the one in force until its store ends.
 *
 * Must never: block the loop on the file after start; answer a request
 * with a write that began before the request (its change might not be
 * in it); write a file that is not one whole version; guess at a damaged
 * or foreign file (refused at start with a reason).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* What the state file is to hold now: a buffer the caller frees. */
static int state_snapshot(struct tdo_vtier *vt, char **out, size_t *outlen)
{
	int n = 0;
	for (struct vvol *v = vt->vols; v; v = v->next)
		n++;
	size_t len = sizeof(struct tdo_state_hdr) + (size_t)n * sizeof(struct tdo_state_vol);
	char *buf = calloc(1, len);
	if (!buf)
		return -ENOMEM;
	struct tdo_state_hdr *h = (struct tdo_state_hdr *)buf;
	struct tdo_state_vol *sv = (struct tdo_state_vol *)(h + 1);
	h->st_magic = TDO_STATE_MAGIC;
	h->st_version = TDO_STATE_VERSION;
	h->st_count = (uint32_t)n;
	snprintf(h->st_node, sizeof(h->st_node), "%s", vt->me);
	snprintf(h->st_cluster, sizeof(h->st_cluster), "%s", tdo_cluster_name(vt->c));
	int i = 0;
	for (struct vvol *v = vt->vols; v; v = v->next, i++) {
		sv[i].sv_conf = v->staged ? v->want : v->conf;
		sv[i].sv_conf.vc_sync = 0;
		sv[i].sv_rs_active = v->rs_active;
		sv[i].sv_rs_lsn = v->rs_lsn;
		sv[i].sv_rs_epoch = v->rs_epoch;
	}
	h->st_csum = tdo_csum(buf, len);
	*out = buf;
	*outlen = len;
	return 0;
}

/* Replace PATH whole with BUF: a temporary file, fdatasync, rename, fsync
 * of the directory. Blocking: the thread pool's, or before the loop runs. */
static int state_write_file(const char *path, const char *buf, size_t len)
{
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int err = 0;
	if (fd < 0)
		err = -errno;
	else {
		size_t done = 0;
		while (done < len && !err) {
			ssize_t w = write(fd, buf + done, len - done);
			if (w < 0)
				err = -errno;
			else
				done += (size_t)w;
		}
		if (!err && fdatasync(fd))
			err = -errno;
		close(fd);
		if (!err && rename(tmp, path))
			err = -errno;
	}
	if (!err) {
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s", path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = 0;
		else
			snprintf(dir, sizeof(dir), ".");
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			if (fsync(dfd))
				err = -errno;
			close(dfd);
		}
	}
	return err;
}

int st_save_now(struct tdo_vtier *vt)
{
	if (!vt->state_path)
		return 0; /* a node outside any cluster: its engine holds everything */
	char *buf;
	size_t len;
	int err = state_snapshot(vt, &buf, &len);
	if (!err)
		err = state_write_file(vt->state_path, buf, len);
	free(buf);
	if (err)
		tdo_log(TDO_LOG_ERROR, "vtier", "cannot store the state file %s: %s", vt->state_path, strerror(-err));
	return err;
}

/* A store request: FN hears of the first write that starts after it. */
struct st_wait {
	st_done_fn fn;
	void *arg;
	struct tdo_list link;
};

/* Answer every request on L with ERR (L may grow meanwhile: a request made
 * by a callback while no write is in flight starts one). */
static void answer_all(struct tdo_vtier *vt, struct tdo_list *l, int err)
{
	while (!tdo_list_empty(l)) {
		struct st_wait *sw = tdo_list_item(l->next, struct st_wait, link);
		tdo_list_del(&sw->link);
		sw->fn(vt, err, sw->arg);
		free(sw);
	}
}

static void st_start(struct tdo_vtier *vt);

static void st_work(uv_work_t *w)
{
	struct tdo_vtier *vt = w->data;
	vt->st.status = state_write_file(vt->state_path, vt->st.buf, vt->st.len);
}

static void st_after(uv_work_t *w, int status)
{
	struct tdo_vtier *vt = w->data;
	int err = status ? status : vt->st.status;
	free(vt->st.buf);
	vt->st.buf = NULL;
	vt->st.busy = false;
	if (err)
		tdo_log(TDO_LOG_ERROR, "vtier", "cannot store the state file %s: %s", vt->state_path, strerror(-err));
	struct tdo_list done;
	tdo_list_init(&done);
	tdo_list_move(&done, &vt->st.cur);
	answer_all(vt, &done, err);
	if (vt->st.free_pending) {
		vt->st.free_pending = false;
		tdo_vtier_free(vt);
		return;
	}
	if (!vt->st.busy && !tdo_list_empty(&vt->st.next))
		st_start(vt);
}

/* Snapshot now and write it on the thread pool. */
static void st_start(struct tdo_vtier *vt)
{
	int err = state_snapshot(vt, &vt->st.buf, &vt->st.len);
	tdo_list_move(&vt->st.cur, &vt->st.next);
	vt->st.work.data = vt;
	if (!err)
		err = uv_queue_work(vt->loop, &vt->st.work, st_work, st_after);
	if (!err) {
		vt->st.busy = true;
		return;
	}
	free(vt->st.buf);
	vt->st.buf = NULL;
	answer_all(vt, &vt->st.cur, err);
}

int st_store(struct tdo_vtier *vt, st_done_fn fn, void *arg)
{
	if (!vt->state_path) {
		fn(vt, 0, arg);
		return 0;
	}
	struct st_wait *sw = calloc(1, sizeof(*sw));
	if (!sw)
		return -ENOMEM;
	sw->fn = fn;
	sw->arg = arg;
	tdo_list_add_tail(&vt->st.next, &sw->link);
	if (!vt->st.busy)
		st_start(vt);
	return 0;
}

int st_stage_store(struct vvol *v, const struct tdo_rm_vconf *c, st_done_fn fn, void *arg)
{
	v->want = *c;
	v->want.vc_sync = 0;
	v->staged = true;
	int err = st_store(v->vt, fn, arg);
	if (err)
		st_unstage(v, &v->want);
	return err;
}

void st_unstage(struct vvol *v, const struct tdo_rm_vconf *c)
{
	if (v->staged && !memcmp(&v->want, c, sizeof(*c)))
		v->staged = false;
}

const struct tdo_rm_vconf *st_conf_want(struct vvol *v)
{
	return v->staged ? &v->want : &v->conf;
}

bool st_close(struct tdo_vtier *vt)
{
	if (vt->st.busy) {
		vt->st.free_pending = true; /* st_after frees it */
		return false;
	}
	while (!tdo_list_empty(&vt->st.next)) {
		struct st_wait *sw = tdo_list_item(vt->st.next.next, struct st_wait, link);
		tdo_list_del(&sw->link);
		free(sw);
	}
	return true;
}

int st_load(struct tdo_vtier *vt, char *err, size_t errlen)
{
	FILE *f = fopen(vt->state_path, "rb");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "state file %s: %s", vt->state_path, strerror(errno));
		return -EINVAL;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 65536;
			char *n = realloc(buf, cap);
			if (!n) {
				free(buf);
				fclose(f);
				snprintf(err, errlen, "out of memory");
				return -ENOMEM;
			}
			buf = n;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	fclose(f);
	int rc = -EINVAL;
	struct tdo_state_hdr h;
	if (len < sizeof(h)) {
		snprintf(err, errlen, "state file %s is damaged: too short", vt->state_path);
		goto out;
	}
	memcpy(&h, buf, sizeof(h));
	uint64_t want = h.st_csum;
	((struct tdo_state_hdr *)buf)->st_csum = 0;
	if (h.st_magic != TDO_STATE_MAGIC || h.st_version != TDO_STATE_VERSION ||
	    len != sizeof(h) + (uint64_t)h.st_count * sizeof(struct tdo_state_vol) || tdo_csum(buf, len) != want) {
		snprintf(err, errlen, "state file %s is damaged or not a Testudo state file", vt->state_path);
		goto out;
	}
	h.st_node[TDO_NODE_ID_MAX] = h.st_cluster[TDO_CLUSTER_MAX] = 0;
	if (strcmp(h.st_node, vt->me) || strcmp(h.st_cluster, tdo_cluster_name(vt->c))) {
		snprintf(err, errlen, "state file %s belongs to node '%s' of cluster '%s', not this node '%s' of '%s'",
		         vt->state_path, h.st_node, h.st_cluster, vt->me, tdo_cluster_name(vt->c));
		goto out;
	}
	for (uint32_t i = 0; i < h.st_count; i++) {
		struct tdo_state_vol sv;
		memcpy(&sv, buf + sizeof(h) + i * sizeof(sv), sizeof(sv));
		if (!vconf_valid(&sv.sv_conf) && !sv.sv_conf.vc_deleted) {
			snprintf(err, errlen, "state file %s: volume entry %u is invalid", vt->state_path, i);
			goto out;
		}
		struct vvol *v = vt_vol_new(vt, &sv.sv_conf);
		if (!v) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		v->rs_active = sv.sv_rs_active != 0;
		v->rs_lsn = sv.sv_rs_lsn;
		v->rs_epoch = sv.sv_rs_epoch;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}
