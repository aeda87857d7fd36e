/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The peer protocol between testudod nodes (the volume tier), as far as
 * it exists: framing, the handshake and liveness. Every field is
 * little-endian on the wire (our own protocol, like our disk format).
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

#endif
