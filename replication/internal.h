/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Volume tier internals, grouped by the file that defines them. The
 * public side is testudo/vtier.h; the wire and state file formats are in
 * testudo/repl.h. Everything runs on the daemon's loop thread; the only
 * other thread is the pool's that writes the state file (state.c), and it
 * touches nothing here but a snapshot it was handed.
 *
 * The files:
 *   vtier.c           entry points: start, stop, free, the tick, the
 *                     cluster's up and down hooks, handles, info, list
 *   dispatch.c        the cluster's message hook: a table of length rules
 *   state.c           the state file: load, snapshot, the off-loop writer
 *   vconf.c           the rules of a configuration (pure functions)
 *   config.c          proposals, roles, following a configuration locally
 *   config_peer.c     configurations from peers, and the answers to them
 *   manage.c          the operator's create, delete and resize
 *   write.c           the write path: primary and replica side
 *   forward.c         client requests forwarded to the primary
 *   resync.c          resync, the primary's side
 *   resync_replica.c  resync, the replica's side
 *   verify.c          verify: checksums of regions (SUM, SUM_REP)
 *   promote.c         promote
 */
#ifndef TESTUDO_REPLICATION_INTERNAL_H
#define TESTUDO_REPLICATION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "testudo/cluster.h"
#include "testudo/engine.h"
#include "testudo/list.h"
#include "testudo/repl.h"
#include "testudo/util.h"
#include "testudo/vtier.h"

#define FWD_WAIT_MS     20000        /* a forwarded request waits this long for a primary */
#define VT_HASH_SIZE    1024         /* buckets of vt->vol_hash (TDO_MAX_VOLS volumes a device holds) */

struct tdo_vtier;
struct vvol;

/*
 * A client request through the tier: a front end's (tdo_vhandle_io) or a
 * peer's forwarded one (fwd_on_req, from_peer >= 0).
 *
 * Invariants:
 *  - link is on at most one list: v->inflight (an admitted write on the
 *    primary), v->held (a write parked by the gate), vt->fwd_sent
 *    (forwarded, fwd_peer >= 0) or vt->fwd_wait (waiting for a reachable
 *    primary, fwd_peer == -1); a read or flush in this node's engine is
 *    on none
 *  - cb runs exactly once, from vt_req_finish, which then frees the
 *    request (and buf when own_buf)
 *  - on v->inflight: lsn is set, and the write completes only once
 *    local_done and wait == 0 (wr_complete_ready); a bit of wait is
 *    cleared by that replica's acknowledgement, or by a configuration in
 *    force in which it is not in-sync, never otherwise (a step-down or a
 *    stop clears them all but fails the write)
 */
struct vreq {
	struct tdo_vtier *vt;
	struct vvol *v;             /* never NULL: set at creation; a vvol lives as long as the tier */
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
	struct tdo_list link;
};

/*
 * A change of a volume's configuration, wanted by this node: queued on
 * v->changes, then taken by propose_next into v->prop (p->ch). Its done
 * (may be NULL) runs exactly once, from cfg_change_done, which frees it:
 * refused by the rules, nothing to do, the proposal's end, or the stop.
 */
enum change_kind { CH_STATE, CH_PROMOTE, CH_DELETE, CH_RESIZE, CH_CREATE };
struct change {
	int kind;
	int rep;                    /* CH_STATE: the replica */
	uint32_t state;             /* CH_STATE: its new state */
	uint64_t size;              /* CH_RESIZE */
	struct tdo_rm_vconf conf;   /* CH_CREATE */
	void (*done)(struct vvol *v, int status, const char *why, void *arg);
	void *arg;
	struct tdo_list link;
};

/*
 * A volume's one proposal in flight (v->prop).
 *
 * Invariants:
 *  - conf is newer than prev, the configuration in force when it was made
 *  - acked and nacked are disjoint sets of peer indexes: peers that stored
 *    it, and peers that refused it or were (or went) down
 *  - have == 1 + popcount(acked): this node counts, since it stores the
 *    change once it is in force; need == nnodes / 2 + 1
 *  - it is in force when have >= need and no newer configuration was
 *    seen; then storing is set until this node's state file holds it
 *    (config.c's prop_stored), which makes it conf
 *  - it ends exactly once, in cfg_prop_finish: stored, failed to store,
 *    refused by too many, overtaken (newer_seen), timed out (PROPOSE_MS)
 *    or the stop; while storing, only the end of its store or
 *    tdo_vtier_stop ends it (neither the tick's timeout nor a peer's
 *    answer or loss)
 */
