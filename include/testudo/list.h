/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A tiny intrusive list: circular and doubly linked, with the head a
 * struct tdo_list of its own that is never an item. An item embeds a
 * struct tdo_list and is found from it with tdo_list_item().
 *
 * Invariants:
 *  - an initialised node is either alone (prev == next == itself) or on
 *    exactly one list; tdo_list_del() leaves it alone again, so deleting
 *    an item twice is harmless
 *  - a list is empty when its head is alone
 *
 * Nothing here allocates or locks: the caller owns the items and runs on
 * one thread.
 */
#ifndef TESTUDO_LIST_H
#define TESTUDO_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct tdo_list {
	struct tdo_list *prev, *next;
};

/* An empty list, or an item on none. */
static inline void tdo_list_init(struct tdo_list *l)
{
	l->prev = l->next = l;
}

static inline bool tdo_list_empty(const struct tdo_list *l)
{
	return l->next == l;
}

/* Add item X (on no list) at the end of HEAD. */
static inline void tdo_list_add_tail(struct tdo_list *head, struct tdo_list *x)
{
	x->prev = head->prev;
	x->next = head;
	head->prev->next = x;
	head->prev = x;
}

/* Take X off its list; it is alone afterwards. */
static inline void tdo_list_del(struct tdo_list *x)
{
	x->prev->next = x->next;
	x->next->prev = x->prev;
	tdo_list_init(x);
}

/* Move every item of SRC to the end of DST, in order (SRC ends empty). */
static inline void tdo_list_move(struct tdo_list *dst, struct tdo_list *src)
{
	while (!tdo_list_empty(src)) {
		struct tdo_list *x = src->next;
		tdo_list_del(x);
		tdo_list_add_tail(dst, x);
	}
}

/* Every node L of the list at HEAD, in order; L may not be taken off it
 * inside the loop. */
#define tdo_list_foreach(l, head) for (struct tdo_list *l = (head)->next; l != (head); l = l->next)

/* The T whose member M is the node P. */
#define tdo_list_item(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

#endif
