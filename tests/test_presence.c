#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "presence.h"
#include "storage.h"
#include "store.h"

static struct presence *p;

static void setup(void)
{
    cr_assert_eq(presence_open(&p), GIM_OK);
}

static void teardown(void)
{
    presence_close(p);
    p = NULL;
}

TestSuite(presence, .init = setup, .fini = teardown);

static void put(int64_t device, int64_t user, const char *gw, int64_t room, int64_t seen)
{
    struct session s = {
        .device_id = device, .user_id = user, .room_id = room, .last_seen_ms = seen};
    snprintf(s.gateway_id, sizeof s.gateway_id, "%s", gw);
    cr_assert_eq(presence_put(p, &s), GIM_OK);
}

static size_t user_count(int64_t user)
{
    return presence_user_sessions(p, user, NULL, 0);
}

static size_t room_count(int64_t room)
{
    return presence_room_sessions(p, room, NULL, 0);
}

Test(presence, put_and_check)
{
    put(10, 1, "gw-a", 0, 100);
    struct session s;
    cr_assert_eq(presence_check(p, 1, 10, "gw-a", 200, &s), GIM_OK);
    cr_assert_eq(s.device_id, 10);
    cr_assert_eq(s.user_id, 1);
    cr_assert_eq(s.room_id, 0);
    cr_assert_str_eq(s.gateway_id, "gw-a");
    cr_assert_eq(s.last_seen_ms, 200);
    cr_assert_eq(presence_check(p, 1, 10, "gw-a", 201, NULL), GIM_OK);

    cr_assert_eq(presence_check(p, 2, 10, "gw-a", 300, NULL), GIM_EUNAUTH, "wrong user");
    cr_assert_eq(presence_check(p, 1, 10, "gw-b", 300, NULL), GIM_EUNAUTH, "wrong gateway");
    cr_assert_eq(presence_check(p, 1, 10, "gw-", 300, NULL), GIM_EUNAUTH, "gateway prefix");
    cr_assert_eq(presence_check(p, 1, 10, "gw-aa", 300, NULL), GIM_EUNAUTH, "gateway longer");
    cr_assert_eq(presence_check(p, 1, 10, NULL, 300, NULL), GIM_EUNAUTH, "no gateway");
    cr_assert_eq(presence_check(p, 1, 11, "gw-a", 300, NULL), GIM_EUNAUTH, "unknown device");

    /* A failed check must not refresh last_seen. */
    cr_assert_eq(presence_check(p, 1, 10, "gw-a", 250, &s), GIM_OK);
    cr_assert_eq(s.last_seen_ms, 250);
}

Test(presence, check_refreshes_last_seen)
{
    put(10, 1, "gw", 0, 100);
    int64_t ids[4];
    cr_assert_eq(presence_expired(p, 150, ids, 4), 1);
    cr_assert_eq(ids[0], 10);
    cr_assert_eq(presence_check(p, 1, 10, "gw", 160, NULL), GIM_OK);
    cr_assert_eq(presence_expired(p, 150, ids, 4), 0);
    cr_assert_eq(presence_expired(p, 160, ids, 4), 0, "cutoff is exclusive");
    cr_assert_eq(presence_expired(p, 161, ids, 4), 1);
    struct session s;
    cr_assert_eq(presence_user_sessions(p, 1, &s, 1), 1);
    cr_assert_eq(s.last_seen_ms, 160);
}

Test(presence, move_gateway)
{
    put(10, 1, "gw-a", 0, 100);
    put(10, 1, "gw-b", 0, 200);
    cr_assert_eq(presence_check(p, 1, 10, "gw-a", 300, NULL), GIM_EUNAUTH);
    cr_assert_eq(presence_check(p, 1, 10, "gw-b", 300, NULL), GIM_OK);
    size_t n, r;
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 1);
    cr_assert_eq(user_count(1), 1);
}

