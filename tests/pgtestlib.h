/*
 * pgtestlib: the tests' PostgreSQL. ctest's fixture (tests/CMakeLists.txt: pg_start and
 * pg_stop, tools/pgtmp.sh) starts one throw-away PostgreSQL 15 for the whole ctest run, in
 * the build tree's pgtmp/ directory, whose url file names it; a test that needs it is marked
 * with gim_pg_tests() there (FIXTURES_REQUIRED pg, label pg). Each test makes databases of its
 * own on that server (pgt_create_db), so tests running in parallel (ctest -j, --repeat) never
 * share one, and drops them when done (pgt_drop_db).
 *
 * The server: $GIM_TEST_PG_URL when set (any server the tests may create databases on), else
 * the URL in $GIM_TEST_PG_DIR/url (the fixture sets GIM_TEST_PG_DIR), else in the url file of
 * the directory this build's fixture uses (compiled in: a test binary run by hand finds the
 * server a running ctest started, or `tools/pgtmp.sh start BUILD/pgtmp`).
 *
 * The pgt_* calls fail the current Criterion test, saying what went wrong, when they cannot
 * do their job; the pgt_try_* calls return -1 and write the reason into err instead, for
 * threads other than the test's own (Criterion's assertions belong to the test's thread).
 * Strings returned are static (pgt_url) or written into the caller's buffers.
 */
#ifndef GIM_PGTESTLIB_H
#define GIM_PGTESTLIB_H

#include <stddef.h>

/* Enough for any URL the fixture or pgt_create_db makes. */
#define PGT_URL_MAX 512

/* The test server's URL (static storage, read once). Fails the test, saying how to start a
 * server, when there is none. */
const char *pgt_url(void);

/* Creates a new, empty database with a unique name (gimt_PID_N_RANDOM) on the test server
 * and writes its URL (the server's URL with that database) into url_out. Fails the test on
 * error. */
void pgt_create_db(char *url_out, size_t cap);

/* Drops the database url names, if it exists (WITH (FORCE): connections a killed service left
 * do not keep it); when it returns, the database is gone. Only databases pgt_create_db made
 * (gimt_*): any other name fails the test. */
void pgt_drop_db(const char *url);

/* Like pgt_create_db and pgt_drop_db; return 0, or -1 with the reason in err (errcap bytes). */
int pgt_try_create_db(char *url_out, size_t cap, char *err, size_t errcap);
int pgt_try_drop_db(const char *url, char *err, size_t errcap);

/* base (a postgresql:// URL or a key=value string) with its database replaced by name, into
 * out: a URL's path (its ?query kept), a string's dbname (appended: a later key wins). 0, or
 * -1 if out is too small. */
int pgt_url_with_db(const char *base, const char *name, char *out, size_t cap);

/* The database name in url (a postgresql:// URL or a key=value string) into out; 0, or -1 if
 * it names none or out is too small. */
int pgt_db_name(const char *url, char *out, size_t cap);

#endif
