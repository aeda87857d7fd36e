/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: replicated volumes (the volume tier).
 *
 * Configuration. Every node keeps every volume's configuration (struct
 * tdo_rm_vconf) in its state file. A change is proposed by one node (the
 * primary marking a replica, a node creating or deleting a volume, a
 * replica being promoted) to all peers, and is in force once a majority
 * of the cluster's nodes stored it. Acceptors take only configurations
 * newer by (epoch, version), and a new primary only if it is in-sync in
 * their own copy, so a stale primary cannot get a change accepted once a
 * majority has seen the promote, and a replica that was taken out of the
 * in-sync set cannot be promoted. After every handshake both sides send
 * all their configurations, and each keeps the newer one.
 *
 * Write path. The primary gives each write the volume's next LSN, sends
 * it to every in-sync replica and writes it locally at once; the client
 * hears "done" when the local write and every in-sync replica's
 * acknowledgement are durable. A replica applies writes only of the
 * configuration's epoch, from the configuration's primary, at exactly the
 * LSN it expects next. A replica that refuses, does not answer within
 * ack_timeout_ms, or whose connection drops is proposed out of date; the
 * writes it missed complete only once that change is in force.
 *
 * Resync. The primary asks the replica for its newest trusted LSN and the
 * epoch of that write, computes the bound up to which the replica's log is
 * the primary's history (its LSN, cut at the start of the epoch after its
 * own), and asks for the replica's allocated blocks. It marks dirty: its
 * own blocks newer than the bound, the replica's blocks newer than the
 * bound (writes the primary never had: rolled back), and blocks the replica
 * holds where the primary has a hole (trims). It copies dirty blocks while
 * new writes keep marking blocks dirty; then it holds new writes, drains
 * those in flight, copies what is left, tells the replica its LSN, and
 * proposes it in-sync; writes resume once that is in force.
 *
 * Forwarding. A node that is not a volume's primary forwards a client's
 * request to it and relays the reply; requests to a primary that is
 * unreachable wait (up to FWD_WAIT_MS) for a reachable primary.
 *
 * Must never: acknowledge a write an in-sync replica has not made durable
 * unless the change that took it out is in force; apply a write of an
 * older epoch; let a resync copy overtake a write the replica already has
 * (the replica gets no live writes until it is in-sync).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testudo/list.h"
#include "testudo/util.h"
#include "testudo/vtier.h"

#define TICK_MS         100
#define PROPOSE_MS      2000         /* a proposal without a majority by then failed */
#define FWD_WAIT_MS     20000        /* a forwarded request waits this long for a primary */
#define RS_CHUNK_BLOCKS 256          /* blocks per resync copy message (1 MiB) */
#define RS_WINDOW       (16u << 20)  /* resync bytes sent and not yet durable */
#define RS_ROUND_BYTES  (8u << 20)   /* dirty bytes taken per flush */
#define RS_MAP_RUNS     65536        /* runs per RS_MAP message */
#define SUM_MAX_REGIONS 65536

/* ---- state ---- */

struct tdo_vtier;
struct vvol;

/* A client request through the tier (a front end's, or a peer's forwarded one). */
struct vreq {
	struct tdo_vtier *vt;
	struct vvol *v;
	int op;
	unsigned flags;
	uint64_t off, len;
	void *buf;
	bool own_buf;               /* buf was allocated here (a forwarded write's data) */
	tdo_done_cb cb;
	void *arg;
	/* primary */
	uint64_t lsn;
	uint32_t wait;              /* replicas (bits) whose acknowledgement is awaited */
	bool local_done;
	int status;
	uint64_t sent_usec;
	/* forwarded from a peer: the answer goes back to it */
	int from_peer;
	uint64_t from_id;
	/* forwarded to the primary */
	uint64_t fwd_id;
	int fwd_peer;
	uint64_t deadline_usec;
	char name[TDO_NAME_MAX + 1];
	struct tdo_list link;
};

enum change_kind { CH_STATE, CH_PROMOTE, CH_DELETE, CH_RESIZE, CH_CREATE };
struct change {
	int kind;
	int rep;
	uint32_t state;
	uint64_t size;
	struct tdo_rm_vconf conf;   /* CH_CREATE */
	void (*done)(struct vvol *v, int status, const char *why, void *arg);
	void *arg;
	struct tdo_list link;
};

struct proposal {
	struct tdo_rm_vconf conf, prev;  /* proposed; in force when proposed */
	uint32_t acked, nacked;     /* peers (bits) */
	int have, need;
	uint64_t deadline_usec;
	struct change *ch;
	bool newer_seen;            /* someone answered with a newer configuration */
	bool storing;               /* accepted by a majority; the state file is being written */
};

struct resync {
	int rep, peer;
	int phase;
	uint64_t bound;
	uint8_t *dirty;
	uint64_t nblocks, ndirty, cursor;
	uint64_t total, copied;     /* blocks, for progress */
	uint64_t unacked;           /* bytes in flight to the replica */
	uint64_t tokens, last_refill_usec;
	int busy;                   /* local reads or a flush in progress */
	bool gated;                 /* we hold the volume's new writes */
	uint64_t started_usec;
};
enum { RS_WAIT_STATE = 1, RS_WAIT_MAP, RS_COPY, RS_FINAL, RS_WAIT_END, RS_PROPOSE };

struct vvol {
	struct tdo_vtier *vt;
	struct tdo_rm_vconf conf;
	int64_t local_id;           /* engine volume id, -1: none here */
	bool creating, deleting, resizing;
	int my_rep;                 /* index in conf.vc_rep, -1: not a replica */
	/* primary */
	bool primary;
	uint64_t next_lsn;          /* last LSN given out */
	struct tdo_list inflight;       /* struct vreq, LSN order */
	struct tdo_list held;           /* writes not yet admitted (gate) */
	int gate;
	uint32_t marking;           /* replicas with an out-of-date proposal pending */
	struct resync *rs[TDO_REP_MAX];
	/* replica */
	uint64_t expect_lsn;        /* next LSN the primary's writes must carry */
	bool rs_active;             /* a resync into this copy is running (persisted) */
	uint64_t rs_lsn;
	uint32_t rs_epoch;
	int rs_pending;             /* copies submitted, not yet durable */
	int rs_done_peer;           /* RS_DONE waiting for those */
	uint64_t rs_done_lsn;
	/* configuration changes */
	struct proposal *prop;
	struct tdo_list changes;
	int io_active;              /* local engine I/O in flight (for delete) */
	int ack_peer;               /* a VCONF answer waiting for the local create, -1: none */
	struct tdo_rm_vconf ack_conf;
	tdo_vt_cb admin_cb;         /* an operator's change in force, answered once this */
	void *admin_arg;            /*   node's copy has followed it (local_behind false) */
	uint64_t gen;               /* rises whenever the volume comes to exist or is deleted */
	/* a configuration being stored before it comes into force: the state
	 * file is written with it instead of conf (newer than conf) */
	bool staged;
	struct tdo_rm_vconf want;
	bool rs_storing;            /* rs_active = true is being stored; RS_STATE answers then */
	int local_err;              /* the last local change reconcile started failed at once */
	struct vvol *next;
};

/* An attached client's view of one incarnation of a volume. */
struct tdo_vhandle {
	struct tdo_vtier *vt;
	struct vvol *v;
	uint64_t gen;               /* v->gen when opened: a later one means it is gone */
};

struct tdo_vtier {
	uv_loop_t *loop;
	struct tdo_engine *e;
	struct tdo_cluster *c;
	struct tdo_vtier_opts o;
	char *state_path;
	const char *me;
	int nnodes;
	struct vvol *vols;
	struct tdo_list fwd_sent;       /* struct vreq forwarded, awaiting replies */
	struct tdo_list fwd_wait;       /* struct vreq waiting for a reachable primary */
	uint64_t next_fwd_id, next_sum_id, next_pm_id;
	struct tdo_list sums;           /* verify jobs */
	struct tdo_list promotes;       /* promote requests sent to another node */
	uv_timer_t tick;
	bool stopping;
	char me_id[TDO_NODE_ID_MAX + 1];
	/* the state file is written by the thread pool, one version at a time;
	 * a request waits for the first write that starts after it */
	struct {
		bool busy;              /* a write is in flight */
		struct tdo_list next;       /* struct st_wait: for the next write */
		struct tdo_list cur;        /*   for the write in flight */
		uv_work_t work;
		char *buf;
		size_t len;
		int status;
	} st;
	bool free_pending;          /* tdo_vtier_free came while a write was in flight */
};

static void vt_log_conf(struct vvol *v, const char *what);
static void adopt(struct vvol *v, const struct tdo_rm_vconf *c, bool from_peer);
static void propose_next(struct vvol *v);
static void complete_ready(struct vvol *v);
static void rs_abort(struct vvol *v, int rep, const char *why);
static void rs_pump(struct vvol *v, struct resync *rs);
static void fwd_send(struct tdo_vtier *vt, struct vreq *r);
static void admit(struct vvol *v, struct vreq *r);
static void req_free_finish(struct vreq *r, int status);

/* Every message of this tier leaves here: nothing once the node is stopping
 * (the cluster's connections are going away). */
static int vsend(struct tdo_vtier *vt, int peer, uint16_t type, const void *a, uint32_t alen, const void *b,
                 uint32_t blen)
{
	if (vt->stopping)
		return -ESHUTDOWN;
	if (peer < 0)
		return -EINVAL;
	return tdo_cluster_send(vt->c, peer, type, a, alen, b, blen);
}

static const char *state_name(uint32_t s)
{
	switch (s) {
	case TDO_REP_IN_SYNC: return "in-sync";
	case TDO_REP_CATCHING_UP: return "catching-up";
	case TDO_REP_OUT_OF_DATE: return "out-of-date";
	}
	return "unknown";
}

static bool conf_newer(const struct tdo_rm_vconf *a, const struct tdo_rm_vconf *b)
{
	return a->vc_epoch > b->vc_epoch || (a->vc_epoch == b->vc_epoch && a->vc_version > b->vc_version);
}

static int rep_index(const struct tdo_rm_vconf *c, const char *node)
{
	for (uint32_t i = 0; i < c->vc_nrep && i < TDO_REP_MAX; i++)
		if (!strcmp(c->vc_rep[i], node))
			return (int)i;
	return -1;
}

/* The peer index of replica I, -1 for this node. */
static int rep_peer(struct vvol *v, int i)
{
	if (i < 0 || i >= (int)v->conf.vc_nrep || !strcmp(v->conf.vc_rep[i], v->vt->me))
		return -1;
	return tdo_cluster_peer_index(v->vt->c, v->conf.vc_rep[i]);
}

static struct vvol *find_vol(struct tdo_vtier *vt, const char *name)
{
	for (struct vvol *v = vt->vols; v; v = v->next)
		if (!strcmp(v->conf.vc_name, name))
			return v;
	return NULL;
}

static bool conf_live(const struct tdo_rm_vconf *c)
{
	return !c->vc_deleted && c->vc_version;
}

/* Every configuration that comes into force on this node passes here. */
static void conf_set(struct vvol *v, const struct tdo_rm_vconf *c)
{
	if (conf_live(&v->conf) != conf_live(c))
		v->gen++; /* handles of the old incarnation see the volume gone */
	v->conf = *c;
	v->conf.vc_sync = 0;
}

/* A volume that exists (not deleted); NULL with a message in ERR. */
static struct vvol *live_vol(struct tdo_vtier *vt, const char *name, char *err, size_t errlen)
{
	struct vvol *v = find_vol(vt, name);
	if (!v || v->conf.vc_deleted || !v->conf.vc_version) {
		snprintf(err, errlen, "no volume '%s'", name);
		return NULL;
	}
	return v;
}

/* A name from the wire: NUL-terminated within its field and valid. */
static bool wire_name(const char *field, char *out)
{
	if (!memchr(field, 0, 64))
		return false;
	snprintf(out, TDO_NAME_MAX + 1, "%s", field);
	return tdo_vol_name_valid(out);
}

static struct vvol *vol_new(struct tdo_vtier *vt, const struct tdo_rm_vconf *c)
{
	struct vvol *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->vt = vt;
	v->conf = *c;
	v->local_id = -1;
	v->my_rep = -1;
	v->rs_done_peer = -1;
	v->ack_peer = -1;
	tdo_list_init(&v->inflight);
	tdo_list_init(&v->held);
	tdo_list_init(&v->changes);
	v->next = vt->vols;
	vt->vols = v;
	return v;
}

/* ---- the state file ---- */

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

/* At start, before the loop serves anyone: written in place. */
static int state_save_now(struct tdo_vtier *vt)
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

typedef void (*st_done_fn)(struct tdo_vtier *vt, int status, void *arg);
struct st_wait {
	st_done_fn fn;
	void *arg;
	struct tdo_list link;
};

static void st_work(uv_work_t *w)
{
	struct tdo_vtier *vt = w->data;
	vt->st.status = state_write_file(vt->state_path, vt->st.buf, vt->st.len);
}

static void st_start(struct tdo_vtier *vt);

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
	while (!tdo_list_empty(&done)) {
		struct st_wait *sw = tdo_list_item(done.next, struct st_wait, link);
		tdo_list_del(&sw->link);
		sw->fn(vt, err, sw->arg);
		free(sw);
	}
	if (vt->free_pending) {
		vt->free_pending = false;
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
	while (!tdo_list_empty(&vt->st.cur)) {
		struct st_wait *sw = tdo_list_item(vt->st.cur.next, struct st_wait, link);
		tdo_list_del(&sw->link);
		sw->fn(vt, err, sw->arg);
		free(sw);
	}
}

/*
 * Store the state as it is when the next write starts (every staged
 * configuration included) and call FN with 0 once it is durable, or with
 * an error. With no state file FN runs at once, inside the call.
 * -ENOMEM: nothing queued, FN will not run.
 */
static int state_store(struct tdo_vtier *vt, st_done_fn fn, void *arg)
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

/* V's staged configuration C is stored or given up: conf follows. */
static void unstage(struct vvol *v, const struct tdo_rm_vconf *c)
{
	if (v->staged && !memcmp(&v->want, c, sizeof(*c)))
		v->staged = false;
}

/* The configuration the newest state file holds or will hold. */
static const struct tdo_rm_vconf *conf_want(struct vvol *v)
{
	return v->staged ? &v->want : &v->conf;
}

static bool conf_valid(const struct tdo_rm_vconf *c)
{
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(c->vc_name, name) || c->vc_nrep < 1 || c->vc_nrep > TDO_REP_MAX ||
	    c->vc_primary >= c->vc_nrep || c->vc_epoch == 0 || c->vc_nhist > TDO_VHIST_MAX ||
	    c->vc_size == 0 || c->vc_size % TDO_SECTOR_SIZE)
		return false;
	for (uint32_t i = 0; i < c->vc_nrep; i++) {
		if (!memchr(c->vc_rep[i], 0, sizeof(c->vc_rep[i])) || !tdo_node_id_valid(c->vc_rep[i]))
			return false;
		if (c->vc_state[i] < TDO_REP_IN_SYNC || c->vc_state[i] > TDO_REP_OUT_OF_DATE)
			return false;
		for (uint32_t k = 0; k < i; k++)
			if (!strcmp(c->vc_rep[i], c->vc_rep[k]))
				return false;
	}
	return true;
}

static int state_load(struct tdo_vtier *vt, char *err, size_t errlen)
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
		if (!conf_valid(&sv.sv_conf) && !sv.sv_conf.vc_deleted) {
			snprintf(err, errlen, "state file %s: volume entry %u is invalid", vt->state_path, i);
			goto out;
		}
		struct vvol *v = vol_new(vt, &sv.sv_conf);
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

/* ---- roles ---- */

static uint64_t engine_lsn(struct vvol *v, uint32_t *epoch)
{
	struct tdo_vol_info vi;
	if (tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi)) {
		if (epoch)
			*epoch = 0;
		return 0;
	}
	if (epoch)
		*epoch = vi.epoch;
	return vi.lsn;
}

