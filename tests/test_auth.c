/*
 * auth tokens (auth_verify/auth_mint), and the session handlers that use them:
 * sign-in through dispatch (validation, token checks), sign-in/sign-out
 * write+committed against a real SQLite file, and the sweeper's
 * maint_signout().
 *
 * On `sub`: RFC 7519 makes it a StringOrURI, so a JSON number is refused
 * (sub_as_number), not coerced.
 */
#include <criterion/criterion.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "dispatch.h"
#include "handlers.h"
#include "presence.h"
#include "seq.h"
#include "maint.h"
#include "store.h"
#include "writer.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define NOW    1700000000LL

/* --- tokens ------------------------------------------------------------- */

/* A token with exactly these claims, signed by libjwt (key NULL for alg none). */
static char *craft(jwt_alg_t alg, const char *key, const char *claims)
{
    jwt_t *j = NULL;
    cr_assert_eq(jwt_new(&j), 0);
    cr_assert_eq(jwt_add_grants_json(j, claims), 0, "claims %s", claims);
    cr_assert_eq(jwt_set_alg(j, alg, (const unsigned char *)key, key ? (int)strlen(key) : 0), 0);
    char *t = jwt_encode_str(j);
    cr_assert_not_null(t);
    jwt_free(j);
    return t;
}

/* Verifies at NOW; returns the result and leaves the reason in why. */
static gim_err verify(const char *token, char *why, size_t whylen)
{
    int64_t uid = -1, did = -1;
    why[0] = 0;
    gim_err e = auth_verify(SECRET, token, NOW, &uid, &did, why, whylen);
    if (e != GIM_OK) {
        cr_assert_eq(uid, -1, "ids untouched on failure");
        cr_assert_eq(did, -1);
        cr_assert(why[0], "a failure says why");
    }
    return e;
}

/* base64url without padding of data[0..len) into out (NUL-terminated). */
static void b64url(const unsigned char *data, size_t len, char *out, size_t outlen)
{
    unsigned char tmp[1024];
    cr_assert(4 * ((len + 2) / 3) + 1 <= sizeof tmp);
    int n = EVP_EncodeBlock(tmp, data, (int)len);
    cr_assert((size_t)n < outlen);
    size_t k = 0;
    for (int i = 0; i < n && tmp[i] != '='; i++)
        out[k++] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : (char)tmp[i];
    out[k] = 0;
}

/*
 * A token with exactly this header and these claims, HMAC-SHA256-signed with
 * key: libjwt always writes its own "alg" header, so a header it would not
 * write ("hs256") is built here, with OpenSSL's HMAC.
 */
static char *craft_raw(const char *header, const char *claims, const char *key)
{
    char h[512], c[512], sig[128];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    b64url((const unsigned char *)header, strlen(header), h, sizeof h);
    b64url((const unsigned char *)claims, strlen(claims), c, sizeof c);
    char *t = malloc(strlen(h) + strlen(c) + sizeof sig + 2);
    cr_assert_not_null(t);
    sprintf(t, "%s.%s", h, c);
    cr_assert_not_null(HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)t,
                            strlen(t), mac, &maclen));
    b64url(mac, maclen, sig, sizeof sig);
    strcat(t, ".");
    strcat(t, sig);
    return t;
}

static void assert_rejected_claims(const char *claims, const char *reason)
{
    char why[128];
    char *t = craft(JWT_ALG_HS256, SECRET, claims);
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH, "claims %s accepted", claims);
    if (reason)
        cr_assert(strstr(why, reason), "claims %s: reason \"%s\", want \"%s\"", claims, why,
                  reason);
    free(t);
}

Test(auth, minted_token_verifies)
{
    char *t = NULL;
    int64_t uid = 0, did = 0;
    cr_assert_eq(auth_mint(SECRET, 42, 7, NOW + 60, &t), GIM_OK);
    cr_assert_eq(auth_verify(SECRET, t, NOW, &uid, &did, NULL, 0), GIM_OK);
    cr_assert_eq(uid, 42);
    cr_assert_eq(did, 7);
    free(t);
}

