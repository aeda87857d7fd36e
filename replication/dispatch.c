/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the volume tier's messages from peers, checked and handed out.
 * The cluster (peer.c) has checked framing and checksum; here each type's
 * length (and a write's operation) is checked before its handler runs.
 *
 * Must never: hand a handler a message shorter than its header, or of a
 * type or operation the handler does not take; keep the connection of a
 * peer that sent one (it is dropped, saying so); act on anything once
 * the node is stopping.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

void dsp_msg(void *arg, int peer, uint16_t type, const void *pl, uint32_t len)
{
	struct tdo_vtier *vt = arg;
	if (vt->stopping)
		return;
	switch (type) {
	case TDO_RM_VCONF:
		if (len != sizeof(struct tdo_rm_vconf))
			break;
		{
			struct tdo_rm_vconf c;
			memcpy(&c, pl, sizeof(c));
			cfgp_on_vconf(vt, peer, &c);
		}
		return;
	case TDO_RM_VCONF_ACK:
		if (len != sizeof(struct tdo_rm_vconf_ack) && len != sizeof(struct tdo_rm_vconf_ack) + sizeof(struct tdo_rm_vconf))
			break;
		{
			struct tdo_rm_vconf_ack a;
			memcpy(&a, pl, sizeof(a));
			cfgp_on_vconf_ack(vt, peer, &a, (const char *)pl + sizeof(a), len - (uint32_t)sizeof(a));
		}
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
			fwd_on_req(vt, peer, &io, (const char *)pl + sizeof(io), len - (uint32_t)sizeof(io));
		else
			wr_on_write(vt, peer, &io, (const char *)pl + sizeof(io), len - (uint32_t)sizeof(io),
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
			fwd_on_rep(vt, peer, &a, (const char *)pl + sizeof(a), len - (uint32_t)sizeof(a));
			return;
		}
		if (len != sizeof(a))
			break;
		if (type == TDO_RM_WACK) {
			wr_on_wack(vt, peer, &a);
			return;
		}
		rs_on_ack(vt, peer, &a);
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
			rsr_on_msg(vt, peer, type, &m);
			return;
		}
		if (type == TDO_RM_RS_STATE)
			rs_on_state(vt, peer, &m);
		else if (type == TDO_RM_RS_MAP)
			rs_on_map(vt, peer, &m, (const char *)pl + sizeof(m), len - (uint32_t)sizeof(m));
		else
			rs_on_end(vt, peer, &m);
		return;
	}
	case TDO_RM_SUM:
	case TDO_RM_SUM_REP: {
		if (len < sizeof(struct tdo_rm_sum) || (type == TDO_RM_SUM && len != sizeof(struct tdo_rm_sum)))
			break;
		struct tdo_rm_sum m;
		memcpy(&m, pl, sizeof(m));
		if (type == TDO_RM_SUM)
			ver_on_sum(vt, peer, &m);
		else
			ver_on_sum_rep(vt, peer, &m, (const char *)pl + sizeof(m), len - (uint32_t)sizeof(m));
		return;
	}
	case TDO_RM_PROMOTE:
	case TDO_RM_PROMOTE_REP: {
		if (len != sizeof(struct tdo_rm_promote))
			break;
		struct tdo_rm_promote m;
		memcpy(&m, pl, sizeof(m));
		if (type == TDO_RM_PROMOTE)
			pm_on_promote(vt, peer, &m);
		else
			pm_on_rep(vt, peer, &m);
		return;
	}
	}
	char why[80];
	snprintf(why, sizeof(why), "malformed volume message (type %u, %u bytes)", type, len);
	tdo_cluster_drop(vt->c, peer, why);
}
