/*
 * gim-logic's --config and its config errors through the real binary: what
 * README promises for a bad file (one line naming the key, exit 2, no
 * database created) and the --config forms. config_load() itself is unit
 * tested in test_config.c.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/gim-config-cli-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp %s", tmpdir);
}

/* The tests leave at most the files write_file() made. */
static void remove_tmpdir(void)
{
    static const char *const names[] = {"bad-url.yaml", "eq.yaml", "gim.db"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

TestSuite(config_cli, .init = make_tmpdir, .fini = remove_tmpdir);

/* Writes text to tmpdir/name and returns the path in a static buffer. */
static const char *write_file(const char *name, const char *text)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s", path);
    cr_assert_eq(fputs(text, f) >= 0, 1);
    cr_assert_eq(fclose(f), 0);
    return path;
}

/* Runs gim-logic with args (already shell-quoted) and returns its exit status; *out gets its
 * stdout and stderr (caller frees). */
static int run_gim_logic(const char *args, char **out)
{
    char cmd[PATH_MAX * 2];
    size_t len = 0;
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1 </dev/null", GIM_LOGIC_BIN, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    FILE *m = open_memstream(out, &len);
    int ch;
    while ((ch = fgetc(p)) != EOF)
        fputc(ch, m);
    fclose(m);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* What README promises for a bad URL: one line naming the key, exit 2, no database created. */
Test(config_cli, binary_rejects_bad_url_before_creating_the_database)
{
    /* listen, publish, http, the expected start of the one line; the good URLs are private
     * ipc sockets, so that the service (before the fix) never took shared ports. */
    static const char *const bad[][4] = {
        {"[http://127.0.0.1:7600]", "[ipc://%s/p.ipc]", "\"\"", "gim-logic: config: listen[0]: "},
        {"[ipc://%s/r.ipc]", "[tcp://nohostport]", "\"\"", "gim-logic: config: publish[0]: "},
        {"[ipc://%s/r.ipc]", "[ipc://%s/p.ipc]", "tcp://127.0.0.1:7480",
         "gim-logic: config: http: "},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[PATH_MAX * 4], db[PATH_MAX + 16], args[PATH_MAX + 64], l[PATH_MAX + 64],
            p[PATH_MAX + 64];
        snprintf(db, sizeof db, "%s/gim.db", tmpdir);
        snprintf(l, sizeof l, bad[i][0], tmpdir);
        snprintf(p, sizeof p, bad[i][1], tmpdir);
        snprintf(yaml, sizeof yaml,
                 "listen: %s\npublish: %s\nhttp: %s\ndatabase: {path: %s}\nauth: {secret: s}\n", l,
                 p, bad[i][2], db);
        snprintf(args, sizeof args, "--config '%s'", write_file("bad-url.yaml", yaml));
        char *out = NULL;
        int st = run_gim_logic(args, &out);
        cr_expect_eq(st, 2, "<<%s>>: exit %d: %s", yaml, st, out);
        cr_expect_eq(strncmp(out, bad[i][3], strlen(bad[i][3])), 0, "<<%s>>: %s", yaml, out);
        char *nl = strchr(out, '\n');
        cr_expect(nl && nl[1] == '\0', "not exactly one line: %s", out);
        cr_expect_neq(access(db, F_OK), 0, "<<%s>>: %s was created", yaml, db);
        unlink(db);
        free(out);
    }
}

Test(config_cli, binary_config_needs_a_file)
{
    char *out = NULL;
    int st = run_gim_logic("--config", &out);
    cr_expect_eq(st, 2, "exit %d: %s", st, out);
    cr_expect_not_null(strstr(out, "gim-logic: --config needs a FILE"), "%s", out);
    cr_expect_null(strstr(out, "unknown argument"), "%s", out);
    free(out);
    st = run_gim_logic("--config=", &out);
    cr_expect_eq(st, 2, "exit %d: %s", st, out);
    cr_expect_not_null(strstr(out, "gim-logic: --config needs a FILE"), "%s", out);
    free(out);
    st = run_gim_logic("--config --print-config", &out);
    cr_expect_eq(st, 2, "exit %d: %s", st, out);
    cr_expect_not_null(strstr(out, "gim-logic: --config needs a FILE"), "%s", out);
    free(out);
}

/* --config=FILE is the same as --config FILE (tools/dev.sh passes both forms through). */
Test(config_cli, binary_config_equals_form)
{
    char args[PATH_MAX + 64], *out = NULL;
    snprintf(args, sizeof args, "--config='%s' --print-config",
             write_file("eq.yaml", "workers: 3\n"));
    int st = run_gim_logic(args, &out);
    cr_expect_eq(st, 0, "exit %d: %s", st, out);
    cr_expect_not_null(strstr(out, "\nworkers: 3\n"), "%s", out);
    free(out);
}