Test(auth, operator_tokens_are_not_user_tokens)
{
    char *adm = NULL, *user = NULL, why[100];
    int64_t uid = 0, did = 0;
    cr_assert_eq(auth_mint_admin(SECRET, NOW + 60, &adm), GIM_OK);
    cr_assert_eq(auth_mint(SECRET, 42, 7, NOW + 60, &user), GIM_OK);
    cr_assert_eq(auth_verify_admin(SECRET, adm, NOW, why, sizeof why), GIM_OK);
    cr_assert_eq(auth_verify_admin(SECRET, user, NOW, why, sizeof why), GIM_EUNAUTH);
    cr_assert_eq(auth_verify(SECRET, adm, NOW, &uid, &did, why, sizeof why), GIM_EUNAUTH);
    cr_assert_eq(auth_verify_admin("another-secret", adm, NOW, why, sizeof why), GIM_EUNAUTH);
    cr_assert_eq(auth_verify_admin(SECRET, adm, NOW + 61, why, sizeof why), GIM_EUNAUTH);
    cr_assert(strstr(why, "expired") != NULL, "why: %s", why);
    free(adm);
    free(user);
}

Test(auth, large_ids_round_trip)
{
    char *t = NULL;
    int64_t uid = 0, did = 0;
    cr_assert_eq(auth_mint(SECRET, INT64_MAX, INT64_MAX - 1, NOW + 60, &t), GIM_OK);
    cr_assert_eq(auth_verify(SECRET, t, NOW, &uid, &did, NULL, 0), GIM_OK);
    cr_assert_eq(uid, INT64_MAX);
    cr_assert_eq(did, INT64_MAX - 1);
    free(t);
}

Test(auth, token_from_another_issuer_verifies)
{
    char why[128];
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld,\"iat\":%lld}",
             NOW + 60, NOW);
    char *t = craft(JWT_ALG_HS256, SECRET, claims);
    cr_assert_eq(verify(t, why, sizeof why), GIM_OK, "%s", why);
    free(t);
}

Test(auth, expired)
{
    char why[128];
    char *t = NULL;
    cr_assert_eq(auth_mint(SECRET, 42, 7, NOW, &t), GIM_OK);
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH, "exp == now is expired");
    cr_assert_str_eq(why, "token expired");
    free(t);
    cr_assert_eq(auth_mint(SECRET, 42, 7, NOW - 3600, &t), GIM_OK);
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH);
    free(t);
}

Test(auth, wrong_secret)
{
    char why[128];
    char *t = NULL;
    cr_assert_eq(auth_mint("another secret, same length......", 42, 7, NOW + 60, &t), GIM_OK);
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH);
    cr_assert_str_eq(why, "bad signature");
    free(t);
}

Test(auth, tampered_payload)
{
    char why[128];
    char *good = NULL, *other = NULL;
    cr_assert_eq(auth_mint(SECRET, 42, 7, NOW + 60, &good), GIM_OK);
    cr_assert_eq(auth_mint(SECRET, 43, 7, NOW + 60, &other), GIM_OK);
    /* header of good + payload of other + signature of good */
    char *p1 = strchr(good, '.'), *s1 = strrchr(good, '.');
    char *p2 = strchr(other, '.'), *s2 = strrchr(other, '.');
    char forged[1024];
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(p1 - good), good, (int)(s2 - p2), p2, s1);
    cr_assert_eq(verify(forged, why, sizeof why), GIM_EUNAUTH);
    cr_assert_str_eq(why, "bad signature");
    free(good);
    free(other);
}

Test(auth, alg_none)
{
    char why[128];
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld}", NOW + 60);
    char *t = craft(JWT_ALG_NONE, NULL, claims);
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH);
    cr_assert(strstr(why, "none"), "reason: %s", why);
    free(t);
}

Test(auth, hs512_with_the_right_secret)
{
    char why[128];
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld}", NOW + 60);
    char *t = craft(JWT_ALG_HS512, SECRET, claims);
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH);
    cr_assert(strstr(why, "HS512"), "reason: %s", why);
    free(t);
}