static void fail_list(struct tdo_list *head, int status)
{
	while (!tdo_list_empty(head)) {
		struct vreq *r = tdo_list_item(head->next, struct vreq, link);
		tdo_list_del(&r->link);
		req_free_finish(r, status);
	}
}

/* Recompute this node's role after the configuration changed. */
static void set_role(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	v->my_rep = v->conf.vc_deleted ? -1 : rep_index(&v->conf, vt->me);
	bool primary = v->my_rep >= 0 && (uint32_t)v->my_rep == v->conf.vc_primary && v->local_id >= 0;
	if (v->primary && !primary) {
		tdo_log(TDO_LOG_WARN, "vtier", "%s: no longer primary (epoch %u, primary %s)", v->conf.vc_name,
		        v->conf.vc_epoch, v->conf.vc_rep[v->conf.vc_primary]);
		for (int i = 0; i < TDO_REP_MAX; i++)
			if (v->rs[i])
				rs_abort(v, i, "this node stepped down");
		v->primary = false;
		v->marking = 0;
		/* writes whose replicas never answered: their outcome is unknown;
		 * those still in the engine finish from its callback */
		struct tdo_list *l = v->inflight.next;
		while (l != &v->inflight) {
			struct vreq *r = tdo_list_item(l, struct vreq, link);
			l = l->next;
			r->wait = 0;
			r->status = -EIO;
			if (r->local_done) {
				tdo_list_del(&r->link);
				req_free_finish(r, -EIO);
			}
		}
		/* held writes go to the new primary */
		while (!tdo_list_empty(&v->held)) {
			struct vreq *r = tdo_list_item(v->held.next, struct vreq, link);
			tdo_list_del(&r->link);
			r->deadline_usec = tdo_now_usec() + FWD_WAIT_MS * 1000ull;
			fwd_send(vt, r);
		}
		v->gate = 0;
	}
	if (!v->primary && primary) {
		v->primary = true;
		v->next_lsn = engine_lsn(v, NULL);
		tdo_log(TDO_LOG_INFO, "vtier", "%s: primary at epoch %u, LSN %" PRIu64, v->conf.vc_name,
		        v->conf.vc_epoch, v->next_lsn);
	}
	if (!primary && v->my_rep >= 0 && v->conf.vc_state[v->my_rep] == TDO_REP_IN_SYNC && !v->rs_active &&
	    v->local_id >= 0 && v->expect_lsn == 0)
		v->expect_lsn = engine_lsn(v, NULL) + 1;
}

/* ---- configuration changes ---- */

static void send_conf(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *c, bool sync)
{
	struct tdo_rm_vconf m = *c;
	m.vc_sync = sync;
	vsend(vt, peer, TDO_RM_VCONF, &m, sizeof(m), NULL, 0);
}

/* This node's copy has not yet followed the configuration in force. */
static bool local_behind(struct vvol *v)
{
	if (v->creating || v->deleting || v->resizing)
		return true;
	struct tdo_vol_info vi;
	bool have = !tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi);
	bool want = !v->conf.vc_deleted && rep_index(&v->conf, v->vt->me) >= 0;
	return want != have || (want && vi.size != v->conf.vc_size);
}

/* An operator's change in force waits for this node's copy: answer it
 * once the copy has followed, or could not (STATUS). */
static void admin_wait_check(struct vvol *v, int status)
{
	if (!status && v->local_err && local_behind(v))
		status = v->local_err;
	if (!v->admin_cb || (!status && local_behind(v)))
		return;
	tdo_vt_cb cb = v->admin_cb;
	v->admin_cb = NULL;
	char msg[200];
	snprintf(msg, sizeof(msg), "the change is in force, but this node's copy could not follow it: %s",
	         tdo_strerror(status));
	cb(v->admin_arg, status, status ? msg : NULL);
}

/* Answers that waited for this node's copy to exist. */
static void local_created(struct vvol *v, int status)
{
	if (v->ack_peer >= 0) {
		int peer = v->ack_peer;
		v->ack_peer = -1;
		struct tdo_rm_vconf_ack a = { .va_epoch = v->ack_conf.vc_epoch, .va_ok = status == 0,
		                              .va_version = v->ack_conf.vc_version };
		memcpy(a.va_name, v->ack_conf.vc_name, sizeof(a.va_name));
		if (status)
			snprintf(a.va_why, sizeof(a.va_why), "cannot create the copy: %s", tdo_strerror(status));
		vsend(v->vt, peer, TDO_RM_VCONF_ACK, &a, sizeof(a), NULL, 0);
	}
	admin_wait_check(v, status);
}

static void local_create_done(void *arg, int status)
{
	struct vvol *v = arg;
	v->creating = false;
	if (status) {
		tdo_log(TDO_LOG_ERROR, "vtier", "%s: cannot create this node's copy: %s", v->conf.vc_name,
		        tdo_strerror(status));
		local_created(v, status);
		return;
	}
	struct tdo_vol_info vi;
	if (!tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi))
		v->local_id = vi.id;
	set_role(v);
	local_created(v, status);
}

static void local_simple_done(void *arg, int status)
{
	struct vvol *v = arg;
	v->deleting = v->resizing = false;
	if (status)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: a local change failed: %s (retried)", v->conf.vc_name,
		        tdo_strerror(status));
	admin_wait_check(v, status);
}

/* Bring the local engine in line with the configuration (retried by the tick). */
static void reconcile(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	struct tdo_vol_info vi;
	bool have = !tdo_vol_lookup(vt->e, v->conf.vc_name, &vi);
	bool want = !v->conf.vc_deleted && rep_index(&v->conf, vt->me) >= 0;
	v->local_id = have ? (int64_t)vi.id : -1;
	int rc = 0;
	if (want && !have && !v->creating) {
		v->creating = true;
		rc = tdo_vol_create(vt->e, v->conf.vc_name, v->conf.vc_size, v->conf.vc_flags, local_create_done, v);
		if (rc) {
			v->creating = false;
			tdo_log(TDO_LOG_ERROR, "vtier", "%s: cannot create this node's copy: %s", v->conf.vc_name,
			        tdo_strerror(rc));
		}
	} else if (!want && have && !v->deleting && v->io_active == 0 && tdo_list_empty(&v->inflight)) {
		if (vt->o.vol_gone)
			vt->o.vol_gone(vt->o.arg, v->conf.vc_name);
		v->deleting = true;
		if ((rc = tdo_vol_delete(vt->e, v->conf.vc_name, local_simple_done, v)))
			v->deleting = false;
		else
			v->local_id = -1;
	} else if (want && have && vi.size != v->conf.vc_size && !v->resizing && v->io_active == 0 &&
	           tdo_list_empty(&v->inflight)) {
		v->resizing = true;
		if ((rc = tdo_vol_resize(vt->e, v->conf.vc_name, v->conf.vc_size, local_simple_done, v)))
			v->resizing = false;
	}
	v->local_err = rc; /* the tick tries again; an operator waiting hears of it */
	set_role(v);
	admin_wait_check(v, rc);
}

/* Take configuration C (newer than ours, checked by the caller). */
static void adopt(struct vvol *v, const struct tdo_rm_vconf *c, bool from_peer)
{
	(void)from_peer;
	uint32_t old_epoch = v->conf.vc_epoch;
	conf_set(v, c);
	if (c->vc_epoch != old_epoch && v->my_rep >= 0 && !v->primary)
		v->expect_lsn = 0; /* a new primary: we are out of date until a resync says otherwise */
	vt_log_conf(v, "configuration");
	reconcile(v);
	/* what was cleared in the new configuration no longer needs acks */
	if (v->primary)
		complete_ready(v);
}

static void vt_log_conf(struct vvol *v, const char *what)
{
	char reps[256] = "";
	size_t o = 0;
	for (uint32_t i = 0; i < v->conf.vc_nrep && i < TDO_REP_MAX; i++)
		o += (size_t)snprintf(reps + o, sizeof(reps) - o, "%s%s%s=%s", i ? " " : "",
		                      i == v->conf.vc_primary ? "*" : "", v->conf.vc_rep[i],
		                      state_name(v->conf.vc_state[i]));
	tdo_log(TDO_LOG_INFO, "vtier", "%s %s: epoch %u version %" PRIu64 "%s, %s", v->conf.vc_name, what,
	        v->conf.vc_epoch, v->conf.vc_version, v->conf.vc_deleted ? " (deleted)" : "", reps);
}

static void change_done(struct vvol *v, struct change *ch, int status, const char *why)
{
	if (ch->done)
		ch->done(v, status, why, ch->arg);
	free(ch);
}

/* The configuration CH would make from CUR; false with WHY when it cannot. */
static bool make_change(struct vvol *v, struct change *ch, struct tdo_rm_vconf *out, char *why, size_t wl)
{
	struct tdo_rm_vconf c = v->conf;
	switch (ch->kind) {
	case CH_CREATE:
		c = ch->conf;
		if (!v->conf.vc_deleted && v->conf.vc_version) {
			snprintf(why, wl, "a volume named '%s' already exists", c.vc_name);
			return false;
		}
		c.vc_version = v->conf.vc_version + 1;
		c.vc_epoch = v->conf.vc_epoch ? v->conf.vc_epoch + 1 : 1;
		c.vc_nhist = 1;
		c.vc_hist[0].vh_epoch = c.vc_epoch;
		c.vc_hist[0].vh_start_lsn = 0;
		break;
	case CH_STATE:
		if (v->conf.vc_deleted || !v->primary) {
			snprintf(why, wl, "this node is not the primary of '%s'", c.vc_name);
			return false;
		}
		if (c.vc_state[ch->rep] == ch->state) {
			*out = c;
			return true; /* nothing to do */
		}
		c.vc_state[ch->rep] = ch->state;
		c.vc_version++;
		break;
	case CH_PROMOTE: {
		int me = rep_index(&c, v->vt->me);
		if (c.vc_deleted || me < 0) {
			snprintf(why, wl, "node '%s' holds no copy of '%s'", v->vt->me, c.vc_name);
			return false;
		}
		if (c.vc_state[me] != TDO_REP_IN_SYNC || v->rs_active) {
			snprintf(why, wl, "node '%s' is %s: only an in-sync replica can be promoted", v->vt->me,
			         state_name(c.vc_state[me]));
			return false;
		}
		uint64_t lsn = engine_lsn(v, NULL);
		c.vc_epoch++;
		c.vc_version++;
		for (uint32_t i = 0; i < c.vc_nrep; i++)
			if ((int)i != me)
				c.vc_state[i] = TDO_REP_OUT_OF_DATE; /* each resyncs, rolling back what we lack */
		c.vc_primary = (uint32_t)me;
		if (c.vc_nhist == TDO_VHIST_MAX) {
			memmove(&c.vc_hist[0], &c.vc_hist[1], sizeof(c.vc_hist[0]) * (TDO_VHIST_MAX - 1));
			c.vc_nhist--;
		}
		c.vc_hist[c.vc_nhist].vh_epoch = c.vc_epoch;
		c.vc_hist[c.vc_nhist].vh_start_lsn = lsn;
		c.vc_nhist++;
		break;
	}
	case CH_DELETE:
		if (c.vc_deleted) {
			snprintf(why, wl, "no volume '%s'", c.vc_name);
			return false;
		}
		c.vc_deleted = 1;
		c.vc_version++;
		break;
	case CH_RESIZE:
		if (c.vc_deleted) {
			snprintf(why, wl, "no volume '%s'", c.vc_name);
			return false;
		}
		c.vc_size = ch->size;
		c.vc_version++;
		break;
	}
	*out = c;
	return true;
}

static void prop_finish(struct vvol *v, int status, const char *why)
{
	struct proposal *p = v->prop;
	v->prop = NULL;
	change_done(v, p->ch, status, why);
	free(p);
	propose_next(v);
}

/* The accepted proposal's configuration is durable here (or not). */
static void prop_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct vvol *v = arg;
	struct proposal *p = v->prop;
	if (vt->stopping || !p || !p->storing)
		return; /* the stop answered it already */
	p->storing = false;
	unstage(v, &p->conf);
	if (status) {
		prop_finish(v, -EIO, "cannot store the state file");
		return;
	}
	/* in force: now, and only now, it is this node's configuration (a
	 * proposer that dies before this point leaves no trace of a change
	 * that may never have come into force) */
	conf_set(v, &p->conf);
	vt_log_conf(v, "change in force");
	reconcile(v);
	prop_finish(v, 0, NULL);
	if (v->primary)
		complete_ready(v);
}

static void prop_check(struct vvol *v)
{
	struct proposal *p = v->prop;
	if (!p || p->storing)
		return;
	if (p->have >= p->need && !p->newer_seen) {
		p->storing = true;
		v->want = p->conf;
		v->want.vc_sync = 0;
		v->staged = true;
		if (state_store(v->vt, prop_stored, v)) {
			p->storing = false;
			unstage(v, &v->want);
			prop_finish(v, -ENOMEM, "out of memory");
		}
		return;
	}
	int undecided = v->vt->nnodes - p->have - __builtin_popcount(p->nacked);
	if (p->have + undecided < p->need || p->newer_seen)
		prop_finish(v, -EAGAIN, p->newer_seen ? "another node holds a newer configuration"
		                                      : "a majority of the nodes refused the change");
}

static void propose_next(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	while (!v->prop && !tdo_list_empty(&v->changes) && !vt->stopping) {
		struct change *ch = tdo_list_item(v->changes.next, struct change, link);
		tdo_list_del(&ch->link);
		struct tdo_rm_vconf c;
		char why[160];
		if (!make_change(v, ch, &c, why, sizeof(why))) {
			change_done(v, ch, -EINVAL, why);
			continue;
		}
		if (c.vc_version == v->conf.vc_version && c.vc_epoch == v->conf.vc_epoch) {
			change_done(v, ch, 0, NULL);
			continue;
		}
		struct proposal *p = calloc(1, sizeof(*p));
		if (!p) {
			change_done(v, ch, -ENOMEM, "out of memory");
			continue;
		}
		p->ch = ch;
		p->conf = c;
		p->conf.vc_sync = 0;
		p->prev = v->conf;
		p->need = vt->nnodes / 2 + 1;
		p->deadline_usec = tdo_now_usec() + PROPOSE_MS * 1000ull;
		v->prop = p;
		p->have = 1; /* this node: it stores the change once it is in force */
		for (int i = 0; i < tdo_cluster_npeers(vt->c); i++)
			if (tdo_cluster_peer_up(vt->c, i))
				send_conf(vt, i, &c, false);
			else
				p->nacked |= 1u << i;
		prop_check(v);
	}
}

static void queue_change(struct vvol *v, struct change *ch)
{
	tdo_list_add_tail(&v->changes, &ch->link);
	propose_next(v);
}

/* Propose replica REP in STATE; DONE gets REP as its argument. False when
 * out of memory (nothing queued). */
static bool queue_state(struct vvol *v, int rep, uint32_t state,
                        void (*done)(struct vvol *v, int status, const char *why, void *arg))
{
	struct change *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return false;
	ch->kind = CH_STATE;
	ch->rep = rep;
	ch->state = state;
	ch->done = done;
	ch->arg = (void *)(intptr_t)rep;
	queue_change(v, ch);
	return true;
}

/* ---- the write path (primary) ---- */

/* Replicas in-sync by the configuration in force (not one still proposed). */
static uint32_t insync_mask(struct vvol *v)
{
	const struct tdo_rm_vconf *c = &v->conf;
	uint32_t m = 0;
	for (uint32_t i = 0; i < c->vc_nrep; i++)
		if ((int)i != v->my_rep && c->vc_state[i] == TDO_REP_IN_SYNC)
			m |= 1u << i;
	return m;
}

/* The request's end: its callback, then it is freed. */
static void req_free_finish(struct vreq *r, int status)
{
	r->cb(r->arg, status);
	if (r->own_buf)
		free(r->buf);
	free(r);
}

