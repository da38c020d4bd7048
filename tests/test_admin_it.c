/*
 * docs/admin.md and gimctl's admin commands against a live service.
 *
 * The recipes are read out of docs/admin.md (between <!-- recipe:NAME -->
 * and <!-- /recipe -->) and run verbatim with the sqlite3 shell, opened the
 * way the `open` recipe says, on the database of a running gim-logic that
 * got its data through the protocol. So the doc cannot drift from what
 * works: a recipe that stops working fails here, and a recipe added to the
 * doc without a test fails `every_recipe_is_tested`.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "migration.h"
#include "testlib.h"

#define DOC GIM_SOURCE_DIR "/docs/admin.md"

static struct tl_server srv;
static struct gim_client *cli;
static struct client_conn u1, u2, u3;

/* The recipes this file runs; every_recipe_is_tested compares it with the doc. */
static const char *const tested[] = {
    "open",   "last-messages", "seq-gaps",           "seq-summary", "add-member",
    "groups", "online",        "online-per-gateway", "backup",      "vacuum-into",
};

/* --- reading the doc --------------------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* The code block of recipe `name` in docs/admin.md (malloc'ed), without its fences. */
static char *recipe(const char *name)
{
    char marker[128];
    char *doc = slurp(DOC);
    snprintf(marker, sizeof marker, "<!-- recipe:%s -->", name);
    char *start = strstr(doc, marker);
    cr_assert_not_null(start, "docs/admin.md has no recipe %s", name);
    char *end = strstr(start, "<!-- /recipe -->");
    cr_assert_not_null(end, "recipe %s is not closed", name);
    char *open = strstr(start, "```");
    cr_assert(open && open < end, "recipe %s has no code block", name);
    char *body = strchr(open, '\n');
    cr_assert_not_null(body);
    body++;
    char *close = strstr(body, "```");
    cr_assert(close && close < end, "recipe %s: code block not closed", name);
    char *out = strndup(body, (size_t)(close - body));
    free(doc);
    return out;
}

/* --- running the sqlite3 shell the way the doc says ------------------------------------- */

/* Runs cmd in the server's directory (HOME there too: no ~/.sqliterc); returns its output. */
static char *run(const char *cmd, int *status)
{
    char full[4096], *out = NULL;
    size_t len = 0;
    snprintf(full, sizeof full, "cd '%s' && HOME='%s' %s 2>&1", srv.dir, srv.dir, cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    FILE *m = open_memstream(&out, &len);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        fwrite(buf, 1, n, m);
    fclose(m);
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    return out;
}

/* The `open` recipe with data/gim.db replaced by the live database's path. */
static char *open_command(void)
{
    char *r = recipe("open"), cmd[1024];
    char *nl = strchr(r, '\n');
    if (nl)
        *nl = 0;
    char *at = strstr(r, "data/gim.db");
    cr_assert_not_null(at, "the open recipe names data/gim.db: %s", r);
    *at = 0;
    snprintf(cmd, sizeof cmd, "%s%s%s", r, srv.db, at + strlen("data/gim.db"));
    free(r);
    return strdup(cmd);
}

/* Runs recipe `name` through the open command, after `params` (dot-commands) on stdin. */
static char *sql_recipe(const char *name, const char *params)
{
    char input[256], cmd[2048];
    snprintf(input, sizeof input, "%s/recipe.sql", srv.dir);
    FILE *f = fopen(input, "w");
    cr_assert_not_null(f);
    char *body = recipe(name);
    fprintf(f, "%s%s", params ? params : "", body);
    fclose(f);
    free(body);
    char *open = open_command();
    snprintf(cmd, sizeof cmd, "%s < recipe.sql", open);
    free(open);
    int status;
    char *out = run(cmd, &status);
    cr_assert_eq(status, 0, "recipe %s exited %d: %s", name, status, out);
    return out;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* --- data through the protocol ------------------------------------------------------------ */

static int send_text(struct client_conn *from, int receiver_type, int64_t to, const char *text,
                     int64_t request_id)
{
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    uint8_t content[256];
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = receiver_type;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = pb__text__pack(&t, content);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return tl_code(cli, from, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
}

/* The test's own writes, as an admin's would be: a separate connection with a busy timeout. */
static void admin_sql(const char *sql)
{
    sqlite3 *db;
    char *msg = NULL;
    cr_assert_eq(sqlite3_open(srv.db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
    sqlite3_close(db);
}

/*
 * Users 1 (device 101 at gw-a) and 2 (201 at gw-b) online, 3 (301) signed
 * out; 1 sends 2 three texts and 2 answers once: inboxes 1..4 each.
 * Group 7 owned by user 1, with only user 1 in it.
 */
static void setup(void)
{
    tl_start(&srv, NULL);
    cli = tl_client(&srv);
    cr_assert_eq(tl_signin(cli, &u1, 1, 101, "gw-a"), 0);
    cr_assert_eq(tl_signin(cli, &u2, 2, 201, "gw-b"), 0);
    cr_assert_eq(tl_signin(cli, &u3, 3, 301, "gw-a"), 0);
    cr_assert_eq(tl_code(cli, &u3, PB__PACKAGE_TYPE__PT_SIGN_OUT, 1, NULL), 0);
    cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_USER, 2, "hello 1", 11), 0);
    cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_USER, 2, "hello 2", 12), 0);
    cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_USER, 2, "hello 3", 13), 0);
    cr_assert_eq(send_text(&u2, PB__RECEIVER_TYPE__RT_USER, 1, "reply from 2", 21), 0);
    admin_sql("INSERT INTO chat_group (group_id, name, owner_id, created_at) "
              "VALUES (7, 'ops', 1, 1700000000000);"
              "INSERT INTO group_member (group_id, user_id, role, joined_at) "
              "VALUES (7, 1, 'owner', 1700000000000)");
}

