/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the online commands, which go through a running testudod's admin
 * API: volume create, list, resize, delete and verify, promote, status.
 * Each checks its arguments here, sends one request (admin_client.c), and
 * prints the reply for a person, or with --json the daemon's JSON as it
 * came, so that scripts read what the daemon said and not our rendering
 * of it. The daemon decides; this file asks and shows. It must never open
 * a device, and never fail on a field it prints that a reply lacks (it
 * prints "?" or 0).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testudo/engine.h"
#include "testudo/util.h"

#include "internal.h"

static uint64_t ju64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : "?";
}

/* " node=state ..." of a volume's replicas (one schema: a lone daemon is
 * a cluster of one, its copy the only replica). */
static void print_replicas(json_t *vol, bool states)
{
	size_t m;
	json_t *rp;

	json_array_foreach(json_object_get(vol, "replicas"), m, rp) {
		if (!states)
			printf("%s %s", m ? "," : "", jstr(rp, "node"));
		else
			printf(" %s=%s", jstr(rp, "node"),
			       json_is_true(json_object_get(rp, "down")) ? "down" : jstr(rp, "state"));
	}
}

static int online_name(const char *name)
{
	if (!tdo_vol_name_valid(name))
		return cli_die("invalid volume name '%s' (1-63 of A-Z a-z 0-9 . _ -, not starting with . or -)", name);
	return 0;
}

/* PATH = "/v1/volumes/NAME" then TAIL, once NAME is known valid; 0 or 1. */
static int volume_path(char *path, size_t len, const char *name, const char *tail)
{
	if (online_name(name))
		return 1;
	snprintf(path, len, "/v1/volumes/%s%s", name, tail);
	return 0;
}