Test(auth, exp_missing_or_malformed)
{
    assert_rejected_claims("{\"sub\":\"42\",\"did\":7}", "token has no exp");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":7,\"exp\":\"99999999999\"}", "exp");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":7,\"exp\":99999999999.5}", "exp");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":7,\"exp\":-1}", "exp");
}

Test(auth, nbf_in_the_future)
{
    char claims[160];
    snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld,\"nbf\":%lld}",
             NOW + 600, NOW + 60);
    assert_rejected_claims(claims, "not valid yet");

    char why[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld,\"nbf\":%lld}",
             NOW + 600, NOW);
    char *t = craft(JWT_ALG_HS256, SECRET, claims);
    cr_assert_eq(verify(t, why, sizeof why), GIM_OK, "%s", why);
    free(t);
}

/*
 * Issue 11 (JWT tightening): a non-numeric nbf used to be ignored, so a
 * token carrying a garbled nbf was accepted as if it had none.
 */
Test(auth, nbf_not_a_positive_integer)
{
    static const char *bad[] = {"\"1700000000\"", "\"soon\"", "1.5", "true", "0", "-1", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char claims[160];
        snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld,\"nbf\":%s}",
                 NOW + 600, bad[i]);
        assert_rejected_claims(claims, "nbf");
    }
}

/*
 * Issue 11 (JWT tightening): the alg header was compared case-insensitively
 * (libjwt's jwt_str_alg), so {"alg":"hs256"} with a valid HS256 signature
 * was accepted. RFC 7515 makes alg case-sensitive: only "HS256" is ours.
 */
Test(auth, alg_header_exactly_HS256)
{
    char why[128], claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"42\",\"did\":7,\"exp\":%lld}", NOW + 60);
    /* The control: the same hand-made token with the right header verifies. */
    char *t = craft_raw("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, SECRET);
    cr_assert_eq(verify(t, why, sizeof why), GIM_OK, "%s", why);
    free(t);
    static const char *bad[] = {"hs256", "Hs256", "hS256"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char header[64];
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", bad[i]);
        t = craft_raw(header, claims, SECRET);
        cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH, "alg \"%s\" accepted", bad[i]);
        cr_assert(strstr(why, "alg"), "alg \"%s\": reason \"%s\"", bad[i], why);
        free(t);
    }
}

Test(auth, sub_missing)
{
    assert_rejected_claims("{\"did\":7,\"exp\":99999999999}", "token has no sub");
}

Test(auth, sub_not_a_positive_decimal)
{
    static const char *bad[] = {"abc", "-5", "0",
                                /* Issue 11: non-canonical decimals were read as 5, 7, 0. */
                                "05", "007", "00", "12a", " 12", "+12", "", "1.0", "0x10",
                                "9223372036854775808", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char claims[160];
        snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"did\":7,\"exp\":99999999999}", bad[i]);
        assert_rejected_claims(claims, "sub");
    }
}

Test(auth, sub_as_number)
{
    assert_rejected_claims("{\"sub\":42,\"did\":7,\"exp\":99999999999}", "sub must be a string");
}

Test(auth, did_missing_or_not_a_positive_integer)
{
    assert_rejected_claims("{\"sub\":\"42\",\"exp\":99999999999}", "token has no did");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":\"7\",\"exp\":99999999999}", "did");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":0,\"exp\":99999999999}", "did");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":-7,\"exp\":99999999999}", "did");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":7.5,\"exp\":99999999999}", "did");
    assert_rejected_claims("{\"sub\":\"42\",\"did\":true,\"exp\":99999999999}", "did");
}

Test(auth, garbage_and_empty)
{
    char why[128];
    static const char *garbage[] = {"garbage", "a.b.c", "..", "eyJhbGciOiJIUzI1NiJ9.e30"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        cr_assert_eq(verify(garbage[i], why, sizeof why), GIM_EUNAUTH, "%s", garbage[i]);
        cr_assert_str_eq(why, "malformed token", "%s", garbage[i]);
    }
    cr_assert_eq(verify("", why, sizeof why), GIM_EUNAUTH);
    cr_assert_str_eq(why, "empty token");
    cr_assert_eq(verify(NULL, why, sizeof why), GIM_EUNAUTH);
}