static void teardown(void)
{
    if (cli)
        client_close(cli);
    cli = NULL;
    tl_cleanup(&srv);
}

TestSuite(admin, .init = setup, .fini = teardown, .timeout = 90);

/* --- the recipes -------------------------------------------------------------------------- */

Test(admin, every_recipe_is_tested)
{
    char *doc = slurp(DOC);
    int found = 0;
    for (char *p = doc; (p = strstr(p, "<!-- recipe:")) != NULL; p++) {
        char name[64];
        cr_assert_eq(sscanf(p, "<!-- recipe:%63[^ ] -->", name), 1);
        bool known = false;
        for (size_t i = 0; i < sizeof tested / sizeof tested[0]; i++)
            known = known || strcmp(tested[i], name) == 0;
        cr_assert(known, "recipe %s in docs/admin.md is run by no test", name);
        found++;
    }
    cr_assert_eq(found, (int)(sizeof tested / sizeof tested[0]), "a tested recipe left the doc");
    free(doc);
}

Test(admin, open_reads_the_live_database)
{
    char *open = open_command(), cmd[2048];
    int status;
    snprintf(cmd, sizeof cmd, "%s 'SELECT count(*) FROM v_message'", open);
    char *out = run(cmd, &status);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert_str_eq(out, "4\n");
    free(out);
    free(open);
    /* The service goes on serving while the shell had the database open. */
    cr_assert_eq(tl_code(cli, &u1, PB__PACKAGE_TYPE__PT_HEARTBEAT, 2, NULL), 0);
}

Test(admin, last_messages_of_a_user)
{
    char *out = sql_recipe("last-messages", ".parameter set :user 1\n");
    cr_assert_eq(lines(out), 4, "%s", out);
    /* Newest first: the reply (seq 4), then user 1's own copies 3..1. */
    cr_assert(strncmp(out, "4|", 2) == 0, "%s", out);
    char *second = strchr(out, '\n') + 1;
    cr_assert(strstr(out, "|2|user|1|text|normal|reply from 2\n") < second, "%s", out);
    cr_assert(strncmp(second, "3|", 2) == 0, "%s", out);
    cr_assert_not_null(strstr(second, "|1|user|2|text|normal|hello 3\n"), "%s", out);
    /* sent_utc is a readable UTC time. */
    int y = 0, mo = 0;
    cr_assert_eq(sscanf(out, "4|%4d-%2d-", &y, &mo), 2, "%s", out);
    cr_assert(y >= 2024 && mo >= 1 && mo <= 12);
    free(out);
}

