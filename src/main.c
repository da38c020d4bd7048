/*
 * gim-logic: start-up, signal handling and orderly shutdown.
 *
 * Order matters both ways: the database and presence come first, then the
 * writer, then the publisher and the server that feed it; on SIGINT/SIGTERM
 * the server stops receiving and drains (its writes still reach the writer),
 * then the writer finishes its queue, and only then is the database closed.
 *
 * Signals: every signal below is blocked in all threads and taken by
 * sigwait() in main, so no handler runs inside a worker. SIGINT, SIGTERM and
 * SIGQUIT stop (drain, exit 0); SIGHUP reloads what can change safely while
 * running (log.level) and logs what it applied and what needs a restart;
 * the others an operator or a tool may send by mistake (SIGUSR1, SIGUSR2,
 * SIGALRM, SIGVTALRM, SIGIO) are logged and ignored, where their default
 * would kill the process without draining. SIGPIPE is ignored: a closed
 * connection is an error return, not a signal.
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dblock.h"
#include "api.h"
#include "http.h"
#include "log.h"
#include "maint.h"
#include "metrics.h"
#include "presence.h"
#include "push.h"
#include "scheduling.h"
#include "seq.h"
#include "server.h"
#include "storage.h"
#include "store.h"
#include "writer.h"

#define VERSION "0.1.0"

struct app {
    struct gim_config cfg;
    struct dblock *lock; /* held for the process's life: one gim-logic per database */
    struct store_conn *db;
    struct presence *presence;
    struct seq *seq;
    struct metrics *metrics;
    struct push *push;
    struct wctx w;
    struct writer *writer;
    struct server *server;
    struct http *http;
    struct api *api;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gim-logic [--config FILE] [--print-config] [--version]\n"
               "  --config FILE    read settings from FILE (YAML; also --config=FILE); defaults "
               "otherwise\n"
               "  --print-config   print the effective configuration and exit\n");
}

static int parse_args(int argc, char **argv, const char **config, int *print)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0) {
            /* "--config --print-config" forgot the FILE rather than naming one "--print-config". */
            const char *file = "";
            if (argv[i][8] == '=')
                file = argv[i] + 9;
            else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                file = argv[++i];
            if (!file[0]) {
                fprintf(stderr, "gim-logic: --config needs a FILE\n");
                usage(stderr);
                return -1;
            }
            *config = file;
        } else if (strcmp(argv[i], "--print-config") == 0) {
            *print = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("gim-logic %s\n", VERSION);
            exit(0);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "gim-logic: unknown argument %s\n", argv[i]);
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

static int check_secret(const struct gim_config *cfg)
{
    if (config_secret(cfg))
        return 0;
    if (!cfg->auth.insecure_dev) {
        fprintf(stderr,
                "gim-logic: no token secret: set auth.secret, or the environment variable %s "
                "(auth.secret_env); auth.insecure_dev: true accepts any token (development only)\n",
                cfg->auth.secret_env);
        return -1;
    }
    log_warn("INSECURE: no token secret, any token is accepted (auth.insecure_dev)", "%s",
             "never run this way in production");
    return 0;
}