struct proposal {
	struct tdo_rm_vconf conf, prev;  /* proposed; in force when proposed */
	uint32_t acked, nacked;     /* peers (bits) */
	int have, need;
	uint64_t deadline_usec;
	struct change *ch;
	bool newer_seen;            /* someone answered with a newer configuration */
	bool storing;               /* accepted by a majority; the state file is being written */
};

/*
 * The primary's resync of one replica (v->rs[rep]); resync.c. Its phases,
 * in order, with what each waits for and what moves it on:
 *
 *   RS_WAIT_STATE  rs_start sent RS_BEGIN; waits for the replica's
 *                  RS_STATE (its newest trusted LSN and that write's
 *                  epoch). rs_on_state computes the bound, marks dirty
 *                  this node's writes after it (in the index and in
 *                  flight), sends RS_SCAN: RS_WAIT_MAP.
 *   RS_WAIT_MAP    waits for the replica's RS_MAP messages; each marks
 *                  dirty its runs written after the bound and the blocks
 *                  it holds where this node has a hole. The one with
 *                  rs_last: RS_COPY.
 *   RS_COPY        rs_pump copies rounds of dirty blocks (flush, then
 *                  read and send), within resync_rate and RS_WINDOW bytes
 *                  unacknowledged; new writes keep marking blocks dirty.
 *                  When nothing is dirty and nothing unacknowledged it
 *                  shuts the gate (gated, v->gate++): RS_FINAL.
 *   RS_FINAL       new writes are held on v->held; waits for the writes
 *                  in flight to finish (write.c's local_write_done pumps), copies
 *                  what they dirtied without the rate limit, waits for
 *                  every copy's RS_ACK, sends RS_DONE with next_lsn:
 *                  RS_WAIT_END.
 *   RS_WAIT_END    waits for the replica's RS_END: status 0 queues the
 *                  change that makes it in-sync: RS_PROPOSE; anything
 *                  else aborts.
 *   RS_PROPOSE     waits for that change to end (rs_in_sync_done), which
 *                  frees the resync either way and so opens the gate:
 *                  held writes are admitted and now go to the replica too.
 *   RS_ABORTED     rs_abort came while local work (busy) was in flight:
 *                  nothing more is read or sent, messages for it are
 *                  ignored or abort it again, and it stays in v->rs[rep]
 *                  (so no new resync of that replica starts) until the
 *                  completion that brings busy to 0 (rs_copy_read_done
 *                  or rs_round_flushed) calls rs_free. A gated one keeps
 *                  the gate shut until then. tdo_vtier_stop frees only
 *                  the resyncs that are not busy; a busy one ends through
 *                  its completions (the engine runs them before it
 *                  closes; a send fails once stopping, which aborts it),
 *                  or else tdo_vtier_free frees it.
 *
 * rs_abort of a resync that is not busy frees it at once, in any phase.
 *
 * Invariants:
 *  - phase == RS_ABORTED implies busy > 0
 *  - the tick, acknowledgements and completions reach it through
 *    rs_pump, which does nothing while busy > 0 or once aborted
 *  - dirty has nblocks bits (NULL before RS_WAIT_MAP); every set bit is
 *    counted once in ndirty and in total
 *  - gated is set from RS_FINAL on and counted in v->gate; rs_free
 *    clears it
 *  - v->rs[rep] is set only on the primary, except an RS_ABORTED one
 *    still waiting for its local work after a step-down
 */
enum rs_phase { RS_ABORTED = 0, RS_WAIT_STATE, RS_WAIT_MAP, RS_COPY, RS_FINAL, RS_WAIT_END, RS_PROPOSE };
struct resync {
	int rep, peer;
	int phase;                  /* enum rs_phase */
	uint64_t bound;             /* the replica's log is this node's history up to here */
	uint8_t *dirty;
	uint64_t nblocks, ndirty, cursor;
	uint64_t total, copied;     /* blocks, for progress */
	uint64_t unacked;           /* bytes in flight to the replica */
	uint64_t tokens, last_refill_usec;
	int busy;                   /* local reads or a flush in progress */
	bool gated;                 /* we hold the volume's new writes */
	uint64_t started_usec;
};

