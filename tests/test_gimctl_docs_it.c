/*
 * The gimctl examples of README.md and docs/gimctl.md, run as written.
 *
 * Each example is a code block after an `<!-- example:NAME -->` marker. The
 * blocks of one file run in document order, as one shell session, in the
 * directory of a fresh gim-logic laid out like `tools/dev.sh run`'s
 * (data/gim.db, data/dev.secret, build/tools/gimctl; `gimctl` on PATH), and
 * each command's output (stdout and stderr) must be the one the doc shows.
 * Times and ids that differ from run to run are compared as placeholders:
 * runs of 10+ digits (ms and s since the epoch), ISO UTC times, and `...` in
 * the doc. Two block styles:
 *
 *   console:  `$ COMMAND   # exit N` then its output lines;
 *   sh:       `COMMAND` then its output as `#   LINE` comments (other
 *             comments are prose).
 *
 * A command's exit status must be N when the doc says `# exit N`, else 0.
 * docs/gimctl.md must also cover every command `gimctl help` lists (a
 * heading names it) and every global option (in its synopsis), and run every
 * console block it shows (a block without a marker fails here).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define README     GIM_SOURCE_DIR "/README.md"
#define GIMCTL_DOC GIM_SOURCE_DIR "/docs/gimctl.md"
#define MAX_STEPS  128

static struct tl_server srv;

static void setup(void)
{
    tl_start(&srv, NULL);
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(gimctl_docs, .init = setup, .fini = teardown, .timeout = 120);

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(path, mode), 0);
}

/* One command of an example and what the doc says it prints. */
struct step {
    char example[64];
    char *cmd;
    char *want; /* output lines, '\n'-terminated, blank lines dropped */
    int exit;
};

static void add_line(char **s, const char *line, size_t n)
{
    size_t len = *s ? strlen(*s) : 0;
    *s = realloc(*s, len + n + 2);
    memcpy(*s + len, line, n);
    (*s)[len + n] = '\n';
    (*s)[len + n + 1] = '\0';
}

/* The steps of every example block of doc, in order; *n of them. */
static void parse(const char *doc, struct step *steps, int *n)
{
    *n = 0;
    for (const char *p = doc; (p = strstr(p, "<!-- example:")) != NULL;) {
        char name[64];
        cr_assert_eq(sscanf(p, "<!-- example:%63[^ ] -->", name), 1);
        const char *fence = strstr(p, "\n```");
        cr_assert_not_null(fence, "example %s has no code block", name);
        p = fence + 4;
        bool console = strncmp(p, "console\n", 8) == 0;
        cr_assert(console || strncmp(p, "sh\n", 3) == 0, "example %s: a console or sh block", name);
        p = strchr(p, '\n') + 1;
        struct step *cur = NULL;
        while (strncmp(p, "```", 3) != 0) {
            cr_assert(*p, "example %s: block not closed", name);
            size_t len = strcspn(p, "\n");
            bool cmd = console ? strncmp(p, "$ ", 2) == 0 : len > 0 && p[0] != '#';
            if (cmd) {
                cr_assert_lt(*n, MAX_STEPS);
                cur = &steps[(*n)++];
                *cur = (struct step){.exit = 0};
                snprintf(cur->example, sizeof cur->example, "%s", name);
                const char *c = console ? p + 2 : p;
                cur->cmd = strndup(c, len - (size_t)(c - p));
                const char *ex = strstr(cur->cmd, "# exit ");
                if (ex)
                    cur->exit = atoi(ex + 7);
                cur->want = strdup("");
            } else if (len > 0) {
                const char *out = console ? p : (strncmp(p, "#   ", 4) == 0 ? p + 4 : NULL);
                if (out) {
                    cr_assert_not_null(cur, "example %s: output before any command", name);
                    add_line(&cur->want, out, len - (size_t)(out - p));
                }
            }
            p += len + (p[len] == '\n');
        }
    }
}