Test(auth, overlong_token)
{
    char why[128];
    char *t = malloc(AUTH_TOKEN_MAX + 2);
    memset(t, 'a', AUTH_TOKEN_MAX + 1);
    t[AUTH_TOKEN_MAX + 1] = 0;
    cr_assert_eq(verify(t, why, sizeof why), GIM_EUNAUTH);
    cr_assert(strstr(why, "longer"), "reason: %s", why);
    free(t);
}

Test(auth, no_secret)
{
    char *t = NULL;
    char why[64];
    int64_t uid, did;
    cr_assert_eq(auth_mint(SECRET, 42, 7, NOW + 60, &t), GIM_OK);
    cr_assert_eq(auth_verify(NULL, t, NOW, &uid, &did, why, sizeof why), GIM_EUNAUTH);
    cr_assert_str_eq(why, "no token secret configured");
    cr_assert_eq(auth_verify("", t, NOW, &uid, &did, why, sizeof why), GIM_EUNAUTH);
    free(t);
}

Test(auth, mint_refuses_bad_arguments)
{
    char *t = (char *)"untouched";
    cr_assert_eq(auth_mint("", 1, 1, NOW, &t), GIM_EBADREQ);
    cr_assert_null(t);
    cr_assert_eq(auth_mint(NULL, 1, 1, NOW, &t), GIM_EBADREQ);
    cr_assert_eq(auth_mint(SECRET, 0, 1, NOW, &t), GIM_EBADREQ);
    cr_assert_eq(auth_mint(SECRET, 1, -1, NOW, &t), GIM_EBADREQ);
    cr_assert_eq(auth_mint(SECRET, 1, 1, 0, &t), GIM_EBADREQ);
    cr_assert_null(t);
}

/* --- session handlers on a real database --------------------------------- */

#define T0 1700000000000LL
#define T1 (T0 + 5000)

static struct gim_config cfg;
static char dir[64];
static char path[128];
static struct store_conn *db;
static struct seq *sq;
static struct presence *pres;
static struct wctx w;
static int64_t clock_ms;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return clock_ms;
}

static void db_setup(void)
{
    char err[256] = "";
    snprintf(dir, sizeof dir, "/tmp/gimauth-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    free(cfg.auth.secret);
    cfg.auth.secret = strdup(SECRET);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&sq), GIM_OK);
    cr_assert_eq(presence_open(&pres), GIM_OK);
    clock_ms = T0;
    w = (struct wctx){
        .db = db, .seq = sq, .cfg = &cfg, .presence = pres, .clock = {.now_ms = test_clock}};
}

static void db_teardown(void)
{
    char cmd[128];
    presence_close(pres);
    seq_close(sq);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

struct device_row {
    bool found;
    int64_t user_id, room_id, created_at, signed_in_at, updated_at;
    int online;
    char gateway_id[128];
    char client_addr[300];
};

static struct device_row device_row(int64_t device_id)
{
    struct device_row d = {0};
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db,
                                    "SELECT user_id, gateway_id, client_addr, online, room_id, "
                                    "created_at, signed_in_at, updated_at FROM device "
                                    "WHERE device_id = ?1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, device_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        d.found = true;
        d.user_id = sqlite3_column_int64(st, 0);
        snprintf(d.gateway_id, sizeof d.gateway_id, "%s", sqlite3_column_text(st, 1));
        snprintf(d.client_addr, sizeof d.client_addr, "%s", sqlite3_column_text(st, 2));
        d.online = sqlite3_column_int(st, 3);
        d.room_id = sqlite3_column_int64(st, 4);
        d.created_at = sqlite3_column_int64(st, 5);
        d.signed_in_at = sqlite3_column_int64(st, 6);
        d.updated_at = sqlite3_column_int64(st, 7);
    }
    sqlite3_finalize(st);
    return d;
}

