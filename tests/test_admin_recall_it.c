/* Operator recall (PT_ADMIN_RECALL, gimctl recall --admin) through the running service. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "testlib.h"

static struct tl_server srv;
static struct gim_client *cli;
static struct client_conn alice, bob;

static void setup(void)
{
    tl_start(&srv, "recall: {window_seconds: 1}");
    cli = tl_client(&srv);
    cr_assert_eq(tl_signin(cli, &alice, 1, 11, "gw1"), 0);
    cr_assert_eq(tl_signin(cli, &bob, 2, 21, "gw1"), 0);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)"operator will erase this";
    m.message_content.len = strlen("operator will erase this");
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    cr_assert_eq(tl_code(cli, &alice, PB__PACKAGE_TYPE__PT_MESSAGE, 7, &ms.base), 0);
}

static void teardown(void)
{
    client_close(cli);
    tl_cleanup(&srv);
}

TestSuite(admin_recall, .init = setup, .fini = teardown, .timeout = 60);

static int admin_recall(const char *token, int64_t user, int64_t seq)
{
    Pb__AdminRecallInput in = PB__ADMIN_RECALL_INPUT__INIT;
    in.token = (char *)token;
    in.user_id = user;
    in.seq = seq;
    struct client_conn none = {.gateway_id = "ops"};
    return tl_code(cli, &none, PB__PACKAGE_TYPE__PT_ADMIN_RECALL, 1, &in.base);
}

Test(admin_recall, operator_recalls_any_message_after_the_window)
{
    char *token = NULL;
    sleep(2); /* past the sender's own window: only an operator can still recall */
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 60, &token), GIM_OK);
    cr_assert_eq(admin_recall(token, 2, 1), PB__ERROR_CODE__EC_OK);
    free(token);
    cr_assert_eq(tl_query_int(srv.db, "SELECT status FROM message WHERE id = 1"), 2);
    cr_assert_eq(tl_query_int(srv.db, "SELECT content IS NULL FROM message WHERE id = 1"), 1);
    /* A notice in each inbox, from seqs the service assigned: no collision, no gap. */
    cr_assert_eq(tl_query_int(srv.db, "SELECT max(seq) FROM inbox WHERE user_id = 1"), 2);
    cr_assert_eq(tl_query_int(srv.db, "SELECT max(seq) FROM inbox WHERE user_id = 2"), 2);
    cr_assert_eq(tl_query_int(srv.db, "SELECT seq FROM user_last_seq WHERE user_id = 2"), 2);
}

Test(admin_recall, user_token_or_garbage_is_refused_and_changes_nothing)
{
    char *user_token = tl_token(2, 21, 60);
    cr_assert_eq(admin_recall(user_token, 2, 1), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(admin_recall("not-a-jwt", 2, 1), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    free(user_token);
    char *token = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 60, &token), GIM_OK);
    cr_assert_eq(admin_recall(token, 2, 0), PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(admin_recall(token, 2, 99), PB__ERROR_CODE__EC_NOT_FOUND);
    free(token);
    cr_assert_eq(tl_query_int(srv.db, "SELECT status FROM message WHERE id = 1"), 1);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox"), 2);
}

/* Runs gimctl with args (after the global --url and --secret); its first line of output. */
static int gimctl(const char *args, char *line, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --url '%s' --secret " TL_SECRET " %s 2>&1", GIMCTL_BIN, srv.url,
             args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    line[0] = '\0';
    if (!fgets(line, (int)len, p))
        line[0] = '\0';
    return pclose(p);
}

Test(admin_recall, gimctl_recall_admin)
{
    char line[256];
    cr_assert_eq(gimctl("--user 2 recall --admin 1", line, sizeof line), 0, "gimctl: %s", line);
    cr_assert_str_eq(line, "recalled user=2 seq=1\n");
    cr_assert_eq(tl_query_int(srv.db, "SELECT status FROM message WHERE id = 1"), 2);
    int64_t inbox = tl_query_int(srv.db, "SELECT count(*) FROM inbox");

    /* Again: a success that says so, and no second round of notices. */
    cr_assert_eq(gimctl("--user 2 recall --admin 1", line, sizeof line), 0, "gimctl: %s", line);
    cr_assert_str_eq(line, "already recalled user=2 seq=1\n");
    /* The sender's own recall of it says the same (the user path, alice's seq 1). */
    cr_assert_eq(gimctl("--user 1 --device 12 recall 1", line, sizeof line), 0, "gimctl: %s", line);
    cr_assert_str_eq(line, "already recalled seq=1\n");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox"), inbox);
}

Test(admin_recall, the_reply_says_whether_it_was_recalled_before)
{
    char *token = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 60, &token), GIM_OK);
    Pb__AdminRecallInput in = PB__ADMIN_RECALL_INPUT__INIT;
    in.token = token;
    in.user_id = 2;
    in.seq = 1;
    struct client_conn none = {.gateway_id = "ops"};
    for (int round = 0; round < 2; round++) {
        Pb__Output *out =
            tl_call(cli, &none, PB__PACKAGE_TYPE__PT_ADMIN_RECALL, 5 + round, &in.base);
        cr_assert_eq(out->code, 0, "%s", out->message);
        Pb__RecallOutput *ro = pb__recall_output__unpack(NULL, out->data.len, out->data.data);
        cr_assert_not_null(ro);
        cr_assert_eq(ro->already_recalled, round == 1, "round %d", round);
        pb__recall_output__free_unpacked(ro, NULL);
        pb__output__free_unpacked(out, NULL);
    }
    free(token);
    /* The user path answers the same way. */
    Pb__RecallInput ri = PB__RECALL_INPUT__INIT;
    ri.seq = 1;
    Pb__Output *out = tl_call(cli, &alice, PB__PACKAGE_TYPE__PT_RECALL, 9, &ri.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__RecallOutput *ro = pb__recall_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(ro && ro->already_recalled);
    pb__recall_output__free_unpacked(ro, NULL);
    pb__output__free_unpacked(out, NULL);
}
