/*
 * The HTTP endpoint of the real binary: /healthz and /metrics fetched over
 * TCP with a plain HTTP/1.1 client, while requests go through the nng
 * sockets and the test holds or releases the database's write lock.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;
static int port;

/* A port nobody listens on right now: bind port 0, read it back, release it. */
static int free_tcp_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void write_config(const char *path, const char *dir, int http_port)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "listen: [\"ipc://%s/rep.ipc\"]\n"
            "publish: [\"ipc://%s/pub.ipc\"]\n"
            "http: \"http://127.0.0.1:%d\"\n"
            "workers: 2\n"
            "contexts: 16\n"
            "database: {path: \"%s/gim.db\", synchronous: normal}\n"
            "auth: {secret: \"" TL_SECRET "\"}\n",
            dir, dir, http_port, dir);
    fclose(f);
}

/* Like tl_start, with the HTTP endpoint on a free port (tl_start's config disables it). */
static void setup(void)
{
    memset(&srv, 0, sizeof srv);
    snprintf(srv.dir, sizeof srv.dir, "/tmp/gimhttp-XXXXXX");
    cr_assert_not_null(mkdtemp(srv.dir));
    snprintf(srv.url, sizeof srv.url, "ipc://%s/rep.ipc", srv.dir);
    snprintf(srv.pub_url, sizeof srv.pub_url, "ipc://%s/pub.ipc", srv.dir);
    snprintf(srv.db, sizeof srv.db, "%s/gim.db", srv.dir);
    snprintf(srv.config, sizeof srv.config, "%s/gim.yaml", srv.dir);
    snprintf(srv.log, sizeof srv.log, "%s/gim.log", srv.dir);
    port = free_tcp_port();
    write_config(srv.config, srv.dir, port);
    tl_restart(&srv); /* starts the binary on srv's directory and config, waits until it answers */
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(http, .init = setup, .fini = teardown, .timeout = 60);

/* GET path over a fresh connection; returns the status, *body is malloc'ed. */
static int http_get(const char *method, const char *path, char **body)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 5};
    int fd = -1, rc = -1;
    /* The REP socket answers before the HTTP listener is up: give it a moment. */
    for (int tries = 0; tries < 50 && rc != 0; tries++) {
        if (fd >= 0) {
            close(fd);
            usleep(100 * 1000);
        }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fd >= 0);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    cr_assert_eq(rc, 0, "connect to port %d", port);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[256];
    int n =
        snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0)
        fwrite(chunk, 1, (size_t)got, m);
    fclose(m);
    close(fd);
    int status = 0;
    cr_assert_eq(sscanf(buf, "HTTP/1.1 %d", &status), 1, "not an HTTP response: %s", buf);
    char *sep = strstr(buf, "\r\n\r\n");
    cr_assert_not_null(sep);
    /* Content-Length must match what came. */
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    cr_assert(cl && cl < sep, "no Content-Length: %s", buf);
    cr_assert_eq(strtoul(cl + 17, NULL, 10), strlen(sep + 4));
    *body = strdup(sep + 4);
    free(buf);
    return status;
}

/* The value of the sample `series` (name with labels, exactly) in a scrape; -1 if absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, series, n) == 0 && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    return -1;
}

static double scrape(const char *series)
{
    char *body;
    cr_assert_eq(http_get("GET", "/metrics", &body), 200);
    double v = sample(body, series);
    free(body);
    return v;
}

#define HB_OK "gim_requests_total{type=\"PT_HEARTBEAT\",code=\"EC_OK\"}"

Test(http, healthz_is_ok_when_healthy)
{
    char *body;
    cr_assert_eq(http_get("GET", "/healthz", &body), 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    cr_assert_eq(http_get("GET", "/nothing-here", &body), 404);
    free(body);
}

Test(http, healthz_is_503_while_the_database_is_write_locked)
{
    sqlite3 *db;
    char *body;
    cr_assert_eq(sqlite3_open(srv.db, &db), SQLITE_OK);
    /* The service takes the write lock too (its writer, /healthz's own probe): wait for it
     * rather than fail on a moment of contention (seen once under ctest -j6 --repeat). */
    cr_assert_eq(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    cr_assert_eq(http_get("GET", "/healthz", &body), 503);
    cr_assert(strncmp(body, "database not writable: ", 23) == 0, "reason: %s", body);
    cr_assert_not_null(strstr(body, "locked"), "reason: %s", body);
    cr_assert_eq(strchr(body, '\n'), body + strlen(body) - 1, "one line: %s", body);
    free(body);
    /* Metrics do not need the database lock. */
    cr_assert_eq(http_get("GET", "/metrics", &body), 200);
    free(body);

    cr_assert_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cr_assert_eq(http_get("GET", "/healthz", &body), 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    /* Exit 0 also means no leak under the sanitizer build (LeakSanitizer fails the exit). */
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}

Test(http, metrics_count_requests)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    double before = scrape(HB_OK);
    cr_assert_eq(before, 0, "every known type shows its EC_OK series from the start");
    cr_assert_eq(scrape("gim_online_devices"), 0);

    cr_assert_eq(tl_signin(c, &conn, 1, 101, "gw1"), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tl_code(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 10 + i, NULL), 0);
    client_close(c);

    char *body;
    cr_assert_eq(http_get("GET", "/metrics", &body), 200);
    cr_assert_eq(sample(body, HB_OK), before + 3, "%s", body);
    cr_assert_eq(sample(body, "gim_requests_total{type=\"PT_SIGN_IN\",code=\"EC_OK\"}"), 1);
    /* The start-up probe was a heartbeat without a session. */
    cr_assert(
        sample(body, "gim_requests_total{type=\"PT_HEARTBEAT\",code=\"EC_UNAUTHENTICATED\"}") >= 1);
    cr_assert_eq(sample(body, "gim_online_devices"), 1);
    cr_assert_eq(sample(body, "gim_room_subscriptions"), 0);
    cr_assert(sample(body, "gim_database_bytes") > 0, "%s", body);
    cr_assert(sample(body, "gim_wal_bytes") >= 0);
    cr_assert_eq(sample(body, "gim_requests_rejected_total"), 0);
    cr_assert_eq(sample(body, "gim_pushes_published_total"), 0);
    cr_assert_eq(sample(body, "gim_messages_stored_total"), 0);
    cr_assert(sample(body, "gim_write_batch_size_count") >= 1, "the sign-in was written");
    free(body);
}