/*
 * One volume as this node knows it. Every volume any node told us of has
 * one (a deleted one is a tombstone); they are freed only by
 * tdo_vtier_free, so a handle or a callback may hold one after delete.
 *
 * Invariants (between events; cfg_set_role restores the first two after
 * every change of conf or local_id):
 *  - primary implies my_rep >= 0, my_rep == conf.vc_primary and
 *    local_id >= 0
 *  - my_rep is this node's index in conf.vc_rep, -1 when it is not in the
 *    replica set or the volume is deleted
 *  - inflight is in LSN order, which is age order (wr_admit appends with
 *    the next LSN and the time; nothing else adds to it)
 *  - held is not empty only while gate != 0 on the primary: rs_free
 *    admits it when the gate opens, a step-down forwards it to the new
 *    primary, the stop fails it
 *  - gate counts the resyncs with gated set, plus one while handing_off
 *    (a step-down, wr_step_down, clears every gated and handing_off
 *    with it, so it never goes below 0)
 *  - failed only on the primary: this node's engine refuses writes
 *    (poisoned); no write is admitted (held while handing_off, else
 *    failed with -EIO) and no resync starts; the role is being handed to
 *    an in-sync replica (promote.c's pm_hand_off). A step-down clears it
 *  - a bit of marking means a change taking that replica out of date is
 *    queued or proposed (wr_mark_out_of_date); its end clears the bit, a
 *    step-down clears them all
 *  - expect_lsn == 0: this copy is not known to hold every write (a new
 *    epoch, a failed apply, a resync begun) and refuses WRITE with
 *    -EILSEQ; cfg_set_role sets it from the engine when the configuration
 *    in force says in-sync and no resync into the copy is active, and
 *    the end of a resync sets it
 *  - rs_active is persisted (sv_rs_active); while set, WRITE is refused
 *    and RS_DATA taken; rs_done_peer >= 0 means an RS_DONE waits for
 *    rs_pending to reach 0
 *  - at most one proposal (prop) at a time; changes waits behind it in
 *    order
 *  - staged: the state file is written with want instead of conf, until
 *    the store that staged it ends (st_unstage) or a later staging
 *    replaces want. A peer's configuration is staged only when newer
 *    than st_conf_want(); a proposal is built from conf, so none starts
 *    while staged (cfg_propose_next), and one that comes into force
 *    after a newer configuration did is dropped (prop_stored)
 *  - gen rises whenever vconf_live(&conf) changes (cfg_set)
 *  - reconcile deletes or resizes the copy only when io_active == 0 and
 *    inflight is empty
 */
struct vvol {
	struct tdo_vtier *vt;
	struct tdo_rm_vconf conf;   /* in force here (cfg_set only) */
	int64_t local_id;           /* engine volume id, -1: none here */
	bool creating, deleting, resizing; /* a local change reconcile started is in flight */
	int my_rep;                 /* index in conf.vc_rep, -1: not a replica */
	/* primary */
	bool primary;
	uint64_t next_lsn;          /* last LSN given out */
	struct tdo_list inflight;   /* struct vreq, LSN order */
	struct tdo_list held;       /* writes not yet admitted (gate) */
	int gate;                   /* resyncs holding new writes (see above) */
	uint32_t marking;           /* replicas with an out-of-date proposal pending */
	bool failed;                /* the engine refuses writes: the role goes to a replica */
	bool handing_off;           /*   a replica was asked to promote itself (holds the gate) */
	uint64_t handoff_usec;      /*   no new ask before this time */
	struct resync *rs[TDO_REP_MAX];
	/* replica */
	uint64_t expect_lsn;        /* next LSN the primary's writes must carry */
	bool rs_active;             /* a resync into this copy is running (persisted) */
	uint64_t rs_lsn;            /* rs_active: the LSN and epoch this copy was */
	uint32_t rs_epoch;          /*   trusted at when the resync began */
	int rs_pending;             /* copies submitted, not yet durable */
	int rs_done_peer;           /* RS_DONE waiting for those */
	uint64_t rs_done_lsn;
	/* configuration changes */
	struct proposal *prop;
	struct tdo_list changes;    /* struct change */
	int io_active;              /* local engine I/O in flight (for delete) */
	int ack_peer;               /* a VCONF answer waiting for the local create, -1: none */
	struct tdo_rm_vconf ack_conf;
	tdo_vt_cb admin_cb;         /* an operator's change in force, answered once this */
	void *admin_arg;            /*   node's copy has followed it (manage.c) */
	uint64_t gen;               /* rises whenever the volume comes to exist or is deleted */
	/* a configuration being stored before it comes into force: the state
	 * file is written with it instead of conf (state.c only) */
	bool staged;
	struct tdo_rm_vconf want;
	bool rs_storing;            /* rs_active = true is being stored; RS_STATE answers then */
	int local_err;              /* the last local change cfg_reconcile started failed at once */
	struct vvol *next;          /* vt->vols */
	struct vvol *hnext;         /* vt->vol_hash: a volume keeps its name for life */
};

