/*
 * gw_config: the gateway's settings, read from YAML by the same machinery as
 * gim-logic's (src/cfgtable.h): every key is one row of the key table in
 * gw_config.c with its default and range, and a bad file fails with one line
 * naming the key. config/gim-gateway.example.yaml lists every key with its
 * meaning.
 *
 * Ownership: gwcfg_load() fills a struct gw_config that the caller owns and
 * must release with gwcfg_free(), also after a failed load.
 */
#ifndef GIM_GW_CONFIG_H
#define GIM_GW_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define GWCFG_MAX_URLS      8
#define GWCFG_MAX_LISTENERS 8

/* How a listener frames packets. ws/wss URLs always use FRAMING_WS. */
enum framing { FRAMING_BE16 = 0, FRAMING_UVARINT = 1, FRAMING_WS = 2 };

struct gw_listener {
    char *url;            /* tcp://, tls+tcp://, ws://, wss:// */
    enum framing framing; /* from the key "framing" (be16|uvarint) or the ws scheme */
};

struct gw_config {
    char *gateway_id; /* "" = the host name; at most 64 bytes, no newline */
    struct gw_listener listeners[GWCFG_MAX_LISTENERS];
    unsigned listeners_count; /* default tcp://:8080 be16, ws://:8081/ws */
    char *http;               /* /metrics and /healthz, default http://127.0.0.1:8480; "" off */
    struct {
        char *requests[GWCFG_MAX_URLS]; /* default tcp://127.0.0.1:7400 */
        unsigned requests_count;
        char *publish[GWCFG_MAX_URLS]; /* default tcp://127.0.0.1:7401 */
        unsigned publish_count;
        uint32_t timeout_ms;    /* per attempt, default 5000 */
        uint32_t attempts;      /* default 2 */
        uint32_t lease_seconds; /* default 30 */
    } logic;
    struct {
        char *cert_file; /* PEM, for tls+tcp:// and wss:// listeners */
        char *key_file;
    } tls;
    struct {
        uint32_t max_frame_bytes;   /* largest client frame body, default 65535 */
        uint32_t idle_seconds;      /* default 720 */
        uint32_t write_timeout_ms;  /* a send making no progress this long closes, default 10000 */
        uint32_t queue_soft_frames; /* pushes beyond are dropped, default 64 */
        uint32_t queue_soft_bytes;  /* default 262144 */
        uint32_t queue_hard_frames; /* beyond: closed, default 1024 */
        uint32_t queue_hard_bytes;  /* default 4194304 */
    } conn;
    struct {
        char *root;      /* served at /demo/ on ws listeners, default "web"; "" off */
        char *proto_dir; /* served at /proto/, default "proto"; "" off */
    } web;
    struct {
        uint32_t drain_ms; /* SIGTERM: longest wait for requests and sign-outs, default 10000 */
    } shutdown;
    struct {
        char *level; /* debug|info|warn|error, default "info" */
    } log;
};

/* Defaults, then the YAML file at path (NULL = none). GIM_ECONFIG with one
 * line in errbuf on any problem. The caller must call gwcfg_free(cfg). */
gim_err gwcfg_load(const char *path, struct gw_config *cfg, char *errbuf, size_t errlen);
void gwcfg_free(struct gw_config *cfg);
void gwcfg_print(const struct gw_config *cfg, FILE *out);
const char *gwcfg_framing_name(enum framing f);

#endif
