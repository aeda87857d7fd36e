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

#include <stddef.h>
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

/*
 * The structures on the wire, in the order a session meets them. All are
 * packed (the protocol has no padding) and big-endian; member prefixes
 * name the struct. A trailing [] member is the variable part the protocol
 * puts after the fixed one: sizeof covers only the fixed part.
 *
 * Not structs here, because a variable-length field sits in their middle:
 * the client's 32 bits of client flags after the greeting; the data of
 * NBD_OPT_INFO/NBD_OPT_GO (32-bit name length, name, 16-bit count of
 * information requests, that many 16-bit NBD_INFO_* types) and of
 * NBD_OPT_{LIST,SET}_META_CONTEXT (32-bit name length, name, 32-bit query
 * count, then each query as 32-bit length and string); nbd_handshake.c
 * reads them field by field, each length checked against the option's.
 */
#pragma pack(push, 1)

/* Handshake phase. */

/* server -> client, first thing on a connection: "S: 64 bits NBDMAGIC,
 * 64 bits IHAVEOPT, 16 bits handshake flags" (newstyle negotiation). */
struct nbd_greeting {
	uint64_t gr_magic;          /* NBD_MAGIC */
	uint64_t gr_opt_magic;      /* NBD_IHAVEOPT */
	uint16_t gr_flags;          /* NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES */
};

/* client -> server, each option: "C: 64 bits IHAVEOPT, 32 bits option,
 * 32 bits length of option data (unsigned), any data ... of length as
 * specified above." */
struct nbd_opt_hdr {
	uint64_t oh_magic;          /* NBD_IHAVEOPT */
	uint32_t oh_option;         /* NBD_OPT_* */
	uint32_t oh_length;         /* bytes of option data that follow */
};

/* server -> client, every answer to an option but EXPORT_NAME: "64 bits
 * 0x3e889045565a9, 32 bits the option as sent by the client, 32 bits
 * reply type, 32 bits length of the reply ... any data as required by the
 * reply". An NBD_REP_ERR_* reply's data is a message for a human. */
struct nbd_opt_reply {
	uint64_t or_magic;          /* NBD_REP_MAGIC */
	uint32_t or_option;
	uint32_t or_type;           /* NBD_REP_* */
	uint32_t or_length;         /* bytes of reply data that follow */
};

/* NBD_REP_SERVER data, one per export in answer to NBD_OPT_LIST: "32 bits,
 * length of name (unsigned); MUST be no larger than the reply packet
 * header length - 4; String, name of the export"; the rest of the reply
 * is a description "suitable for direct display to a human being". */
struct nbd_rep_server {
	uint32_t rs_name_len;
	char     rs_name[];         /* rs_name_len bytes, then the description */
};

/* NBD_REP_META_CONTEXT data: "32 bits, NBD metadata context ID. String,
 * name of the metadata context" (valid UTF-8, no NUL: the reply's length
 * says where it ends). */
struct nbd_rep_meta_context {
	uint32_t mc_id;
	char     mc_name[];
};

/* NBD_REP_INFO data, NBD_INFO_EXPORT: "Mandatory information before a
 * successful completion of NBD_OPT_INFO or NBD_OPT_GO ... length MUST be
 * 12": "16 bits NBD_INFO_EXPORT, 64 bits size of the export in bytes
 * (unsigned), 16 bits transmission flags". */
struct nbd_info_export {
	uint16_t ex_type;           /* NBD_INFO_EXPORT */
	uint64_t ex_size;
	uint16_t ex_flags;          /* NBD_FLAG_HAS_FLAGS | ... */
};

/* NBD_REP_INFO data, NBD_INFO_NAME and NBD_INFO_DESCRIPTION: "16 bits,
 * NBD_INFO_NAME; String: name of the export, length - 2 bytes" (the same
 * for the description); "length MUST be at least 2". */
struct nbd_info_text {
	uint16_t it_type;           /* NBD_INFO_NAME or NBD_INFO_DESCRIPTION */
	char     it_text[];         /* the reply's length - 2 bytes, no NUL */
};

/* NBD_REP_INFO data, NBD_INFO_BLOCK_SIZE: "The length MUST be 14": "16
 * bits NBD_INFO_BLOCK_SIZE, 32 bits minimum block size, 32 bits preferred
 * block size, 32 bits maximum payload size". */
struct nbd_info_block_size {
	uint16_t ib_type;           /* NBD_INFO_BLOCK_SIZE */
	uint32_t ib_min;            /* NBD_MIN_BLOCK */
	uint32_t ib_pref;           /* NBD_PREF_BLOCK */
	uint32_t ib_max;            /* NBD_MAX_PAYLOAD */
};

/* server -> client, the answer to NBD_OPT_EXPORT_NAME, which ends the
 * handshake: "64 bits, size of the export in bytes (unsigned); 16 bits,
 * transmission flags; 124 bytes, zeroes (reserved) (unless
 * NBD_FLAG_C_NO_ZEROES was negotiated by the client)". Under NO_ZEROES
 * only the bytes before en_zeroes are sent. */
struct nbd_export_name_reply {
	uint64_t en_size;
	uint16_t en_flags;          /* transmission flags */
	uint8_t  en_zeroes[124];
};

/* Transmission phase. */

