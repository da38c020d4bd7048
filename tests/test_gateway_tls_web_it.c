/*
 * gim-gateway's TLS listeners (tls+tcp:// with be16 framing, wss://) and the
 * web client it serves next to /ws: /demo/ (web.root), /proto/
 * (web.proto_dir) and "/" redirecting to /demo/.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "gwtestlib.h"

static struct tl_server logic;
static struct gw_server gw;
static char dir[64], web[128];
static int tls_port, wss_port;

static void sh(const char *cmd)
{
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void setup(void)
{
    char cmd[512], listeners[512], extra[512];
    snprintf(dir, sizeof dir, "/tmp/gimgwtls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout gw.key -out gw.crt "
             ">/dev/null 2>&1",
             dir);
    sh(cmd);
    snprintf(web, sizeof web, "%s/web", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && printf '<h1>gim demo</h1>' > %s/index.html", web,
             web);
    sh(cmd);
    /* The ports are the gateway library's to pick (and pick again if one was taken). */
    snprintf(listeners, sizeof listeners,
             "  - {url: \"tls+tcp://127.0.0.1:{port1}\"}\n  - {url: \"wss://:{port2}/ws\"}\n");
    snprintf(extra, sizeof extra, "tls: {cert_file: \"%s/gw.crt\", key_file: \"%s/gw.key\"}", dir,
             dir);
    gwt_start_logic(&logic, NULL);
    gwt_start_ex(&gw, &logic, "gwT", NULL, extra, listeners, web, GIM_SOURCE_DIR "/proto");
    tls_port = gw.more_port[0];
    wss_port = gw.more_port[1];
}

static void teardown(void)
{
    char cmd[128];
    gwt_cleanup(&gw);
    tl_cleanup(&logic);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(gateway_tls_web_it, .init = setup, .fini = teardown, .timeout = 60);

static nng_stream *dial(const char *url, bool ws, nng_tls_config *tls)
{
    nng_stream_dialer *d = NULL;
    nng_aio *aio = NULL;
    cr_assert_eq(nng_stream_dialer_alloc(&d, url), 0);
    if (ws)
        cr_assert_eq(nng_stream_dialer_set_bool(d, "ws:msgmode", true), 0);
    cr_assert_eq(nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls), 0);
    cr_assert_eq(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, 5000);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    cr_assert_eq(nng_aio_result(aio), 0, "dial %s: %s", url, nng_strerror(nng_aio_result(aio)));
    nng_stream *s = nng_aio_get_output(aio, 0);
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    return s;
}

static nng_tls_config *client_tls(void)
{
    nng_tls_config *t = NULL;
    char ca[128];
    snprintf(ca, sizeof ca, "%s/gw.crt", dir);
    cr_assert_eq(nng_tls_config_alloc(&t, NNG_TLS_MODE_CLIENT), 0);
    cr_assert_eq(nng_tls_config_server_name(t, "localhost"), 0);
    cr_assert_eq(nng_tls_config_ca_file(t, ca), 0);
    cr_assert_eq(nng_tls_config_auth_mode(t, NNG_TLS_AUTH_MODE_REQUIRED), 0);
    return t;
}

/* Sends a sign-in (be16-framed when !ws) and returns the reply's code. */
static int signin_over(nng_stream *s, bool ws, int64_t user, int64_t device)
{
    struct gwc fake = {.kind = ws ? GWC_WS : GWC_BE16};
    char *tok = tl_token(user, device, 3600);
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    static uint8_t buf[4096], rbuf[4096];
    in.user_id = user;
    in.device_id = device;
    in.token = tok;
    size_t n = gwc_frame(&fake, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &in.base, buf, sizeof buf);
    free(tok);
    nng_aio *aio = NULL;
    cr_assert_eq(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, 5000);
    nng_msg *m = NULL;
    if (ws) {
        nng_msg_alloc(&m, 0);
        nng_msg_append(m, buf, n);
        nng_aio_set_msg(aio, m);
    } else {
        nng_iov iov = {.iov_buf = buf, .iov_len = n};
        nng_aio_set_iov(aio, 1, &iov);
    }
    nng_stream_send(s, aio);
    nng_aio_wait(aio);
    cr_assert_eq(nng_aio_result(aio), 0);
    cr_assert(ws || nng_aio_count(aio) == n);
    Pb__Output *o = NULL;
    if (ws) {
        nng_stream_recv(s, aio);
        nng_aio_wait(aio);
        cr_assert_eq(nng_aio_result(aio), 0);
        m = nng_aio_get_msg(aio);
        o = pb__output__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
    } else {
        size_t got = 0;
        while (got < 2 || got < 2 + (size_t)(rbuf[0] << 8 | rbuf[1])) {
            nng_iov iov = {.iov_buf = rbuf + got, .iov_len = sizeof rbuf - got};
            nng_aio_set_iov(aio, 1, &iov);
            nng_stream_recv(s, aio);
            nng_aio_wait(aio);
            cr_assert_eq(nng_aio_result(aio), 0);
            got += nng_aio_count(aio);
        }
        o = pb__output__unpack(NULL, (size_t)(rbuf[0] << 8 | rbuf[1]), rbuf + 2);
    }
    nng_aio_free(aio);
    cr_assert_not_null(o);
    int code = o->code;
    pb__output__free_unpacked(o, NULL);
    return code;
}