Test(admin, seq_gaps_and_summary)
{
    char *out = sql_recipe("seq-gaps", ".parameter set :user 2\n");
    cr_assert_str_eq(out, "", "no gaps in a healthy inbox");
    free(out);
    out = sql_recipe("seq-summary", ".parameter set :user 2\n");
    cr_assert_str_eq(out, "4|1|4|4|1\n");
    free(out);

    /* Lose entries 2 and 3 (what the recipes exist to find). */
    admin_sql("DELETE FROM inbox WHERE user_id = 2 AND seq IN (2, 3)");
    out = sql_recipe("seq-gaps", ".parameter set :user 2\n");
    cr_assert_str_eq(out, "2|3\n");
    free(out);
    out = sql_recipe("seq-summary", ".parameter set :user 2\n");
    cr_assert_str_eq(out, "2|1|4|4|0\n");
    free(out);
}

Test(admin, add_member_takes_effect_at_once)
{
    char *out = sql_recipe("add-member", ".parameter set :group 7\n.parameter set :user 2\n");
    cr_assert_str_eq(out, "");
    free(out);
    out = sql_recipe("groups", NULL);
    cr_assert(strncmp(out, "7|ops|1|2|1|2023-11-14 22:13:20.000\n", 36) == 0, "%s", out);
    free(out);

    /* The running service sees the new member with the next send. */
    cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_GROUP, 7, "to the group", 31), 0);
    out = sql_recipe("last-messages", ".parameter set :user 2\n");
    cr_assert(strncmp(out, "5|", 2) == 0, "%s", out);
    cr_assert_not_null(strstr(out, "|1|group|7|text|normal|to the group\n"), "%s", out);
    free(out);

    /* A group that does not exist: refused, nothing written. */
    char *body = recipe("add-member"), cmd[2048], input[256];
    snprintf(input, sizeof input, "%s/recipe.sql", srv.dir);
    FILE *f = fopen(input, "w");
    fprintf(f, ".parameter set :group 999\n.parameter set :user 2\n%s", body);
    fclose(f);
    free(body);
    char *open = open_command();
    snprintf(cmd, sizeof cmd, "%s < recipe.sql", open);
    int status;
    out = run(cmd, &status);
    cr_assert_neq(status, 0);
    cr_assert_not_null(strstr(out, "FOREIGN KEY constraint failed"), "%s", out);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM group_member WHERE group_id = 999"), 0);
    free(out);
    free(open);
}

Test(admin, who_is_online)
{
    char *out = sql_recipe("online", NULL);
    cr_assert_eq(lines(out), 2, "%s", out);
    cr_assert(strncmp(out, "1|101|gw-a|", 11) == 0, "%s", out);
    cr_assert_not_null(strstr(out, "\n2|201|gw-b|"), "%s", out);
    cr_assert_null(strstr(out, "|301|"), "signed out: %s", out);
    free(out);
    out = sql_recipe("online-per-gateway", NULL);
    cr_assert_str_eq(out, "gw-a|1\ngw-b|1\n");
    free(out);
}

static void check_backup(const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", srv.dir, file);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s was not written", path);
    char cmd[1024];
    int status;
    snprintf(cmd, sizeof cmd, "sqlite3 '%s' 'PRAGMA integrity_check'", path);
    char *out = run(cmd, &status);
    cr_assert_str_eq(out, "ok\n");
    free(out);
    cr_assert_eq(tl_query_int(path, "SELECT count(*) FROM message"), 4);
    cr_assert_eq(tl_query_int(path, "SELECT count(*) FROM inbox"), 8);
    cr_assert_eq(tl_query_int(path, "SELECT max(version) FROM schema_migrations"),
                 migrations[migrations_count - 1].version);
}

