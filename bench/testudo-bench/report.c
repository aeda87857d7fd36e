/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The end report, for people and (--json) for scripts.
 */
#include <inttypes.h>
#include <stdio.h>

#include "internal.h"

const char *tb_nbd_err_name(unsigned code)
{
	switch (code) {
	case NBD_EPERM: return "EPERM";
	case NBD_EIO: return "EIO";
	case NBD_ENOMEM: return "ENOMEM";
	case NBD_EINVAL: return "EINVAL";
	case NBD_ENOSPC: return "ENOSPC";
	case NBD_EOVERFLOW: return "EOVERFLOW";
	case NBD_ENOTSUP: return "ENOTSUP";
	case NBD_ESHUTDOWN: return "ESHUTDOWN";
	default: return "other";
	}
}

static const char *const rw_name[] = {
	[TB_READ] = "read", [TB_WRITE] = "write", [TB_RANDREAD] = "randread",
	[TB_RANDWRITE] = "randwrite", [TB_RANDRW] = "randrw", [TB_RW_VERIFY_PASS] = "verify",
};

static void us(FILE *f, const char *name, uint64_t ns)
{
	if (ns >= 10000000)
		fprintf(f, " %s %.1f ms", name, (double)ns / 1e6);
	else if (ns >= 1000000)
		fprintf(f, " %s %.2f ms", name, (double)ns / 1e6);
	else
		fprintf(f, " %s %.1f us", name, (double)ns / 1e3);
}

static uint64_t nbd_errors(const struct tb_result *r)
{
	uint64_t n = 0;
	for (int i = 0; i < 128; i++)
		n += r->errs.nbd[i];
	return n;
}

static uint64_t findings(const struct tb_result *r)
{
	uint64_t n = 0;
	for (int i = 1; i < TB_NBAD; i++)
		n += r->errs.bad[i];
	return n;
}

static void latency_line(FILE *f, const char *what, const struct tb_hist *h)
{
	if (!h->count)
		return;
	fprintf(f, "  %-9s", what);
	us(f, "min", h->min);
	us(f, "mean", h->sum / h->count);
	us(f, "p50", tb_hist_quantile(h, 0.50));
	us(f, "p90", tb_hist_quantile(h, 0.90));
	us(f, "p99", tb_hist_quantile(h, 0.99));
	us(f, "p99.9", tb_hist_quantile(h, 0.999));
	us(f, "max", h->max);
	fputc('\n', f);
}

void tb_report(const struct tb_opts *o, const struct tb_result *r, FILE *f)
{
	double t = r->elapsed_s > 0 ? r->elapsed_s : 1e-9;
	fprintf(f, "testudo-bench %s: %s, qd %d x %d conn%s, %.2f s\n", rw_name[o->rw], o->uri[0].text,
		o->qd, o->conns, o->conns == 1 ? "" : "s", r->elapsed_s);
	if (r->aborted)
		fprintf(f, "  ABORTED   %s\n", r->abort_reason);
	fprintf(f, "  ops       %" PRIu64 " (%.0f IOPS): %" PRIu64 " reads, %" PRIu64 " writes; and %" PRIu64 " flushes\n",
		r->ops, (double)r->ops / t, r->reads, r->writes, r->flushes);
	fprintf(f, "  bandwidth %.1f MB/s (read %.1f, write %.1f)\n",
		(double)(r->read_bytes + r->write_bytes) / t / 1e6, (double)r->read_bytes / t / 1e6,
		(double)r->write_bytes / t / 1e6);
	latency_line(f, "latency", &r->lat);
	if (r->lat_read.count && r->lat_write.count) {
		latency_line(f, " reads", &r->lat_read);
		latency_line(f, " writes", &r->lat_write);
	}
	latency_line(f, " flushes", &r->lat_flush);
	fprintf(f, "  errors    ");
	if (!nbd_errors(r) && !r->errs.disconnect && !findings(r))
		fprintf(f, "none");
	for (unsigned i = 0; i < 128; i++)
		if (r->errs.nbd[i])
			fprintf(f, "%s %" PRIu64 " ", i == 127 ? "other" : tb_nbd_err_name(i), r->errs.nbd[i]);
	if (r->errs.disconnect)
		fprintf(f, "disconnect %" PRIu64 " ", r->errs.disconnect);
	for (int i = 1; i < TB_NBAD; i++)
		if (r->errs.bad[i])
			fprintf(f, "verify-%s %" PRIu64 " ", tb_bad_name[i], r->errs.bad[i]);
	fputc('\n', f);
	fprintf(f, "  pauses    longest gap without completions %.3f s%s; %" PRIu64 " over %.0f ms, %.3f s in all\n",
		(double)r->longest_gap_ns / 1e9, r->gap_open_at_end ? " (still open at the end)" : "",
		r->pauses, o->pause_ms, (double)r->pause_total_ns / 1e9);
	if (r->reconnects || r->connect_failures)
		fprintf(f, "  reconnect %" PRIu64 " reconnections, %" PRIu64 " failed attempts\n",
			r->reconnects, r->connect_failures);
	if (o->rw == TB_RW_VERIFY_PASS)
		fprintf(f, "verify: %" PRIu64 " blocks checked, %" PRIu64 " lost, %" PRIu64
			" newer than the journal (in flight); journal %" PRIu64 " records (%" PRIu64 " in doubt)%s\n",
			r->checked, r->lost, r->newer, r->journal_records, r->in_doubt,
			r->journal_tail ? ", damaged tail ignored" : "");
	else if (o->journal)
		fprintf(f, "  verify    %" PRIu64 " acknowledged writes journaled in %s (and %" PRIu64
			" in doubt); %" PRIu64 " findings in reads\n",
			r->journal_records - r->in_doubt, o->journal, r->in_doubt, findings(r));
}