/* The mappings of file in /proc/pid/maps: how many lines name it. */
static int mappings_of(pid_t pid, const char *file)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int n = 0;
    size_t flen = strlen(file);
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\n");
        n += len >= flen && strncmp(line + len - flen, file, flen) == 0;
    }
    fclose(f);
    return n;
}

/*
 * With the default database.mmap_mb the service reads its file through one
 * mapping for all its connections (src/storage/mapvfs.h): after many syncs by
 * both workers, /proc shows the (small) file mapped once, and /metrics says
 * how much is in use. SQLite's own mmap would map it once per connection that
 * read; with mmap off it would not be mapped at all.
 */
Test(http, the_database_file_is_mapped_once_for_every_connection)
{
    /*
     * 200 messages for user 1, written while the service is stopped, so that
     * they are in the file when it starts (pages in the WAL are not fetched).
     */
    cr_assert_eq(tl_stop(&srv), 0);
    tl_exec(&srv, "BEGIN IMMEDIATE;"
                  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
                  "INSERT INTO message (sender_type, sender_id, sender_device_id, receiver_type, "
                  "receiver_id, message_type, content, send_time, sender_seq, receiver_seq) "
                  "SELECT 2, 900, 9001, 1, 1, 1, randomblob(300), 1700000000000, 1, i FROM n;"
                  "INSERT INTO inbox (user_id, seq, message_id) "
                  "SELECT 1, receiver_seq, id FROM message WHERE receiver_id = 1;"
                  "INSERT INTO user_seq (user_id, seq) VALUES (1, 200); COMMIT;");
    tl_restart(&srv);
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 101, "gw1"), 0);
    for (int i = 0; i < 300; i++) {
        Pb__SyncInput in = PB__SYNC_INPUT__INIT;
        in.seq = (i * 37) % 200;
        cr_assert_eq(tl_code(c, &conn, PB__PACKAGE_TYPE__PT_SYNC, 100 + i, &in.base), 0);
    }
    client_close(c);
    char *body;
    cr_assert_eq(http_get("GET", "/metrics", &body), 200);
    double chosen = sample(body, "gim_mmap_chosen_bytes");
    cr_assert_gt(chosen, 0, "no segment in use after 300 syncs: %s", body);
    cr_assert_leq(chosen, 128.0 * 1024 * 1024, "more than the default mmap_mb");
    cr_assert_geq(sample(body, "gim_mmap_segments_dropped_total"), 0);
    free(body);
    cr_assert_eq(mappings_of(srv.pid, srv.db), 1, "the file is not mapped exactly once");
}

/* Checks one histogram of a scrape: cumulative buckets, +Inf = _count, HELP/TYPE present. */
static void check_histogram(const char *text, const char *name, double min_count)
{
    char pat[128], type[160];
    double prev = 0;
    int buckets = 0;
    snprintf(type, sizeof type, "# TYPE %s histogram\n", name);
    cr_assert_not_null(strstr(text, type), "%s", type);
    snprintf(pat, sizeof pat, "%s_bucket{le=\"", name);
    for (const char *l = strstr(text, pat); l; l = strstr(l + 1, pat)) {
        const char *v = strstr(l, "} ");
        cr_assert_not_null(v);
        double x = strtod(v + 2, NULL);
        cr_assert(x >= prev, "%s buckets must not decrease: %.*s", name, (int)(v - l + 10), l);
        prev = x;
        buckets++;
    }
    cr_assert(buckets >= 2, "%s has buckets", name);
    snprintf(pat, sizeof pat, "%s_bucket{le=\"+Inf\"}", name);
    double inf = sample(text, pat);
    snprintf(pat, sizeof pat, "%s_count", name);
    cr_assert_eq(inf, sample(text, pat), "%s: +Inf bucket equals _count", name);
    cr_assert(inf >= min_count, "%s counted %f", name, inf);
    snprintf(pat, sizeof pat, "%s_sum", name);
    cr_assert(sample(text, pat) >= 0);
}

