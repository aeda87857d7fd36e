/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the rules of a volume's configuration (struct tdo_rm_vconf),
 * as pure functions: which configuration is newer, which is valid, what
 * each kind of change makes of the one in force, and how much of a
 * replica's log its epoch history vouches for (a resync's bound).
 *
 * Why apart: they are what a configuration *is*, whoever stores it. The
 * proposals and majorities of config.c and config_peer.c are one way to
 * agree on a configuration (issue 17 replaces them with etcd); these
 * rules stay. Being pure they are tested on their own
 * (tests/unit/test_vconf.c).
 *
 * Must never: touch the engine, the cluster or the tier's state (the
 * caller passes what it knows of this node in struct vconf_self); make
 * a configuration that is not newer than the one it came from, unless it
 * says "nothing to do" by returning that one unchanged; promote a node
 * that is not an in-sync replica with no resync into its copy running.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *vconf_state_name(uint32_t s)
{
	switch (s) {
	case TDO_REP_IN_SYNC: return "in-sync";
	case TDO_REP_CATCHING_UP: return "catching-up";
	case TDO_REP_OUT_OF_DATE: return "out-of-date";
	}
	return "unknown";
}

bool vconf_newer(const struct tdo_rm_vconf *a, const struct tdo_rm_vconf *b)
{
	return a->vc_epoch > b->vc_epoch || (a->vc_epoch == b->vc_epoch && a->vc_version > b->vc_version);
}

int vconf_rep_index(const struct tdo_rm_vconf *c, const char *node)
{
	for (uint32_t i = 0; i < c->vc_nrep && i < TDO_REP_MAX; i++)
		if (!strcmp(c->vc_rep[i], node))
			return (int)i;
	return -1;
}

bool vconf_live(const struct tdo_rm_vconf *c)
{
	return !c->vc_deleted && c->vc_version;
}

/* A name from the wire: NUL-terminated within its field and valid. */
bool vconf_wire_name(const char *field, char *out)
{
	if (!memchr(field, 0, 64))
		return false;
	snprintf(out, TDO_NAME_MAX + 1, "%s", field);
	return tdo_vol_name_valid(out);
}

bool vconf_valid(const struct tdo_rm_vconf *c)
{
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(c->vc_name, name) || c->vc_nrep < 1 || c->vc_nrep > TDO_REP_MAX ||
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

/* The configuration CH would make from CUR; false with WHY when it cannot. */
bool vconf_change(const struct tdo_rm_vconf *cur, const struct change *ch, const struct vconf_self *self,
                  struct tdo_rm_vconf *out, char *why, size_t wl)
{
	struct tdo_rm_vconf c = *cur;
	switch (ch->kind) {
	case CH_CREATE:
		c = ch->conf;
		if (!cur->vc_deleted && cur->vc_version) {
			snprintf(why, wl, "a volume named '%s' already exists", c.vc_name);
			return false;
		}
		c.vc_version = cur->vc_version + 1;
		c.vc_epoch = cur->vc_epoch ? cur->vc_epoch + 1 : 1;
		c.vc_nhist = 1;
		c.vc_hist[0].vh_epoch = c.vc_epoch;
		c.vc_hist[0].vh_start_lsn = 0;
		break;
	case CH_STATE:
		if (cur->vc_deleted || !self->primary) {
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
		int me = vconf_rep_index(&c, self->node);
		if (c.vc_deleted || me < 0) {
			snprintf(why, wl, "node '%s' holds no copy of '%s'", self->node, c.vc_name);
			return false;
		}
		if (c.vc_state[me] != TDO_REP_IN_SYNC || self->rs_active) {
			snprintf(why, wl, "node '%s' is %s: only an in-sync replica can be promoted", self->node,
			         vconf_state_name(c.vc_state[me]));
			return false;
		}
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
		c.vc_hist[c.vc_nhist].vh_start_lsn = self->lsn;
		c.vc_nhist++;
		break;
	}
	case CH_DELETE:
	case CH_RESIZE:
		if (c.vc_deleted) {
			snprintf(why, wl, "no volume '%s'", c.vc_name);
			return false;
		}
		if (ch->kind == CH_DELETE)
			c.vc_deleted = 1;
		else
			c.vc_size = ch->size;
		c.vc_version++;
		break;
	}
	*out = c;
	return true;
}

int vconf_hist_index(const struct tdo_rm_vconf *c, uint32_t epoch)
{
	for (uint32_t i = 0; i < c->vc_nhist && i < TDO_VHIST_MAX; i++)
		if (c->vc_hist[i].vh_epoch == epoch)
			return (int)i;
	return -1;
}

uint64_t vconf_resync_bound(const struct tdo_rm_vconf *c, uint64_t replica_lsn, uint32_t replica_epoch,
                            uint64_t primary_lsn)
{
	uint64_t bound = replica_lsn;
	if (replica_epoch != c->vc_epoch) {
		/* its writes are the history only up to where the epoch after its
		 * own began; with its epoch not in the history (older than the
		 * history keeps, or never of this configuration) that is not
		 * known, and nothing of its log is trusted */
		int i = vconf_hist_index(c, replica_epoch);
		uint64_t cut = i >= 0 && (uint32_t)i + 1 < c->vc_nhist ? c->vc_hist[i + 1].vh_start_lsn : 0;
		if (cut < bound)
			bound = cut;
	}
	if (bound > primary_lsn)
		bound = primary_lsn;
	return bound;
}