int online_volume(const struct admin_addr *a, int argc, char **argv)
{
	const char *pos[3] = { 0 }, *sub, *compress = NULL, *primary = NULL;
	long replicas = 0;
	struct admin_reply r;
	char path[128], *body = NULL;
	bool json = false;
	json_t *j;
	int npos = 0, rc;
	uint64_t size = 0;

	if (argc < 1)
		return cli_die("volume: which command? (create, list, resize, delete)");
	sub = argv[0];
	if (!strcmp(sub, "import") || !strcmp(sub, "export"))
		return cli_die("volume %s works offline only: stop testudod, then testudo --device PATH volume %s NAME FILE",
		           sub, sub);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--compress") && !strcmp(sub, "create") && i + 1 < argc) {
			compress = argv[++i];
			if (strcmp(compress, "lz4") && strcmp(compress, "none"))
				return cli_die("unknown compression '%s' (lz4)", compress);
		} else if (!strcmp(argv[i], "--replicas") && !strcmp(sub, "create") && i + 1 < argc) {
			char *end;
			replicas = strtol(argv[++i], &end, 10);
			if (*end || end == argv[i] || replicas < 1 || replicas > 5)
				return cli_die("--replicas '%s': a number from 1 to 5", argv[i]);
		} else if (!strcmp(argv[i], "--primary") && !strcmp(sub, "create") && i + 1 < argc) {
			primary = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_die("volume %s: unknown option '%s'", sub, argv[i]);
		} else if (npos < 3) {
			pos[npos++] = argv[i];
		} else {
			return cli_die("volume %s: unexpected argument '%s'", sub, argv[i]);
		}
	}

	if (!strcmp(sub, "list")) {
		if (npos)
			return cli_die("usage: testudo volume list [--json]");
		if (admin_do(a, "GET", "/v1/volumes", NULL, json, &r, &j))
			return 1;
		if (!json) {
			char s1[32], s2[32];
			size_t k;
			json_t *v;
			printf("%-24s %14s %10s %4s %12s %6s %6s %-12s %s\n", "NAME", "SIZE", "USED", "LZ4", "LSN", "CONNS",
			       "EPOCH", "PRIMARY", "REPLICAS");
			json_array_foreach(j, k, v) {
				printf("%-24s %14s %10s %4s %12" PRIu64 " %6" PRIu64 " %6" PRIu64 " %-12s", jstr(v, "name"),
				       tdo_format_size(ju64(v, "size"), s1, sizeof s1),
				       json_object_get(v, "used") ? tdo_format_size(ju64(v, "used"), s2, sizeof s2) : "-",
				       strcmp(jstr(v, "compress"), "lz4") ? "no" : "yes", ju64(v, "lsn"),
				       ju64(v, "connections"), ju64(v, "epoch"), jstr(v, "primary"));
				print_replicas(v, true);
				printf("\n");
			}
		}
		json_decref(j);
		free(r.raw);
		return 0;
	}
	if (!strcmp(sub, "create")) {
		json_t *req;
		if (npos != 2)
			return cli_die("usage: testudo volume create NAME SIZE [--compress lz4]");
		if (online_name(pos[0]) || cli_parse_vol_size(pos[1], &size))
			return 1;
		req = json_pack("{s:s, s:I, s:s}", "name", pos[0], "size", (json_int_t)size,
		                "compress", compress ? compress : "none");
		if (req && replicas)
			json_object_set_new(req, "replicas", json_integer(replicas));
		if (req && primary)
			json_object_set_new(req, "primary", json_string(primary));
		body = req ? json_dumps(req, JSON_COMPACT) : NULL;
		json_decref(req);
		if (!body)
			return cli_die("out of memory");
		rc = admin_do(a, "POST", "/v1/volumes", body, json, &r, &j);
		free(body);
		if (rc)
			return 1;
		if (!json) {
			printf("created volume %s (%" PRIu64 " bytes%s), primary %s, replicas", jstr(j, "name"),
			       ju64(j, "size"), strcmp(jstr(j, "compress"), "lz4") ? "" : ", lz4", jstr(j, "primary"));
			print_replicas(j, false);
			printf("\n");
		}
	} else if (!strcmp(sub, "resize")) {
		json_t *req;
		if (npos != 2)
			return cli_die("usage: testudo volume resize NAME SIZE");
		if (volume_path(path, sizeof path, pos[0], "") || cli_parse_vol_size(pos[1], &size))
			return 1;
		req = json_pack("{s:I}", "size", (json_int_t)size);
		body = req ? json_dumps(req, JSON_COMPACT) : NULL;
		json_decref(req);
		if (!body)
			return cli_die("out of memory");
		rc = admin_do(a, "PUT", path, body, json, &r, &j);
		free(body);
		if (rc)
			return 1;
		if (!json)
			printf("resized volume %s to %" PRIu64 " bytes\n", jstr(j, "name"), ju64(j, "size"));
	} else if (!strcmp(sub, "delete")) {
		if (npos != 1)
			return cli_die("usage: testudo volume delete NAME");
		if (volume_path(path, sizeof path, pos[0], ""))
			return 1;
		if (admin_do(a, "DELETE", path, NULL, json, &r, &j))
			return 1;
		if (!json)
			printf("deleted volume %s\n", pos[0]);
	} else if (!strcmp(sub, "verify")) {
		if (npos != 1)
			return cli_die("usage: testudo volume verify NAME");
		if (volume_path(path, sizeof path, pos[0], "/verify"))
			return 1;
		if (admin_do(a, "POST", path, "{}", json, &r, &j))
			return 1;
		bool same = json_is_true(json_object_get(j, "identical"));
		if (!json) {
			size_t m;
			json_t *x;
			printf("volume %s: %" PRIu64 " regions of %" PRIu64 " bytes on %zu replicas: %s\n", jstr(j, "volume"),
			       ju64(j, "regions"), ju64(j, "region_bytes"), json_array_size(json_object_get(j, "replicas")),
			       same ? "identical" : "DIFFERENT");
			json_array_foreach(json_object_get(j, "replicas"), m, x)
				printf("  %-16s %s\n", jstr(x, "node"), jstr(x, "result"));
			json_array_foreach(json_object_get(j, "differences"), m, x)
				printf("  differs at offset %" PRIu64 " (%" PRIu64 " bytes)\n", ju64(x, "offset"), ju64(x, "length"));
		}
		json_decref(j);
		free(r.raw);
		return same ? 0 : 1;
	} else {
		return cli_die("unknown volume command '%s' (create, list, resize, delete, verify; import and export are "
		           "offline)", sub);
	}
	json_decref(j);
	free(r.raw);
	return 0;
}