/* Complete every write whose copies are all durable, or whose missing
 * replicas are out of date by a configuration in force. */
static void complete_ready(struct vvol *v)
{
	uint32_t insync = insync_mask(v);
	struct tdo_list *l = v->inflight.next;
	while (l != &v->inflight) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		l = l->next;
		r->wait &= insync;
		if (r->local_done && r->wait == 0) {
			tdo_list_del(&r->link);
			req_free_finish(r, r->status);
		}
	}
}

/* Propose replica REP out of date (once); writes wait for it to be in force. */
static void mark_done(struct vvol *v, int status, const char *why, void *arg)
{
	int rep = (int)(intptr_t)arg;
	v->marking &= ~(1u << rep);
	if (status)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: taking %s out of the in-sync set failed: %s (retried)",
		        v->conf.vc_name, v->conf.vc_rep[rep], why ? why : tdo_strerror(status));
}

static void mark_out_of_date(struct vvol *v, int rep, const char *why)
{
	if (!v->primary || rep < 0 || rep == v->my_rep || (v->marking & (1u << rep)))
		return;
	if (v->conf.vc_state[rep] != TDO_REP_IN_SYNC)
		return; /* not in the in-sync set in force: nothing waits on it */
	if (v->rs[rep])
		rs_abort(v, rep, why);
	tdo_log(TDO_LOG_WARN, "vtier", "%s: replica %s out of date: %s", v->conf.vc_name, v->conf.vc_rep[rep], why);
	v->marking |= 1u << rep;
	if (!queue_state(v, rep, TDO_REP_OUT_OF_DATE, mark_done))
		v->marking &= ~(1u << rep); /* the tick tries again */
}

static void rs_mark_dirty(struct vvol *v, uint64_t off, uint64_t len)
{
	for (int i = 0; i < TDO_REP_MAX; i++) {
		struct resync *rs = v->rs[i];
		if (!rs || !rs->dirty)
			continue;
		for (uint64_t b = off / TDO_BLOCK_SIZE; b < (off + len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE &&
		     b < rs->nblocks; b++)
			if (!(rs->dirty[b >> 3] & (1u << (b & 7)))) {
				rs->dirty[b >> 3] |= (uint8_t)(1u << (b & 7));
				rs->ndirty++;
				rs->total++;
			}
	}
}

static void local_write_done(void *arg, int status)
{
	struct vreq *r = arg;
	struct vvol *v = r->v;
	v->io_active--;
	r->local_done = true;
	if (status && !r->status)
		r->status = status;
	if (status)
		tdo_log(TDO_LOG_ERROR, "vtier", "%s: local write at LSN %" PRIu64 " failed: %s", v->conf.vc_name, r->lsn,
		        tdo_strerror(status));
	complete_ready(v);
	for (int i = 0; i < TDO_REP_MAX; i++)
		if (v->rs[i] && v->rs[i]->phase == RS_FINAL)
			rs_pump(v, v->rs[i]);
}

static int engine_op(int op)
{
	return op == TDO_RMOP_WRITE ? TDO_OP_WRITE : op == TDO_RMOP_ZERO ? TDO_OP_ZERO : TDO_OP_TRIM;
}

/* A write-side request on the primary: an LSN, to the replicas, locally. */
static void admit(struct vvol *v, struct vreq *r)
{
	struct tdo_vtier *vt = v->vt;
	if (v->gate) {
		tdo_list_add_tail(&v->held, &r->link);
		return;
	}
	r->lsn = ++v->next_lsn;
	r->wait = insync_mask(v);
	r->sent_usec = tdo_now_usec();
	struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch, .io_op = (uint16_t)r->op,
	                        .io_flags = (uint16_t)r->flags, .io_lsn = r->lsn, .io_off = r->off, .io_len = r->len };
	snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
	for (uint32_t i = 0; i < v->conf.vc_nrep; i++) {
		if ((int)i == v->my_rep || v->conf.vc_state[i] != TDO_REP_IN_SYNC || (v->marking & (1u << i)))
			continue; /* one being taken out gets nothing more; its write completes when that is in force */
		int peer = rep_peer(v, (int)i);
		if (peer < 0 || vsend(vt, peer, TDO_RM_WRITE, &io, sizeof(io),
		                                  r->op == TDO_RMOP_WRITE ? r->buf : NULL,
		                                  r->op == TDO_RMOP_WRITE ? (uint32_t)r->len : 0))
			mark_out_of_date(v, (int)i, "not connected");
	}
	rs_mark_dirty(v, r->off, r->len);
	tdo_list_add_tail(&v->inflight, &r->link);
	v->io_active++;
	int rc = tdo_engine_submit_at(vt->e, engine_op(r->op), (uint32_t)v->local_id, r->off, r->len, r->buf,
	                              r->op == TDO_RMOP_ZERO ? r->flags : 0, r->lsn, v->conf.vc_epoch,
	                              local_write_done, r);
	if (rc) {
		v->io_active--;
		r->local_done = true;
		r->status = rc;
		complete_ready(v);
	}
}

static void local_rw_done(void *arg, int status)
{
	struct vreq *r = arg;
	r->v->io_active--;
	req_free_finish(r, status);
}

/* A request on a volume this node is primary of. */
static int primary_io(struct vvol *v, struct vreq *r)
{
	int rc;
	switch (r->op) {
	case TDO_RMOP_READ:
		v->io_active++;
		rc = tdo_engine_read(v->vt->e, (uint32_t)v->local_id, r->off, (uint32_t)r->len, r->buf, local_rw_done, r);
		if (rc)
			v->io_active--;
		return rc;
	case TDO_RMOP_FLUSH:
		/* every acknowledged write is durable on every in-sync copy already */
		v->io_active++;
		rc = tdo_engine_flush(v->vt->e, local_rw_done, r);
		if (rc)
			v->io_active--;
		return rc;
	case TDO_RMOP_WRITE:
	case TDO_RMOP_ZERO:
	case TDO_RMOP_TRIM:
		if (!r->len || r->off % TDO_SECTOR_SIZE || r->len % TDO_SECTOR_SIZE || r->off + r->len < r->off ||
		    r->off + r->len > v->conf.vc_size || (r->op == TDO_RMOP_WRITE && r->len > TDO_RM_MAX_PAYLOAD - 4096))
			return -EINVAL;
		admit(v, r);
		return 0;
	}
	return -EINVAL;
}

/* ---- forwarding ---- */

static int primary_peer(struct tdo_vtier *vt, struct vvol *v)
{
	if (!v || v->conf.vc_deleted)
		return -1;
	return tdo_cluster_peer_index(vt->c, v->conf.vc_rep[v->conf.vc_primary]);
}

static void fwd_send(struct tdo_vtier *vt, struct vreq *r)
{
	struct vvol *v = find_vol(vt, r->name);
	if (!v || v->conf.vc_deleted) {
		req_free_finish(r, TDO_ENOVOL);
		return;
	}
	r->v = v;
	if (v->primary) {
		int rc = primary_io(v, r);
		if (rc)
			req_free_finish(r, rc);
		return;
	}
	int peer = primary_peer(vt, v);
	if (peer >= 0 && tdo_cluster_peer_up(vt->c, peer)) {
		struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch, .io_op = (uint16_t)r->op,
		                        .io_flags = (uint16_t)r->flags, .io_id = ++vt->next_fwd_id,
		                        .io_off = r->off, .io_len = r->len };
		snprintf(io.io_name, sizeof(io.io_name), "%s", r->name);
		if (!vsend(vt, peer, TDO_RM_FWD, &io, sizeof(io), r->op == TDO_RMOP_WRITE ? r->buf : NULL,
		                      r->op == TDO_RMOP_WRITE ? (uint32_t)r->len : 0)) {
			r->fwd_id = io.io_id;
			r->fwd_peer = peer;
			tdo_list_add_tail(&vt->fwd_sent, &r->link);
			return;
		}
	}
	r->fwd_peer = -1;
	tdo_list_add_tail(&vt->fwd_wait, &r->link);
}

/* Requests waiting for a primary: try again (config changed, a peer came up, a tick). */
static void fwd_retry(struct tdo_vtier *vt)
{
	struct tdo_list l;
	tdo_list_init(&l);
	uint64_t now = tdo_now_usec();
	tdo_list_move(&l, &vt->fwd_wait);
	while (!tdo_list_empty(&l)) {
		struct vreq *r = tdo_list_item(l.next, struct vreq, link);
		tdo_list_del(&r->link);
		if (now > r->deadline_usec || vt->stopping)
			req_free_finish(r, -EIO);
		else
			fwd_send(vt, r);
	}
}

/* The primary's side: a peer's client request. */
static void fwd_in_done(void *arg, int status)
{
	struct vreq *r = arg;
	struct tdo_rm_ack a = { .ak_status = status, .ak_id = r->from_id };
	snprintf(a.ak_name, sizeof(a.ak_name), "%s", r->name);
	a.ak_epoch = r->v ? r->v->conf.vc_epoch : 0;
	bool data = r->op == TDO_RMOP_READ && status == 0;
	a.ak_len = data ? r->len : 0;
	vsend(r->vt, r->from_peer, TDO_RM_FWD_REP, &a, sizeof(a), data ? r->buf : NULL,
	                 data ? (uint32_t)r->len : 0);
}

static void on_fwd(struct tdo_vtier *vt, int peer, const struct tdo_rm_io *io, const void *data, uint32_t dlen)
{
	char name[TDO_NAME_MAX + 1];
	struct tdo_rm_ack a = { .ak_id = io->io_id };
	memcpy(a.ak_name, io->io_name, sizeof(a.ak_name));
	if (!wire_name(io->io_name, name)) {
		tdo_cluster_drop(vt->c, peer, "forwarded request with a bad volume name");
		return;
	}
	struct vvol *v = find_vol(vt, name);
	int err = 0;
	if (!v || v->conf.vc_deleted)
		err = TDO_ENOVOL;
	else if (!v->primary)
		err = -EREMCHG; /* not (or no longer) the primary: ask again */
	else if (io->io_op == TDO_RMOP_WRITE ? dlen != io->io_len : dlen != 0)
		err = -EINVAL;
	else if (io->io_op == TDO_RMOP_READ && (io->io_len > TDO_RM_MAX_PAYLOAD - 4096 || io->io_len == 0))
		err = -EINVAL;
	if (!err) {
		struct vreq *r = calloc(1, sizeof(*r));
		if (!r)
			err = -ENOMEM;
		else {
			r->vt = vt;
			r->v = v;
			r->op = io->io_op;
			r->flags = io->io_flags;
			r->off = io->io_off;
			r->len = io->io_len;
			r->from_peer = peer;
			r->from_id = io->io_id;
			snprintf(r->name, sizeof(r->name), "%s", name);
			r->cb = fwd_in_done;
			r->arg = r;
			if (io->io_op == TDO_RMOP_WRITE || io->io_op == TDO_RMOP_READ) {
				if (posix_memalign(&r->buf, 4096, io->io_len ? io->io_len : 4096)) {
					free(r);
					err = -ENOMEM;
					goto answer;
				}
				r->own_buf = true;
				if (dlen)
					memcpy(r->buf, data, dlen);
			}
			err = primary_io(v, r);
			if (err) {
				if (r->own_buf)
					free(r->buf);
				free(r);
			} else
				return;
		}
	}
answer:
	a.ak_status = err;
	a.ak_epoch = v ? v->conf.vc_epoch : 0;
	vsend(vt, peer, TDO_RM_FWD_REP, &a, sizeof(a), NULL, 0);
}

static void on_fwd_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a, const void *data, uint32_t dlen)
{
	for (struct tdo_list *l = vt->fwd_sent.next; l != &vt->fwd_sent; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		if (r->fwd_id != a->ak_id || r->fwd_peer != peer)
			continue;
		tdo_list_del(&r->link);
		if (a->ak_status == -EREMCHG) {
			/* that node is not the primary (any more): wait for a configuration that says who is */
			r->fwd_peer = -1;
			tdo_list_add_tail(&vt->fwd_wait, &r->link);
			return;
		}
		int st = a->ak_status;
		if (!st && r->op == TDO_RMOP_READ) {
			if (dlen != r->len)
				st = -EIO;
			else
				memcpy(r->buf, data, dlen);
		}
		req_free_finish(r, st);
		return;
	}
}

/* ---- replica side of the write path ---- */

struct rapply {
	struct tdo_vtier *vt;
	int peer;
	uint64_t lsn;
	uint32_t epoch;
	char name[TDO_NAME_MAX + 1];
	bool resync;
	uint64_t bytes;
	void *buf;
};

static void wack(struct tdo_vtier *vt, int peer, uint16_t type, const char *name, uint32_t epoch, int status,
                 uint64_t lsn, uint64_t id)
{
	struct tdo_rm_ack a = { .ak_epoch = epoch, .ak_status = status, .ak_lsn = lsn, .ak_id = id };
	snprintf(a.ak_name, sizeof(a.ak_name), "%s", name);
	vsend(vt, peer, type, &a, sizeof(a), NULL, 0);
}

static void rs_replica_done(struct vvol *v);

static void replica_apply_done(void *arg, int status)
{
	struct rapply *ra = arg;
	struct vvol *v = find_vol(ra->vt, ra->name);
	if (v)
		v->io_active--;
	if (ra->resync) {
		wack(ra->vt, ra->peer, TDO_RM_RS_ACK, ra->name, ra->epoch, status, ra->lsn, ra->bytes);
		if (v) {
			v->rs_pending--;
			if (v->rs_done_peer >= 0 && v->rs_pending == 0)
				rs_replica_done(v);
		}
	} else {
		wack(ra->vt, ra->peer, TDO_RM_WACK, ra->name, ra->epoch, status, ra->lsn, 0);
		if (status && v)
			v->expect_lsn = 0; /* we no longer have every write: out of date */
	}
	free(ra->buf);
	free(ra);
}

static void on_write(struct tdo_vtier *vt, int peer, const struct tdo_rm_io *io, const void *data, uint32_t dlen,
                     bool resync)
{
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(io->io_name, name)) {
		tdo_cluster_drop(vt->c, peer, "write with a bad volume name");
		return;
	}
	uint16_t ackt = resync ? TDO_RM_RS_ACK : TDO_RM_WACK;
	struct vvol *v = find_vol(vt, name);
	uint64_t nbytes = io->io_op == TDO_RMOP_WRITE ? io->io_len : 0;
	if (!v || v->conf.vc_deleted || v->local_id < 0) {
		wack(vt, peer, ackt, name, v ? v->conf.vc_epoch : 0, TDO_ENOVOL, io->io_lsn, nbytes);
		return;
	}
	const char *sender = tdo_cluster_peer_id(vt->c, peer);
	int st = 0;
	if (io->io_epoch < v->conf.vc_epoch)
		st = -ESTALE;
	else if (io->io_epoch > v->conf.vc_epoch || strcmp(sender, v->conf.vc_rep[v->conf.vc_primary]))
		st = -EAGAIN; /* we have not heard of that primary yet */
	else if ((io->io_op == TDO_RMOP_WRITE) != (dlen > 0) || (io->io_op == TDO_RMOP_WRITE && dlen != io->io_len))
		st = -EINVAL;
	else if (!resync && (v->my_rep < 0 || v->conf.vc_state[v->my_rep] != TDO_REP_IN_SYNC || v->rs_active ||
	                     io->io_lsn != v->expect_lsn || v->expect_lsn == 0))
		st = -EILSEQ;
	else if (resync && !v->rs_active)
		st = -EILSEQ;
	if (st) {
		if (st == -ESTALE)
			send_conf(vt, peer, &v->conf, true); /* tell the old primary who is primary now */
		wack(vt, peer, ackt, name, v->conf.vc_epoch, st, io->io_lsn, nbytes);
		return;
	}
	struct rapply *ra = calloc(1, sizeof(*ra));
	if (!ra || (dlen && posix_memalign(&ra->buf, 4096, dlen))) {
		free(ra);
		wack(vt, peer, ackt, name, v->conf.vc_epoch, -ENOMEM, io->io_lsn, nbytes);
		return;
	}
	if (dlen)
		memcpy(ra->buf, data, dlen);
	ra->vt = vt;
	ra->peer = peer;
	ra->lsn = io->io_lsn;
	ra->epoch = v->conf.vc_epoch;
	ra->resync = resync;
	ra->bytes = io->io_op == TDO_RMOP_HOLE ? 0 : io->io_len;
	snprintf(ra->name, sizeof(ra->name), "%s", name);
	int op = io->io_op == TDO_RMOP_WRITE ? TDO_OP_WRITE : io->io_op == TDO_RMOP_ZERO ? TDO_OP_ZERO : TDO_OP_TRIM;
	unsigned flags = io->io_op == TDO_RMOP_ZERO ? (io->io_flags & TDO_ZERO_NO_HOLE) : 0;
	if (!resync)
		v->expect_lsn++;
	else
		v->rs_pending++;
	v->io_active++;
	int rc = tdo_engine_submit_at(vt->e, op, (uint32_t)v->local_id, io->io_off, io->io_len, ra->buf, flags,
	                              io->io_lsn ? io->io_lsn : 1, v->conf.vc_epoch, replica_apply_done, ra);
	if (rc) {
		v->io_active--;
		if (resync)
			v->rs_pending--;
		else
			v->expect_lsn = 0;
		wack(vt, peer, ackt, name, v->conf.vc_epoch, rc, io->io_lsn, nbytes);
		free(ra->buf);
		free(ra);
	}
}