static void hist_json(FILE *f, const char *name, const struct tb_hist *h)
{
	fprintf(f, "\"%s\":{\"count\":%" PRIu64 ",\"min_ns\":%" PRIu64 ",\"mean_ns\":%" PRIu64
		",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64 ",\"p999_ns\":%" PRIu64
		",\"max_ns\":%" PRIu64 "}",
		name, h->count, h->count ? h->min : 0, h->count ? h->sum / h->count : 0,
		tb_hist_quantile(h, 0.5), tb_hist_quantile(h, 0.9), tb_hist_quantile(h, 0.99),
		tb_hist_quantile(h, 0.999), h->max);
}

void tb_report_json(const struct tb_opts *o, const struct tb_result *r, FILE *f)
{
	double t = r->elapsed_s > 0 ? r->elapsed_s : 1e-9;
	fprintf(f, "{\"rw\":\"%s\",\"qd\":%d,\"conns\":%d,\"elapsed_s\":%.6f,\"aborted\":%s,",
		rw_name[o->rw], o->qd, o->conns, r->elapsed_s, r->aborted ? "true" : "false");
	if (r->aborted) {
		fputs("\"abort_reason\":\"", f);
		for (const char *p = r->abort_reason; *p; p++) {
			if (*p == '"' || *p == '\\')
				fputc('\\', f);
			fputc((unsigned char)*p < 32 ? '?' : *p, f);
		}
		fputs("\",", f);
	}
	fprintf(f, "\"ops\":%" PRIu64 ",\"iops\":%.1f,\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
		",\"flushes\":%" PRIu64 ",\"read_bytes\":%" PRIu64 ",\"write_bytes\":%" PRIu64
		",\"mbps\":%.3f,", r->ops, (double)r->ops / t, r->reads, r->writes, r->flushes,
		r->read_bytes, r->write_bytes, (double)(r->read_bytes + r->write_bytes) / t / 1e6);
	hist_json(f, "latency", &r->lat);
	fputc(',', f);
	hist_json(f, "read_latency", &r->lat_read);
	fputc(',', f);
	hist_json(f, "write_latency", &r->lat_write);
	fputc(',', f);
	hist_json(f, "flush_latency", &r->lat_flush);
	fprintf(f, ",\"errors\":{\"disconnect\":%" PRIu64, r->errs.disconnect);
	for (unsigned i = 0; i < 128; i++)
		if (r->errs.nbd[i])
			fprintf(f, ",\"%s\":%" PRIu64, i == 127 ? "other" : tb_nbd_err_name(i), r->errs.nbd[i]);
	for (int i = 1; i < TB_NBAD; i++)
		fprintf(f, ",\"verify_%s\":%" PRIu64, tb_bad_name[i], r->errs.bad[i]);
	fprintf(f, "},\"longest_gap_s\":%.6f,\"pauses\":%" PRIu64 ",\"pause_total_s\":%.6f,"
		"\"pause_threshold_ms\":%.1f,\"reconnects\":%" PRIu64 ",\"connect_failures\":%" PRIu64
		",\"journal_records\":%" PRIu64 ",\"in_doubt\":%" PRIu64 ",\"gap_open_at_end\":%s",
		(double)r->longest_gap_ns / 1e9, r->pauses, (double)r->pause_total_ns / 1e9, o->pause_ms,
		r->reconnects, r->connect_failures, r->journal_records, r->in_doubt,
		r->gap_open_at_end ? "true" : "false");
	if (o->rw == TB_RW_VERIFY_PASS)
		fprintf(f, ",\"checked\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"newer\":%" PRIu64,
			r->checked, r->lost, r->newer);
	fputs("}\n", f);
}