Test(presence, move_user)
{
    put(10, 1, "gw", 5, 100);
    put(11, 1, "gw", 0, 100);
    put(10, 2, "gw", 5, 100);
    cr_assert_eq(user_count(1), 1);
    cr_assert_eq(user_count(2), 1);
    cr_assert_eq(presence_check(p, 1, 10, "gw", 200, NULL), GIM_EUNAUTH);
    cr_assert_eq(presence_check(p, 2, 10, "gw", 200, NULL), GIM_OK);
    struct session s[4];
    cr_assert_eq(presence_user_sessions(p, 1, s, 4), 1);
    cr_assert_eq(s[0].device_id, 11);
    cr_assert_eq(room_count(5), 1, "same room, not duplicated");

    put(11, 2, "gw", 0, 100);
    cr_assert_eq(user_count(1), 0, "old user keeps no sessions");
    cr_assert_eq(presence_user_sessions(p, 1, s, 4), 0);
    cr_assert_eq(presence_user_sessions(p, 2, s, 4), 2);
    int64_t a = s[0].device_id, b = s[1].device_id;
    cr_assert((a == 10 && b == 11) || (a == 11 && b == 10));
    size_t n, r;
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 2);
    cr_assert_eq(r, 1);
}

Test(presence, put_changes_room)
{
    put(10, 1, "gw", 5, 100);
    put(10, 1, "gw", 6, 100);
    cr_assert_eq(room_count(5), 0);
    cr_assert_eq(room_count(6), 1);
    put(10, 1, "gw", 0, 100);
    cr_assert_eq(room_count(6), 0);
    size_t r;
    presence_counts(p, NULL, &r);
    cr_assert_eq(r, 0);
}

Test(presence, user_zero_and_negative_ids)
{
    /* Ids are opaque keys: 0 and negatives must index like any other. */
    put(0, 0, "gw", 0, 1);
    put(-1, 0, "gw", -7, 1);
    cr_assert_eq(user_count(0), 2);
    cr_assert_eq(room_count(-7), 1);
    cr_assert_eq(presence_check(p, 0, 0, "gw", 2, NULL), GIM_OK);
    cr_assert(presence_remove(p, 0, NULL));
    cr_assert_eq(user_count(0), 1);
}

Test(presence, gateway_truncated)
{
    struct session s = {.device_id = 1, .user_id = 1};
    memset(s.gateway_id, 'x', sizeof s.gateway_id); /* no NUL at all */
    cr_assert_eq(presence_put(p, &s), GIM_OK);
    char gw[PRESENCE_GATEWAY_MAX + 1];
    memset(gw, 'x', PRESENCE_GATEWAY_MAX);
    gw[PRESENCE_GATEWAY_MAX] = 0;
    struct session out;
    cr_assert_eq(presence_check(p, 1, 1, gw, 1, &out), GIM_OK);
    cr_assert_eq(strlen(out.gateway_id), PRESENCE_GATEWAY_MAX);
}

Test(presence, remove)
{
    put(10, 1, "gw-a", 3, 100);
    put(11, 1, "gw-b", 3, 100);
    struct session old;
    cr_assert(presence_remove(p, 10, &old));
    cr_assert_eq(old.device_id, 10);
    cr_assert_eq(old.user_id, 1);
    cr_assert_eq(old.room_id, 3);
    cr_assert_str_eq(old.gateway_id, "gw-a");
    cr_assert_eq(old.last_seen_ms, 100);
    cr_assert_not(presence_remove(p, 10, &old));
    cr_assert_not(presence_remove(p, 99, NULL));
    cr_assert_eq(presence_check(p, 1, 10, "gw-a", 200, NULL), GIM_EUNAUTH);
    cr_assert_eq(presence_check(p, 1, 11, "gw-b", 200, NULL), GIM_OK);
    cr_assert_eq(user_count(1), 1);
    cr_assert_eq(room_count(3), 1);
    cr_assert(presence_remove(p, 11, NULL));
    cr_assert_eq(user_count(1), 0);
    cr_assert_eq(room_count(3), 0);
    size_t n, r;
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 0);
    cr_assert_eq(r, 0);
}

