/* lk_common.c: the per-thread error message behind lk_fail()/lk_last_error(). */
#include "lk_common.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char lk_errmsg[LK_ERRMSG_CAP];

lk_status lk_fail(lk_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lk_errmsg, sizeof lk_errmsg, fmt, ap);
    va_end(ap);
    return st;
}

void lk_error_prefix(const char *fmt, ...) {
    char prefix[LK_ERRMSG_CAP], old[LK_ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, lk_errmsg, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof lk_errmsg) n = sizeof lk_errmsg - 1;
    memcpy(lk_errmsg, prefix, n);
    size_t m = strnlen(old, sizeof old - 1);
    if (m > sizeof lk_errmsg - 1 - n) m = sizeof lk_errmsg - 1 - n;
    memcpy(lk_errmsg + n, old, m);
    lk_errmsg[n + m] = 0;
}

const char *lk_last_error(void) { return lk_errmsg[0] ? lk_errmsg : "unknown error"; }

void lk_clear_error(void) { lk_errmsg[0] = 0; }