Test(gateway_tls_web_it, tls_tcp_with_be16_framing)
{
    char url[64];
    nng_tls_config *t = client_tls();
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", tls_port);
    nng_stream *s = dial(url, false, t);
    cr_assert_eq(signin_over(s, false, 1, 11), PB__ERROR_CODE__EC_OK);
    nng_stream_free(s);
    nng_tls_config_free(t);
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_accepted_total{transport=\"tls\"}"), 1);
}

Test(gateway_tls_web_it, wss_one_message_per_frame)
{
    char url[64];
    nng_tls_config *t = client_tls();
    /* 127.0.0.1, not localhost: the listener (wss://:PORT) binds IPv4, and where localhost
     * resolves to ::1 first (a bare Debian 12's /etc/hosts) nng 1.5.2's dialer tries only
     * that address. The certificate's name is still checked: client_tls() sets "localhost". */
    snprintf(url, sizeof url, "wss://127.0.0.1:%d/ws", wss_port);
    nng_stream *s = dial(url, true, t);
    cr_assert_eq(signin_over(s, true, 2, 21), PB__ERROR_CODE__EC_OK);
    nng_stream_free(s);
    nng_tls_config_free(t);
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_accepted_total{transport=\"wss\"}"), 1);
}

Test(gateway_tls_web_it, the_web_client_and_protos_are_served_next_to_ws)
{
    int status = 0;
    char *body = gwt_http_get(gw.ws_port, "/demo/index.html", &status);
    cr_assert_eq(status, 200);
    cr_assert_str_eq(body, "<h1>gim demo</h1>");
    free(body);
    body = gwt_http_get(gw.ws_port, "/proto/connect.ext.proto", &status);
    cr_assert_eq(status, 200);
    cr_assert_not_null(strstr(body, "message Input"));
    free(body);
    body = gwt_http_get(gw.ws_port, "/", &status);
    cr_assert_eq(status, 302);
    free(body);
    body = gwt_http_get(gw.ws_port, "/proto/../../etc/passwd", &status);
    cr_assert_neq(status, 200);
    free(body);
    /* And /ws on the same port still speaks the protocol. */
    struct gwc c;
    gwc_connect(&c, &gw, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&c, 3, 31), PB__ERROR_CODE__EC_OK);
    gwc_close(&c);
}

Test(gateway_tls_web_it, malformed_http_requests_leave_the_gateway_up)
{
    static const char *paths[] = {"/demo/%",
                                  "/demo/%4",
                                  "/%zz",
                                  "/proto/%",
                                  "/demo/a%00b",
                                  "//..//..",
                                  "/demo/index.html?v=1"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int status = 0;
        free(gwt_http_get(gw.ws_port, paths[i], &status));
        cr_assert_neq(status, 200, "%s", paths[i]);
    }
    char longpath[9000] = "/demo/";
    memset(longpath + 6, 'a', sizeof longpath - 7);
    int status = 0;
    free(gwt_http_get(gw.ws_port, longpath, &status));
    cr_assert_neq(status, 200);
    struct gwc c;
    gwc_connect(&c, &gw, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&c, 4, 41), PB__ERROR_CODE__EC_OK);
    gwc_close(&c);
}
