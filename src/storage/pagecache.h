/*
 * pagecache: SQLite's own page cache, without a walk of the whole cache at
 * every commit.
 *
 * Every write transaction ends with the pager telling its page cache to drop
 * the pages past the database's last one (xTruncate). SQLite's default cache
 * (pcache1) decides how much to scan from the highest page number it has ever
 * held since its last truncate, not from the pages it holds now. SQLite 3.40
 * (Debian 12's) moves new b-tree pages into page order through a temporary
 * number, the page after PENDING_BYTE (262,145 with 4 KiB pages), whenever a
 * split makes siblings out of order. That page is renamed again at once, but
 * the cache remembers the high number, so on every database smaller than
 * 1 GiB the truncate that follows visits every hash bucket and every cached
 * page: 7,400 pages of the writer's 32 MiB cache at every commit, 11 % of the
 * writer's CPU samples at C=256 (docs/benchmarks.md, "Issue 15: the writer's
 * walk of its page cache"). Later SQLite releases use a number just past the
 * end instead. Without the walk the writer's CPU per send fell by 14-17 % at
 * C=64 (23 sends a commit) and by 3-4 % at C=256, where a commit carries more.
 *
 * This module wraps whatever page cache is configured (the default one in
 * the service) and passes every call through, except a truncate it can prove
 * has nothing to drop. Proof: after a truncate to L reached the cache, it
 * holds no page numbered L or above. A page enters the cache only through a
 * fetch or a rename, and the wrapper notes every page that enters with a
 * number at or above L. A later truncate to L2 >= L with no noted page still
 * at or above L2 has nothing to drop and is skipped; any other truncate (a
 * lower limit, as after a rollback that shrank the database, or a noted page
 * still above it, or more noted pages than the wrapper keeps) goes through.
 * What is skipped is only ever a call that would have dropped nothing, so
 * which pages SQLite sees is unchanged.
 *
 * Thread safety: as SQLite's own. Each cache belongs to one connection and
 * SQLite calls its methods under that connection's mutex; the counters are
 * atomics.
 */
#ifndef GIM_STORAGE_PAGECACHE_H
#define GIM_STORAGE_PAGECACHE_H

#include <stdint.h>

#include "err.h"

/*
 * Wraps the page cache now configured (SQLITE_CONFIG_GETPCACHE2) in this
 * module's. Only the first call of the process tries; later calls change
 * nothing and return its result. It must run before SQLite initialises
 * (before the first connection, VFS or sqlite3_initialize): afterwards
 * SQLite refuses a new page cache, nothing changes and GIM_EINTERNAL is
 * returned (SQLite's default cache then serves, as correct as before, with
 * its walk).
 */
gim_err pagecache_install(void);

struct pagecache_stats {
    uint64_t truncates; /* truncates SQLite asked for, since the start */
    uint64_t skipped;   /* of those, proven empty and not passed on */
};

/* Totals over every cache of the process (for tests). */
void pagecache_stats(struct pagecache_stats *out);

#endif