/* The write path exactly as dispatch wires it: write() in the batch, committed() after it. */
#define job_request(j) ((struct request *)((char *)(j)-offsetof(struct request, job)))
static gim_err job_exec(struct write_job *job, struct wctx *wc)
{
    struct request *r = job_request(job);
    return r->h->write(r, wc);
}
static gim_err last_err;
static void job_done(struct write_job *job, struct wctx *wc, gim_err err)
{
    struct request *r = job_request(job);
    last_err = err;
    if (err == GIM_OK && r->h->committed)
        r->h->committed(r, wc);
}

static gim_err run_job(struct request *r)
{
    struct write_job *j = &r->job;
    r->job.exec = job_exec;
    r->job.done = job_done;
    last_err = GIM_EINTERNAL;
    writer_run_batch(&w, &j, 1);
    return last_err;
}

static struct request session_request(const struct handler *h, int64_t device, int64_t user,
                                      const char *gw, const char *addr)
{
    struct request r = {.h = h, .cfg = &cfg, .client_addr = addr};
    r.sess.device_id = device;
    r.sess.user_id = user;
    snprintf(r.sess.gateway_id, sizeof r.sess.gateway_id, "%s", gw);
    return r;
}

static void sign_in(int64_t device, int64_t user, const char *gw, const char *addr)
{
    struct request r = session_request(&handle_signin, device, user, gw, addr);
    cr_assert_eq(run_job(&r), GIM_OK);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
}

TestSuite(session, .init = db_setup, .fini = db_teardown);

Test(session, signin_records_device_and_presence)
{
    sign_in(7, 42, "gw-1", "10.0.0.1:5555");
    struct device_row d = device_row(7);
    cr_assert(d.found);
    cr_assert_eq(d.user_id, 42);
    cr_assert_str_eq(d.gateway_id, "gw-1");
    cr_assert_str_eq(d.client_addr, "10.0.0.1:5555");
    cr_assert_eq(d.online, 1);
    cr_assert_eq(d.room_id, 0);
    cr_assert_eq(d.created_at, T0);
    cr_assert_eq(d.signed_in_at, T0);
    cr_assert_eq(d.updated_at, T0);

    struct session s;
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T0, &s), GIM_OK);
    cr_assert_eq(s.room_id, 0);
    cr_assert_eq(s.last_seen_ms, T0);
}

Test(session, signin_again_moves_the_session)
{
    sign_in(7, 42, "gw-1", "10.0.0.1:5555");
    cr_assert_eq(store_exec(db, "UPDATE device SET room_id = 5"), GIM_OK);
    cr_assert(presence_set_room(pres, 7, 5));

    clock_ms = T1;
    sign_in(7, 43, "gw-2", "10.0.0.2:6666");
    struct device_row d = device_row(7);
    cr_assert_eq(d.user_id, 43);
    cr_assert_str_eq(d.gateway_id, "gw-2");
    cr_assert_str_eq(d.client_addr, "10.0.0.2:6666");
    cr_assert_eq(d.online, 1);
    cr_assert_eq(d.room_id, 0, "a new session starts in no room");
    cr_assert_eq(d.created_at, T0, "created_at survives");
    cr_assert_eq(d.signed_in_at, T1);
    cr_assert_eq(d.updated_at, T1);

    struct session s;
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T1, NULL), GIM_EUNAUTH);
    cr_assert_eq(presence_check(pres, 43, 7, "gw-2", T1, &s), GIM_OK);
    cr_assert_eq(s.room_id, 0);
    cr_assert_eq(presence_room_sessions(pres, 5, NULL, 0), 0);
}