/* client -> server, every request: "32 bits, 0x25609513, magic; 16 bits,
 * command flags; 16 bits, type; 64 bits, cookie; 64 bits, offset
 * (unsigned); 32 bits, length (unsigned); (length bytes of data if the
 * request is of type NBD_CMD_WRITE)". The cookie is opaque: echoed in
 * every reply to the request as it was received. */
struct nbd_request {
	uint32_t rq_magic;          /* NBD_REQUEST_MAGIC */
	uint16_t rq_flags;          /* NBD_CMD_FLAG_* */
	uint16_t rq_type;           /* NBD_CMD_* */
	uint64_t rq_cookie;
	uint64_t rq_offset;
	uint32_t rq_length;
};

/* server -> client, the one reply to a request unless structured replies
 * were negotiated: "32 bits, 0x67446698, magic; 32 bits, error (MAY be
 * zero); 64 bits, cookie; (length bytes of data if the request is of type
 * NBD_CMD_READ and error is zero)". */
struct nbd_simple_reply {
	uint32_t sr_magic;          /* NBD_SIMPLE_REPLY_MAGIC */
	uint32_t sr_error;          /* NBD_E* */
	uint64_t sr_cookie;
};

/* server -> client, the header of every structured reply chunk: "32 bits,
 * 0x668e33ef, magic; 16 bits, flags; 16 bits, type; 64 bits, cookie; 32
 * bits, length of payload (unsigned)". The chunk with NBD_REPLY_FLAG_DONE
 * is the request's last. */
struct nbd_structured_reply {
	uint32_t ch_magic;          /* NBD_STRUCTURED_REPLY_MAGIC */
	uint16_t ch_flags;          /* NBD_REPLY_FLAG_* */
	uint16_t ch_type;           /* NBD_REPLY_TYPE_* */
	uint64_t ch_cookie;
	uint32_t ch_length;         /* bytes of chunk payload that follow */
};

/* An NBD_REPLY_TYPE_OFFSET_DATA chunk: "length MUST be at least 9 ... 64
 * bits: offset (unsigned); length - 8 bytes: data". */
struct nbd_chunk_offset_data {
	struct nbd_structured_reply od_hdr;
	uint64_t od_offset;         /* the data follows */
};

/* An NBD_REPLY_TYPE_ERROR chunk: "length MUST be at least 6": "32 bits:
 * error (MUST be nonzero); 16 bits: message length (no more than header
 * length - 6); message length bytes: optional string". */
struct nbd_chunk_error {
	struct nbd_structured_reply er_hdr;
	uint32_t er_error;          /* NBD_E*, never 0 */
	uint16_t er_msg_len;        /* the message follows */
};

/* One extent of a block status reply: "32 bits, length of the extent to
 * which the status below applies (unsigned, MUST be nonzero); 32 bits,
 * status flags". */
struct nbd_block_descriptor {
	uint32_t bd_length;
	uint32_t bd_status;         /* NBD_STATE_* for base:allocation */
};

/* An NBD_REPLY_TYPE_BLOCK_STATUS chunk: "length MUST be 4 + (a positive
 * integer multiple of 8)": "32 bits, metadata context ID", then the
 * descriptors; with NBD_CMD_FLAG_REQ_ONE exactly one. */
struct nbd_chunk_block_status {
	struct nbd_structured_reply bs_hdr;
	uint32_t bs_context;        /* NBD_META_ID_BASE_ALLOCATION */
	struct nbd_block_descriptor bs_desc[];
};
#pragma pack(pop)
_Static_assert(sizeof(struct nbd_greeting) == 18, "greeting");
_Static_assert(sizeof(struct nbd_opt_hdr) == 16, "option header");
_Static_assert(sizeof(struct nbd_opt_reply) == 20, "option reply");
_Static_assert(sizeof(struct nbd_rep_server) == 4, "NBD_REP_SERVER, fixed part");
_Static_assert(sizeof(struct nbd_rep_meta_context) == 4, "NBD_REP_META_CONTEXT, fixed part");
_Static_assert(sizeof(struct nbd_info_export) == 12, "NBD_INFO_EXPORT");
_Static_assert(sizeof(struct nbd_info_text) == 2, "NBD_INFO_NAME/DESCRIPTION, fixed part");
_Static_assert(sizeof(struct nbd_info_block_size) == 14, "NBD_INFO_BLOCK_SIZE");
_Static_assert(sizeof(struct nbd_export_name_reply) == 134, "export name reply");
_Static_assert(offsetof(struct nbd_export_name_reply, en_zeroes) == 10, "export name reply, NO_ZEROES");
_Static_assert(sizeof(struct nbd_request) == 28, "request");
_Static_assert(sizeof(struct nbd_simple_reply) == 16, "simple reply");
_Static_assert(sizeof(struct nbd_structured_reply) == 20, "structured reply chunk header");
_Static_assert(sizeof(struct nbd_chunk_offset_data) == 28, "OFFSET_DATA chunk, before the data");
_Static_assert(sizeof(struct nbd_chunk_error) == 26, "ERROR chunk, before the message");
_Static_assert(sizeof(struct nbd_block_descriptor) == 8, "block descriptor");
_Static_assert(sizeof(struct nbd_chunk_block_status) == 24, "BLOCK_STATUS chunk, before the descriptors");

/* The one meta context we serve, and its id. */
#define NBD_META_BASE_ALLOCATION "base:allocation"
#define NBD_META_ID_BASE_ALLOCATION 1u

#endif