static void on_wack(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a)
{
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(a->ak_name, name))
		return;
	struct vvol *v = find_vol(vt, name);
	if (!v || !v->primary)
		return;
	int rep = rep_index(&v->conf, tdo_cluster_peer_id(vt->c, peer));
	if (rep < 0)
		return;
	for (struct tdo_list *l = v->inflight.next; l != &v->inflight; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		if (r->lsn != a->ak_lsn)
			continue;
		if (a->ak_status == 0) {
			r->wait &= ~(1u << rep);
			complete_ready(v);
		} else {
			char why[96];
			snprintf(why, sizeof(why), "refused LSN %" PRIu64 ": %s", a->ak_lsn, strerror(-a->ak_status));
			mark_out_of_date(v, rep, why);
		}
		return;
	}
}

/* ---- resync: the primary's side ---- */

static void rs_free(struct vvol *v, int rep)
{
	struct resync *rs = v->rs[rep];
	if (!rs)
		return;
	if (rs->gated) {
		rs->gated = false;
		v->gate--;
	}
	v->rs[rep] = NULL;
	free(rs->dirty);
	free(rs);
	/* writes held while the gate was shut */
	if (!v->gate && v->primary) {
		struct tdo_list l;
		tdo_list_init(&l);
		tdo_list_move(&l, &v->held);
		while (!tdo_list_empty(&l)) {
			struct vreq *r = tdo_list_item(l.next, struct vreq, link);
			tdo_list_del(&r->link);
			admit(v, r);
		}
	}
}

static void rs_abort(struct vvol *v, int rep, const char *why)
{
	struct resync *rs = v->rs[rep];
	if (!rs)
		return;
	tdo_log(TDO_LOG_WARN, "vtier", "%s: resync of %s stopped: %s", v->conf.vc_name, v->conf.vc_rep[rep], why);
	if (rs->busy) {
		rs->phase = 0; /* freed when the local work in flight returns */
		return;
	}
	rs_free(v, rep);
}

static void rs_send(struct vvol *v, struct resync *rs, uint16_t type, uint64_t lsn)
{
	struct tdo_rm_rs m = { .rs_epoch = v->conf.vc_epoch, .rs_lsn = lsn };
	snprintf(m.rs_name, sizeof(m.rs_name), "%s", v->conf.vc_name);
	if (vsend(v->vt, rs->peer, type, &m, sizeof(m), NULL, 0))
		rs_abort(v, rs->rep, "not connected");
}

static void rs_start(struct vvol *v, int rep)
{
	int peer = rep_peer(v, rep);
	if (peer < 0 || !tdo_cluster_peer_up(v->vt->c, peer) || v->rs[rep])
		return;
	struct resync *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return;
	rs->rep = rep;
	rs->peer = peer;
	rs->phase = RS_WAIT_STATE;
	rs->started_usec = rs->last_refill_usec = tdo_now_usec();
	v->rs[rep] = rs;
	tdo_log(TDO_LOG_INFO, "vtier", "%s: resync of %s begins", v->conf.vc_name, v->conf.vc_rep[rep]);
	rs_send(v, rs, TDO_RM_RS_BEGIN, 0);
}

static struct resync *rs_of(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m, struct vvol **vp)
{
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(m->rs_name, name))
		return NULL;
	struct vvol *v = find_vol(vt, name);
	if (!v || !v->primary)
		return NULL;
	int rep = rep_index(&v->conf, tdo_cluster_peer_id(vt->c, peer));
	if (rep < 0 || !v->rs[rep])
		return NULL;
	*vp = v;
	return v->rs[rep];
}

static void set_dirty(struct resync *rs, uint64_t b, uint64_t n)
{
	for (uint64_t i = b; i < b + n && i < rs->nblocks; i++)
		if (!(rs->dirty[i >> 3] & (1u << (i & 7)))) {
			rs->dirty[i >> 3] |= (uint8_t)(1u << (i & 7));
			rs->ndirty++;
			rs->total++;
		}
}

static int scan_dirty(void *arg, uint64_t block, uint64_t lsn, unsigned state)
{
	(void)lsn;
	(void)state;
	set_dirty(arg, block, 1);
	return 0;
}

static int hole_dirty(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	if (state & TDO_MAP_HOLE)
		set_dirty(arg, off / TDO_BLOCK_SIZE, len / TDO_BLOCK_SIZE);
	return 0;
}

/* The replica's newest trusted LSN and its epoch: the bound. */
static void on_rs_state(struct vvol *v, struct resync *rs, const struct tdo_rm_rs *m)
{
	if (rs->phase != RS_WAIT_STATE)
		return;
	uint64_t bound = m->rs_lsn;
	if (m->rs_log_epoch != v->conf.vc_epoch) {
		/* its writes are the primary's history only up to the start of the epoch after its own */
		uint64_t cut = 0;
		bool found = false;
		for (uint32_t i = 0; i < v->conf.vc_nhist; i++)
			if (v->conf.vc_hist[i].vh_epoch > m->rs_log_epoch) {
				cut = v->conf.vc_hist[i].vh_start_lsn;
				found = true;
				break;
			}
		if (!found || m->rs_log_epoch > v->conf.vc_epoch)
			cut = 0;
		if (cut < bound)
			bound = cut;
	}
	if (bound > v->next_lsn)
		bound = v->next_lsn;
	rs->bound = bound;
	rs->nblocks = (v->conf.vc_size + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE;
	rs->dirty = calloc(1, (size_t)(rs->nblocks + 7) / 8);
	if (!rs->dirty) {
		rs_abort(v, rs->rep, "out of memory");
		return;
	}
	/* our own writes after the bound: those in the index, and those still
	 * in flight (not in the index yet); from now on admit() marks new ones */
	tdo_engine_scan(v->vt->e, (uint32_t)v->local_id, bound, scan_dirty, rs);
	for (struct tdo_list *l = v->inflight.next; l != &v->inflight; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		set_dirty(rs, r->off / TDO_BLOCK_SIZE,
		          (r->off + r->len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE - r->off / TDO_BLOCK_SIZE);
	}
	rs->phase = RS_WAIT_MAP;
	tdo_log(TDO_LOG_INFO, "vtier", "%s: %s trusted to LSN %" PRIu64 " epoch %u; bound %" PRIu64 " (primary at %" PRIu64 ")",
	        v->conf.vc_name, v->conf.vc_rep[rs->rep], m->rs_lsn, m->rs_log_epoch, bound, v->next_lsn);
	rs_send(v, rs, TDO_RM_RS_SCAN, bound);
}

static void on_rs_map(struct vvol *v, struct resync *rs, const struct tdo_rm_rs *m, const void *pl, uint32_t len)
{
	if (rs->phase != RS_WAIT_MAP)
		return;
	if (m->rs_nruns > (len - sizeof(*m)) / sizeof(struct tdo_rm_run) ||
	    len != sizeof(*m) + m->rs_nruns * sizeof(struct tdo_rm_run)) {
		tdo_cluster_drop(v->vt->c, rs->peer, "resync map of a wrong length");
		return;
	}
	const struct tdo_rm_run *runs = (const struct tdo_rm_run *)((const char *)pl + sizeof(*m));
	for (uint64_t i = 0; i < m->rs_nruns; i++) {
		struct tdo_rm_run ru;
		memcpy(&ru, &runs[i], sizeof(ru));
		if (ru.ru_block >= rs->nblocks || ru.ru_count > rs->nblocks - ru.ru_block)
			continue;
		if (ru.ru_kind == TDO_RUN_SUSPECT)
			set_dirty(rs, ru.ru_block, ru.ru_count); /* writes we may not have: take them back */
		else
			tdo_engine_map(v->vt->e, (uint32_t)v->local_id, ru.ru_block * TDO_BLOCK_SIZE,
			               (uint64_t)ru.ru_count * TDO_BLOCK_SIZE > v->conf.vc_size - ru.ru_block * TDO_BLOCK_SIZE
			                       ? v->conf.vc_size - ru.ru_block * TDO_BLOCK_SIZE
			                       : (uint64_t)ru.ru_count * TDO_BLOCK_SIZE,
			               hole_dirty, rs);
	}
	if (m->rs_last) {
		rs->phase = RS_COPY;
		tdo_log(TDO_LOG_INFO, "vtier", "%s: resync of %s: %" PRIu64 " blocks to copy", v->conf.vc_name,
		        v->conf.vc_rep[rs->rep], rs->ndirty);
		rs_pump(v, rs);
	}
}

struct rs_read {
	struct vvol *v;
	struct resync *rs;
	uint64_t block;
	uint32_t count;
	uint64_t tag;
	void *buf;
};

struct rs_map_ctx {
	struct vvol *v;
	struct resync *rs;
	uint64_t tag;
	int pending;
};

static void rs_copy_read_done(void *arg, int status)
{
	struct rs_read *rr = arg;
	struct vvol *v = rr->v;
	struct resync *rs = rr->rs;
	v->io_active--;
	rs->busy--;
	if (rs->phase == 0 || status) {
		if (rs->phase && status)
			rs_abort(v, rs->rep, "a local read failed");
		else if (!rs->busy && rs->phase == 0)
			rs_free(v, rs->rep);
	} else {
		struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch, .io_op = TDO_RMOP_WRITE, .io_lsn = rr->tag,
		                        .io_off = rr->block * TDO_BLOCK_SIZE, .io_len = (uint64_t)rr->count * TDO_BLOCK_SIZE };
		snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
		if (io.io_off + io.io_len > v->conf.vc_size)
			io.io_len = v->conf.vc_size - io.io_off;
		if (vsend(v->vt, rs->peer, TDO_RM_RS_DATA, &io, sizeof(io), rr->buf, (uint32_t)io.io_len))
			rs_abort(v, rs->rep, "not connected");
		else {
			rs->unacked += io.io_len;
			rs->copied += rr->count;
		}
	}
	free(rr->buf);
	free(rr);
	if (v->rs[rs->rep] == rs)
		rs_pump(v, rs);
}

/* One run of a copy: holes and zeroes as such, data read and sent. */
static int rs_copy_part(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	struct rs_map_ctx *x = arg;
	struct vvol *v = x->v;
	struct resync *rs = x->rs;
	if (state & (TDO_MAP_HOLE | TDO_MAP_ZERO)) {
		struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch,
		                        .io_op = (state & TDO_MAP_HOLE) ? TDO_RMOP_HOLE : TDO_RMOP_ZERO,
		                        .io_flags = (state & TDO_MAP_HOLE) ? 0 : TDO_ZERO_NO_HOLE,
		                        .io_lsn = x->tag, .io_off = off, .io_len = len };
		snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
		if (vsend(v->vt, rs->peer, TDO_RM_RS_DATA, &io, sizeof(io), NULL, 0))
			return -ENOTCONN;
		rs->copied += (len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE;
		return 0;
	}
	struct rs_read *rr = calloc(1, sizeof(*rr));
	if (!rr || posix_memalign(&rr->buf, 4096, len)) {
		free(rr);
		return -ENOMEM;
	}
	rr->v = v;
	rr->rs = rs;
	rr->block = off / TDO_BLOCK_SIZE;
	rr->count = (uint32_t)((len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE);
	rr->tag = x->tag;
	v->io_active++;
	rs->busy++;
	int rc = tdo_engine_read(v->vt->e, (uint32_t)v->local_id, off, (uint32_t)len, rr->buf, rs_copy_read_done, rr);
	if (rc) {
		v->io_active--;
		rs->busy--;
		free(rr->buf);
		free(rr);
	}
	return rc;
}

/* A round's runs, taken from the dirty map before the flush. */
struct rs_round {
	struct vvol *v;
	struct resync *rs;
	int nruns;
	uint64_t b[64];
	uint32_t n[64];
};

static void rs_round_flushed(void *arg, int status)
{
	struct rs_round *rd = arg;
	struct vvol *v = rd->v;
	struct resync *rs = rd->rs;
	v->io_active--;
	rs->busy--;
	if (rs->phase == 0 || status) {
		if (rs->phase)
			rs_abort(v, rs->rep, "a local flush failed");
		else if (!rs->busy)
			rs_free(v, rs->rep);
		free(rd);
		return;
	}
	struct rs_map_ctx x = { v, rs, v->next_lsn ? v->next_lsn : 1, 0 };
	for (int i = 0; i < rd->nruns; i++) {
		uint64_t off = rd->b[i] * TDO_BLOCK_SIZE, len = (uint64_t)rd->n[i] * TDO_BLOCK_SIZE;
		if (off + len > v->conf.vc_size)
			len = v->conf.vc_size - off;
		if (tdo_engine_map(v->vt->e, (uint32_t)v->local_id, off, len, rs_copy_part, &x)) {
			free(rd);
			rs_abort(v, rs->rep, "cannot copy");
			return;
		}
	}
	free(rd);
	rs_pump(v, rs);
}

static void rs_refill(struct tdo_vtier *vt, struct resync *rs)
{
	uint64_t now = tdo_now_usec();
	uint64_t rate = vt->o.resync_rate;
	rs->tokens += (now - rs->last_refill_usec) * rate / 1000000;
	rs->last_refill_usec = now;
	if (rs->tokens > RS_ROUND_BYTES * 2ull)
		rs->tokens = RS_ROUND_BYTES * 2ull;
}

/* Take up to a round of dirty runs, flush, then copy them (after the flush,
 * a read sees every write that marked them). */
static bool rs_take_round(struct vvol *v, struct resync *rs)
{
	struct rs_round *rd = calloc(1, sizeof(*rd));
	if (!rd)
		return false;
	rd->v = v;
	rd->rs = rs;
	uint64_t bytes = 0;
	uint64_t b = rs->cursor;
	for (uint64_t scanned = 0; scanned < rs->nblocks && rd->nruns < 64 && bytes < RS_ROUND_BYTES &&
	     bytes < rs->tokens; scanned++, b++) {
		if (b >= rs->nblocks)
			b = 0;
		if (!(rs->dirty[b >> 3] & (1u << (b & 7))))
			continue;
		uint64_t start = b;
		uint32_t n = 0;
		while (b < rs->nblocks && n < RS_CHUNK_BLOCKS && (rs->dirty[b >> 3] & (1u << (b & 7)))) {
			rs->dirty[b >> 3] &= (uint8_t)~(1u << (b & 7));
			rs->ndirty--;
			b++;
			n++;
		}
		scanned += n - 1;
		b--;
		rd->b[rd->nruns] = start;
		rd->n[rd->nruns++] = n;
		bytes += (uint64_t)n * TDO_BLOCK_SIZE;
	}
	rs->cursor = b;
	if (!rd->nruns) {
		free(rd);
		return false;
	}
	rs->tokens -= bytes < rs->tokens ? bytes : rs->tokens;
	v->io_active++;
	rs->busy++;
	if (tdo_engine_flush(v->vt->e, rs_round_flushed, rd)) {
		v->io_active--;
		rs->busy--;
		free(rd);
		rs_abort(v, rs->rep, "cannot flush");
	}
	return true;
}

static void rs_pump(struct vvol *v, struct resync *rs)
{
	if (v->rs[rs->rep] != rs || rs->phase == 0 || rs->busy)
		return;
	if (rs->phase == RS_COPY) {
		rs_refill(v->vt, rs);
		if (rs->ndirty && rs->unacked < RS_WINDOW && rs->tokens >= TDO_BLOCK_SIZE) {
			rs_take_round(v, rs);
			return;
		}
		if (rs->ndirty || rs->unacked)
			return; /* the tick or an acknowledgement comes back here */
		/* hold new writes, let those in flight finish, then the rest */
		rs->phase = RS_FINAL;
		if (!rs->gated) {
			rs->gated = true;
			v->gate++;
		}
	}
	if (rs->phase == RS_FINAL) {
		if (!tdo_list_empty(&v->inflight))
			return; /* local_write_done comes back */
		if (rs->ndirty) {
			rs->tokens = RS_ROUND_BYTES * 2ull; /* the last stretch is not rate-limited: writes wait on it */
			rs_take_round(v, rs);
			return;
		}
		if (rs->unacked)
			return;
		rs->phase = RS_WAIT_END;
		rs_send(v, rs, TDO_RM_RS_DONE, v->next_lsn);
	}
}

static void rs_in_sync_done(struct vvol *v, int status, const char *why, void *arg)
{
	int rep = (int)(intptr_t)arg;
	struct resync *rs = v->rs[rep];
	if (status)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: %s caught up but the change failed: %s", v->conf.vc_name,
		        v->conf.vc_rep[rep], why ? why : tdo_strerror(status));
	else if (rs)
		tdo_log(TDO_LOG_INFO, "vtier", "%s: %s in sync after copying %" PRIu64 " blocks in %.1f s", v->conf.vc_name,
		        v->conf.vc_rep[rep], rs->copied, (double)(tdo_now_usec() - rs->started_usec) / 1e6);
	if (rs)
		rs_free(v, rep); /* opens the gate: held writes now go to the replica too */
}

static void on_rs_ack(struct vvol *v, struct resync *rs, const struct tdo_rm_ack *a)
{
	if (a->ak_status) {
		rs_abort(v, rs->rep, "the replica could not apply a copy");
		return;
	}
	rs->unacked -= a->ak_id < rs->unacked ? a->ak_id : rs->unacked;
	rs_pump(v, rs);
}

static void on_rs_end(struct vvol *v, struct resync *rs, const struct tdo_rm_rs *m)
{
	if (rs->phase != RS_WAIT_END || m->rs_status) {
		rs_abort(v, rs->rep, "the replica gave up");
		return;
	}
	rs->phase = RS_PROPOSE;
	if (!queue_state(v, rs->rep, TDO_REP_IN_SYNC, rs_in_sync_done))
		rs_abort(v, rs->rep, "out of memory");
}

static void catching_up_done(struct vvol *v, int status, const char *why, void *arg)
{
	(void)why;
	int rep = (int)(intptr_t)arg;
	if (!status && v->primary && v->conf.vc_state[rep] == TDO_REP_CATCHING_UP)
		rs_start(v, rep);
}

/* ---- resync: the replica's side ---- */

static void rs_reply(struct tdo_vtier *vt, int peer, struct vvol *v, uint16_t type, int status, uint64_t lsn,
                     uint32_t log_epoch)
{
	struct tdo_rm_rs m = { .rs_epoch = v->conf.vc_epoch, .rs_status = status, .rs_lsn = lsn,
	                       .rs_log_epoch = log_epoch };
	snprintf(m.rs_name, sizeof(m.rs_name), "%s", v->conf.vc_name);
	vsend(vt, peer, type, &m, sizeof(m), NULL, 0);
}

static bool from_primary(struct tdo_vtier *vt, struct vvol *v, int peer, uint32_t epoch)
{
	return v && !v->conf.vc_deleted && epoch == v->conf.vc_epoch &&
	       !strcmp(tdo_cluster_peer_id(vt->c, peer), v->conf.vc_rep[v->conf.vc_primary]);
}

struct map_ctx {
	struct tdo_vtier *vt;
	int peer;
	struct vvol *v;
	uint64_t bound;
	struct tdo_rm_run *runs;
	uint64_t n;
};

static void map_flush(struct map_ctx *x, bool last)
{
	struct tdo_rm_rs m = { .rs_epoch = x->v->conf.vc_epoch, .rs_last = last, .rs_nruns = x->n };
	snprintf(m.rs_name, sizeof(m.rs_name), "%s", x->v->conf.vc_name);
	vsend(x->vt, x->peer, TDO_RM_RS_MAP, &m, sizeof(m), x->runs,
	                 (uint32_t)(x->n * sizeof(struct tdo_rm_run)));
	x->n = 0;
}

static int map_add(void *arg, uint64_t block, uint64_t lsn, unsigned state)
{
	(void)state;
	struct map_ctx *x = arg;
	uint32_t kind = lsn > x->bound ? TDO_RUN_SUSPECT : TDO_RUN_ALLOC;
	if (x->n) {
		struct tdo_rm_run *p = &x->runs[x->n - 1];
		if (p->ru_kind == kind && p->ru_block + p->ru_count == block && p->ru_count < UINT32_MAX) {
			p->ru_count++;
			return 0;
		}
	}
	if (x->n == RS_MAP_RUNS)
		map_flush(x, false);
	x->runs[x->n++] = (struct tdo_rm_run){ block, 1, kind };
	return 0;
}

struct rs_fin {
	struct tdo_vtier *vt;
	char name[TDO_NAME_MAX + 1];
	int peer;
	uint64_t lsn;
};

/* The end of the resync into this copy is stored (or not): tell the primary. */
static void rs_fin_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct rs_fin *f = arg;
	struct vvol *v = vt->stopping ? NULL : find_vol(vt, f->name);
	if (v) {
		tdo_log(status ? TDO_LOG_WARN : TDO_LOG_INFO, "vtier", "%s: resync into this copy %s at LSN %" PRIu64,
		        f->name, status ? "failed" : "complete", f->lsn);
		rs_reply(vt, f->peer, v, TDO_RM_RS_END, status ? -EIO : 0, f->lsn, 0);
	}
	free(f);
}