Test(presence, rooms_and_counts)
{
    for (int64_t d = 1; d <= 6; d++)
        put(d, d % 2, "gw", 0, 100);
    cr_assert_not(presence_set_room(p, 99, 7), "no session");
    cr_assert(presence_set_room(p, 1, 7));
    cr_assert(presence_set_room(p, 2, 7));
    cr_assert(presence_set_room(p, 3, 8));
    cr_assert(presence_set_room(p, 3, 8), "same room again");
    size_t n, r;
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 6);
    cr_assert_eq(r, 3);

    struct session s[8];
    cr_assert_eq(presence_room_sessions(p, 7, s, 8), 2);
    cr_assert(s[0].device_id + s[1].device_id == 3);
    cr_assert_eq(s[0].room_id, 7);
    cr_assert_eq(presence_room_sessions(p, 7, s, 1), 2, "returns the total, copies up to max");
    cr_assert_eq(presence_room_sessions(p, 0, s, 8), 0, "room 0 is no room");
    cr_assert_eq(presence_room_sessions(p, 9, s, 8), 0);

    cr_assert(presence_set_room(p, 1, 8));
    cr_assert_eq(room_count(7), 1);
    cr_assert_eq(room_count(8), 2);
    cr_assert(presence_set_room(p, 2, 0));
    cr_assert_eq(room_count(7), 0);
    presence_counts(p, &n, &r);
    cr_assert_eq(r, 2);

    cr_assert(presence_remove(p, 3, NULL));
    cr_assert_eq(room_count(8), 1);
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 5);
    cr_assert_eq(r, 1);

    /* User lists are independent of room moves. */
    cr_assert_eq(presence_user_sessions(p, 1, s, 8), 2);
    cr_assert_eq(presence_user_sessions(p, 0, s, 8), 3);
}

Test(presence, expired)
{
    for (int64_t d = 1; d <= 10; d++)
        put(d, 1, "gw", 0, d * 100);
    int64_t ids[16];
    size_t n = presence_expired(p, 501, ids, 16);
    cr_assert_eq(n, 5);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(ids[i] >= 1 && ids[i] <= 5);
        sum += ids[i];
    }
    cr_assert_eq(sum, 15);
    cr_assert_eq(presence_expired(p, 501, ids, 3), 3, "up to max");
    cr_assert_eq(presence_expired(p, 501, ids, 0), 0);
    cr_assert_eq(presence_expired(p, 100, ids, 16), 0);
    cr_assert_eq(presence_expired(p, INT64_MAX, ids, 16), 10);
}

#define MANY_DEVICES 20000
#define MANY_USERS   5000

static void check_consistent(const bool *alive, const int64_t *user_of)
{
    static struct session s[64];
    size_t expect_total = 0, expect_rooms = 0;
    static size_t per_user[MANY_USERS];
    memset(per_user, 0, sizeof per_user);
    for (int64_t d = 0; d < MANY_DEVICES; d++) {
        char gw[16];
        snprintf(gw, sizeof gw, "gw-%d", (int)(d % 7));
        gim_err want = alive[d] ? GIM_OK : GIM_EUNAUTH;
        cr_assert_eq(presence_check(p, user_of[d], d + 1000, gw, 1, NULL), want, "device %lld",
                     (long long)d);
        if (alive[d]) {
            expect_total++;
            per_user[user_of[d]]++;
            if (d % 3 == 0)
                expect_rooms++;
        }
    }
    for (int64_t u = 0; u < MANY_USERS; u++) {
        size_t n = presence_user_sessions(p, u, s, 64);
        cr_assert_eq(n, per_user[u], "user %lld", (long long)u);
        for (size_t i = 0; i < n && i < 64; i++) {
            int64_t d = s[i].device_id - 1000;
            cr_assert(d >= 0 && d < MANY_DEVICES && alive[d]);
            cr_assert_eq(user_of[d], u);
        }
    }
    size_t n, r;
    presence_counts(p, &n, &r);
    cr_assert_eq(n, expect_total);
    cr_assert_eq(r, expect_rooms);
    size_t in_rooms = 0;
    for (int64_t room = 1; room <= 10; room++)
        in_rooms += room_count(room);
    cr_assert_eq(in_rooms, expect_rooms);
}