Test(http, metrics_format_is_prometheus_text)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 101, "gw1"), 0);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(tl_code(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, i, NULL), 0);
    client_close(c);

    char *body;
    cr_assert_eq(http_get("GET", "/metrics", &body), 200);
    check_histogram(body, "gim_request_duration_seconds", 21);
    check_histogram(body, "gim_write_batch_size", 1);
    check_histogram(body, "gim_write_commit_seconds", 1); /* the sign-in's */
    static const char *const families[] = {
        "gim_requests_total",
        "gim_requests_rejected_total",
        "gim_messages_stored_total",
        "gim_inbox_entries_total",
        "gim_recalls_total",
        "gim_pushes_published_total",
        "gim_pushes_dropped_total",
        "gim_online_devices",
        "gim_room_subscriptions",
        "gim_database_bytes",
        "gim_wal_bytes",
        "gim_writer_pending_jobs",
        "gim_write_batch_retries_total",
        "gim_mmap_chosen_bytes",
        "gim_mmap_segments_dropped_total",
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char help[96], type[96];
        snprintf(help, sizeof help, "# HELP %s ", families[i]);
        snprintf(type, sizeof type, "# TYPE %s ", families[i]);
        cr_assert_not_null(strstr(body, help), "missing %s", help);
        cr_assert_not_null(strstr(body, type), "missing %s", type);
    }
    /* Every sample line is `name{labels} number` or `name number`. */
    for (const char *l = body; *l; l = strchr(l, '\n') + 1) {
        cr_assert_not_null(strchr(l, '\n'), "the scrape ends with a newline");
        if (*l == '#')
            continue;
        const char *sp = strchr(l, ' ');
        cr_assert(sp && sp < strchr(l, '\n'), "bad line: %.60s", l);
        char *end;
        strtod(sp + 1, &end);
        cr_assert_eq(*end, '\n', "bad value: %.60s", l);
    }
    free(body);
}

Test(http, start_up_logs_the_url_and_a_taken_port_is_a_clear_error)
{
    char *log = NULL, want[128];
    snprintf(want, sizeof want, "msg=\"http listening\" url=http://127.0.0.1:%d", port);
    /* The REP socket answers (setup's probe) before the HTTP listener is up: up to 5 s. */
    for (int tries = 0; tries < 50; tries++) {
        size_t len = 0;
        FILE *f = fopen(srv.log, "r");
        cr_assert_not_null(f);
        free(log);
        log = NULL;
        FILE *m = open_memstream(&log, &len);
        int ch;
        while ((ch = fgetc(f)) != EOF)
            fputc(ch, m);
        fclose(m);
        fclose(f);
        if (strstr(log, want))
            break;
        usleep(100 * 1000);
    }
    cr_assert_not_null(strstr(log, want), "%s", log);
    free(log);

    /* A second instance (own directory and sockets) on the same HTTP port refuses to start. */
    char dir[] = "/tmp/gimhttp2-XXXXXX", cfg[128], cmd[512];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/gim.yaml", dir);
    write_config(cfg, dir, port);
    snprintf(cmd, sizeof cmd, "'%s' --config '%s' 2>&1", GIM_LOGIC_BIN, cfg);
    FILE *p = popen(cmd, "r");
    char *out = NULL;
    size_t len = 0;
    int ch;
    FILE *m = open_memstream(&out, &len);
    while ((ch = fgetc(p)) != EOF)
        fputc(ch, m);
    fclose(m);
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d: %s", st, out);
    snprintf(want, sizeof want, "http: cannot listen on http://127.0.0.1:%d: ", port);
    cr_assert_not_null(strstr(out, want), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    /* The first one still serves. */
    char *body;
    cr_assert_eq(http_get("GET", "/healthz", &body), 200);
    free(body);
}

Test(http, undecodable_requests_are_counted_as_rejected)
{
    struct gim_client *c = tl_client(&srv);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    cr_assert_eq(scrape("gim_requests_rejected_total"), 0);
    for (int i = 0; i < 2; i++) {
        Pb__Output *out = tl_call_raw(c, junk, sizeof junk);
        cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
        pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    cr_assert_eq(scrape("gim_requests_rejected_total"), 2);
}