static void rs_fin_done(void *arg, int status)
{
	struct rs_fin *f = arg;
	struct vvol *v = find_vol(f->vt, f->name);
	if (v && !status) {
		v->rs_active = false;
		v->expect_lsn = f->lsn + 1;
		if (!state_store(f->vt, rs_fin_stored, f))
			return;
		status = -ENOMEM;
	}
	rs_fin_stored(f->vt, status, f);
}

static void rs_replica_done(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	int peer = v->rs_done_peer;
	v->rs_done_peer = -1;
	struct rs_fin *f = calloc(1, sizeof(*f));
	if (!f) {
		rs_reply(vt, peer, v, TDO_RM_RS_END, -ENOMEM, 0, 0);
		return;
	}
	f->vt = vt;
	f->peer = peer;
	f->lsn = v->rs_done_lsn;
	snprintf(f->name, sizeof(f->name), "%s", v->conf.vc_name);
	int rc = tdo_vol_set_lsn(vt->e, v->conf.vc_name, f->lsn, v->conf.vc_epoch, rs_fin_done, f);
	if (rc) {
		free(f);
		rs_reply(vt, peer, v, TDO_RM_RS_END, rc, 0, 0);
	}
}

struct rs_begin {
	struct vvol *v;
	int peer;
};

/* This copy is stored as under resync (or not): answer the primary. */
static void rs_begin_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct rs_begin *b = arg;
	struct vvol *v = b->v;
	int peer = b->peer;
	free(b);
	if (vt->stopping)
		return;
	v->rs_storing = false;
	if (status) {
		v->rs_active = false;
		rs_reply(vt, peer, v, TDO_RM_RS_END, -EIO, 0, 0);
	} else
		rs_reply(vt, peer, v, TDO_RM_RS_STATE, 0, v->rs_lsn, v->rs_epoch);
}

static void on_rs_replica(struct tdo_vtier *vt, int peer, uint16_t type, const struct tdo_rm_rs *m)
{
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(m->rs_name, name))
		return;
	struct vvol *v = find_vol(vt, name);
	if (!from_primary(vt, v, peer, m->rs_epoch) || v->local_id < 0 || v->my_rep < 0) {
		if (v) {
			if (m->rs_epoch < v->conf.vc_epoch)
				send_conf(vt, peer, &v->conf, true);
			rs_reply(vt, peer, v, TDO_RM_RS_END, -ESTALE, 0, 0);
		}
		return;
	}
	switch (type) {
	case TDO_RM_RS_BEGIN:
		if (!v->rs_active) {
			/* what is durable here: the writes still in flight may never be */
			struct tdo_vol_info vi;
			if (tdo_vol_lookup(vt->e, v->conf.vc_name, &vi)) {
				rs_reply(vt, peer, v, TDO_RM_RS_END, TDO_ENOVOL, 0, 0);
				return;
			}
			v->rs_lsn = vi.durable_lsn;
			v->rs_epoch = vi.durable_epoch;
			v->rs_active = true;
			v->rs_storing = true;
			v->expect_lsn = 0;
			struct rs_begin *b = calloc(1, sizeof(*b));
			if (b) {
				b->v = v;
				b->peer = peer;
			}
			if (!b || state_store(vt, rs_begin_stored, b)) {
				free(b);
				v->rs_active = v->rs_storing = false;
				rs_reply(vt, peer, v, TDO_RM_RS_END, -ENOMEM, 0, 0);
			}
			return;
		}
		if (!v->rs_storing) /* else the store in flight answers */
			rs_reply(vt, peer, v, TDO_RM_RS_STATE, 0, v->rs_lsn, v->rs_epoch);
		return;
	case TDO_RM_RS_SCAN: {
		struct map_ctx x = { vt, peer, v, m->rs_lsn, calloc(RS_MAP_RUNS, sizeof(struct tdo_rm_run)), 0 };
		if (!x.runs) {
			rs_reply(vt, peer, v, TDO_RM_RS_END, -ENOMEM, 0, 0);
			return;
		}
		tdo_engine_scan(vt->e, (uint32_t)v->local_id, 0, map_add, &x);
		map_flush(&x, true);
		free(x.runs);
		return;
	}
	case TDO_RM_RS_DONE:
		if (!v->rs_active) {
			rs_reply(vt, peer, v, TDO_RM_RS_END, -EILSEQ, 0, 0);
			return;
		}
		v->rs_done_peer = peer;
		v->rs_done_lsn = m->rs_lsn;
		if (v->rs_pending == 0)
			rs_replica_done(v);
		return;
	}
}

/* ---- configurations from peers ---- */

static void vconf_ack(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *c, bool ok, const char *why,
                      const struct tdo_rm_vconf *mine)
{
	struct tdo_rm_vconf_ack a = { .va_epoch = c->vc_epoch, .va_ok = ok, .va_version = c->vc_version };
	memcpy(a.va_name, c->vc_name, sizeof(a.va_name));
	snprintf(a.va_why, sizeof(a.va_why), "%s", why ? why : "");
	vsend(vt, peer, TDO_RM_VCONF_ACK, &a, sizeof(a), mine, mine ? sizeof(*mine) : 0);
}

/* Would this node take C? NULL, or why not. */
static const char *vconf_refusal(struct tdo_vtier *vt, struct vvol *v, const struct tdo_rm_vconf *c)
{
	(void)vt;
	if (!v)
		return NULL;
	const struct tdo_rm_vconf *cur = conf_want(v);
	if (!conf_newer(c, cur))
		return "not newer than this node's configuration";
	/* a proposal that changes the primary needs it in-sync here; a sync
	 * (what another node holds in force) is taken when newer: this node's
	 * own copy may hold a change that never came into force */
	if (!c->vc_sync && !c->vc_deleted && !cur->vc_deleted && cur->vc_version &&
	    strcmp(c->vc_rep[c->vc_primary], cur->vc_rep[cur->vc_primary])) {
		int i = rep_index(cur, c->vc_rep[c->vc_primary]);
		if (i < 0 || cur->vc_state[i] != TDO_REP_IN_SYNC)
			return "the new primary is not in-sync here";
	}
	return NULL;
}

struct vconf_store {
	struct vvol *v;
	int peer;
	struct tdo_rm_vconf c;      /* as received (vc_sync: no answer wanted) */
};

/* A peer's configuration is stored here (or not): take it, and answer. */
static void vconf_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct vconf_store *x = arg;
	struct vvol *v = x->v;
	struct tdo_rm_vconf c = x->c;
	int peer = x->peer;
	free(x);
	if (vt->stopping)
		return;
	bool sync = c.vc_sync;
	c.vc_sync = 0;
	unstage(v, &c);
	if (status) {
		if (!sync)
			vconf_ack(vt, peer, &c, false, "cannot store the state file", NULL);
		return;
	}
	if (conf_newer(&c, &v->conf))
		adopt(v, &c, true);
	if (!sync && v->creating) {
		v->ack_peer = peer; /* answered once the copy exists */
		v->ack_conf = c;
	} else if (!sync)
		vconf_ack(vt, peer, &c, true, NULL, NULL);
	if (v->prop)
		prop_check(v);
	fwd_retry(vt);
}

static void on_vconf(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *in)
{
	struct tdo_rm_vconf c = *in;
	if (!conf_valid(&c)) {
		tdo_cluster_drop(vt->c, peer, "an invalid volume configuration");
		return;
	}
	char name[TDO_NAME_MAX + 1];
	wire_name(c.vc_name, name);
	struct vvol *v = find_vol(vt, name);
	const char *why = vconf_refusal(vt, v, &c);
	if (why) {
		if (!c.vc_sync)
			vconf_ack(vt, peer, &c, false, why, conf_want(v));
		else if (conf_newer(conf_want(v), &c))
			send_conf(vt, peer, conf_want(v), true); /* ours is newer: have it */
		return;
	}
	if (!v) {
		struct tdo_rm_vconf none = { .vc_deleted = 1 }; /* an empty tombstone until stored */
		snprintf(none.vc_name, sizeof(none.vc_name), "%s", name);
		v = vol_new(vt, &none);
	}
	struct vconf_store *x = v ? calloc(1, sizeof(*x)) : NULL;
	if (!x) {
		if (!c.vc_sync)
			vconf_ack(vt, peer, &c, false, "out of memory", NULL);
		return;
	}
	x->v = v;
	x->peer = peer;
	x->c = c;
	if (v->prop)
		v->prop->newer_seen = true; /* a newer configuration ends our own proposal */
	v->want = c;
	v->want.vc_sync = 0;
	v->staged = true;
	if (state_store(vt, vconf_stored, x)) {
		unstage(v, &v->want);
		free(x);
		if (!c.vc_sync)
			vconf_ack(vt, peer, &c, false, "out of memory", NULL);
	}
}

