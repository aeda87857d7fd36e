/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The peer protocol between testudod nodes: framing, the handshake and
 * liveness (replication/peer.c), the volume tier's messages (the rest of
 * replication/), and the node's state file. Every field is little-endian
 * on the wire (our own protocol, like our disk format).
 *
 * Invariants:
 *  - Every message is a struct tdo_rmsg followed by rm_length bytes of
 *    payload, rm_length <= TDO_RM_MAX_PAYLOAD; rm_check covers the header
 *    before it and the payload. A receiver checks magic, version, length
 *    and checksum before it acts on a message, and closes the connection
 *    on any mismatch (it never guesses where the next message starts).
 *  - A connection carries nothing but HELLO until the dialled node has
 *    answered WELCOME; after a REJECT the dialler closes and retries later.
 *  - Between two nodes there is one connection: the node whose id sorts
 *    first (strcmp) dials; a new HELLO from a peer replaces that peer's
 *    older connection (the peer restarted or lost it first).
 */
#ifndef TESTUDO_REPL_H
#define TESTUDO_REPL_H

#include <stdint.h>

#define TDO_RM_MAGIC       0x50524454u   /* "TDRP" */
#define TDO_RM_VERSION     1u
#define TDO_RM_MAX_PAYLOAD (33u << 20)   /* a 32 MiB write and its header */
#define TDO_NODE_ID_MAX    31            /* [A-Za-z0-9._-], 1..31 characters */
#define TDO_CLUSTER_MAX    63

enum tdo_rm_type {
	TDO_RM_HELLO = 1,    /* dialler -> dialled: struct tdo_rm_hello */
	TDO_RM_WELCOME = 2,  /* dialled -> dialler: struct tdo_rm_hello (its own identity) */
	TDO_RM_REJECT = 3,   /* dialled -> dialler: struct tdo_rm_reject, then close */
	TDO_RM_PING = 4,     /* no payload; answered with PONG */
	TDO_RM_PONG = 5,

	/* the volume tier (replication/; dispatch.c checks each type) */
	TDO_RM_FIRST_VOLUME = 16,
	TDO_RM_VCONF = 16,   /* struct tdo_rm_vconf: a proposal, or a sync when vc_sync */
	TDO_RM_VCONF_ACK = 17, /* struct tdo_rm_vconf_ack */
	TDO_RM_WRITE = 18,   /* struct tdo_rm_io + data: primary -> in-sync replica */
	TDO_RM_WACK = 19,    /* struct tdo_rm_ack: replica -> primary, one write durable (or refused) */
	TDO_RM_FWD = 20,     /* struct tdo_rm_io + data: any node -> primary, a client's request */
	TDO_RM_FWD_REP = 21, /* struct tdo_rm_ack + data: primary -> forwarder, its reply */
	TDO_RM_RS_BEGIN = 22,/* struct tdo_rm_rs: primary -> replica, a resync starts */
	TDO_RM_RS_STATE = 23,/* struct tdo_rm_rs: replica -> primary, its newest LSN and epoch */
	TDO_RM_RS_SCAN = 24, /* struct tdo_rm_rs: primary -> replica, the bound; list your blocks */
	TDO_RM_RS_MAP = 25,  /* struct tdo_rm_rs + struct tdo_rm_run[]: replica -> primary */
	TDO_RM_RS_DATA = 26, /* struct tdo_rm_io + data: primary -> replica, a copy */
	TDO_RM_RS_ACK = 27,  /* struct tdo_rm_ack: replica -> primary, a copy durable */
	TDO_RM_RS_DONE = 28, /* struct tdo_rm_rs: primary -> replica, caught up at rs_lsn */
	TDO_RM_RS_END = 29,  /* struct tdo_rm_rs: replica -> primary, done (rs_status 0) or gave up */
	TDO_RM_SUM = 30,     /* struct tdo_rm_sum: checksums of a volume's regions, asked */
	TDO_RM_SUM_REP = 31, /* struct tdo_rm_sum + uint64_t[rs_count]: answered */
	TDO_RM_PROMOTE = 32, /* struct tdo_rm_promote: to the node to become primary */
	TDO_RM_PROMOTE_REP = 33, /* struct tdo_rm_promote: its answer */
	TDO_RM_END,
};

struct tdo_rmsg {
	uint32_t rm_magic;   /* TDO_RM_MAGIC */
	uint16_t rm_version; /* TDO_RM_VERSION */
	uint16_t rm_type;    /* enum tdo_rm_type */
	uint64_t rm_epoch;   /* the sender's newest epoch (0 until volumes carry one) */
	uint32_t rm_length;  /* payload bytes that follow */
	uint32_t rm_check;   /* low 32 bits of xxh3 over bytes 0..19 and the payload */
};
_Static_assert(sizeof(struct tdo_rmsg) == 24, "peer message header");