Test(presence, many_sessions)
{
    static bool alive[MANY_DEVICES];
    static int64_t user_of[MANY_DEVICES];
    for (int64_t d = 0; d < MANY_DEVICES; d++) {
        char gw[16];
        snprintf(gw, sizeof gw, "gw-%d", (int)(d % 7));
        user_of[d] = (d * 7919) % MANY_USERS;
        put(d + 1000, user_of[d], gw, d % 3 == 0 ? 1 + d % 10 : 0, 1);
        alive[d] = true;
    }
    check_consistent(alive, user_of);

    /* Remove every other device, then move a tenth of the rest to other users. */
    for (int64_t d = 0; d < MANY_DEVICES; d += 2) {
        cr_assert(presence_remove(p, d + 1000, NULL));
        alive[d] = false;
    }
    for (int64_t d = 1; d < MANY_DEVICES; d += 20) {
        char gw[16];
        snprintf(gw, sizeof gw, "gw-%d", (int)(d % 7));
        user_of[d] = (user_of[d] + 1) % MANY_USERS;
        put(d + 1000, user_of[d], gw, d % 3 == 0 ? 1 + d % 10 : 0, 1);
    }
    check_consistent(alive, user_of);

    /* Shrinking back to almost nothing must keep the survivors reachable. */
    for (int64_t d = 1; d < MANY_DEVICES - 10; d += 2) {
        cr_assert(presence_remove(p, d + 1000, NULL));
        alive[d] = false;
    }
    check_consistent(alive, user_of);

    /* And growing again after the shrink. */
    for (int64_t d = 0; d < MANY_DEVICES; d += 2) {
        char gw[16];
        snprintf(gw, sizeof gw, "gw-%d", (int)(d % 7));
        put(d + 1000, user_of[d], gw, d % 3 == 0 ? 1 + d % 10 : 0, 1);
        alive[d] = true;
    }
    check_consistent(alive, user_of);
}

/* Sessions 0..CONC_STABLE-1 never change; the writer churns the rest. */
#define CONC_STABLE  200
#define CONC_DEVICES 2000
#define CONC_READERS 4

static atomic_bool conc_stop;

static void *reader(void *arg)
{
    (void)arg;
    struct session s[16];
    int64_t ids[32];
    unsigned long iter = 0;
    while (!atomic_load(&conc_stop)) {
        int64_t d = (int64_t)(iter % CONC_DEVICES);
        gim_err e = presence_check(p, d % 50, d, "gw", 1000 + (int64_t)iter, &s[0]);
        if (d < CONC_STABLE && e != GIM_OK)
            return (void *)1;
        if (e == GIM_OK && (s[0].device_id != d || s[0].user_id != d % 50))
            return (void *)1;
        size_t n = presence_user_sessions(p, d % 50, s, 16);
        if (n < CONC_STABLE / 50)
            return (void *)1;
        presence_room_sessions(p, 1 + d % 5, s, 16);
        presence_expired(p, 500, ids, 32);
        size_t total, rooms;
        presence_counts(p, &total, &rooms);
        if (total < CONC_STABLE || rooms > total)
            return (void *)1;
        iter++;
    }
    return NULL;
}

Test(presence, concurrent_readers_and_writer)
{
    for (int64_t d = 0; d < CONC_DEVICES; d++)
        put(d, d % 50, "gw", 0, 1000);
    pthread_t th[CONC_READERS];
    for (int i = 0; i < CONC_READERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, reader, NULL), 0);
    for (int round = 0; round < 20; round++) {
        for (int64_t d = CONC_STABLE; d < CONC_DEVICES; d++) {
            if ((d + round) % 3 == 0)
                presence_remove(p, d, NULL);
            else if ((d + round) % 3 == 1)
                put(d, d % 50, "gw", 1 + d % 5, 100);
            else
                presence_set_room(p, d, round % 2 ? 0 : 1 + d % 5);
        }
    }
    atomic_store(&conc_stop, true);
    for (int i = 0; i < CONC_READERS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        cr_assert_null(ret, "reader %d saw an inconsistent table", i);
    }
    size_t total, rooms;
    presence_counts(p, &total, &rooms);
    cr_assert(total >= CONC_STABLE);
}

