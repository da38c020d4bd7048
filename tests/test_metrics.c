/* metrics: every PackageType is counted under its own label. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "proto.h"

/* The scrape of m as a malloc'ed string. */
static char *scrape(struct metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    metrics_write(m, NULL, f);
    fclose(f);
    return buf;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

Test(metrics, every_package_type_has_its_own_label)
{
    const ProtobufCEnumDescriptor *d = &pb__package_type__descriptor;
    struct metrics *m = metrics_new();
    cr_assert_not_null(m);
    /* Type i counted i times with EC_FORBIDDEN, so a shared slot would show a sum. */
    for (unsigned i = 1; i < d->n_values; i++)
        for (unsigned k = 0; k < i; k++)
            metrics_request(m, d->values[i].value, 3, 1000);
    char *text = scrape(m);
    for (unsigned i = 1; i < d->n_values; i++) {
        char line[160];
        cr_assert_neq(metrics_type_slot(d->values[i].value), 0, "%s has no slot",
                      d->values[i].name);
        snprintf(line, sizeof line, "gim_requests_total{type=\"%s\",code=\"EC_FORBIDDEN\"} %u",
                 d->values[i].name, i);
        cr_assert(has_line(text, line), "missing `%s` in:\n%s", line, text);
    }
    cr_assert_null(strstr(text, "type=\"other\""), "nothing was counted as other:\n%s", text);
    free(text);
    metrics_free(m);
}

Test(metrics, the_operator_types_are_not_other)
{
    struct metrics *m = metrics_new();
    metrics_request(m, PB__PACKAGE_TYPE__PT_ADMIN_RECALL, 0, 1000);
    metrics_request(m, PB__PACKAGE_TYPE__PT_ADMIN_KICK, 0, 1000);
    metrics_request(m, PB__PACKAGE_TYPE__PT_ADMIN_ERASE, 4, 1000);
    metrics_request(m, 77, 1, 1000); /* not a PackageType */
    char *text = scrape(m);
    cr_assert(has_line(text, "gim_requests_total{type=\"PT_ADMIN_RECALL\",code=\"EC_OK\"} 1"), "%s",
              text);
    cr_assert(has_line(text, "gim_requests_total{type=\"PT_ADMIN_KICK\",code=\"EC_OK\"} 1"), "%s",
              text);
    cr_assert(has_line(text, "gim_requests_total{type=\"PT_ADMIN_ERASE\",code=\"EC_NOT_FOUND\"} 1"),
              "%s", text);
    cr_assert(has_line(text, "gim_requests_total{type=\"other\",code=\"EC_BAD_REQUEST\"} 1"), "%s",
              text);
    free(text);
    metrics_free(m);
}

/*
 * Commits are timed apart from requests: 0.2, 3 and 30 ms land in their own
 * buckets (cumulative, as Prometheus reads them), with their sum and count,
 * and the requests' histogram does not see them.
 */
Test(metrics, commits_have_a_histogram_of_their_own)
{
    struct metrics *m = metrics_new();
    metrics_commit(m, 200 * 1000);
    metrics_commit(m, 3 * 1000 * 1000);
    metrics_commit(m, 30 * 1000 * 1000);
    char *text = scrape(m);
    static const char *const lines[] = {
        "gim_write_commit_seconds_bucket{le=\"0.0001\"} 0",
        "gim_write_commit_seconds_bucket{le=\"0.00025\"} 1",
        "gim_write_commit_seconds_bucket{le=\"0.0025\"} 1",
        "gim_write_commit_seconds_bucket{le=\"0.005\"} 2",
        "gim_write_commit_seconds_bucket{le=\"0.025\"} 2",
        "gim_write_commit_seconds_bucket{le=\"0.05\"} 3",
        "gim_write_commit_seconds_bucket{le=\"+Inf\"} 3",
        "gim_write_commit_seconds_sum 0.033200",
        "gim_write_commit_seconds_count 3",
        "# TYPE gim_write_commit_seconds histogram",
        "gim_request_duration_seconds_count 0",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        cr_assert(has_line(text, lines[i]), "missing `%s` in:\n%s", lines[i], text);
    free(text);
    metrics_free(m);
}