static int64_t device_ack(int64_t device_id)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    cr_assert_eq(sqlite3_prepare_v2(db->db, "SELECT ack_seq FROM device WHERE device_id = ?1", -1,
                                    &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, device_id);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

Test(session, acks_survive_a_new_sign_in_but_not_a_new_user)
{
    sign_in(7, 42, "gw-1", "a");
    cr_assert_eq(store_exec(db, "UPDATE device SET ack_seq = 9, ack_time = 1"), GIM_OK);
    sign_in(7, 42, "gw-2", "a");
    cr_assert_eq(device_ack(7), 9, "same user: the device keeps its ack");
    sign_in(7, 43, "gw-2", "a");
    cr_assert_eq(device_ack(7), 0, "the old user's ack must not decide the new user's sync");
}

Test(session, failed_signin_leaves_no_session)
{
    cr_assert_eq(store_exec(db, "CREATE TEMP TRIGGER no_devices BEFORE INSERT ON device "
                                "BEGIN SELECT RAISE(ABORT, 'refused'); END"),
                 GIM_OK);
    struct request r = session_request(&handle_signin, 7, 42, "gw-1", "");
    cr_assert_neq(run_job(&r), GIM_OK);
    cr_assert_neq(r.code, GIM_OK);
    cr_assert_not(device_row(7).found);
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T0, NULL), GIM_EUNAUTH);
}

Test(session, signout_marks_offline_and_removes_presence)
{
    sign_in(7, 42, "gw-1", "a");
    cr_assert_eq(store_exec(db, "UPDATE device SET room_id = 5"), GIM_OK);
    clock_ms = T1;
    struct request r = session_request(&handle_signout, 7, 42, "gw-1", "a");
    cr_assert_eq(run_job(&r), GIM_OK);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    struct device_row d = device_row(7);
    cr_assert_eq(d.online, 0);
    cr_assert_eq(d.room_id, 0);
    cr_assert_eq(d.updated_at, T1);
    cr_assert_eq(d.signed_in_at, T0);
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T1, NULL), GIM_EUNAUTH);
}

Test(session, late_signout_of_an_old_connection_keeps_the_new_session)
{
    sign_in(7, 42, "gw-1", "a");
    clock_ms = T1;
    sign_in(7, 42, "gw-2", "b");
    struct request r = session_request(&handle_signout, 7, 42, "gw-1", "a");
    cr_assert_eq(run_job(&r), GIM_OK);
    struct device_row d = device_row(7);
    cr_assert_eq(d.online, 1);
    cr_assert_str_eq(d.gateway_id, "gw-2");
    cr_assert_eq(presence_check(pres, 42, 7, "gw-2", T1, NULL), GIM_OK);
}

Test(session, maint_signout_for_the_sweeper)
{
    sign_in(7, 42, "gw-1", "a");
    sign_in(8, 43, "gw-1", "b");
    w.now_ms = T1;
    cr_assert_eq(store_exec(db, "BEGIN IMMEDIATE"), GIM_OK);
    cr_assert_eq(maint_signout(&w, 7), GIM_OK);
    cr_assert_eq(maint_signout(&w, 999), GIM_OK, "an unknown device is not an error");
    cr_assert_eq(store_exec(db, "COMMIT"), GIM_OK);
    struct device_row d = device_row(7);
    cr_assert_eq(d.online, 0);
    cr_assert_eq(d.updated_at, T1);
    cr_assert_eq(device_row(8).online, 1, "other devices untouched");
    /* Presence is the caller's job, after its commit. */
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T1, NULL), GIM_OK);
}

Test(session, heartbeat_replies_without_touching_the_database)
{
    cr_assert(handle_heartbeat.needs_session);
    cr_assert_null(handle_heartbeat.read);
    cr_assert_null(handle_heartbeat.write);
    cr_assert(handle_signout.needs_session);
    cr_assert_not(handle_signin.needs_session);
}

/* --- sign-in through dispatch (prepare) ----------------------------------- */

static bool write_done_called;
static void write_done(struct request *r)
{
    (void)r;
    write_done_called = true;
}

static struct dispatch disp;

static void disp_setup(void)
{
    db_setup();
    disp = (struct dispatch){
        .cfg = &cfg, .presence = pres, .clock = {.now_ms = test_clock}, .write_done = write_done};
    write_done_called = false;
}

