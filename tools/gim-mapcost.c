/*
 * gim-mapcost: what one random 4 KiB read of a cached file costs, by pread()
 * and through a shared mapping (docs/benchmarks.md, "Where the targets
 * stand": the deep reads at 10M).
 *
 * Why it matters to gim-logic: its one mapping of the database (mapvfs)
 * keeps only a budget's worth of segments mapped (database.mmap_mb, 128 MiB)
 * and reads a page of any other segment with pread(). A sync from deep in a
 * 10M history reads about 50 leaf pages outside that budget. Mapping the
 * whole file makes those reads cheap but counts every touched page in VmRSS
 * (2 GiB at 10M), against the memory target; mapping a cold page on demand
 * and dropping it later (MADV_DONTNEED) would make each such read a minor
 * fault instead of a pread(). This tool says which of the two is dearer on
 * the machine at hand.
 *
 * How: reads every page of FILE once (so all of them are cached and nothing
 * below touches the disk), picks N random pages (seed 1), then times, per
 * page, over the same N pages in the same order: pread() of it; a touch
 * through a fresh shared read-only mapping (minor faults only, the pages are
 * cached; the kernel maps up to 16 cached neighbours per fault, so a fault
 * can serve later touches); a second touch (no faults: what a mapping that
 * kept the pages costs); and a touch after MADV_DONTNEED and MADV_RANDOM of
 * the whole mapping (one fault per distinct page, no neighbours: what a
 * budgeted mapping pays for a read outside its budget). The minor faults of
 * each pass come from getrusage().
 *
 *   gim-mapcost FILE [N]      N: pages to sample, default 100000
 *
 * Prints one line (times in microseconds per sampled page, or per fault):
 *   MAPCOST file=F pages=P sampled=N pread_us=A fault_us=B faults=C mapped_us=D
 *     mapped_faults=E random_fault_us=G random_faults=H us_per_fault=I
 *     us_per_random_fault=J
 * Exit 0, or 1 on bad usage or an I/O error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static volatile unsigned keep;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* xorshift64*: a fixed sequence, so two runs sample the same pages */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* The minor faults this process has taken so far. */
static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/*
 * One touch of every sampled page through the mapping: *us the time per page,
 * *faults the minor faults taken. sink keeps the loads.
 */
static void touch_all(const volatile unsigned char *m, const uint64_t *pg, size_t n, unsigned *sink,
                      double *us, long *faults)
{
    long f0 = minor_faults();
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        *sink += m[pg[i] * PAGE + 100];
    *us = (now_s() - t0) / (double)n * 1e6;
    *faults = minor_faults() - f0;
}

int main(int argc, char **argv)
{
    int rc = 1, fd = -1;
    uint64_t *pg = NULL;
    unsigned char *m = MAP_FAILED;
    size_t len = 0;
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: gim-mapcost FILE [N]\n");
        return 1;
    }
    char *end = NULL;
    long long nn = argc == 3 ? strtoll(argv[2], &end, 10) : 100000;
    if ((argc == 3 && (*end || end == argv[2])) || nn < 1 || nn > 100000000) {
        fprintf(stderr, "gim-mapcost: N must be a number from 1 to 100000000, not %s\n", argv[2]);
        return 1;
    }
    size_t n = (size_t)nn;
    struct stat st;
    fd = open(argv[1], O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "gim-mapcost: %s: %s\n", argv[1], strerror(errno));
        goto out;
    }
    size_t pages = (size_t)st.st_size / PAGE;
    if (pages == 0) {
        fprintf(stderr, "gim-mapcost: %s: smaller than one page\n", argv[1]);
        goto out;
    }
    len = pages * PAGE;
    pg = malloc(n * sizeof *pg);
    if (!pg) {
        fprintf(stderr, "gim-mapcost: out of memory\n");
        goto out;
    }
    uint64_t seed = 1;
    for (size_t i = 0; i < n; i++)
        pg[i] = next_rand(&seed) % pages;

    static unsigned char buf[PAGE];
    for (size_t p = 0; p < pages; p++) /* every page cached: nothing below waits for the disk */
        if (pread(fd, buf, PAGE, (off_t)(p * PAGE)) != PAGE) {
            fprintf(stderr, "gim-mapcost: %s: short read at page %zu\n", argv[1], p);
            goto out;
        }
    unsigned sink = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        if (pread(fd, buf, PAGE, (off_t)(pg[i] * PAGE)) != PAGE) {
            fprintf(stderr, "gim-mapcost: %s: short read\n", argv[1]);
            goto out;
        }
        sink += buf[100];
    }
    double pread_us = (now_s() - t0) / (double)n * 1e6;

    m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "gim-mapcost: mmap: %s\n", strerror(errno));
        goto out;
    }
    double fault_us, mapped_us, rfault_us;
    long faults, mapped_faults, rfaults;
    touch_all(m, pg, n, &sink, &fault_us, &faults);
    touch_all(m, pg, n, &sink, &mapped_us, &mapped_faults);
    /* A budgeted mapping after it dropped the pages, told the reads are random: no
     * fault-around (the kernel would otherwise map up to 16 cached neighbours per fault). */
    if (madvise(m, len, MADV_DONTNEED) != 0 || madvise(m, len, MADV_RANDOM) != 0) {
        fprintf(stderr, "gim-mapcost: madvise: %s\n", strerror(errno));
        goto out;
    }
    touch_all(m, pg, n, &sink, &rfault_us, &rfaults);
    printf("MAPCOST file=%s pages=%zu sampled=%zu pread_us=%.3f fault_us=%.3f faults=%ld "
           "mapped_us=%.3f mapped_faults=%ld random_fault_us=%.3f random_faults=%ld "
           "us_per_fault=%.3f us_per_random_fault=%.3f\n",
           argv[1], pages, n, pread_us, fault_us, faults, mapped_us, mapped_faults, rfault_us,
           rfaults, faults ? fault_us * (double)n / (double)faults : 0.0,
           rfaults ? rfault_us * (double)n / (double)rfaults : 0.0);
    keep = sink; /* the loads must stay */
    rc = 0;
out:
    if (m != MAP_FAILED)
        munmap(m, len);
    free(pg);
    if (fd >= 0)
        close(fd);
    return rc;
}
