/*
 * tls+tcp:// gateway links: a gateway with a certificate from our CA is
 * served; a client without one, or with one from another CA, cannot connect.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static char dir[64];
static struct tl_server srv;
static char url[64];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    cr_assert_eq(system(cmd), 0, "command failed: %s", cmd);
}

/* A CA, a server certificate for localhost and two client certificates: one
 * signed by the CA, one self-signed (a stranger). */
static void make_certs(void)
{
    snprintf(dir, sizeof dir, "/tmp/gimtls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gim-test-ca "
       "-keyout ca.key -out ca.crt 2>/dev/null",
       dir);
    const char *names[] = {"server", "gateway"};
    for (int i = 0; i < 2; i++)
        sh("cd %s && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout %s.key "
           "-out %s.csr 2>/dev/null && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > "
           "%s.ext && openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-days 2 -extfile %s.ext -out %s.crt 2>/dev/null",
           dir, names[i], names[i], names[i], names[i], names[i], names[i]);
    sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
       "-keyout stranger.key -out stranger.crt 2>/dev/null",
       dir);
}

static void setup(void)
{
    char yaml[512];
    make_certs();
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", tl_free_port());
    snprintf(yaml, sizeof yaml,
             "tls: {cert_file: \"%s/server.crt\", key_file: \"%s/server.key\", "
             "ca_file: \"%s/ca.crt\"}",
             dir, dir, dir);
    tl_start_listen(&srv, url, yaml);
}

static void teardown(void)
{
    char cmd[128];
    tl_cleanup(&srv);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 90);

/* EC_UNAUTHENTICATED proves a round trip happened (a heartbeat without session). */
static gim_err heartbeat(const char *cert, const char *key)
{
    char ca[128], c[128], k[128];
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    snprintf(c, sizeof c, "%s/%s", dir, cert ? cert : "");
    snprintf(k, sizeof k, "%s/%s", dir, key ? key : "");
    struct client_tls tls = {.ca_file = ca,
                             .cert_file = cert ? c : NULL,
                             .key_file = key ? k : NULL,
                             .server_name = "localhost"};
    struct gim_client *cl = NULL;
    cr_assert_eq(client_open_tls(&cl, url, 1500, 2, &tls), GIM_OK);
    struct client_conn conn = {.gateway_id = "gw"};
    Pb__Output *out = NULL;
    gim_err e = client_request(cl, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 5, NULL, &out);
    if (e == GIM_OK) {
        cr_assert_eq(out->code, PB__ERROR_CODE__EC_UNAUTHENTICATED);
        cr_assert_eq(out->request_id, 5);
        pb__output__free_unpacked(out, NULL);
    }
    client_close(cl);
    return e;
}

Test(tls, gateway_with_our_certificate_is_served)
{
    cr_assert_eq(heartbeat("gateway.crt", "gateway.key"), GIM_OK);
}

Test(tls, client_without_certificate_cannot_connect)
{
    cr_assert_neq(heartbeat(NULL, NULL), GIM_OK);
}

Test(tls, client_with_foreign_certificate_cannot_connect)
{
    cr_assert_neq(heartbeat("stranger.crt", "stranger.key"), GIM_OK);
}