static gim_err app_start(struct app *a, char *err, size_t errlen)
{
    gim_err e;
    if ((e = store_open(&a->cfg, STORE_WRITER, &a->db, err, errlen)) != GIM_OK)
        return e;
    const struct storage_tx_ops *tx = storage(a->db)->tx;
    const char *where = tx->location(&a->cfg); /* NULL for a URL: it may hold a password */
    if (where)
        log_info("database open", "path=%s schema_version=%d", where, tx->schema_version());
    else
        log_info("database open", "backend=%s schema_version=%d", storage(a->db)->name,
                 tx->schema_version());
    if ((e = presence_open(&a->presence)) != GIM_OK)
        return e;
    if ((e = presence_load(a->presence, a->db, gim_clock_real_ms(NULL))) != GIM_OK) {
        snprintf(err, errlen, "cannot load sessions from the device table");
        return e;
    }
    if ((e = seq_open(&a->seq)) != GIM_OK)
        return e;
    if (!(a->metrics = metrics_new()))
        return GIM_ENOMEM;
    if ((e = push_open(&a->push, &a->cfg, err, errlen)) != GIM_OK)
        return e;
    a->w = (struct wctx){.db = a->db,
                         .seq = a->seq,
                         .cfg = &a->cfg,
                         .presence = a->presence,
                         .push = a->push,
                         .metrics = a->metrics,
                         .clock = {gim_clock_real_ms, NULL}};
    if ((e = writer_start(&a->writer, &a->w, maint_run)) != GIM_OK)
        return e;
    /* Before the REP socket: whoever waits for gim-logic to answer there finds the API up too. */
    struct api_opts ao = {.cfg = &a->cfg,
                          .presence = a->presence,
                          .writer = a->writer,
                          .metrics = a->metrics,
                          .clock = {gim_clock_real_ms, NULL}};
    if ((e = api_start(&a->api, &ao, err, errlen)) != GIM_OK)
        return e;
    struct server_opts so = {.cfg = &a->cfg,
                             .presence = a->presence,
                             .writer = a->writer,
                             .metrics = a->metrics,
                             .clock = {gim_clock_real_ms, NULL}};
    if ((e = server_start(&a->server, &so, err, errlen)) != GIM_OK)
        return e;
    struct http_opts ho = {.cfg = &a->cfg,
                           .metrics = a->metrics,
                           .presence = a->presence,
                           .server = a->server,
                           .push = a->push,
                           .writer = a->writer,
                           .storage = storage(a->db)};
    return http_start(&a->http, &ho, err, errlen);
}

static void app_stop(struct app *a)
{
    http_stop(a->http);
    /* Before the writer fails its waiting writes: their answers must reach the clients. */
    api_close(a->api);
    /* First, so that the drain never waits for a lock (another process's, for up to
     * busy_timeout_ms): a write that finds the database locked now fails at once. */
    writer_stop_waiting(a->writer);
    api_stop(a->api);       /* answers its requests in flight: the writer still runs */
    server_stop(a->server); /* drains: in-flight writes still reach the writer and are answered */
    writer_stop(a->writer); /* nothing is queued any more; joins its threads */
    push_close(a->push);
    presence_close(a->presence);
    seq_close(a->seq);
    metrics_free(a->metrics);
    store_close(a->db);
    dblock_release(a->lock);
    config_free(&a->cfg);
}

/* Signals that stop the service, in an orderly way. */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGQUIT};
/* Signals whose default action would kill the process: logged and ignored. */
static const int ignored_signals[] = {SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGIO};

static bool is_stop_signal(int sig)
{
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        if (stop_signals[i] == sig)
            return true;
    return false;
}

/*
 * SIGHUP: reads the same file again. Only log.level is applied: every other
 * key is read by threads without a lock, or shapes sockets, connections and
 * threads made at start-up, so a change to one is named in the log as needing
 * a restart. A file that no longer loads changes nothing.
 */
static void reload(struct app *a, const char *path)
{
    struct gim_config fresh = {0};
    char err[512] = "", applied[64] = "", restart[512] = "";
    const char *changed[64];
    if (!path) {
        log_info("reload: nothing to do", "reason=\"%s\"", "started without --config");
        return;
    }
    if (config_load(path, &fresh, err, sizeof err) != GIM_OK) {
        log_error("reload failed, configuration unchanged", "config=%s error=\"%s\"", path, err);
        config_free(&fresh);
        return;
    }
    size_t n = config_changed(&a->cfg, &fresh, changed, sizeof changed / sizeof changed[0]);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(changed[i], "log.level") == 0) {
            snprintf(applied, sizeof applied, "log.level=%s", fresh.log.level);
            char *old = a->cfg.log.level; /* only main reads it */
            a->cfg.log.level = fresh.log.level;
            fresh.log.level = old;
            log_set_level((enum log_level)log_level_parse(a->cfg.log.level));
        } else if (len < sizeof restart) {
            int w =
                snprintf(restart + len, sizeof restart - len, "%s%s", len ? "," : "", changed[i]);
            if (w > 0)
                len += (size_t)w;
        }
    }
    /* At info, or at the level now set if that is higher: the operator always sees it. */
    enum log_level lvl = log_enabled(LOG_LEVEL_INFO)
                             ? LOG_LEVEL_INFO
                             : (enum log_level)log_level_parse(a->cfg.log.level);
    log_write(lvl, "reloaded", "config=%s applied=\"%s\" needs_restart=\"%s\"", path, applied,
              restart);
    config_free(&fresh);
}