struct tdo_rm_hello {
	char     rh_cluster[TDO_CLUSTER_MAX + 1]; /* NUL-padded */
	char     rh_from[TDO_NODE_ID_MAX + 1];    /* the sender's node id */
	char     rh_to[TDO_NODE_ID_MAX + 1];      /* the id the sender believes it talks to */
	uint64_t rh_boot;                         /* random per daemon start: tells restarts apart */
};
_Static_assert(sizeof(struct tdo_rm_hello) == 136, "hello");

enum tdo_rm_reject_reason {
	TDO_RJ_CLUSTER = 1,  /* another cluster */
	TDO_RJ_NOT_ME = 2,   /* rh_to is not this node */
	TDO_RJ_UNKNOWN = 3,  /* rh_from is not one of this node's peers */
	TDO_RJ_DIRECTION = 4,/* rh_from should be dialled by this node, not dial it */
};

struct tdo_rm_reject {
	uint32_t rj_reason;  /* enum tdo_rm_reject_reason */
	char     rj_text[124]; /* NUL-terminated explanation */
};
_Static_assert(sizeof(struct tdo_rm_reject) == 128, "reject");

/* ---- the volume tier ------------------------------------------------- */

#define TDO_REP_MAX 5                /* replicas of one volume */

enum tdo_rep_state {
	TDO_REP_IN_SYNC = 1,      /* has every acknowledged write; gets every new one */
	TDO_REP_CATCHING_UP = 2,  /* a resync is copying to it */
	TDO_REP_OUT_OF_DATE = 3,  /* missed writes; needs a resync */
};

/*
 * A volume's cluster configuration. Every node keeps every volume's, in
 * its state file. (vc_epoch, vc_version) orders them: the epoch rises
 * with every change of primary, the version with every change at all.
 *
 * Invariants:
 *  - A node adopts a configuration only when it is newer than its own by
 *    that order, and a proposal (not a sync) that makes a node primary
 *    only when that node is in-sync in the acceptor's own configuration.
 *  - A change is in force (committed) once a majority of the cluster's
 *    nodes have stored it; a primary acknowledges no write a replica
 *    missed before the change that took that replica out of the in-sync
 *    set is committed.
 *  - vc_hist[i] = (epoch, first LSN of that epoch), oldest first, the
 *    last TDO_VHIST_MAX epochs; a replica whose newest write is of an
 *    older epoch than vc_epoch keeps its writes up to the first LSN of
 *    the epoch after its own, and no more; of an epoch the history no
 *    longer holds, none (a full resync).
 */
struct tdo_rm_vhist {
	uint32_t vh_epoch;
	uint32_t vh_pad;
	uint64_t vh_start_lsn;       /* the new primary's LSN when the epoch began */
};
#define TDO_VHIST_MAX 8
struct tdo_rm_vconf {
	char     vc_name[64];        /* volume name, NUL-padded */
	uint64_t vc_size;
	uint32_t vc_flags;           /* enum tdo_vol_flags */
	uint32_t vc_deleted;         /* 1: a tombstone */
	uint32_t vc_epoch;
	uint32_t vc_sync;            /* 1: "this is mine" (after a handshake), no answer wanted */
	uint64_t vc_version;
	uint64_t vc_ctime;
	uint32_t vc_nrep;            /* 1..TDO_REP_MAX */
	uint32_t vc_primary;         /* index into vc_rep */
	char     vc_rep[TDO_REP_MAX][TDO_NODE_ID_MAX + 1];
	uint32_t vc_state[TDO_REP_MAX]; /* enum tdo_rep_state */
	uint32_t vc_pad0;
	uint32_t vc_nhist;
	uint32_t vc_pad;
	struct tdo_rm_vhist vc_hist[TDO_VHIST_MAX];
};
_Static_assert(sizeof(struct tdo_rm_vconf) == 432, "volume configuration");

struct tdo_rm_vconf_ack {
	char     va_name[64];
	uint32_t va_epoch;
	uint32_t va_ok;              /* 1: stored; 0: refused, va_why says why and the refuser's
	                                own configuration follows as a struct tdo_rm_vconf sync */
	uint64_t va_version;
	char     va_why[96];
};
_Static_assert(sizeof(struct tdo_rm_vconf_ack) == 176, "configuration answer");

/* A write, write-zeroes, trim (and for FWD: read, flush) of a volume. */
enum tdo_rm_op { TDO_RMOP_READ = 1, TDO_RMOP_WRITE = 2, TDO_RMOP_ZERO = 3, TDO_RMOP_TRIM = 4,
                 TDO_RMOP_FLUSH = 5, TDO_RMOP_HOLE = 6 /* RS_DATA: the blocks are holes */ };
