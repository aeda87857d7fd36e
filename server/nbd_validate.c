/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the one validator between an NBD request and the volume tier
 * (nbdkit's validate_request()): command, flags, length, alignment,
 * range, read-only, each answered with the error the protocol names.
 *
 * What: nbd_validate() checks a request, already in host byte order,
 * against the connection's terms (the export's size and transmission
 * flags, and whether structured replies and base:allocation were
 * negotiated). nbd_transmission.c calls it for every request but
 * NBD_CMD_DISC and answers the error it returns; a write it refuses still
 * has its payload read and dropped, so the stream stays in step, except a
 * write longer than NBD_MAX_PAYLOAD, which closes the connection: its
 * payload is not worth reading.
 *
 * Why this way: a pure function of the request and the terms, so every
 * rule is tested on its own (tests/unit/test_nbd_validate.c) without a
 * socket, a loop or an engine.
 *
 * Must never: let a length reach malloc above NBD_MAX_PAYLOAD, let a
 * range past the export's end through (offset + length is checked without
 * overflow), or let a write through to a read-only export.
 */
#include "nbd_internal.h"

uint32_t nbd_validate(const struct nbd_terms *t, const struct nbd_request *rq, bool *close)
{
	/* FUA is valid on every command once SEND_FUA is advertised (always,
	 * here): the protocol says the server MUST accept it, even by ignoring it */
	uint16_t allowed = NBD_CMD_FLAG_FUA;
	bool ranged = true;

	*close = false;
	switch (rq->rq_type) {
	case NBD_CMD_READ:
		allowed |= NBD_CMD_FLAG_DF;
		if (rq->rq_length > NBD_MAX_PAYLOAD)
			return NBD_EOVERFLOW;
		break;
	case NBD_CMD_WRITE:
		if (rq->rq_length > NBD_MAX_PAYLOAD) {
			*close = true;
			return NBD_EINVAL;
		}
		break;
	case NBD_CMD_FLUSH:
		ranged = false;
		if (rq->rq_offset || rq->rq_length)
			return NBD_EINVAL;
		break;
	case NBD_CMD_TRIM:
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_CACHE:
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		if (!t->structured || !t->meta_base)
			return NBD_EINVAL; /* no context was negotiated */
		break;
	default:
		return NBD_EINVAL;
	}
	if (rq->rq_flags & ~allowed)
		return NBD_EINVAL;
	if (!ranged)
		return 0;
	if (rq->rq_length == 0)
		return NBD_EINVAL;
	if (rq->rq_offset % NBD_MIN_BLOCK || rq->rq_length % NBD_MIN_BLOCK)
		return NBD_EINVAL;
	if (rq->rq_offset > t->size || rq->rq_length > t->size - rq->rq_offset)
		return rq->rq_type == NBD_CMD_WRITE || rq->rq_type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
	if ((t->tflags & NBD_FLAG_READ_ONLY) &&
	    (rq->rq_type == NBD_CMD_WRITE || rq->rq_type == NBD_CMD_TRIM || rq->rq_type == NBD_CMD_WRITE_ZEROES))
		return NBD_EPERM;
	return 0;
}