/* Serves until a stop signal; returns it. */
static int serve(struct app *a, const char *config, const sigset_t *sigs)
{
    for (;;) {
        int sig = 0;
        if (sigwait(sigs, &sig) != 0)
            continue;
        if (is_stop_signal(sig))
            return sig;
        if (sig == SIGHUP)
            reload(a, config);
        else
            log_warn("signal ignored", "signal=%d name=%s", sig, strsignal(sig));
    }
}

int main(int argc, char **argv)
{
    static struct app a;
    const char *config = NULL;
    int print = 0;
    char err[512] = "";
    if (parse_args(argc, argv, &config, &print) != 0)
        return 2;
    if (config_load(config, &a.cfg, err, sizeof err) != GIM_OK) {
        fprintf(stderr, "gim-logic: config: %s\n", err);
        config_free(&a.cfg);
        return 2;
    }
    if (print) {
        config_print(&a.cfg, stdout);
        config_free(&a.cfg);
        return 0;
    }
    log_set_level((enum log_level)log_level_parse(a.cfg.log.level));
    if (check_secret(&a.cfg) != 0) {
        config_free(&a.cfg);
        return 2;
    }
    /* Signals go to sigwait in serve(), never to the worker threads (which inherit the mask). */
    sigset_t sigs;
    sigemptyset(&sigs);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        sigaddset(&sigs, stop_signals[i]);
    for (size_t i = 0; i < sizeof ignored_signals / sizeof ignored_signals[0]; i++)
        sigaddset(&sigs, ignored_signals[i]);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    scheduling_apply_process(&a.cfg); /* before any thread exists */

    log_info("starting", "version=%s config=%s", VERSION, config ? config : "(defaults)");
    /* 48 lines: only at debug, so that the bound URLs and "ready" stay readable at info;
     * --print-config shows the same without starting. */
    if (log_enabled(LOG_LEVEL_DEBUG))
        config_print(&a.cfg, stderr);
    /* Before anything is opened or bound: a second process on the file must not touch it.
     * (PostgreSQL is shared by design: several instances, no file lock.) */
    gim_err le = GIM_OK;
    if (!config_is_postgres(&a.cfg))
        le = store_check_dir(a.cfg.database.path, STORE_WRITER, err, sizeof err);
    if (le == GIM_OK && !config_is_postgres(&a.cfg))
        le = dblock_acquire(a.cfg.database.path, &a.lock, err, sizeof err);
    if (le != GIM_OK) {
        fprintf(stderr, "gim-logic: %s\n", err);
        config_free(&a.cfg);
        return le == GIM_ELOCKED ? 2 : 1;
    }
    if (app_start(&a, err, sizeof err) != GIM_OK) {
        fprintf(stderr, "gim-logic: %s\n", err[0] ? err : "start-up failed");
        app_stop(&a);
        return 1;
    }
    log_info("ready", "workers=%u contexts=%u", a.cfg.workers, a.cfg.contexts);
    int sig = serve(&a, config, &sigs);
    log_info("stopping", "signal=%d name=%s", sig, strsignal(sig));
    app_stop(&a);
    log_info("stopped", "%s", "clean");
    return 0;
}
