/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD wire protocol as Testudo speaks it (fixed newstyle only). Every
 * on-wire structure is defined here, once; all fields are big-endian on
 * the wire (convert with be16toh/be32toh/be64toh). The text of the
 * protocol is shared/reference/nbd-proto.md.
 *
 * Invariants: the server never sends a structured reply to a client that
 * did not negotiate NBD_OPT_STRUCTURED_REPLY; every request gets exactly
 * one reply (simple, or structured chunks ending with NBD_REPLY_FLAG_DONE),
 * except NBD_CMD_DISC, which gets none.
 */
#ifndef TESTUDO_NBD_H
#define TESTUDO_NBD_H

#include <stdint.h>

#define NBD_MAGIC            0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_IHAVEOPT         0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC        0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC    0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES      (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE NBD_FLAG_FIXED_NEWSTYLE
#define NBD_FLAG_C_NO_ZEROES      NBD_FLAG_NO_ZEROES

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_RESIZE      (1u << 9)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

/* options */
enum {
	NBD_OPT_EXPORT_NAME = 1,
	NBD_OPT_ABORT = 2,
	NBD_OPT_LIST = 3,
	NBD_OPT_STARTTLS = 5,
	NBD_OPT_INFO = 6,
	NBD_OPT_GO = 7,
	NBD_OPT_STRUCTURED_REPLY = 8,
	NBD_OPT_LIST_META_CONTEXT = 9,
	NBD_OPT_SET_META_CONTEXT = 10,
	NBD_OPT_EXTENDED_HEADERS = 11,
};

/* option replies */
#define NBD_REP_ACK           1u
#define NBD_REP_SERVER        2u
#define NBD_REP_INFO          3u
#define NBD_REP_META_CONTEXT  4u
#define NBD_REP_ERR(n)        ((1u << 31) + (n))
#define NBD_REP_ERR_UNSUP     NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY    NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID   NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM  NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD  NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN   NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN  NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG   NBD_REP_ERR(9)

/* NBD_REP_INFO types */
enum {
	NBD_INFO_EXPORT = 0,
	NBD_INFO_NAME = 1,
	NBD_INFO_DESCRIPTION = 2,
	NBD_INFO_BLOCK_SIZE = 3,
};

/* commands and their flags */
enum {
	NBD_CMD_READ = 0,
	NBD_CMD_WRITE = 1,
	NBD_CMD_DISC = 2,
	NBD_CMD_FLUSH = 3,
	NBD_CMD_TRIM = 4,
	NBD_CMD_CACHE = 5,
	NBD_CMD_WRITE_ZEROES = 6,
	NBD_CMD_BLOCK_STATUS = 7,
};
#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* structured reply chunk types and flags */
#define NBD_REPLY_FLAG_DONE        (1u << 0)
#define NBD_REPLY_TYPE_NONE        0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR       ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* base:allocation states */
#define NBD_STATE_HOLE 1u
#define NBD_STATE_ZERO 2u

/* errors on the wire */
#define NBD_EPERM     1u
#define NBD_EIO       5u
#define NBD_ENOMEM    12u
#define NBD_EINVAL    22u
#define NBD_ENOSPC    28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP   95u
#define NBD_ESHUTDOWN 108u

/* limits Testudo advertises and enforces */
#define NBD_MIN_BLOCK   512u
#define NBD_PREF_BLOCK  4096u
#define NBD_MAX_PAYLOAD (32u << 20)
#define NBD_MAX_OPTION  (64u << 10)  /* longer option data closes the connection */
#define NBD_MAX_STRING  4096u        /* export names, meta context queries */

#pragma pack(push, 1)
/* client -> server, after IHAVEOPT */
struct nbd_opt_hdr {
	uint64_t magic;             /* NBD_IHAVEOPT */
	uint32_t option;
	uint32_t length;            /* bytes of option data that follow */
};
/* server -> client */
struct nbd_opt_reply {
	uint64_t magic;             /* NBD_REP_MAGIC */
	uint32_t option;
	uint32_t type;
	uint32_t length;
};
/* the reply to NBD_OPT_EXPORT_NAME (124 zero bytes follow unless NO_ZEROES) */
struct nbd_export_name_reply {
	uint64_t size;
	uint16_t flags;
};
struct nbd_request {
	uint32_t magic;             /* NBD_REQUEST_MAGIC */
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint32_t length;
};
struct nbd_simple_reply {
	uint32_t magic;             /* NBD_SIMPLE_REPLY_MAGIC */
	uint32_t error;
	uint64_t cookie;
};
struct nbd_structured_reply {
	uint32_t magic;             /* NBD_STRUCTURED_REPLY_MAGIC */
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint32_t length;            /* bytes of chunk payload that follow */
};
struct nbd_block_descriptor {
	uint32_t length;
	uint32_t status_flags;
};
#pragma pack(pop)
_Static_assert(sizeof(struct nbd_opt_hdr) == 16, "option header");
_Static_assert(sizeof(struct nbd_opt_reply) == 20, "option reply");
_Static_assert(sizeof(struct nbd_export_name_reply) == 10, "export name reply");
_Static_assert(sizeof(struct nbd_request) == 28, "request");
_Static_assert(sizeof(struct nbd_simple_reply) == 16, "simple reply");
_Static_assert(sizeof(struct nbd_structured_reply) == 20, "structured reply");
_Static_assert(sizeof(struct nbd_block_descriptor) == 8, "block descriptor");

/* The one meta context we serve, and its id. */
#define NBD_META_BASE_ALLOCATION "base:allocation"
#define NBD_META_ID_BASE_ALLOCATION 1u

#endif