struct signin_req {
    int64_t env_user, env_device;
    const char *gateway, *addr;
    int64_t user, device;
    const char *token;
};

/* Runs a sign-in through dispatch (and the writer if it gets that far); r is left to inspect. */
static void dispatch_signin(struct request *r, const struct signin_req *q)
{
    Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
    si.user_id = q->user;
    si.device_id = q->device;
    si.token = (char *)(q->token ? q->token : "");
    size_t dlen = pb__sign_in_input__get_packed_size(&si);
    uint8_t *data = malloc(dlen + 1);
    pb__sign_in_input__pack(&si, data);

    Pb__Input in = PB__INPUT__INIT;
    in.type = PB__PACKAGE_TYPE__PT_SIGN_IN;
    in.request_id = 1;
    in.data.data = data;
    in.data.len = dlen;
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    env.user_id = q->env_user;
    env.device_id = q->env_device;
    env.gateway_id = (char *)(q->gateway ? q->gateway : "");
    env.client_addr = (char *)(q->addr ? q->addr : "");
    env.input = &in;
    size_t len = pb__gateway_request__get_packed_size(&env);
    uint8_t *buf = malloc(len + 1);
    pb__gateway_request__pack(&env, buf);

    memset(r, 0, sizeof *r);
    if (dispatch_begin(&disp, r, buf, len, NULL) == DISPATCH_WRITE) {
        struct write_job *j = &r->job;
        writer_run_batch(&w, &j, 1);
        cr_assert(write_done_called);
    }
    free(buf);
    free(data);
}

static char *token_for(int64_t user, int64_t device, int64_t exp_s)
{
    char *t = NULL;
    cr_assert_eq(auth_mint(SECRET, user, device, exp_s, &t), GIM_OK);
    return t;
}

static void assert_signin_fails(const struct signin_req *q, gim_err code, const char *msg)
{
    struct request r;
    dispatch_signin(&r, q);
    cr_assert_eq(r.code, code, "code %s (%s), want %s", gim_err_name(r.code), r.errmsg,
                 gim_err_name(code));
    if (msg)
        cr_assert(strstr(r.errmsg, msg), "message \"%s\", want \"%s\"", r.errmsg, msg);
    cr_assert_not(write_done_called, "a refused sign-in never reaches the writer");
    cr_assert_not(device_row(q->device).found);
    request_reset(&r);
}

TestSuite(signin, .init = disp_setup, .fini = db_teardown);

Test(signin, valid_token_signs_in)
{
    char *t = token_for(42, 7, time(NULL) + 3600);
    struct request r;
    /* The envelope's ids are the gateway's guess before sign-in: ignored. */
    dispatch_signin(&r, &(struct signin_req){.env_user = 999,
                                             .env_device = 998,
                                             .gateway = "gw-1",
                                             .addr = "10.0.0.1:1",
                                             .user = 42,
                                             .device = 7,
                                             .token = t});
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    cr_assert(write_done_called);
    cr_assert_eq(r.out, NULL, "sign-in replies without data");
    struct device_row d = device_row(7);
    cr_assert_eq(d.user_id, 42);
    cr_assert_str_eq(d.client_addr, "10.0.0.1:1");
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T0, NULL), GIM_OK);
    request_reset(&r);
    free(t);
}

Test(signin, token_for_another_user_or_device)
{
    char *t = token_for(42, 7, time(NULL) + 3600);
    struct signin_req q = {.gateway = "gw-1", .user = 43, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EUNAUTH, "token is for another user/device");
    q = (struct signin_req){.gateway = "gw-1", .user = 42, .device = 8, .token = t};
    assert_signin_fails(&q, GIM_EUNAUTH, "token is for another user/device");
    free(t);
}

Test(signin, expired_token_against_the_real_clock)
{
    char *t = token_for(42, 7, time(NULL) - 1);
    struct signin_req q = {.gateway = "gw-1", .user = 42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EUNAUTH, "token expired");
    free(t);
}

Test(signin, garbage_token)
{
    struct signin_req q = {.gateway = "gw-1", .user = 42, .device = 7, .token = "nope"};
    assert_signin_fails(&q, GIM_EUNAUTH, "malformed token");
}