/* An attached client's view of one incarnation of a volume: h->v lives
 * as long as the tier; a gen other than v->gen means that one is gone. */
struct tdo_vhandle {
	struct tdo_vtier *vt;
	struct vvol *v;
	uint64_t gen;               /* v->gen when opened: a later one means it is gone */
};

/* The state file's writer (state.c only): one write at a time on the
 * thread pool; a request waits for the first write that starts after it. */
struct st_writer {
	bool busy;                  /* a write is in flight */
	bool free_pending;          /* tdo_vtier_free came meanwhile: its end frees the tier */
	struct tdo_list next;       /* struct st_wait: for the next write */
	struct tdo_list cur;        /*   for the write in flight */
	uv_work_t work;
	char *buf;                  /* the snapshot being written (the pool's while busy) */
	size_t len;
	int status;
};

/*
 * The tier. Invariants:
 *  - stopping is set once, by tdo_vtier_stop; from then on nothing is
 *    sent (vt_send), no message is handled (dsp_msg), nothing is proposed
 *    and late ends of state file writes are ignored
 *  - after tdo_vtier_start set them up, each list is filled and emptied
 *    by one file: fwd_sent and fwd_wait by forward.c, sums by verify.c,
 *    promotes by promote.c, st by state.c
 */
struct tdo_vtier {
	uv_loop_t *loop;
	struct tdo_engine *e;
	struct tdo_cluster *c;
	struct tdo_vtier_opts o;
	char *state_path;           /* NULL: a node outside any cluster keeps no state file */
	const char *me;
	int nnodes;                 /* peers and this node */
	struct vvol *vols;          /* every volume this node knows, deleted ones too; freed only with vt */
	struct vvol *vol_hash[VT_HASH_SIZE]; /* the same, by name: peer messages name their volume */
	struct tdo_list fwd_sent;   /* struct vreq forwarded, awaiting replies */
	struct tdo_list fwd_wait;   /* struct vreq waiting for a reachable primary */
	uint64_t next_fwd_id, next_sum_id, next_pm_id;
	struct tdo_list sums;       /* verify jobs */
	struct tdo_list promotes;   /* promote requests sent to another node */
	uv_timer_t tick;
	bool stopping;
	char me_id[TDO_NODE_ID_MAX + 1];
	struct st_writer st;
};

/* ---- vtier.c: entry points and shared helpers --------------------------- */

/* Every message of this tier leaves here: nothing once stopping, -EINVAL
 * for PEER < 0, else tdo_cluster_send's result. */
int vt_send(struct tdo_vtier *vt, int peer, uint16_t type, const void *a, uint32_t alen, const void *b,
            uint32_t blen);
/* Volume NAME, tombstones included; NULL when never heard of. */
struct vvol *vt_find_vol(struct tdo_vtier *vt, const char *name);
/* A volume that exists (not deleted); NULL with a message in ERR. */
struct vvol *vt_live_vol(struct tdo_vtier *vt, const char *name, char *err, size_t errlen);
/* A new volume with configuration C, first on vt->vols; NULL: no memory. */
struct vvol *vt_vol_new(struct tdo_vtier *vt, const struct tdo_rm_vconf *c);
/* The peer index of replica I, -1 for this node (or none). */
int vt_rep_peer(struct vvol *v, int i);
/* The request's end: its callback, then it is freed. */
void vt_req_finish(struct vreq *r, int status);
/* Finish every request on HEAD with STATUS. */
void vt_fail_list(struct tdo_list *head, int status);

/* ---- dispatch.c: the cluster's message hook ------------------------------ */