/*
 * s with what differs between runs replaced: runs of 10 or more digits by
 * "<N>", ISO UTC times by "<T>", and \r removed; blank lines dropped.
 */
static char *normalize(const char *s)
{
    size_t cap = strlen(s) * 2 + 1, k = 0;
    char *o = malloc(cap);
    for (size_t i = 0; s[i];) {
        size_t d = strspn(s + i, "0123456789");
        /* 2026-11-26T10:33:22.390Z */
        if (d == 4 && strlen(s + i) >= 24 && s[i + 4] == '-' && s[i + 10] == 'T' &&
            s[i + 23] == 'Z') {
            memcpy(o + k, "<T>", 3);
            k += 3;
            i += 24;
        } else if (d >= 10) {
            memcpy(o + k, "<N>", 3);
            k += 3;
            i += d;
        } else if (d > 0) {
            memcpy(o + k, s + i, d);
            k += d;
            i += d;
        } else if (s[i] == '\r') {
            i++;
        } else if (s[i] == '\n' && (k == 0 || o[k - 1] == '\n')) {
            i++;
        } else {
            o[k++] = s[i++];
        }
    }
    o[k] = '\0';
    return o;
}

/* Does text match pattern, where "..." in pattern matches any characters of one line? */
static bool glob(const char *pat, const char *text)
{
    const char *dots = strstr(pat, "...");
    if (!dots)
        return strcmp(pat, text) == 0;
    size_t pre = (size_t)(dots - pat);
    if (strncmp(pat, text, pre) != 0)
        return false;
    for (const char *t = text + pre;; t++) {
        if (glob(dots + 3, t))
            return true;
        if (!*t || *t == '\n')
            return false;
    }
}

/* A wrapper that runs the real gimctl against the test's service. */
static void wrapper(const char *path)
{
    char text[1024];
    snprintf(text, sizeof text, "#!/bin/sh\nexec '%s' --url '%s' \"$@\"\n", GIMCTL_BIN, srv.url);
    write_file(path, text, 0755);
}

/* Lays srv.dir out like the repository after `tools/dev.sh run`. */
static void layout(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data", srv.dir);
    cr_assert_eq(symlink(".", path), 0); /* data/gim.db is the service's gim.db */
    snprintf(path, sizeof path, "%s/dev.secret", srv.dir);
    write_file(path, TL_SECRET, 0600);
    snprintf(path, sizeof path, "%s/bin", srv.dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/bin/gimctl", srv.dir);
    wrapper(path);
    snprintf(path, sizeof path, "%s/build", srv.dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/build/tools", srv.dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/build/tools/gimctl", srv.dir);
    wrapper(path);
}

/* Runs every step in one shell session; each one's output lands in out/N, its status in out/N.rc.
 */
static void run_steps(const struct step *steps, int n)
{
    char path[512], *script = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&script, &len);
    fprintf(f, "cd '%s' || exit 99\nunset GIM_TOKEN_SECRET\nPATH='%s/bin':\"$PATH\"\nmkdir out\n",
            srv.dir, srv.dir);
    for (int i = 0; i < n; i++)
        fprintf(f, "{ %s\n} >out/%d 2>&1 </dev/null; echo $? >out/%d.rc\n", steps[i].cmd, i, i);
    fclose(f);
    snprintf(path, sizeof path, "%s/examples.sh", srv.dir);
    write_file(path, script, 0644);
    free(script);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s'", path);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the examples script failed: %d", st);
}

static void check_steps(const struct step *steps, int n)
{
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/out/%d", srv.dir, i);
        char *got = slurp(path);
        snprintf(path, sizeof path, "%s/out/%d.rc", srv.dir, i);
        char *rc = slurp(path);
        char *g = normalize(got), *w = normalize(steps[i].want);
        cr_assert_eq(atoi(rc), steps[i].exit, "example %s: `%s` exited %d, the doc says %d:\n%s",
                     steps[i].example, steps[i].cmd, atoi(rc), steps[i].exit, got);
        cr_assert(glob(w, g), "example %s: `%s`\nthe doc shows:\n%s\ngimctl printed:\n%s",
                  steps[i].example, steps[i].cmd, steps[i].want, got);
        free(g);
        free(w);
        free(got);
        free(rc);
    }
}