Test(admin, backups_of_the_live_database)
{
    char *out = sql_recipe("backup", NULL);
    cr_assert_str_eq(out, "");
    free(out);
    check_backup("gim-backup.db");
    out = sql_recipe("vacuum-into", NULL);
    cr_assert_str_eq(out, "");
    free(out);
    check_backup("gim-vacuum.db");
    cr_assert_eq(tl_code(cli, &u1, PB__PACKAGE_TYPE__PT_HEARTBEAT, 3, NULL), 0);
}

/* --- gimctl stats / user / backup --------------------------------------------------------- */

static char *gimctl(const char *args, int *status)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --db '%s' %s", GIMCTL_BIN, srv.db, args);
    return run(cmd, status);
}

/* The number printed after `key` at the start of a line of out, or -1. */
static long long field(const char *out, const char *key)
{
    size_t k = strlen(key);
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, k) == 0 && l[k] == ' ')
            return strtoll(l + k, NULL, 10);
    return -1;
}

Test(admin, gimctl_stats)
{
    int status;
    char *out = gimctl("stats", &status);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert_eq(field(out, "schema_version"), migrations[migrations_count - 1].version, "%s", out);
    cr_assert_eq(field(out, "messages"), 4, "%s", out);
    cr_assert_eq(field(out, "inbox_entries"), 8, "%s", out);
    cr_assert_eq(field(out, "users"), 3, "%s", out);
    cr_assert_eq(field(out, "devices_online"), 2, "%s", out);
    cr_assert_eq(field(out, "devices_total"), 3, "%s", out);
    cr_assert_eq(field(out, "groups"), 1, "%s", out);
    cr_assert_eq(field(out, "group_members"), 1, "%s", out);
    cr_assert(field(out, "db_bytes") > 0, "%s", out);
    cr_assert(field(out, "wal_bytes") >= 0, "%s", out);
    free(out);

    out = gimctl("stats extra", &status);
    cr_assert_eq(status, 2, "%s", out);
    free(out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --db '%s/nope.db' stats", GIMCTL_BIN, srv.dir);
    out = run(cmd, &status);
    cr_assert_eq(status, 1);
    cr_assert_not_null(strstr(out, "no database at"), "%s", out);
    free(out);
}

Test(admin, gimctl_user)
{
    int status;
    char *out = gimctl("user 1", &status);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert_eq(field(out, "user"), 1, "%s", out);
    cr_assert_eq(field(out, "last_seq"), 4, "%s", out);
    cr_assert_eq(field(out, "inbox_entries"), 4, "%s", out);
    cr_assert_not_null(strstr(out, "\n101 "), "%s", out);
    const char *dev = strstr(out, "\n101 ");
    cr_assert_not_null(strstr(dev, "online"), "%s", out);
    cr_assert_not_null(strstr(dev, "gw-a"), "%s", out);
    free(out);

    out = gimctl("user 3", &status);
    cr_assert_eq(status, 0, "%s", out);
    dev = strstr(out, "\n301 ");
    cr_assert_not_null(dev, "%s", out);
    cr_assert_not_null(strstr(dev, "offline"), "%s", out);
    free(out);

    out = gimctl("user abc", &status);
    cr_assert_eq(status, 2, "%s", out);
    free(out);
}

Test(admin, gimctl_backup)
{
    int status;
    char *out = gimctl("backup gimctl-backup.db", &status);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert_not_null(strstr(out, "backup gimctl-backup.db: "), "%s", out);
    free(out);
    check_backup("gimctl-backup.db");
    char partial[512];
    struct stat st;
    snprintf(partial, sizeof partial, "%s/gimctl-backup.db.partial", srv.dir);
    cr_assert_neq(stat(partial, &st), 0, "no .partial file is left behind");

    /* An existing file is never overwritten. */
    out = gimctl("backup gimctl-backup.db", &status);
    cr_assert_eq(status, 1, "%s", out);
    cr_assert_not_null(strstr(out, "exists"), "%s", out);
    free(out);
    check_backup("gimctl-backup.db");
    out = gimctl("backup", &status);
    cr_assert_eq(status, 2, "%s", out);
    free(out);
}