static void on_vconf_ack(struct tdo_vtier *vt, int peer, const void *pl, uint32_t len)
{
	struct tdo_rm_vconf_ack a;
	memcpy(&a, pl, sizeof(a));
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(a.va_name, name))
		return;
	struct vvol *v = find_vol(vt, name);
	if (!v || !v->prop || v->prop->conf.vc_epoch != a.va_epoch || v->prop->conf.vc_version != a.va_version)
		return;
	struct proposal *p = v->prop;
	uint32_t bit = 1u << peer;
	if ((p->acked | p->nacked) & bit)
		return;
	if (a.va_ok) {
		p->acked |= bit;
		p->have++;
	} else {
		p->nacked |= bit;
		a.va_why[sizeof(a.va_why) - 1] = 0;
		tdo_log(TDO_LOG_WARN, "vtier", "%s: %s refused version %" PRIu64 ": %s", name,
		        tdo_cluster_peer_id(vt->c, peer), a.va_version, a.va_why);
		if (len == sizeof(a) + sizeof(struct tdo_rm_vconf)) {
			struct tdo_rm_vconf theirs;
			memcpy(&theirs, (const char *)pl + sizeof(a), sizeof(theirs));
			if (conf_valid(&theirs) && conf_newer(&theirs, &p->prev) &&
			    (theirs.vc_epoch > p->conf.vc_epoch ||
			     (theirs.vc_epoch == p->conf.vc_epoch && theirs.vc_version >= p->conf.vc_version)))
				p->newer_seen = true;
		}
	}
	prop_check(v);
	/* a refusal that showed a newer configuration: take it */
	if (!a.va_ok && len == sizeof(a) + sizeof(struct tdo_rm_vconf)) {
		struct tdo_rm_vconf theirs;
		memcpy(&theirs, (const char *)pl + sizeof(a), sizeof(theirs));
		theirs.vc_sync = 1;
		if (conf_valid(&theirs))
			on_vconf(vt, peer, &theirs);
	}
}

/* ---- verify: checksums of regions ---- */

struct sum_job {
	struct tdo_vtier *vt;
	char name[TDO_NAME_MAX + 1];
	uint64_t region, first, count, done;
	uint64_t *sums;
	void *buf;
	int status;
	/* a local computation answers either a peer or the verify job */
	int reply_peer;
	uint64_t reply_id;
	struct verify *ver;
	int ver_slot;
};

struct verify {
	struct tdo_vtier *vt;
	char name[TDO_NAME_MAX + 1];
	uint64_t region, count, id;
	int nrep, pending;
	char node[TDO_REP_MAX][TDO_NODE_ID_MAX + 1];
	uint64_t *sums[TDO_REP_MAX];
	int status[TDO_REP_MAX];
	tdo_vt_verify_cb cb;
	void *arg;
	uint64_t deadline_usec;
	struct tdo_list link;
};

static void verify_slot_done(struct verify *ver, int slot, int status, uint64_t *sums);

static void sum_step(struct sum_job *j);

static void sum_read_done(void *arg, int status)
{
	struct sum_job *j = arg;
	struct vvol *v = find_vol(j->vt, j->name);
	if (v)
		v->io_active--;
	if (status) {
		j->status = status;
		j->done = j->count;
	} else {
		uint64_t off = (j->first + j->done) * j->region;
		uint64_t len = v && off + j->region > v->conf.vc_size ? v->conf.vc_size - off : j->region;
		j->sums[j->done++] = tdo_csum(j->buf, len);
	}
	sum_step(j);
}

static void sum_finish(struct sum_job *j)
{
	if (j->ver) {
		verify_slot_done(j->ver, j->ver_slot, j->status, j->status ? NULL : j->sums);
		if (j->status)
			free(j->sums);
	} else {
		struct tdo_rm_sum m = { .sm_id = j->reply_id, .sm_region = j->region, .sm_first = j->first,
		                        .sm_count = j->status ? 0 : j->count, .sm_status = j->status };
		snprintf(m.sm_name, sizeof(m.sm_name), "%s", j->name);
		vsend(j->vt, j->reply_peer, TDO_RM_SUM_REP, &m, sizeof(m), j->sums,
		                 j->status ? 0 : (uint32_t)(j->count * sizeof(uint64_t)));
		free(j->sums);
	}
	free(j->buf);
	free(j);
}

static void sum_step(struct sum_job *j)
{
	struct vvol *v = find_vol(j->vt, j->name);
	if (j->done == j->count || !v || v->local_id < 0) {
		if (j->done < j->count && !j->status)
			j->status = TDO_ENOVOL;
		sum_finish(j);
		return;
	}
	uint64_t off = (j->first + j->done) * j->region;
	uint64_t len = off + j->region > v->conf.vc_size ? v->conf.vc_size - off : j->region;
	v->io_active++;
	int rc = tdo_engine_read(j->vt->e, (uint32_t)v->local_id, off, (uint32_t)len, j->buf, sum_read_done, j);
	if (rc) {
		v->io_active--;
		j->status = rc;
		sum_finish(j);
	}
}

static void sum_read_done_first(void *arg, int status)
{
	struct sum_job *j = arg;
	struct vvol *v = find_vol(j->vt, j->name);
	if (v)
		v->io_active--;
	if (status) {
		j->status = status;
		sum_finish(j);
		return;
	}
	sum_step(j);
}

static int sum_start(struct tdo_vtier *vt, const char *name, uint64_t region, uint64_t first, uint64_t count,
                     int reply_peer, uint64_t reply_id, struct verify *ver, int slot)
{
	struct vvol *v = find_vol(vt, name);
	if (!v || v->local_id < 0)
		return TDO_ENOVOL;
	uint64_t nreg = (v->conf.vc_size + region - 1) / region;
	if (region == 0 || region > (8u << 20) || region % TDO_SECTOR_SIZE || first > nreg || count > nreg - first ||
	    count > SUM_MAX_REGIONS)
		return -EINVAL;
	struct sum_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->vt = vt;
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->region = region;
	j->first = first;
	j->count = count;
	j->reply_peer = reply_peer;
	j->reply_id = reply_id;
	j->ver = ver;
	j->ver_slot = slot;
	j->sums = calloc(count ? count : 1, sizeof(uint64_t));
	if (!j->sums || posix_memalign(&j->buf, 4096, region)) {
		free(j->sums);
		free(j);
		return -ENOMEM;
	}
	/* the first read starts from the loop, never inside the caller */
	v->io_active++;
	int rc = tdo_engine_flush(vt->e, sum_read_done_first, j);
	if (rc) {
		v->io_active--;
		free(j->sums);
		free(j->buf);
		free(j);
	}
	return rc;
}

static void on_sum(struct tdo_vtier *vt, int peer, const struct tdo_rm_sum *m)
{
	char name[TDO_NAME_MAX + 1];
	if (!wire_name(m->sm_name, name))
		return;
	int rc = sum_start(vt, name, m->sm_region, m->sm_first, m->sm_count, peer, m->sm_id, NULL, 0);
	if (rc) {
		struct tdo_rm_sum r = *m;
		r.sm_count = 0;
		r.sm_status = rc;
		vsend(vt, peer, TDO_RM_SUM_REP, &r, sizeof(r), NULL, 0);
	}
}

static void verify_finish(struct verify *ver)
{
	tdo_list_del(&ver->link);
	struct tdo_verify_result *res = calloc(1, sizeof(*res));
	int ok = 0, bad = 0, ref = -1;
	for (int i = 0; i < ver->nrep; i++) {
		if (ver->status[i])
			bad++;
		else if (ok++ == 0)
			ref = i;
	}
	if (res) {
		snprintf(res->name, sizeof(res->name), "%s", ver->name);
		res->region_bytes = ver->region;
		res->regions = ver->count;
		res->nrep = ver->nrep;
		for (int i = 0; i < ver->nrep; i++) {
			snprintf(res->node[i], sizeof(res->node[i]), "%s", ver->node[i]);
			res->status[i] = ver->status[i];
		}
		for (uint64_t r = 0; ref >= 0 && r < ver->count; r++) {
			bool same = true;
			for (int i = 0; i < ver->nrep; i++)
				if (!ver->status[i] && ver->sums[i][r] != ver->sums[ref][r])
					same = false;
			if (same)
				continue;
			if (res->ndiffs < TDO_VERIFY_MAX_DIFFS) {
				struct tdo_verify_diff *d = &res->diffs[res->ndiffs++];
				d->offset = r * ver->region;
				d->length = ver->region;
				for (int i = 0; i < ver->nrep; i++)
					if (!ver->status[i])
						d->sum[i] = ver->sums[i][r];
			}
			res->differing++;
		}
		res->identical = res->differing == 0 && bad == 0 && ok >= 2;
	}
	int st = 0;
	char msg[200] = "";
	if (!res) {
		st = -ENOMEM;
		snprintf(msg, sizeof(msg), "out of memory");
	} else if (bad) {
		st = -EIO;
		snprintf(msg, sizeof(msg), "%d of %d replicas could not be checked", bad, ver->nrep);
	}
	ver->cb(ver->arg, st, msg[0] ? msg : NULL, res);
	free(res);
	for (int i = 0; i < ver->nrep; i++)
		free(ver->sums[i]);
	free(ver);
}

static void verify_slot_done(struct verify *ver, int slot, int status, uint64_t *sums)
{
	if (ver->sums[slot] || ver->status[slot])
		return;
	ver->status[slot] = status;
	ver->sums[slot] = sums;
	if (--ver->pending == 0)
		verify_finish(ver);
}

static void on_sum_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_sum *m, const void *data, uint32_t dlen)
{
	for (struct tdo_list *l = vt->sums.next; l != &vt->sums; l = l->next) {
		struct verify *ver = tdo_list_item(l, struct verify, link);
		if (ver->id != m->sm_id)
			continue;
		for (int i = 0; i < ver->nrep; i++) {
			if (strcmp(ver->node[i], tdo_cluster_peer_id(vt->c, peer)))
				continue;
			if (m->sm_status || m->sm_count != ver->count || dlen != ver->count * sizeof(uint64_t)) {
				verify_slot_done(ver, i, m->sm_status ? m->sm_status : -EPROTO, NULL);
				return;
			}
			uint64_t *sums = malloc(dlen ? dlen : 1);
			if (!sums) {
				verify_slot_done(ver, i, -ENOMEM, NULL);
				return;
			}
			memcpy(sums, data, dlen);
			verify_slot_done(ver, i, 0, sums);
			return;
		}
		return;
	}
}

int tdo_vtier_verify(struct tdo_vtier *vt, const char *name, tdo_vt_verify_cb cb, void *arg, char *err,
                     size_t errlen)
{
	struct vvol *v = live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	struct verify *ver = calloc(1, sizeof(*ver));
	if (!ver)
		return -ENOMEM;
	ver->vt = vt;
	snprintf(ver->name, sizeof(ver->name), "%s", name);
	ver->region = 1u << 20;
	while ((v->conf.vc_size + ver->region - 1) / ver->region > SUM_MAX_REGIONS)
		ver->region *= 2;
	ver->count = (v->conf.vc_size + ver->region - 1) / ver->region;
	ver->id = ++vt->next_sum_id;
	ver->cb = cb;
	ver->arg = arg;
	ver->nrep = (int)v->conf.vc_nrep;
	ver->pending = ver->nrep;
	ver->deadline_usec = tdo_now_usec() + 600 * 1000000ull;
	tdo_list_add_tail(&vt->sums, &ver->link);
	for (int i = 0; i < ver->nrep; i++)
		snprintf(ver->node[i], sizeof(ver->node[i]), "%s", v->conf.vc_rep[i]);
	for (int i = 0; i < ver->nrep; i++) {
		int peer = rep_peer(v, i);
		if (peer < 0 && !strcmp(ver->node[i], vt->me)) {
			int rc = sum_start(vt, name, ver->region, 0, ver->count, -1, 0, ver, i);
			if (rc)
				ver->status[i] = rc, ver->pending--;
			continue;
		}
		struct tdo_rm_sum m = { .sm_id = ver->id, .sm_region = ver->region, .sm_first = 0, .sm_count = ver->count };
		snprintf(m.sm_name, sizeof(m.sm_name), "%s", name);
		if (vsend(vt, peer, TDO_RM_SUM, &m, sizeof(m), NULL, 0))
			ver->status[i] = -ENOTCONN, ver->pending--;
	}
	if (ver->pending == 0) {
		/* nothing went out: answer from the loop, not inside this call */
		ver->deadline_usec = 0;
	}
	return 0;
}

/* ---- promote ---- */

struct promote {
	struct tdo_vtier *vt;
	uint64_t id;
	int peer;                   /* -1: this node promotes itself */
	uint64_t from_id;           /* asked by a peer: answer it */
	char name[TDO_NAME_MAX + 1];
	tdo_vt_promote_cb cb;
	void *arg;
	uint64_t deadline_usec;
	struct tdo_list link;
};

static void promote_reply(struct tdo_vtier *vt, int peer, uint64_t id, const char *name, int status,
                          uint32_t epoch, const char *why)
{
	struct tdo_rm_promote m = { .pm_id = id, .pm_status = status, .pm_epoch = epoch };
	snprintf(m.pm_name, sizeof(m.pm_name), "%s", name);
	snprintf(m.pm_why, sizeof(m.pm_why), "%s", why ? why : "");
	vsend(vt, peer, TDO_RM_PROMOTE_REP, &m, sizeof(m), NULL, 0);
}

static void promote_done(struct vvol *v, int status, const char *why, void *arg)
{
	struct promote *pm = arg;
	char msg[200];
	if (!status)
		snprintf(msg, sizeof(msg), "%s is primary of '%s' at epoch %u", v->vt->me, v->conf.vc_name, v->conf.vc_epoch);
	else
		snprintf(msg, sizeof(msg), "%s", why ? why : tdo_strerror(status));
	if (pm->peer >= 0)
		promote_reply(v->vt, pm->peer, pm->from_id, v->conf.vc_name, status, v->conf.vc_epoch, msg);
	else
		pm->cb(pm->arg, status, msg, v->conf.vc_epoch);
	free(pm);
}

/* Promote this node; PM says whom to answer. */
static int promote_self(struct tdo_vtier *vt, struct vvol *v, struct promote *pm, char *err, size_t errlen)
{
	int me = rep_index(&v->conf, vt->me);
	if (me < 0) {
		snprintf(err, errlen, "node '%s' holds no copy of '%s'", vt->me, v->conf.vc_name);
		return -EINVAL;
	}
	if (v->primary) {
		snprintf(err, errlen, "node '%s' is already the primary of '%s'", vt->me, v->conf.vc_name);
		return -EALREADY;
	}
	if (v->conf.vc_state[me] != TDO_REP_IN_SYNC || v->rs_active) {
		snprintf(err, errlen, "node '%s' is %s for '%s': only an in-sync replica can be promoted", vt->me,
		         v->rs_active ? "catching up" : state_name(v->conf.vc_state[me]), v->conf.vc_name);
		return -EINVAL;
	}
	struct change *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
	ch->kind = CH_PROMOTE;
	ch->done = promote_done;
	ch->arg = pm;
	queue_change(v, ch);
	return 0;
}

static void on_promote(struct tdo_vtier *vt, int peer, const struct tdo_rm_promote *m)
{
	char name[TDO_NAME_MAX + 1], err[160] = "";
	if (!wire_name(m->pm_name, name))
		return;
	struct vvol *v = find_vol(vt, name);
	int rc = TDO_ENOVOL;
	struct promote *pm = NULL;
	if (v && !v->conf.vc_deleted) {
		pm = calloc(1, sizeof(*pm));
		if (!pm)
			rc = -ENOMEM;
		else {
			pm->vt = vt;
			pm->peer = peer;
			pm->from_id = m->pm_id;
			rc = promote_self(vt, v, pm, err, sizeof(err));
		}
	} else
		snprintf(err, sizeof(err), "no volume '%s' here", name);
	if (rc) {
		free(pm);
		promote_reply(vt, peer, m->pm_id, name, rc, v ? v->conf.vc_epoch : 0, err);
	}
}

