/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the segment life cycle. Every change of a segment's state (FREE,
 * OPEN, SEALED, FREEING), and with it the free count e->seg_free, is one
 * function here; the writer, the checkpoint, the cleaner and the reads
 * call them at the moments the diagram on struct seg (internal.h) names.
 * Policy stays with the callers (which segment the cleaner picks, whether
 * a client may take the reserve); this file only knows when a move is
 * allowed.
 *
 * Why one file: the rule that matters most, "a segment is reused only when
 * nothing can still refer to it", used to be spelled out wherever a
 * segment was freed, and the test for "empty, waiting for a checkpoint"
 * was copied three times. Here it is written once.
 *
 * Must never: free a segment that has live data, is being cleaned, has a
 * read in flight, or may still be named by the durable checkpoint or on
 * its replay path; or leave e->seg_free different from the number of
 * FREE segments.
 */
#include "internal.h"

void seg_set_from_recovery(struct tdo_engine *e)
{
	e->seg_free = 0;
	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++) {
		struct seg *s = &e->segs[i];

		if (i == e->head_seg)
			s->state = SEG_OPEN;
		else if (s->live)
			s->state = SEG_SEALED;
		else {
			s->state = SEG_FREE;
			e->seg_free++;
		}
	}
}

bool seg_open_next(struct tdo_engine *e)
{
	uint32_t i;

	if (e->seg_free == 0)
		return false;
	for (i = 0; i < e->sb.sb_seg_count; i++)
		if (e->segs[i].state == SEG_FREE)
			break;
	if (i == e->sb.sb_seg_count)
		return false;
	e->segs[e->head_seg].state = SEG_SEALED;
	e->segs[i].state = SEG_OPEN;
	e->segs[i].live = 0;
	e->seg_free--;
	e->head_seg = i;
	return true;
}

bool seg_reclaimable(const struct tdo_engine *e, uint32_t i)
{
	const struct seg *s = &e->segs[i];

	return s->state == SEG_SEALED && s->live == 0 && !s->cleaning;
}

/*
 * An empty sealed segment usually waits for the next checkpoint, because
 * the durable one may name its records. It need not wait when all of it was
 * written before the durable checkpoint's replay start: then it is on no
 * replay path, and every record that moved its data elsewhere (a newer
 * write, a trim, a cleaner copy) is durable and after that start, or already
 * in the checkpoint, so replay never needs the old copy's bytes.
 */
bool seg_try_free(struct tdo_engine *e, uint32_t i)
{
	struct seg *s = &e->segs[i];

	if (!seg_reclaimable(e, i) || s->readers || s->age >= e->ckpt_log_seq || e->closing == 2)
		return false;
	s->state = SEG_FREE;
	e->seg_free++;
	return true;
}

bool seg_mark_freeing(struct tdo_engine *e, uint32_t i)
{
	if (!seg_reclaimable(e, i))
		return false;
	e->segs[i].state = SEG_FREEING;
	return true;
}

void seg_unmark_freeing(struct tdo_engine *e, uint32_t i)
{
	e->segs[i].state = SEG_SEALED;
}

void seg_release(struct tdo_engine *e, uint32_t i)
{
	struct seg *s = &e->segs[i];

	if (s->state != SEG_FREEING)
		return;
	if (s->readers) {
		s->free_when_idle = true; /* the last reader frees it */
		return;
	}
	s->state = SEG_FREE;
	e->seg_free++;
}

void seg_reader_get(struct tdo_engine *e, uint32_t i)
{
	e->segs[i].readers++;
}

void seg_reader_put(struct tdo_engine *e, uint32_t i)
{
	struct seg *s = &e->segs[i];

	if (--s->readers)
		return;
	if (s->state == SEG_FREEING && s->free_when_idle) {
		s->free_when_idle = false;
		s->state = SEG_FREE;
		e->seg_free++;
	} else {
		seg_try_free(e, i);
	}
}