/* The tdo_cluster_hooks.msg of the tier (ARG is the tier): checks each
 * message's length and header, drops the connection of a malformed one. */
void dsp_msg(void *arg, int peer, uint16_t type, const void *payload, uint32_t len);

/* ---- state.c: the state file --------------------------------------------- */

typedef void (*st_done_fn)(struct tdo_vtier *vt, int status, void *arg);
/* Read the state file into vt->vols (missing: empty). -EINVAL with a
 * reason in ERR for a damaged or foreign one, -ENOMEM. Before the loop. */
int st_load(struct tdo_vtier *vt, char *err, size_t errlen);
/* Write the state now, blocking: only at start, before the loop serves
 * anyone. 0 without a state file. */
int st_save_now(struct tdo_vtier *vt);
/* Store the state as it is when the next write starts (every staged
 * configuration included) and call FN with 0 once durable, or an error.
 * With no state file FN runs at once, inside the call. -ENOMEM: nothing
 * queued, FN will not run. */
int st_store(struct tdo_vtier *vt, st_done_fn fn, void *arg);
/* Stage C (the state file holds it instead of V's conf) and st_store; on
 * -ENOMEM nothing is staged and FN will not run. */
int st_stage_store(struct vvol *v, const struct tdo_rm_vconf *c, st_done_fn fn, void *arg);
/* V's staged configuration C is stored or given up: conf follows (a
 * later staging that replaced it stays). */
void st_unstage(struct vvol *v, const struct tdo_rm_vconf *c);
/* The configuration the newest state file holds or will hold. */
const struct tdo_rm_vconf *st_conf_want(struct vvol *v);
/* For tdo_vtier_free: false while a write is in flight (its end calls
 * tdo_vtier_free again); else drops the requests nobody will hear. */
bool st_close(struct tdo_vtier *vt);

/* ---- vconf.c: the rules of a configuration (pure) ------------------------ */

/* What a change's rules need to know of this node besides the configuration. */
struct vconf_self {
	const char *node;           /* this node's id */
	bool primary;               /* it is the volume's primary */
	bool rs_active;             /* a resync into its copy has not ended */
	uint64_t lsn;               /* CH_PROMOTE: its copy's newest LSN, where the new epoch starts */
};
const char *vconf_state_name(uint32_t s);
/* A newer than B by (epoch, version). */
bool vconf_newer(const struct tdo_rm_vconf *a, const struct tdo_rm_vconf *b);
/* NODE's index in C's replica set, -1: none. */
int vconf_rep_index(const struct tdo_rm_vconf *c, const char *node);
/* C names an existing volume (not deleted, not the empty tombstone). */
bool vconf_live(const struct tdo_rm_vconf *c);
/* Everything a configuration from the wire or the state file must be. */
bool vconf_valid(const struct tdo_rm_vconf *c);
/* A name from the wire: NUL-terminated within its 64-byte field and a
 * valid volume name; copied into OUT (TDO_NAME_MAX + 1). */
bool vconf_wire_name(const char *field, char *out);
/* The configuration CH makes from CUR into OUT; false with WHY when the
 * rules refuse it. OUT equal to CUR (same epoch and version): nothing to do. */
bool vconf_change(const struct tdo_rm_vconf *cur, const struct change *ch, const struct vconf_self *self,
                  struct tdo_rm_vconf *out, char *why, size_t wl);
/* The index of EPOCH in C's history, -1: not there (older than the
 * TDO_VHIST_MAX epochs it keeps, or never one of C's). */
int vconf_hist_index(const struct tdo_rm_vconf *c, uint32_t epoch);
/* A resync's bound: how far the log of a replica whose newest trusted
 * write is REPLICA_LSN, of epoch REPLICA_EPOCH, is the history C records
 * (C's history says where each epoch began), at most PRIMARY_LSN. The
 * replica keeps its writes up to it; the rest is copied. 0 (a full
 * resync) for an epoch newer than C's or not in its history. */
uint64_t vconf_resync_bound(const struct tdo_rm_vconf *c, uint64_t replica_lsn, uint32_t replica_epoch,
                            uint64_t primary_lsn);

/* ---- config.c: proposals, roles, following a configuration --------------- */

