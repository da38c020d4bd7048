/*
 * gim-gateway: the client-facing gateway in front of gim-logic.
 *
 * Start-up: config, the link to gim-logic (the first lease must be answered
 * before any client is accepted), the push subscription, the listeners and
 * the HTTP endpoint. SIGINT/SIGTERM: close the listeners, stop reading from
 * clients, let in-flight requests finish and their replies be written,
 * close every connection signing its device out, wait for the sign-outs
 * (at most shutdown.drain_ms in all), exit 0.
 */
#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "conn.h"
#include "gw.h"
#include "gw_config.h"
#include "gw_http.h"
#include "listener.h"
#include "log.h"
#include "pushsub.h"
#include "registry.h"
#include "upstream.h"

#define VERSION "0.1.0"

static volatile int stop_flag;
static sigset_t sigs;

static void *signal_thread(void *arg)
{
    int sig = 0;
    (void)arg;
    sigwait(&sigs, &sig);
    log_info("stopping", "signal=%d", sig);
    stop_flag = 1;
    return NULL;
}

static int parse_args(int argc, char **argv, const char **config, int *print)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            *config = argv[++i];
        } else if (strcmp(argv[i], "--print-config") == 0) {
            *print = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("gim-gateway %s\n", VERSION);
            exit(0);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: gim-gateway [--config FILE] [--print-config] [--version]\n");
            exit(0);
        } else {
            fprintf(stderr,
                    "gim-gateway: unknown argument %s\n"
                    "usage: gim-gateway [--config FILE] [--print-config] [--version]\n",
                    argv[i]);
            return -1;
        }
    }
    return 0;
}

/* Waits until cond() holds or ms have passed; returns whether it holds. */
static int wait_for(int (*cond)(struct upstream *), struct upstream *up, unsigned ms)
{
    for (unsigned waited = 0;; waited += 10) {
        if (cond(up))
            return 1;
        if (waited >= ms)
            return 0;
        nng_msleep(10);
    }
}

static int drained(struct upstream *up)
{
    return conn_count() == 0 && upstream_inflight(up) == 0;
}

int main(int argc, char **argv)
{
    static struct gw_config cfg;
    static struct gw g;
    static struct listener *ls[GWCFG_MAX_LISTENERS];
    struct pushsub *ps = NULL;
    const char *config = NULL;
    char err[512] = "", host[65] = "";
    int print = 0, rc = 1;
    pthread_t sigthr;
    bool conns_started = false;

    if (parse_args(argc, argv, &config, &print) != 0)
        return 2;
    if (gwcfg_load(config, &cfg, err, sizeof err) != GIM_OK) {
        fprintf(stderr, "gim-gateway: config: %s\n", err);
        gwcfg_free(&cfg);
        return 2;
    }
    if (print) {
        gwcfg_print(&cfg, stdout);
        gwcfg_free(&cfg);
        return 0;
    }
    log_set_level((enum log_level)log_level_parse(cfg.log.level));
    const char *gateway_id = cfg.gateway_id;
    if (!gateway_id[0]) {
        gethostname(host, sizeof host - 1);
        gateway_id = host[0] ? host : "gim-gateway";
    }
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&sigthr, NULL, signal_thread, NULL);

    /* One descriptor per client: take every one the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    log_info("starting", "version=%s config=%s gateway_id=%s max_fds=%llu", VERSION,
             config ? config : "(defaults)", gateway_id,
             getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long)rl.rlim_cur : 0ull);
    if (log_enabled(LOG_LEVEL_INFO))
        gwcfg_print(&cfg, stderr);
    static const struct registry_hooks hooks = {
        .ref = conn_ref, .unref = conn_unref, .id = conn_id};
    g.cfg = &cfg;
    if (registry_open(&g.reg, &hooks) != GIM_OK ||
        upstream_open(&g.up, &cfg, gateway_id, err, sizeof err) != GIM_OK ||
        conn_module_init(&g) != GIM_OK)
        goto out;
    conns_started = true;
    if (upstream_start(g.up, &stop_flag) != GIM_OK) {
        snprintf(err, sizeof err, "stopped before gim-logic answered");
        goto out;
    }
    if (pushsub_open(&ps, &g, gateway_id, err, sizeof err) != GIM_OK)
        goto out;
    for (unsigned i = 0; i < cfg.listeners_count; i++)
        if (listener_open(&ls[i], &cfg, i, err, sizeof err) != GIM_OK)
            goto out;
    if (gwhttp_start(&cfg, g.up, err, sizeof err) != GIM_OK)
        goto out;
    log_info("ready", "gateway_id=%s listeners=%u", gateway_id, cfg.listeners_count);
    while (!stop_flag)
        nng_msleep(50);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "gim-gateway: %s\n", err[0] ? err : "start-up failed");
    for (unsigned i = 0; i < GWCFG_MAX_LISTENERS; i++)
        listener_close(ls[i]);
    if (conns_started) {
        /* Requests in flight finish and their replies are written; then each connection
         * closes and signs its device out. */
        conn_drain_all();
        if (!wait_for(drained, g.up, cfg.shutdown.drain_ms)) {
            log_warn("drain period over; closing the rest", "connections=%ld in_flight=%ld",
                     conn_count(), upstream_inflight(g.up));
            conn_close_all();
            wait_for(drained, g.up, cfg.logic.timeout_ms * cfg.logic.attempts);
        }
    }
    pushsub_close(ps);
    gwhttp_stop();
    upstream_close(g.up);
    registry_close(g.reg); /* drops its references on connections */
    if (conns_started)
        conn_module_fini();
    if (rc == 0)
        log_info("stopped", "%s", "clean");
    gwcfg_free(&cfg);
    if (!stop_flag) {
        pthread_kill(sigthr, SIGTERM);
    }
    pthread_join(sigthr, NULL);
    return rc;
}