static void run_doc(const char *file, int min_steps)
{
    struct step steps[MAX_STEPS];
    int n = 0;
    char *doc = slurp(file);
    parse(doc, steps, &n);
    cr_assert_geq(n, min_steps, "%s: only %d example commands found", file, n);
    layout();
    run_steps(steps, n);
    check_steps(steps, n);
    for (int i = 0; i < n; i++) {
        free(steps[i].cmd);
        free(steps[i].want);
    }
    free(doc);
}

Test(gimctl_docs, readme_examples_print_what_the_readme_says)
{
    run_doc(README, 10);
}

Test(gimctl_docs, gimctl_md_examples_print_what_the_doc_says)
{
    run_doc(GIMCTL_DOC, 30);
}

/* `gimctl help`'s output (malloc'ed). */
static char *gimctl_help(void)
{
    static char buf[64 * 1024];
    FILE *p = popen("'" GIMCTL_BIN "' help", "r");
    cr_assert_not_null(p);
    size_t k = fread(buf, 1, sizeof buf - 1, p);
    buf[k] = '\0';
    cr_assert_eq(pclose(p), 0);
    return strdup(buf);
}

static bool heading_names(const char *doc, const char *word)
{
    for (const char *l = doc; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (*l != '#')
            continue;
        size_t n = strcspn(l, "\n");
        char *h = strndup(l, n);
        for (char *c = h; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        bool hit = strstr(h, word) != NULL;
        free(h);
        if (hit)
            return true;
    }
    return false;
}

Test(gimctl_docs, gimctl_md_covers_every_command_and_option)
{
    char *doc = slurp(GIMCTL_DOC), *help = gimctl_help();
    const char *cmds = strstr(help, "\ncommands:\n");
    cr_assert_not_null(cmds, "%s", help);
    int n = 0;
    for (const char *p = cmds + 11; strncmp(p, "  ", 2) == 0; p = strchr(p, '\n') + 1, n++) {
        char name[32];
        cr_assert_eq(sscanf(p, " %31s", name), 1);
        cr_assert(heading_names(doc, name), "docs/gimctl.md has no heading for `%s`", name);
    }
    cr_assert_geq(n, 16);

    /* The synopsis (the first code block) names every global option of `gimctl --help`. */
    const char *syn = strstr(doc, "\n```\n");
    cr_assert_not_null(syn);
    char *synopsis = strndup(syn, (size_t)(strstr(syn + 5, "```") - syn));
    const char *opts = strstr(help, "\nglobal options");
    cr_assert_not_null(opts, "%s", help);
    int k = 0;
    for (const char *p = opts; p < cmds; p++) {
        if (strncmp(p, "\n  --", 5) != 0)
            continue;
        char opt[32];
        cr_assert_eq(sscanf(p + 3, "%31[a-z-]", opt), 1);
        cr_assert_not_null(strstr(synopsis, opt), "the synopsis lacks %s:\n%s", opt, synopsis);
        k++;
    }
    cr_assert_geq(k, 7, "%s", help);

    /* Every console block is an example that runs. */
    for (const char *p = doc; (p = strstr(p, "```console\n")) != NULL; p++) {
        const char *marker = p;
        while (marker > doc && strncmp(marker, "<!-- ", 5) != 0)
            marker--;
        const char *prev_fence = p - 1;
        while (prev_fence > marker && strncmp(prev_fence, "```", 3) != 0)
            prev_fence--;
        cr_assert(strncmp(marker, "<!-- example:", 13) == 0 && prev_fence == marker,
                  "a console block without an example marker: %.80s", p);
    }
    free(synopsis);
    free(help);
    free(doc);
}