static void on_promote_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_promote *m)
{
	for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes; l = l->next) {
		struct promote *pm = tdo_list_item(l, struct promote, link);
		if (pm->id != m->pm_id || pm->peer != peer)
			continue;
		tdo_list_del(&pm->link);
		char why[sizeof(m->pm_why) + 1];
		memcpy(why, m->pm_why, sizeof(m->pm_why));
		why[sizeof(m->pm_why)] = 0;
		pm->cb(pm->arg, m->pm_status, why, m->pm_epoch);
		free(pm);
		return;
	}
}

int tdo_vtier_promote(struct tdo_vtier *vt, const char *name, const char *node, tdo_vt_promote_cb cb, void *arg,
                      char *err, size_t errlen)
{
	struct vvol *v = live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	struct promote *pm = calloc(1, sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	pm->vt = vt;
	pm->cb = cb;
	pm->arg = arg;
	snprintf(pm->name, sizeof(pm->name), "%s", name);
	if (!strcmp(node, vt->me)) {
		pm->peer = -1;
		int rc = promote_self(vt, v, pm, err, errlen);
		if (rc)
			free(pm);
		return rc;
	}
	int peer = tdo_cluster_peer_index(vt->c, node);
	if (peer < 0) {
		snprintf(err, errlen, "no node '%s' in this cluster", node);
		free(pm);
		return -EINVAL;
	}
	pm->peer = peer;
	pm->id = ++vt->next_pm_id;
	pm->deadline_usec = tdo_now_usec() + 10 * 1000000ull;
	struct tdo_rm_promote m = { .pm_id = pm->id };
	snprintf(m.pm_name, sizeof(m.pm_name), "%s", name);
	if (vsend(vt, peer, TDO_RM_PROMOTE, &m, sizeof(m), NULL, 0)) {
		snprintf(err, errlen, "node '%s' is not reachable", node);
		free(pm);
		return -ENOTCONN;
	}
	tdo_list_add_tail(&vt->promotes, &pm->link);
	return 0;
}

/* ---- the tick, and the cluster's hooks ---- */

static void vol_tick(struct tdo_vtier *vt, struct vvol *v, uint64_t now)
{
	if (v->prop && !v->prop->storing && now > v->prop->deadline_usec)
		prop_finish(v, -ETIMEDOUT, "no majority of the nodes answered in time");
	if (!v->prop && tdo_list_empty(&v->changes))
		reconcile(v);
	if (!v->primary)
		return;
	uint64_t tmo = (uint64_t)vt->o.ack_timeout_ms * 1000;
	for (struct tdo_list *l = v->inflight.next; l != &v->inflight; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		if (now - r->sent_usec < tmo)
			break; /* LSN order is age order */
		for (int i = 0; i < (int)v->conf.vc_nrep; i++)
			if (r->wait & (1u << i)) {
				char why[80];
				snprintf(why, sizeof(why), "no acknowledgement of LSN %" PRIu64 " within %u ms", r->lsn,
				         vt->o.ack_timeout_ms);
				mark_out_of_date(v, i, why);
			}
	}
	for (int i = 0; i < (int)v->conf.vc_nrep; i++) {
		if (i == v->my_rep)
			continue;
		if (v->rs[i]) {
			rs_pump(v, v->rs[i]);
			continue;
		}
		int peer = rep_peer(v, i);
		if (peer < 0 || !tdo_cluster_peer_up(vt->c, peer) || v->prop || (v->marking & (1u << i)))
			continue;
		if (v->conf.vc_state[i] == TDO_REP_CATCHING_UP)
			rs_start(v, i);
		else if (v->conf.vc_state[i] == TDO_REP_OUT_OF_DATE)
			queue_state(v, i, TDO_REP_CATCHING_UP, catching_up_done); /* out of memory: the next tick */
	}
}

static void tick_cb(uv_timer_t *t)
{
	struct tdo_vtier *vt = t->data;
	uint64_t now = tdo_now_usec();
	for (struct vvol *v = vt->vols; v; v = v->next)
		vol_tick(vt, v, now);
	fwd_retry(vt);
	for (struct tdo_list *l = vt->sums.next; l != &vt->sums;) {
		struct verify *ver = tdo_list_item(l, struct verify, link);
		l = l->next;
		if (ver->pending == 0)
			verify_finish(ver);
		else if (now > ver->deadline_usec)
			for (int i = 0; i < ver->nrep; i++)
				if (!ver->sums[i] && !ver->status[i] && ver->pending)
					verify_slot_done(ver, i, -ETIMEDOUT, NULL);
	}
	for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes;) {
		struct promote *pm = tdo_list_item(l, struct promote, link);
		l = l->next;
		if (now > pm->deadline_usec) {
			tdo_list_del(&pm->link);
			pm->cb(pm->arg, -ETIMEDOUT, "the node did not answer in time", 0);
			free(pm);
		}
	}
}

static void hook_up(void *arg, int peer)
{
	struct tdo_vtier *vt = arg;
	/* what is in force: a proposal still open is not ours to spread */
	for (struct vvol *v = vt->vols; v; v = v->next) {
		if (v->conf.vc_version)
			send_conf(vt, peer, &v->conf, true);
	}
	fwd_retry(vt);
}

static void hook_down(void *arg, int peer)
{
	struct tdo_vtier *vt = arg;
	const char *id = tdo_cluster_peer_id(vt->c, peer);
	for (struct vvol *v = vt->vols; v; v = v->next) {
		int rep = rep_index(&v->conf, id);
		if (rep < 0)
			continue;
		if (v->rs[rep])
			rs_abort(v, rep, "connection lost");
		if (v->primary && v->conf.vc_state[rep] == TDO_REP_IN_SYNC)
			mark_out_of_date(v, rep, "connection lost");
		if (v->prop && !((v->prop->acked | v->prop->nacked) & (1u << peer))) {
			v->prop->nacked |= 1u << peer;
			prop_check(v);
		}
	}
	for (struct tdo_list *l = vt->fwd_sent.next; l != &vt->fwd_sent;) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		l = l->next;
		if (r->fwd_peer == peer) {
			/* sent to a primary that is gone: send again to whoever is primary (a write is idempotent) */
			tdo_list_del(&r->link);
			r->fwd_peer = -1;
			tdo_list_add_tail(&vt->fwd_wait, &r->link);
		}
	}
	for (struct tdo_list *l = vt->sums.next; l != &vt->sums;) {
		struct verify *ver = tdo_list_item(l, struct verify, link);
		l = l->next;
		for (int i = 0; i < ver->nrep; i++)
			if (!strcmp(ver->node[i], id) && !ver->sums[i] && !ver->status[i])
				ver->status[i] = -ENOTCONN, ver->pending--;
	}
	for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes;) {
		struct promote *pm = tdo_list_item(l, struct promote, link);
		l = l->next;
		if (pm->peer == peer) {
			tdo_list_del(&pm->link);
			pm->cb(pm->arg, -ENOTCONN, "lost the connection to the node", 0);
			free(pm);
		}
	}
}

static void hook_msg(void *arg, int peer, uint16_t type, const void *pl, uint32_t len)
{
	struct tdo_vtier *vt = arg;
	if (vt->stopping)
		return;
	struct vvol *v;
	struct resync *rs;
	switch (type) {
	case TDO_RM_VCONF:
		if (len != sizeof(struct tdo_rm_vconf))
			break;
		{
			struct tdo_rm_vconf c;
			memcpy(&c, pl, sizeof(c));
			on_vconf(vt, peer, &c);
		}
		return;
	case TDO_RM_VCONF_ACK:
		if (len != sizeof(struct tdo_rm_vconf_ack) && len != sizeof(struct tdo_rm_vconf_ack) + sizeof(struct tdo_rm_vconf))
			break;
		on_vconf_ack(vt, peer, pl, len);
		return;
	case TDO_RM_WRITE:
	case TDO_RM_RS_DATA:
	case TDO_RM_FWD: {
		if (len < sizeof(struct tdo_rm_io))
			break;
		struct tdo_rm_io io;
		memcpy(&io, pl, sizeof(io));
		if (io.io_op < TDO_RMOP_READ || io.io_op > TDO_RMOP_HOLE || io.io_len > TDO_RM_MAX_PAYLOAD ||
		    (type != TDO_RM_FWD && (io.io_op == TDO_RMOP_READ || io.io_op == TDO_RMOP_FLUSH)) ||
		    (type != TDO_RM_RS_DATA && io.io_op == TDO_RMOP_HOLE))
			break;
		if (type == TDO_RM_FWD)
			on_fwd(vt, peer, &io, (const char *)pl + sizeof(io), len - (uint32_t)sizeof(io));
		else
			on_write(vt, peer, &io, (const char *)pl + sizeof(io), len - (uint32_t)sizeof(io),
			         type == TDO_RM_RS_DATA);
		return;
	}
	case TDO_RM_WACK:
	case TDO_RM_RS_ACK:
	case TDO_RM_FWD_REP: {
		if (len < sizeof(struct tdo_rm_ack))
			break;
		struct tdo_rm_ack a;
		memcpy(&a, pl, sizeof(a));
		if (type == TDO_RM_FWD_REP) {
			on_fwd_rep(vt, peer, &a, (const char *)pl + sizeof(a), len - (uint32_t)sizeof(a));
			return;
		}
		if (len != sizeof(a))
			break;
		if (type == TDO_RM_WACK) {
			on_wack(vt, peer, &a);
			return;
		}
		struct tdo_rm_rs m = { .rs_epoch = a.ak_epoch };
		memcpy(m.rs_name, a.ak_name, sizeof(m.rs_name));
		if ((rs = rs_of(vt, peer, &m, &v)))
			on_rs_ack(v, rs, &a);
		return;
	}
	case TDO_RM_RS_BEGIN:
	case TDO_RM_RS_SCAN:
	case TDO_RM_RS_DONE:
	case TDO_RM_RS_STATE:
	case TDO_RM_RS_MAP:
	case TDO_RM_RS_END: {
		if (len < sizeof(struct tdo_rm_rs) || (type != TDO_RM_RS_MAP && len != sizeof(struct tdo_rm_rs)))
			break;
		struct tdo_rm_rs m;
		memcpy(&m, pl, sizeof(m));
		if (type == TDO_RM_RS_BEGIN || type == TDO_RM_RS_SCAN || type == TDO_RM_RS_DONE) {
			on_rs_replica(vt, peer, type, &m);
			return;
		}
		if (!(rs = rs_of(vt, peer, &m, &v)))
			return;
		if (type == TDO_RM_RS_STATE)
			on_rs_state(v, rs, &m);
		else if (type == TDO_RM_RS_MAP)
			on_rs_map(v, rs, &m, pl, len);
		else
			on_rs_end(v, rs, &m);
		return;
	}
	case TDO_RM_SUM:
	case TDO_RM_SUM_REP: {
		if (len < sizeof(struct tdo_rm_sum) || (type == TDO_RM_SUM && len != sizeof(struct tdo_rm_sum)))
			break;
		struct tdo_rm_sum m;
		memcpy(&m, pl, sizeof(m));
		if (type == TDO_RM_SUM)
			on_sum(vt, peer, &m);
		else
			on_sum_rep(vt, peer, &m, (const char *)pl + sizeof(m), len - (uint32_t)sizeof(m));
		return;
	}
	case TDO_RM_PROMOTE:
	case TDO_RM_PROMOTE_REP: {
		if (len != sizeof(struct tdo_rm_promote))
			break;
		struct tdo_rm_promote m;
		memcpy(&m, pl, sizeof(m));
		if (type == TDO_RM_PROMOTE)
			on_promote(vt, peer, &m);
		else
			on_promote_rep(vt, peer, &m);
		return;
	}
	}
	char why[80];
	snprintf(why, sizeof(why), "malformed volume message (type %u, %u bytes)", type, len);
	tdo_cluster_drop(vt->c, peer, why);
}

/* ---- start, stop ---- */

int tdo_vtier_start(uv_loop_t *loop, struct tdo_engine *e, struct tdo_cluster *c,
                    const struct tdo_vtier_opts *o, struct tdo_vtier **out, char *err, size_t errlen)
{
	struct tdo_vtier *vt = calloc(1, sizeof(*vt));
	if (!vt)
		return -ENOMEM;
	vt->loop = loop;
	vt->e = e;
	vt->c = c;
	vt->o = *o;
	if (!vt->o.ack_timeout_ms)
		vt->o.ack_timeout_ms = 1000;
	if (!vt->o.resync_rate)
		vt->o.resync_rate = 256ull << 20;
	vt->state_path = o->state_path ? strdup(o->state_path) : NULL;
	snprintf(vt->me_id, sizeof(vt->me_id), "%s", c ? tdo_cluster_node_id(c) : o->node_id && *o->node_id ? o->node_id : "local");
	vt->me = vt->me_id;
	vt->nnodes = tdo_cluster_npeers(c) + 1;
	tdo_list_init(&vt->fwd_sent);
	tdo_list_init(&vt->fwd_wait);
	tdo_list_init(&vt->sums);
	tdo_list_init(&vt->promotes);
	tdo_list_init(&vt->st.next);
	tdo_list_init(&vt->st.cur);
	int rc = o->state_path && !vt->state_path ? -ENOMEM : vt->state_path ? state_load(vt, err, errlen) : 0;
	if (rc) {
		while (vt->vols) {
			struct vvol *v = vt->vols;
			vt->vols = v->next;
			free(v);
		}
		free(vt->state_path);
		free(vt);
		return rc;
	}
	/* the engine's volumes no configuration names: this node's alone */
	struct tdo_vol_info one;
	int n = tdo_vol_list(e, &one, 0);
	struct tdo_vol_info *vi = calloc((size_t)n + 1, sizeof(*vi));
	bool changed = false;
	if (vi) {
		n = tdo_vol_list(e, vi, n);
		for (int i = 0; i < n; i++) {
			struct vvol *v = find_vol(vt, vi[i].name);
			if (v && !v->conf.vc_deleted)
				continue;
			uint32_t epoch = v ? v->conf.vc_epoch + 1 : 1;
			if (vi[i].epoch > epoch)
				epoch = vi[i].epoch; /* never below the epoch of the copy's newest write */
			struct tdo_rm_vconf cf = { .vc_size = vi[i].size, .vc_flags = vi[i].flags,
			                           .vc_epoch = epoch,
			                           .vc_version = v ? v->conf.vc_version + 1 : 1,
			                           .vc_ctime = vi[i].ctime, .vc_nrep = 1, .vc_nhist = 1 };
			snprintf(cf.vc_name, sizeof(cf.vc_name), "%s", vi[i].name);
			snprintf(cf.vc_rep[0], sizeof(cf.vc_rep[0]), "%s", vt->me);
			cf.vc_state[0] = TDO_REP_IN_SYNC;
			cf.vc_hist[0].vh_epoch = cf.vc_epoch;
			cf.vc_hist[0].vh_start_lsn = vi[i].lsn;
			if (v)
				conf_set(v, &cf);
			else
				vol_new(vt, &cf);
			changed = true;
		}
		free(vi);
	}
	if (changed && state_save_now(vt)) {
		snprintf(err, errlen, "cannot write the state file %s", vt->state_path);
		tdo_vtier_free(vt);
		return -EIO;
	}
	for (struct vvol *v = vt->vols; v; v = v->next)
		reconcile(v);
	uv_timer_init(loop, &vt->tick);
	vt->tick.data = vt;
	uv_timer_start(&vt->tick, tick_cb, TICK_MS, TICK_MS);
	struct tdo_cluster_hooks h = { vt, hook_up, hook_down, hook_msg };
	tdo_cluster_set_hooks(c, &h);
	*out = vt;
	return 0;
}