/* Every configuration that comes into force on this node passes here. */
void cfg_set(struct vvol *v, const struct tdo_rm_vconf *c);
/* This node's copy's newest LSN (and its epoch into EPOCH); 0 without one. */
uint64_t cfg_engine_lsn(struct vvol *v, uint32_t *epoch);
/* Recompute this node's role after conf or local_id changed (steps down,
 * takes over, or sets a replica's expect_lsn). */
void cfg_set_role(struct vvol *v);
/* Send C to PEER as a proposal, or as a sync (no answer wanted). */
void cfg_send(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *c, bool sync);
/* Bring the local engine in line with conf (create, delete, resize the
 * copy; retried by the tick), then cfg_set_role. */
void cfg_reconcile(struct vvol *v);
/* Take C, newer than conf (checked by the caller): set, log, reconcile. */
void cfg_adopt(struct vvol *v, const struct tdo_rm_vconf *c, bool from_peer);
/* One log line: the volume's configuration in force, WHAT first. */
void cfg_log(struct vvol *v, const char *what);
/* CH's end: its done with STATUS and WHY, then it is freed. */
void cfg_change_done(struct vvol *v, struct change *ch, int status, const char *why);
/* End V's proposal with STATUS and propose the next change. */
void cfg_prop_finish(struct vvol *v, int status, const char *why);
/* After an answer or a loss: store the proposal once in force, or end it
 * once it cannot be. Nothing while storing. */
void cfg_prop_check(struct vvol *v);
/* Queue CH (ownership passes) and propose it when nothing is in flight. */
void cfg_queue_change(struct vvol *v, struct change *ch);
/* Propose the next queued change, unless a proposal is open or a peer's
 * configuration is being stored (staged): changes start from conf. */
void cfg_propose_next(struct vvol *v);
/* Propose replica REP in STATE; DONE gets REP as its argument. False when
 * out of memory (nothing queued). */
bool cfg_queue_state(struct vvol *v, int rep, uint32_t state,
                     void (*done)(struct vvol *v, int status, const char *why, void *arg));

/* ---- config_peer.c: configurations from peers ---------------------------- */

/* A peer's VCONF: a proposal (answered) or a sync (answered only by ours
 * when ours is newer). */
void cfgp_on_vconf(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *c);
/* A peer's answer to this node's proposal; TAIL (TLEN bytes: 0, or one
 * struct tdo_rm_vconf) is the refuser's own configuration. */
void cfgp_on_vconf_ack(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf_ack *a, const void *tail,
                       uint32_t tlen);

/* ---- manage.c: the operator's changes ------------------------------------- */

/* An operator's change in force waits for this node's copy: answer it
 * once the copy has followed, or could not (STATUS). */
void adm_wait_check(struct vvol *v, int status);
/* The stop: fail the operator's change still waiting (-ESHUTDOWN). */
void adm_stop(struct vvol *v);

/* ---- write.c: the write path ---------------------------------------------- */

/* Replicas in-sync by the configuration in force (not one still proposed),
 * this node left out. */
uint32_t wr_insync_mask(struct vvol *v);
/* Complete every write whose copies are all durable, or whose missing
 * replicas are out of date by a configuration in force. */
void wr_complete_ready(struct vvol *v);
/* Propose replica REP out of date (once), aborting its resync; the
 * writes waiting on it complete when that is in force. Primary only. */
void wr_mark_out_of_date(struct vvol *v, int rep, const char *why);
/* A write-side request on the primary: an LSN, to the replicas, locally
 * (or onto held while the gate is shut). */
void wr_admit(struct vvol *v, struct vreq *r);
/* This node stopped being V's primary (primary is false already): writes
 * waiting for replicas fail (-EIO: their outcome is unknown), held ones
 * are forwarded to the new primary, the gate opens. */
void wr_step_down(struct vvol *v);
/* The stop: writes waiting only for replicas fail (-ESHUTDOWN). */
void wr_stop(struct vvol *v);
/* A local write on the primary failed with STATUS: when the engine is
 * poisoned, the volume is failed and its role handed off (pm_hand_off). */
void wr_local_failed(struct vvol *v, int status);
/* A request on a volume this node is primary of: 0 (its callback will
 * run), or -EINVAL for a request the volume cannot take. */
int wr_primary_io(struct vvol *v, struct vreq *r);
/* A replica's side of WRITE, or of RS_DATA when RESYNC: apply and answer. */
void wr_on_write(struct tdo_vtier *vt, int peer, const struct tdo_rm_io *io, const void *data, uint32_t dlen,
                 bool resync);
