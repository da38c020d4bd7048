/* The server end to end over real nng sockets: envelope handling, limits, shutdown. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static struct tl_server srv;

static void setup(void)
{
    tl_start(&srv, "limits: {max_request_bytes: 4096, max_content_bytes: 1024}");
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(server, .init = setup, .fini = teardown, .timeout = 60);

Test(server, heartbeat_ok_after_sign_in)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 101, "gw1"), 0);
    Pb__Output *out = tl_call(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 77, NULL);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_OK);
    cr_assert_eq(out->request_id, 77);
    cr_assert_eq(out->type, PB__PACKAGE_TYPE__PT_HEARTBEAT);
    pb__output__free_unpacked(out, NULL);
    client_close(c);
}

Test(server, garbage_bytes_are_bad_request)
{
    struct gim_client *c = tl_client(&srv);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99};
    Pb__Output *out = tl_call_raw(c, junk, sizeof junk);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert(out->message && strlen(out->message) > 0, "an error carries a message");
    pb__output__free_unpacked(out, NULL);
    client_close(c);
}

Test(server, missing_input_is_bad_request)
{
    struct gim_client *c = tl_client(&srv);
    Pb__GatewayRequest req = PB__GATEWAY_REQUEST__INIT;
    req.user_id = 1;
    req.device_id = 2;
    req.gateway_id = "gw";
    uint8_t buf[64];
    size_t len = pb__gateway_request__pack(&req, buf);
    Pb__Output *out = tl_call_raw(c, buf, len);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    pb__output__free_unpacked(out, NULL);
    client_close(c);
}

Test(server, unknown_type_is_bad_request_with_request_id)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 102, "gw1"), 0);
    Pb__Output *out = tl_call(c, &conn, 99, 4242, NULL);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(out->request_id, 4242);
    cr_assert(strstr(out->message, "unknown package type") != NULL, "message: %s", out->message);
    pb__output__free_unpacked(out, NULL);
    client_close(c);
}

Test(server, unknown_type_without_session_is_unauthenticated)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn = {.user_id = 5, .device_id = 6, .gateway_id = "gw"};
    cr_assert_eq(tl_code(c, &conn, 99, 1, NULL), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    client_close(c);
}

/*
 * Requests over limits.max_request_bytes: tests/test_hostile_it.c
 * (request_over_the_receive_limit) sends them over a plain tcp socket, because
 * closing an nng REQ socket whose connection the server dropped can hang in
 * Debian's nng 1.5.2.
 */

Test(server, sigterm_shuts_down_cleanly)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 104, "gw1"), 0);
    client_close(c);
    /* Exit 0 also means no leak under the sanitizer build (LeakSanitizer fails the exit). */
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    if (!tl_pg()) /* SQLite's own check of its file */
        cr_assert_eq(tl_query_int(srv.db, "PRAGMA integrity_check") == -1, 0);
}