static void print_duration(uint64_t s)
{
	if (s >= 86400)
		printf("%" PRIu64 "d ", s / 86400);
	printf("%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 "\n", s / 3600 % 24, s / 60 % 60, s % 60);
}

int online_status(const struct admin_addr *a, int argc, char **argv)
{
	struct admin_reply r;
	bool json = false;
	json_t *j, *e, *seg, *l;
	char s1[32], s2[32];

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else
			return cli_die("status: unexpected argument '%s' (testudo status [--json])", argv[i]);
	}
	if (admin_do(a, "GET", "/v1/status", NULL, json, &r, &j))
		return 1;
	if (!json) {
		e = json_object_get(j, "engine");
		seg = json_object_get(e, "segments");
		l = json_object_get(j, "listeners");
		printf("device:              %s\n", jstr(j, "device"));
		printf("nbd:                 %s\n", jstr(l, "nbd"));
		printf("admin:               %s\n", jstr(l, "admin"));
		printf("uptime:              ");
		print_duration(ju64(j, "uptime_seconds"));
		printf("volumes:             %" PRIu64 "\n", ju64(j, "volumes"));
		printf("nbd connections:     %" PRIu64 "\n", ju64(j, "connections"));
		printf("capacity:            %s\n", tdo_format_size(ju64(e, "capacity"), s1, sizeof s1));
		printf("volume bytes:        %s (%.1f%% of capacity)\n",
		       tdo_format_size(ju64(e, "volume_bytes"), s1, sizeof s1),
		       ju64(e, "capacity") ? 100.0 * (double)ju64(e, "volume_bytes") / (double)ju64(e, "capacity") : 0.0);
		printf("live bytes:          %s\n", tdo_format_size(ju64(e, "live_bytes"), s1, sizeof s1));
		printf("segments:            %" PRIu64 " used, %" PRIu64 " free, %" PRIu64 " total of %s\n",
		       ju64(seg, "used"), ju64(seg, "free"), ju64(seg, "total"),
		       tdo_format_size(ju64(e, "segment_bytes"), s1, sizeof s1));
		printf("write amplification: %.2f\n", json_number_value(json_object_get(e, "write_amplification")));
		printf("written:             %s by clients, %s to the log\n",
		       tdo_format_size(ju64(e, "user_bytes"), s1, sizeof s1),
		       tdo_format_size(ju64(e, "log_bytes"), s2, sizeof s2));
		printf("flush batches:       %" PRIu64 " (%" PRIu64 " records)\n", ju64(e, "batches"),
		       ju64(e, "batch_records"));
		printf("checkpoints:         %" PRIu64 "\n", ju64(e, "checkpoints"));
		printf("cleaner:             %" PRIu64 " segments cleaned, %s copied\n", ju64(e, "segments_cleaned"),
		       tdo_format_size(ju64(e, "cleaner_bytes"), s1, sizeof s1));
		printf("read errors:         %" PRIu64 "\n", ju64(e, "read_errors"));
		printf("engine:              %s\n",
		       json_is_true(json_object_get(e, "poisoned")) ? "STOPPED after a failed device write" : "ok");
		json_t *cl = json_object_get(j, "cluster"), *pe;
		size_t k;
		if (cl) {
			printf("cluster:             %s, node %s, peers on %s\n", jstr(cl, "name"), jstr(cl, "node_id"),
			       jstr(cl, "repl"));
			json_array_foreach(json_object_get(cl, "peers"), k, pe) {
				printf("  peer %-14s %-22s %-10s for %.1f s, %" PRIu64 " connects, %" PRIu64 " drops%s%s\n",
				       jstr(pe, "id"), jstr(pe, "address"), jstr(pe, "state"),
				       json_number_value(json_object_get(pe, "state_seconds")), ju64(pe, "connects"),
				       ju64(pe, "drops"), *jstr(pe, "last_error") ? "; last error: " : "",
				       jstr(pe, "last_error"));
			}
			json_array_foreach(json_object_get(cl, "volumes"), k, pe) {
				size_t m;
				json_t *rp, *rs;
				printf("  volume %-20s epoch %" PRIu64 ", primary %s, this node %s\n", jstr(pe, "name"),
				       ju64(pe, "epoch"), jstr(pe, "primary"), jstr(pe, "role"));
				json_array_foreach(json_object_get(pe, "replicas"), m, rp) {
					printf("    %-16s %-12s%s", jstr(rp, "node"), jstr(rp, "state"),
					       json_is_true(json_object_get(rp, "down")) ? " down" : "");
					if ((rs = json_object_get(rp, "resync")))
						printf("  resync %s: %" PRIu64 " of %" PRIu64 " blocks copied (%.0f%%)", jstr(rs, "phase"),
						       ju64(rs, "copied_blocks"), ju64(rs, "total_blocks"),
						       ju64(rs, "total_blocks") ? 100.0 * (double)ju64(rs, "copied_blocks") /
						       (double)ju64(rs, "total_blocks") : 0.0);
					printf("\n");
				}
			}
		}
	}
	json_decref(j);
	free(r.raw);
	return 0;
}

int online_promote(const struct admin_addr *a, int argc, char **argv)
{
	const char *name = NULL, *node = NULL;
	bool json = false;
	struct admin_reply r;
	char path[128];
	json_t *j;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--node") && i + 1 < argc)
			node = argv[++i];
		else if (argv[i][0] != '-' && !name)
			name = argv[i];
		else
			return cli_die("promote: unexpected argument '%s' (testudo promote NAME --node ID)", argv[i]);
	}
	if (!name || !node)
		return cli_die("usage: testudo promote NAME --node ID");
	if (volume_path(path, sizeof path, name, "/promote"))
		return 1;
	json_t *req = json_pack("{s:s}", "node", node);
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body)
		return cli_die("out of memory");
	int rc = admin_do(a, "POST", path, body, json, &r, &j);
	free(body);
	if (rc)
		return 1;
	if (!json)
		printf("promoted %s to primary of %s (epoch %" PRIu64 ")\n", jstr(j, "primary"), jstr(j, "volume"),
		       ju64(j, "epoch"));
	json_decref(j);
	free(r.raw);
	return 0;
}