void tdo_vtier_stop(struct tdo_vtier *vt)
{
	if (!vt || vt->stopping)
		return;
	vt->stopping = true;
	struct tdo_cluster_hooks none = { 0 };
	tdo_cluster_set_hooks(vt->c, &none);
	fail_list(&vt->fwd_wait, -ESHUTDOWN);
	fail_list(&vt->fwd_sent, -ESHUTDOWN);
	while (!tdo_list_empty(&vt->sums)) {
		struct verify *ver = tdo_list_item(vt->sums.next, struct verify, link);
		for (int i = 0; i < ver->nrep; i++)
			if (!ver->sums[i] && !ver->status[i])
				ver->status[i] = -ESHUTDOWN;
		ver->pending = 0;
		verify_finish(ver);
	}
	while (!tdo_list_empty(&vt->promotes)) {
		struct promote *pm = tdo_list_item(vt->promotes.next, struct promote, link);
		tdo_list_del(&pm->link);
		pm->cb(pm->arg, -ESHUTDOWN, "the node is stopping", 0);
		free(pm);
	}
	for (struct vvol *v = vt->vols; v; v = v->next) {
		while (v->prop)
			prop_finish(v, -ESHUTDOWN, "the node is stopping");
		while (!tdo_list_empty(&v->changes)) {
			struct change *ch = tdo_list_item(v->changes.next, struct change, link);
			tdo_list_del(&ch->link);
			change_done(v, ch, -ESHUTDOWN, "the node is stopping");
		}
		fail_list(&v->held, -ESHUTDOWN);
		if (v->admin_cb) {
			tdo_vt_cb cb = v->admin_cb;
			v->admin_cb = NULL;
			cb(v->admin_arg, -ESHUTDOWN, "the node is stopping");
		}
		for (int i = 0; i < TDO_REP_MAX; i++)
			if (v->rs[i] && !v->rs[i]->busy)
				rs_free(v, i);
	}
	/* writes that only wait for replicas now: they will not hear */
	for (struct vvol *v = vt->vols; v; v = v->next) {
		struct tdo_list *l = v->inflight.next;
		while (l != &v->inflight) {
			struct vreq *r = tdo_list_item(l, struct vreq, link);
			l = l->next;
			r->wait = 0;
			if (!r->status)
				r->status = -ESHUTDOWN;
			if (r->local_done) {
				tdo_list_del(&r->link);
				req_free_finish(r, r->status);
			}
		}
	}
	uv_close((uv_handle_t *)&vt->tick, NULL);
}

void tdo_vtier_free(struct tdo_vtier *vt)
{
	if (!vt)
		return;
	if (vt->st.busy) {
		vt->free_pending = true; /* st_after frees it */
		return;
	}
	while (!tdo_list_empty(&vt->st.next)) {
		struct st_wait *sw = tdo_list_item(vt->st.next.next, struct st_wait, link);
		tdo_list_del(&sw->link);
		free(sw);
	}
	while (vt->vols) {
		struct vvol *v = vt->vols;
		vt->vols = v->next;
		for (int i = 0; i < TDO_REP_MAX; i++)
			if (v->rs[i]) {
				free(v->rs[i]->dirty);
				free(v->rs[i]);
			}
		free(v->prop);
		free(v);
	}
	free(vt->state_path);
	free(vt);
}

/* ---- the front end's calls ---- */

const char *tdo_vtier_node_id(struct tdo_vtier *vt)
{
	return vt->me;
}

int tdo_vhandle_open(struct tdo_vtier *vt, const char *name, struct tdo_vhandle **out, uint64_t *size)
{
	struct vvol *v = find_vol(vt, name);
	if (!v || !conf_live(&v->conf))
		return TDO_ENOVOL;
	struct tdo_vhandle *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->vt = vt;
	h->v = v;
	h->gen = v->gen;
	*size = v->conf.vc_size;
	*out = h;
	return 0;
}

void tdo_vhandle_close(struct tdo_vhandle *h)
{
	free(h);
}

const char *tdo_vhandle_name(const struct tdo_vhandle *h)
{
	return h->v->conf.vc_name;
}

/* The handle's volume, or NULL once that incarnation is gone. */
static struct vvol *handle_vol(struct tdo_vhandle *h)
{
	struct vvol *v = h->v;
	return v->gen == h->gen && conf_live(&v->conf) ? v : NULL;
}

int tdo_vhandle_io(struct tdo_vhandle *h, int op, unsigned flags, uint64_t off, uint64_t len, void *buf,
                   tdo_done_cb cb, void *arg)
{
	struct tdo_vtier *vt = h->vt;
	struct vvol *v = handle_vol(h);
	if (vt->stopping)
		return -ESHUTDOWN;
	if (!v)
		return TDO_ENOVOL;
	if (op < TDO_RMOP_READ || op > TDO_RMOP_FLUSH || (op != TDO_RMOP_FLUSH && len > TDO_RM_MAX_PAYLOAD - 4096 &&
	                                                  (op == TDO_RMOP_READ || op == TDO_RMOP_WRITE)))
		return -EINVAL;
	struct vreq *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->vt = vt;
	r->v = v;
	r->op = op;
	r->flags = flags;
	r->off = off;
	r->len = len;
	r->buf = buf;
	r->cb = cb;
	r->arg = arg;
	r->from_peer = -1;
	r->fwd_peer = -1;
	snprintf(r->name, sizeof(r->name), "%s", v->conf.vc_name);
	if (v->primary) {
		int rc = primary_io(v, r);
		if (rc)
			free(r);
		return rc;
	}
	r->deadline_usec = tdo_now_usec() + FWD_WAIT_MS * 1000ull;
	fwd_send(vt, r);
	return 0;
}

int tdo_vhandle_map(struct tdo_vhandle *h, uint64_t off, uint64_t len, tdo_map_fn fn, void *arg)
{
	struct vvol *v = handle_vol(h);
	if (!v)
		return TDO_ENOVOL;
	if (off > v->conf.vc_size || len > v->conf.vc_size - off)
		return -EINVAL;
	if (v->primary && v->local_id >= 0)
		return tdo_engine_map(h->vt->e, (uint32_t)v->local_id, off, len, fn, arg);
	return len ? fn(arg, off, len, 0) : 0; /* not the primary: all allocated, which is always safe */
}

static void vol_info(struct vvol *v, struct tdo_vinfo *o)
{
	struct tdo_vtier *vt = v->vt;
	const struct tdo_rm_vconf *c = &v->conf;
	memset(o, 0, sizeof(*o));
	snprintf(o->name, sizeof(o->name), "%s", c->vc_name);
	o->size = c->vc_size;
	o->flags = c->vc_flags;
	o->epoch = c->vc_epoch;
	o->version = c->vc_version;
	o->ctime = c->vc_ctime;
	snprintf(o->primary, sizeof(o->primary), "%s", c->vc_rep[c->vc_primary]);
	o->role = v->primary ? TDO_VROLE_PRIMARY : v->my_rep >= 0 ? TDO_VROLE_REPLICA : TDO_VROLE_NONE;
	o->nrep = c->vc_nrep < TDO_REP_MAX ? c->vc_nrep : TDO_REP_MAX;
	for (uint32_t i = 0; i < o->nrep; i++) {
		struct tdo_vrep_info *r = &o->rep[i];
		snprintf(r->node, sizeof(r->node), "%s", c->vc_rep[i]);
		r->state = c->vc_state[i];
		r->primary = i == c->vc_primary;
		r->down = strcmp(c->vc_rep[i], vt->me) && !tdo_cluster_peer_up(vt->c, rep_peer(v, (int)i));
		struct resync *rs = v->primary ? v->rs[i] : NULL;
		if (!rs)
			continue;
		r->resync = true;
		r->resync_phase = rs->phase == RS_COPY ? TDO_RSP_COPYING : rs->phase == RS_FINAL ? TDO_RSP_FINAL :
		                  rs->phase == RS_WAIT_END || rs->phase == RS_PROPOSE ? TDO_RSP_FINISHING :
		                  TDO_RSP_STARTING;
		r->copied_blocks = rs->copied;
		r->total_blocks = rs->total;
		r->dirty_blocks = rs->ndirty;
	}
	struct tdo_vol_info vi;
	if (v->local_id >= 0 && !tdo_vol_lookup(vt->e, c->vc_name, &vi)) {
		o->local = true;
		o->lsn = v->primary ? v->next_lsn : vi.lsn;
		o->used_bytes = vi.used_bytes;
	}
	o->resync_into = v->rs_active;
}

int tdo_vtier_info(struct tdo_vtier *vt, const char *name, struct tdo_vinfo *out)
{
	struct vvol *v = find_vol(vt, name);
	if (!v || !conf_live(&v->conf))
		return TDO_ENOVOL;
	vol_info(v, out);
	return 0;
}

static int cmp_vol_name(const void *a, const void *b)
{
	return strcmp((*(struct vvol *const *)a)->conf.vc_name, (*(struct vvol *const *)b)->conf.vc_name);
}

int tdo_vtier_list(struct tdo_vtier *vt, struct tdo_vinfo *out, int max)
{
	int n = 0;
	for (struct vvol *v = vt->vols; v; v = v->next)
		n += conf_live(&v->conf);
	if (max <= 0 || n == 0)
		return n;
	struct vvol **all = calloc((size_t)n, sizeof(*all));
	if (!all)
		return -ENOMEM;
	int k = 0;
	for (struct vvol *v = vt->vols; v; v = v->next)
		if (conf_live(&v->conf))
			all[k++] = v;
	qsort(all, (size_t)n, sizeof(*all), cmp_vol_name);
	for (int i = 0; i < n && i < max; i++)
		vol_info(all[i], &out[i]);
	free(all);
	return n;
}

/* ---- administration ---- */

struct admin_op {
	tdo_vt_cb cb;
	void *arg;
};

static void admin_done(struct vvol *v, int status, const char *why, void *arg)
{
	struct admin_op *op = arg;
	if (!status && !v->admin_cb && local_behind(v)) {
		/* in force: answer once this node's copy has followed */
		v->admin_cb = op->cb;
		v->admin_arg = op->arg;
		free(op);
		admin_wait_check(v, 0); /* unless it already could not */
		return;
	}
	op->cb(op->arg, status, why);
	free(op);
}

/* Queue an operator's change of KIND (SIZE for a resize, CONF for a create). */
static int queue_admin(struct vvol *v, int kind, uint64_t size, const struct tdo_rm_vconf *conf, tdo_vt_cb cb,
                       void *arg)
{
	struct change *ch = calloc(1, sizeof(*ch));
	struct admin_op *op = calloc(1, sizeof(*op));
	if (!ch || !op) {
		free(ch);
		free(op);
		return -ENOMEM;
	}
	ch->kind = kind;
	ch->size = size;
	if (conf)
		ch->conf = *conf;
	op->cb = cb;
	op->arg = arg;
	ch->done = admin_done;
	ch->arg = op;
	queue_change(v, ch);
	return 0;
}

/* This node's device can take MORE bytes of volumes (whole blocks). */
static bool local_room(struct tdo_vtier *vt, uint64_t more)
{
	struct tdo_engine_stats st;
	tdo_engine_stats(vt->e, &st);
	uint64_t need = (more + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE * TDO_BLOCK_SIZE;
	return st.vol_bytes + need <= st.capacity;
}

int tdo_vtier_create(struct tdo_vtier *vt, const char *name, uint64_t size, uint32_t flags, int replicas,
                     const char *primary, tdo_vt_cb cb, void *arg, char *err, size_t errlen)
{
	if (!tdo_vol_name_valid(name)) {
		snprintf(err, errlen, "invalid volume name '%s'", name);
		return -EINVAL;
	}
	if (size == 0 || size % TDO_SECTOR_SIZE) {
		snprintf(err, errlen, "size must be a positive multiple of 512 bytes");
		return -EINVAL;
	}
	int maxrep = vt->nnodes < TDO_REP_MAX ? vt->nnodes : TDO_REP_MAX;
	if (replicas == 0)
		replicas = vt->nnodes < 3 ? vt->nnodes : 3;
	if (replicas < 1 || replicas > maxrep) {
		snprintf(err, errlen, "replicas must be 1..%d (the cluster has %d node%s)", maxrep, vt->nnodes,
		         vt->nnodes == 1 ? "" : "s");
		return -EINVAL;
	}
	if (!primary || !*primary)
		primary = vt->me;
	if (strcmp(primary, vt->me) && tdo_cluster_peer_index(vt->c, primary) < 0) {
		snprintf(err, errlen, "no node '%s' in this cluster", primary);
		return -EINVAL;
	}
	struct vvol *v = find_vol(vt, name);
	if (v && !v->conf.vc_deleted && v->conf.vc_version) {
		snprintf(err, errlen, "a volume named '%s' already exists", name);
		return TDO_EVOLEXIST;
	}
	if (v && (v->prop || !tdo_list_empty(&v->changes) || v->local_id >= 0)) {
		snprintf(err, errlen, "volume '%s' is still being deleted", name);
		return -EBUSY;
	}
	struct tdo_rm_vconf c = { .vc_size = size, .vc_flags = flags, .vc_ctime = (uint64_t)time(NULL) };
	snprintf(c.vc_name, sizeof(c.vc_name), "%s", name);
	snprintf(c.vc_rep[c.vc_nrep++], sizeof(c.vc_rep[0]), "%s", primary);
	if (strcmp(primary, vt->me))
		snprintf(c.vc_rep[c.vc_nrep++], sizeof(c.vc_rep[0]), "%s", vt->me);
	for (int i = 0; i < tdo_cluster_npeers(vt->c) && (int)c.vc_nrep < replicas; i++) {
		const char *id = tdo_cluster_peer_id(vt->c, i);
		if (strcmp(id, primary) && tdo_cluster_peer_up(vt->c, i))
			snprintf(c.vc_rep[c.vc_nrep++], sizeof(c.vc_rep[0]), "%s", id);
	}
	if ((int)c.vc_nrep > replicas)
		c.vc_nrep = (uint32_t)replicas; /* this node was not asked to hold a copy */
	if ((int)c.vc_nrep < replicas) {
		snprintf(err, errlen, "%d replicas asked for, but only %u of the %d nodes are reachable", replicas,
		         c.vc_nrep, vt->nnodes);
		return -EAGAIN;
	}
	int pp = tdo_cluster_peer_index(vt->c, primary);
	if (pp >= 0 && !tdo_cluster_peer_up(vt->c, pp)) {
		snprintf(err, errlen, "node '%s' is not reachable", primary);
		return -EAGAIN;
	}
	for (uint32_t i = 0; i < c.vc_nrep; i++)
		c.vc_state[i] = TDO_REP_IN_SYNC;
	if (rep_index(&c, vt->me) >= 0 && !local_room(vt, size)) {
		snprintf(err, errlen, "this node's device cannot hold %" PRIu64 " more bytes of volumes", size);
		return TDO_ENOSPACE;
	}
	if (!v) {
		struct tdo_rm_vconf none = { .vc_deleted = 1 };
		snprintf(none.vc_name, sizeof(none.vc_name), "%s", name);
		if (!(v = vol_new(vt, &none)))
			return -ENOMEM;
	}
	return queue_admin(v, CH_CREATE, 0, &c, cb, arg);
}

int tdo_vtier_delete(struct tdo_vtier *vt, const char *name, tdo_vt_cb cb, void *arg, char *err, size_t errlen)
{
	struct vvol *v = live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	return queue_admin(v, CH_DELETE, 0, NULL, cb, arg);
}

int tdo_vtier_resize(struct tdo_vtier *vt, const char *name, uint64_t size, tdo_vt_cb cb, void *arg, char *err,
                     size_t errlen)
{
	struct vvol *v = live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	if (size == 0 || size % TDO_SECTOR_SIZE) {
		snprintf(err, errlen, "size must be a positive multiple of 512 bytes");
		return -EINVAL;
	}
	if (size > v->conf.vc_size && rep_index(&v->conf, vt->me) >= 0 && !local_room(vt, size - v->conf.vc_size)) {
		snprintf(err, errlen, "this node's device cannot hold %" PRIu64 " more bytes of volumes",
		         size - v->conf.vc_size);
		return TDO_ENOSPACE;
	}
	return queue_admin(v, CH_RESIZE, size, NULL, cb, arg);
}