Test(signin, bad_requests)
{
    char *t = token_for(42, 7, time(NULL) + 3600);
    char gw65[66], addr257[258];
    memset(gw65, 'g', 65);
    gw65[65] = 0;
    memset(addr257, 'a', 257);
    addr257[257] = 0;

    struct signin_req q = {.gateway = "gw-1", .user = 0, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "user_id");
    q = (struct signin_req){.gateway = "gw-1", .user = -42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "user_id");
    q = (struct signin_req){.gateway = "gw-1", .user = 42, .device = 0, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "device_id");
    q = (struct signin_req){.gateway = "gw-1", .user = 42, .device = 7, .token = ""};
    assert_signin_fails(&q, GIM_EBADREQ, "token");
    q = (struct signin_req){.gateway = "", .user = 42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "gateway_id");
    q = (struct signin_req){.gateway = gw65, .user = 42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "gateway_id");
    q = (struct signin_req){.gateway = "gw\n1", .user = 42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "gateway_id");
    q = (struct signin_req){
        .gateway = "gw-1", .addr = addr257, .user = 42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EBADREQ, "client_addr");
    free(t);
}

Test(signin, longest_gateway_and_client_addr_are_accepted)
{
    char *t = token_for(42, 7, time(NULL) + 3600);
    char gw64[65], addr256[257];
    memset(gw64, 'g', 64);
    gw64[64] = 0;
    memset(addr256, 'a', 256);
    addr256[256] = 0;
    struct request r;
    dispatch_signin(&r, &(struct signin_req){
                            .gateway = gw64, .addr = addr256, .user = 42, .device = 7, .token = t});
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    cr_assert_eq(presence_check(pres, 42, 7, gw64, T0, NULL), GIM_OK);
    request_reset(&r);
    free(t);
}

/* config_secret() falls back to the variable named by auth.secret_env: point it at an unset one. */
static void without_secret(bool insecure_dev)
{
    free(cfg.auth.secret);
    cfg.auth.secret = strdup("");
    free(cfg.auth.secret_env);
    cfg.auth.secret_env = strdup("GIM_TEST_AUTH_UNSET_SECRET");
    unsetenv("GIM_TEST_AUTH_UNSET_SECRET");
    cfg.auth.insecure_dev = insecure_dev;
    cr_assert_null(config_secret(&cfg));
}

Test(signin, no_secret_configured)
{
    without_secret(false);
    char *t = token_for(42, 7, time(NULL) + 3600);
    struct signin_req q = {.gateway = "gw-1", .user = 42, .device = 7, .token = t};
    assert_signin_fails(&q, GIM_EUNAUTH, "no token secret configured");
    free(t);
}

Test(signin, insecure_dev_accepts_any_token_but_needs_the_ids)
{
    without_secret(true);
    struct request r;
    dispatch_signin(
        &r, &(struct signin_req){.gateway = "gw-1", .user = 42, .device = 7, .token = "anything"});
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    cr_assert_eq(presence_check(pres, 42, 7, "gw-1", T0, NULL), GIM_OK);
    request_reset(&r);

    write_done_called = false;
    struct signin_req q = {.gateway = "gw-1", .user = 0, .device = 8, .token = "anything"};
    assert_signin_fails(&q, GIM_EBADREQ, "user_id");
}

Test(signin, secret_from_the_environment)
{
    free(cfg.auth.secret);
    cfg.auth.secret = strdup("");
    free(cfg.auth.secret_env);
    cfg.auth.secret_env = strdup("GIM_TEST_AUTH_SECRET");
    setenv("GIM_TEST_AUTH_SECRET", SECRET, 1);
    char *t = token_for(42, 7, time(NULL) + 3600);
    struct request r;
    dispatch_signin(&r,
                    &(struct signin_req){.gateway = "gw-1", .user = 42, .device = 7, .token = t});
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    request_reset(&r);
    unsetenv("GIM_TEST_AUTH_SECRET");
    free(t);
}