/* A replica's answer to a WRITE. */
void wr_on_wack(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a);

/* ---- forward.c: requests forwarded to the primary ------------------------- */

/* Serve R on the primary, or send it there, or park it on fwd_wait. */
void fwd_send(struct tdo_vtier *vt, struct vreq *r);
/* Requests waiting for a primary: try again, or fail those past their
 * deadline (-EIO). */
void fwd_retry(struct tdo_vtier *vt);
/* The primary's side: a peer's client request (FWD). */
void fwd_on_req(struct tdo_vtier *vt, int peer, const struct tdo_rm_io *io, const void *data, uint32_t dlen);
/* The forwarder's side: the primary's reply (FWD_REP). */
void fwd_on_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a, const void *data, uint32_t dlen);
/* PEER went down: what was sent to it waits for a primary again. */
void fwd_peer_down(struct tdo_vtier *vt, int peer);
/* The stop: fail every forwarded request (-ESHUTDOWN). */
void fwd_stop(struct tdo_vtier *vt);

/* ---- resync.c: the primary's side ------------------------------------------ */

/* Begin resyncing replica REP (its peer must be up; once per replica). */
void rs_start(struct vvol *v, int rep);
/* Stop REP's resync: freed now, or once its local work returns. */
void rs_abort(struct vvol *v, int rep, const char *why);
/* Free REP's resync, opening the gate if it held it (and admitting the
 * held writes when none holds it any more). */
void rs_free(struct vvol *v, int rep);
/* Move RS on as far as it can go now (see the phases above). */
void rs_pump(struct vvol *v, struct resync *rs);
/* A write of [OFF, OFF+LEN) was admitted: every resync must copy it. */
void rs_mark_dirty(struct vvol *v, uint64_t off, uint64_t len);
/* The done of the change making REP catching-up: start its resync. */
void rs_catching_up_done(struct vvol *v, int status, const char *why, void *arg);
/* The replica's messages to the primary (ignored unless a resync of
 * that replica is running here). */
void rs_on_state(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m);
void rs_on_map(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m, const void *tail, uint32_t tlen);
void rs_on_ack(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a);
void rs_on_end(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m);

/* ---- resync_replica.c: the replica's side ---------------------------------- */

/* The primary's RS_BEGIN, RS_SCAN or RS_DONE (TYPE). */
void rsr_on_msg(struct tdo_vtier *vt, int peer, uint16_t type, const struct tdo_rm_rs *m);
/* An RS_DONE waited for every copy to be durable, and they are: set the
 * copy's LSN, store the end, answer RS_END. */
void rsr_copies_done(struct vvol *v);

/* ---- verify.c: checksums of regions ----------------------------------------- */

/* A peer asks for checksums (SUM), or answers ours (SUM_REP). */
void ver_on_sum(struct tdo_vtier *vt, int peer, const struct tdo_rm_sum *m);
void ver_on_sum_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_sum *m, const void *data, uint32_t dlen);
/* The tick: finish verifies that have every answer, time out the rest. */
void ver_tick(struct tdo_vtier *vt, uint64_t now);
/* Node ID went down: its answers will not come. */
void ver_peer_down(struct tdo_vtier *vt, const char *id);
/* The stop: finish every verify with what it has. */
void ver_stop(struct tdo_vtier *vt);

/* ---- promote.c --------------------------------------------------------------- */

/* A peer asks this node to become primary (PROMOTE), or answers (PROMOTE_REP). */
void pm_on_promote(struct tdo_vtier *vt, int peer, const struct tdo_rm_promote *m);
void pm_on_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_promote *m);
/* The tick: promotes asked of another node time out after 10 s. */
void pm_tick(struct tdo_vtier *vt, uint64_t now);
/* PEER went down: what was asked of it fails. */
void pm_peer_down(struct tdo_vtier *vt, int peer);
/* The stop: fail every promote still waiting. */
void pm_stop(struct tdo_vtier *vt);
/* V's primary copy failed (v->failed): ask an in-sync replica that is up
 * to promote itself, at most once a second (the tick calls it again);
 * with none, the writes held for it fail and new ones fail at once. */
void pm_hand_off(struct vvol *v);

#endif
