/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Additions to the contract in internal.h that only metrics.c and
 * admin.c use (kept apart so internal.h stays the shared interface).
 */
#ifndef TESTUDO_SERVER_ADMIN_H
#define TESTUDO_SERVER_ADMIN_H

#include "internal.h"

/* ---- metrics.c ---------------------------------------------------------- */

/*
 * Drop volume NAME's figures and free its slot for reuse. Call only when
 * no connection holds the pointer met_vol() returned for it (admin.c calls
 * it after deleting a volume that had no connection attached).
 */
void met_forget(struct metrics *m, const char *name);

#endif