/* The device table as created by migrations/0001_init.sql. */
static const char DEVICE_DDL[] = "CREATE TABLE device (\n"
                                 "    device_id    INTEGER PRIMARY KEY,\n"
                                 "    user_id      INTEGER NOT NULL,\n"
                                 "    gateway_id   TEXT    NOT NULL DEFAULT '',\n"
                                 "    client_addr  TEXT    NOT NULL DEFAULT '',\n"
                                 "    online       INTEGER NOT NULL DEFAULT 0,\n"
                                 "    room_id      INTEGER NOT NULL DEFAULT 0,\n"
                                 "    ack_seq      INTEGER NOT NULL DEFAULT 0,\n"
                                 "    ack_time     INTEGER NOT NULL DEFAULT 0,\n"
                                 "    created_at   INTEGER NOT NULL,\n"
                                 "    signed_in_at INTEGER NOT NULL DEFAULT 0,\n"
                                 "    updated_at   INTEGER NOT NULL\n"
                                 ");\n"
                                 "CREATE INDEX device_user ON device (user_id);";

static struct store_conn *open_temp_db(char *path, size_t len)
{
    snprintf(path, len, "/tmp/test_presence_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    struct store_conn *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->ops = &storage_sqlite; /* as store_open() sets it */
    cr_assert_eq(sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    cr_assert_eq(store_exec(c, DEVICE_DDL), GIM_OK);
    return c;
}

Test(presence, load_from_database)
{
    char path[64];
    struct store_conn *c = open_temp_db(path, sizeof path);
    char long_gw[200];
    memset(long_gw, 'g', sizeof long_gw - 1);
    long_gw[sizeof long_gw - 1] = 0;
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO device (device_id, user_id, gateway_id, online, room_id, created_at, "
             "updated_at) VALUES "
             "(1, 100, 'gw-a', 1, 0, 0, 0), (2, 100, 'gw-b', 1, 9, 0, 0), "
             "(3, 200, 'gw-a', 0, 0, 0, 0), (4, 300, '%s', 1, 0, 0, 0)",
             long_gw);
    cr_assert_eq(store_exec(c, sql), GIM_OK);

    cr_assert_eq(presence_load(p, c, 5000), GIM_OK);
    size_t n, r;
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 3, "offline device 3 not loaded");
    cr_assert_eq(r, 1);
    struct session s;
    cr_assert_eq(presence_check(p, 100, 1, "gw-a", 5000, &s), GIM_OK);
    cr_assert_eq(presence_check(p, 100, 2, "gw-b", 5000, &s), GIM_OK);
    cr_assert_eq(s.room_id, 9);
    cr_assert_eq(presence_check(p, 200, 3, "gw-a", 5000, NULL), GIM_EUNAUTH);
    cr_assert_eq(user_count(100), 2);
    cr_assert_eq(room_count(9), 1);
    cr_assert_eq(presence_user_sessions(p, 300, &s, 1), 1);
    cr_assert_eq(strlen(s.gateway_id), PRESENCE_GATEWAY_MAX, "long gateway truncated");

    int64_t ids[8];
    cr_assert_eq(presence_expired(p, 5000, ids, 8), 0, "last_seen = now_ms");
    cr_assert_eq(presence_expired(p, 5001, ids, 8), 3);

    /* The cached statement is reusable: loading twice replaces, never duplicates. */
    cr_assert_eq(presence_load(p, c, 6000), GIM_OK);
    presence_counts(p, &n, &r);
    cr_assert_eq(n, 3);
    cr_assert_eq(user_count(100), 2);

    store_close(c);
    unlink(path);
}

/*
 * The shared-session check reads the device table through the backend's
 * session operation (storage.h): a session this presence never held is
 * found there and cached; once the row is offline, a check past
 * PRESENCE_RECHECK_MS drops the cached copy; another gateway or user in
 * the row is refused.
 */
Test(presence, check_shared_reads_the_device_table)
{
    char path[64];
    struct store_conn *c = open_temp_db(path, sizeof path);
    cr_assert_eq(store_exec(c,
                            "INSERT INTO device (device_id, user_id, gateway_id, online, "
                            "room_id, created_at, updated_at) VALUES (5, 50, 'gw-x', 1, 7, 0, 0)"),
                 GIM_OK);
    struct session s = {0};
    cr_assert_eq(presence_check_shared(p, c, 50, 5, "gw-x", 1000, &s), GIM_OK);
    cr_assert_eq(s.device_id, 5);
    cr_assert_eq(s.user_id, 50);
    cr_assert_eq(s.room_id, 7);
    cr_assert_str_eq(s.gateway_id, "gw-x");
    cr_assert(presence_get(p, 5, &s), "the session read from the table is cached");
    cr_assert_eq(presence_check_shared(p, c, 51, 5, "gw-x", 1000, NULL), GIM_EUNAUTH,
                 "another user");
    cr_assert_eq(presence_check_shared(p, c, 50, 5, "gw-y", 1000, NULL), GIM_EUNAUTH,
                 "another gateway");

    cr_assert_eq(store_exec(c, "UPDATE device SET online = 0 WHERE device_id = 5"), GIM_OK);
    cr_assert_eq(presence_check_shared(p, c, 50, 5, "gw-x", 1000 + PRESENCE_RECHECK_MS - 1, NULL),
                 GIM_OK, "still fresh: served from the cache");
    cr_assert_eq(presence_check_shared(p, c, 50, 5, "gw-x", 1000 + PRESENCE_RECHECK_MS, NULL),
                 GIM_EUNAUTH, "signed out in the table");
    cr_assert_not(presence_get(p, 5, &s), "the cached copy is dropped");
    store_close(c);
    unlink(path);
}

Test(presence, load_without_table_fails)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_presence_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    struct store_conn *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->ops = &storage_sqlite; /* as store_open() sets it */
    cr_assert_eq(sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    cr_assert_neq(presence_load(p, c, 1), GIM_OK);
    size_t n;
    presence_counts(p, &n, NULL);
    cr_assert_eq(n, 0);
    store_close(c);
    unlink(path);
}

/* --- gateway leases --------------------------------------------------------- */

static size_t expired_count(int64_t cutoff)
{
    int64_t ids[64];
    return presence_expired(p, cutoff, ids, 64);
}

Test(presence, a_lease_keeps_its_gateways_sessions)
{
    put(10, 1, "gwL", 0, 100);
    put(11, 2, "gwL", 0, 100);
    put(20, 3, "gwN", 0, 100);
    cr_assert_not(presence_lease_refresh(p, "gwL", 5, 500), "unknown to presence: the writer");
    cr_assert_eq(presence_lease_set(p, "gwL", 5, 500), GIM_OK);
    cr_assert_eq(expired_count(400), 1, "only gwN's session: gwL leased at 500");
    cr_assert(presence_lease_refresh(p, "gwL", 5, 900));
    cr_assert_not(presence_lease_refresh(p, "gwL", 6, 950), "another boot: the writer decides");
    cr_assert_not(presence_lease_refresh(p, "gwN", 0, 950), "gwN never leased");
    int64_t ids[4];
    cr_assert_eq(presence_expired(p, 901, ids, 4), 3, "the lease stopped at 900");
    /* A session's own request still counts, whichever is later. */
    cr_assert_eq(presence_check(p, 1, 10, "gwL", 2000, NULL), GIM_OK);
    cr_assert_eq(presence_expired(p, 1500, ids, 4), 2);
    cr_assert(ids[0] != 10 && ids[1] != 10);
    /* A session that moves to a gateway that does not lease loses the lease. */
    put(11, 2, "gwN", 0, 100);
    cr_assert(presence_lease_refresh(p, "gwL", 5, 3000));
    cr_assert_eq(presence_expired(p, 2500, ids, 4), 2, "11 and 20 on gwN");
}

Test(presence, a_restarted_gateway_loses_only_its_sessions)
{
    put(10, 1, "gwB", 3, 100);
    put(11, 1, "gwB", 0, 100);
    put(12, 1, "gwC", 3, 100);
    cr_assert_eq(presence_lease_set(p, "gwB", 1, 100), GIM_OK);
    cr_assert_eq(presence_gateway_remove(p, "gwB"), 2);
    cr_assert_eq(user_count(1), 1);
    cr_assert_eq(room_count(3), 1);
    cr_assert_eq(presence_check(p, 1, 12, "gwC", 200, NULL), GIM_OK);
    cr_assert_eq(presence_gateway_remove(p, "gwB"), 0);
    cr_assert_eq(presence_gateway_remove(p, "nobody"), 0);
    cr_assert(presence_lease_refresh(p, "gwB", 1, 300), "the lease outlives the sessions");
}

Test(presence, many_sessions_of_one_restarted_gateway)
{
    /* More than one removal slice (256) when memory is short; here the whole set at once. */
    for (int64_t d = 1; d <= 1000; d++)
        put(d, d, d % 2 ? "gwOdd" : "gwEven", 0, 100);
    cr_assert_eq(presence_gateway_remove(p, "gwOdd"), 500);
    size_t n = 0;
    presence_counts(p, &n, NULL);
    cr_assert_eq(n, 500);
    cr_assert_eq(presence_check(p, 2, 2, "gwEven", 200, NULL), GIM_OK);
    cr_assert_eq(presence_check(p, 1, 1, "gwOdd", 200, NULL), GIM_EUNAUTH);
}

Test(presence, dead_gateways_are_forgotten)
{
    cr_assert_eq(presence_lease_set(p, "gwD", 1, 100), GIM_OK);
    put(10, 1, "gwD", 0, 100);
    cr_assert_eq(expired_count(50), 0);
    cr_assert(presence_lease_refresh(p, "gwD", 1, 200), "kept while it has a session");
    presence_remove(p, 10, NULL);
    cr_assert_eq(expired_count(150), 0);
    cr_assert(presence_lease_refresh(p, "gwD", 1, 300), "and while its lease is live");
    cr_assert_eq(expired_count(301), 0);
    cr_assert_not(presence_lease_refresh(p, "gwD", 1, 400),
                  "no session and a lease older than the cutoff: forgotten");
    /* A gateway record made by a sign-in alone goes with its last session. */
    put(11, 1, "gwS", 0, 100);
    presence_remove(p, 11, NULL);
    cr_assert_not(presence_lease_refresh(p, "gwS", 0, 500));
}

/* What maint.c writes to the device table on PostgreSQL: sessions and leases seen since. */
Test(presence, active_sessions_and_leased_gateways_since)
{
    put(10, 1, "gwA", 0, 100);
    put(11, 2, "gwA", 0, 100);
    put(20, 3, "gwB", 0, 100);
    cr_assert_eq(presence_check(p, 1, 10, "gwA", 700, NULL), GIM_OK);
    int64_t ids[4] = {0}, seen[4] = {0};
    cr_assert_eq(presence_active(p, 500, ids, seen, 4), 1, "only 10 was seen since 500");
    cr_assert_eq(ids[0], 10);
    cr_assert_eq(seen[0], 700);
    cr_assert_eq(presence_active(p, 100, ids, seen, 4), 3, "since is inclusive");
    cr_assert_eq(presence_active(p, 100, ids, seen, 1), 3, "the count exceeds max");
    cr_assert_eq(presence_active(p, 701, ids, seen, 4), 0);

    char gw[4][PRESENCE_GATEWAY_MAX + 1];
    int64_t at[4] = {0};
    cr_assert_eq(presence_leased(p, 0, gw, at, 4), 0, "no gateway leased yet");
    cr_assert_eq(presence_lease_set(p, "gwB", 9, 800), GIM_OK);
    cr_assert_eq(presence_leased(p, 500, gw, at, 4), 1);
    cr_assert_str_eq(gw[0], "gwB");
    cr_assert_eq(at[0], 800);
    /* A lease refreshes the record; its sessions' own requests are not leases. */
    cr_assert_eq(presence_active(p, 500, ids, seen, 4), 1);
    cr_assert(presence_lease_refresh(p, "gwB", 9, 900));
    cr_assert_eq(presence_leased(p, 850, gw, at, 4), 1);
    cr_assert_eq(at[0], 900);
    cr_assert_eq(presence_leased(p, 901, gw, at, 4), 0);
}