struct tdo_rm_io {
	char     io_name[64];
	uint32_t io_epoch;           /* the sender's configuration epoch of the volume */
	uint16_t io_op;              /* enum tdo_rm_op */
	uint16_t io_flags;           /* TDO_ZERO_NO_HOLE for ZERO */
	uint64_t io_lsn;             /* WRITE and RS_DATA: the LSN to apply it at */
	uint64_t io_id;              /* FWD: the forwarder's request id */
	uint64_t io_off, io_len;     /* bytes; a WRITE's data (io_len bytes) follows; a ZERO,
	                                TRIM or HOLE carries none and may span the volume */
};
_Static_assert(sizeof(struct tdo_rm_io) == 104, "volume I/O");

struct tdo_rm_ack {
	char     ak_name[64];
	uint32_t ak_epoch;           /* the answerer's configuration epoch */
	int32_t  ak_status;          /* 0 or a negative errno (-ESTALE: older epoch, -EILSEQ: LSN gap) */
	uint64_t ak_lsn;             /* WACK: the write's LSN */
	uint64_t ak_id;              /* FWD_REP: the request id; RS_ACK: data bytes made durable (0: zeroes, hole) */
	uint64_t ak_len;             /* FWD_REP: bytes of read data that follow */
};
_Static_assert(sizeof(struct tdo_rm_ack) == 96, "volume answer");

struct tdo_rm_rs {
	char     rs_name[64];
	uint32_t rs_epoch;           /* the primary's configuration epoch */
	int32_t  rs_status;          /* RS_END: 0 done, or why it stopped */
	uint64_t rs_lsn;             /* STATE: the replica's newest trusted LSN; SCAN: the bound;
	                                DONE: the primary's LSN */
	uint32_t rs_log_epoch;       /* STATE: the epoch of the replica's newest write */
	uint32_t rs_last;            /* MAP: 1 on the last one */
	uint64_t rs_nruns;           /* MAP: runs that follow */
};
_Static_assert(sizeof(struct tdo_rm_rs) == 96, "resync message");

enum { TDO_RUN_ALLOC = 1, TDO_RUN_SUSPECT = 2 };
struct tdo_rm_run {
	uint64_t ru_block;
	uint32_t ru_count;
	uint32_t ru_kind;            /* TDO_RUN_ALLOC (held) or TDO_RUN_SUSPECT (written after the bound) */
};
_Static_assert(sizeof(struct tdo_rm_run) == 16, "block run");

struct tdo_rm_sum {
	char     sm_name[64];
	uint64_t sm_id;
	uint64_t sm_region;          /* bytes per region */
	uint64_t sm_first, sm_count; /* regions asked for / answered */
	int32_t  sm_status;
	uint32_t sm_pad;
};
_Static_assert(sizeof(struct tdo_rm_sum) == 104, "checksum message");

struct tdo_rm_promote {
	char     pm_name[64];
	uint64_t pm_id;
	int32_t  pm_status;
	uint32_t pm_epoch;           /* answer: the new epoch */
	char     pm_why[128];
};
_Static_assert(sizeof(struct tdo_rm_promote) == 208, "promote message");

/*
 * A node's state file (tdo_vtier_opts.state_path): this header, then
 * st_count struct tdo_state_vol. Replaced whole (write a temporary file,
 * fsync, rename, fsync the directory), so it is always one complete
 * version. st_csum covers the header (this field 0) and the entries.
 * A file of another node or cluster, or one failing its checks, is
 * refused at start with a clear error; it is never guessed at.
 */
#define TDO_STATE_MAGIC 0x4554415453445454ull /* "TTDSTATE" */
#define TDO_STATE_VERSION 1u
struct tdo_state_hdr {
	uint64_t st_magic;
	uint32_t st_version;
	uint32_t st_count;
	char     st_node[TDO_NODE_ID_MAX + 1];
	char     st_cluster[TDO_CLUSTER_MAX + 1];
	uint64_t st_csum;
};
_Static_assert(sizeof(struct tdo_state_hdr) == 120, "state file header");

struct tdo_state_vol {
	struct tdo_rm_vconf sv_conf;
	uint64_t sv_rs_lsn;          /* sv_rs_active: the LSN and epoch this copy was */
	uint32_t sv_rs_epoch;        /*   trusted at when its resync began */
	uint32_t sv_rs_active;       /* 1: a resync into this copy began and has not ended */
};
_Static_assert(sizeof(struct tdo_state_vol) == 448, "state file volume");

#endif
