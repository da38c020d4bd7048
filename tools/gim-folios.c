/*
 * gim-folios: how the kernel's page cache holds a file, in 4 KiB pages or in
 * larger folios (docs/benchmarks.md, "Issue 15: the bench's copies and the
 * page cache's folios").
 *
 * Why it matters to gim-logic: its checkpoints copy pages back into the
 * database file with one 4 KiB write each, and for a file cached in large
 * folios ext4 (which caches regular files in large folios since Linux 6.16)
 * walks every block buffer of the folio at each such write. A file SQLite
 * wrote page by page is cached in 4 KiB folios; one written in big chunks
 * (cp) is cached in 64 KiB ones, and sends on it were 7-19 % slower at C=64.
 *
 * How: maps FILE read-only and shared, asks mincore() which pages are
 * cached, touches only those (so the page tables point at the cached folios
 * and nothing is read from disk), then reads each page's frame number from
 * /proc/self/pagemap and its flags from /proc/kpageflags (compound head or
 * tail: part of a folio larger than one page). Reading frame numbers needs
 * CAP_SYS_ADMIN (root); without it the tool says so and exits 2.
 *
 *   gim-folios FILE
 *
 * Prints one line:
 *   FOLIOS file=F pages=N cached=C small=S large=L large_pct=P largest_pages=M
 * (S + L = C: cached pages in 4 KiB folios and in larger ones; M the largest
 * folio seen, in pages). Exit 0, or 1 on bad usage or an I/O error, 2 if the
 * kernel does not show frame numbers to this process.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PM_PRESENT (1ULL << 63)
#define PM_PFN     ((1ULL << 55) - 1)
#define KPF_HEAD   (1ULL << 15) /* KPF_COMPOUND_HEAD, include/uapi/linux/kernel-page-flags.h */
#define KPF_TAIL   (1ULL << 16) /* KPF_COMPOUND_TAIL */

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: gim-folios FILE\n");
        return 1;
    }
    const char *path = argv[1];
    int rc = 1, fd = -1, pm = -1, kf = -1;
    unsigned char *map = MAP_FAILED, *vec = NULL;
    uint64_t *ent = NULL;
    size_t len = 0;
    long psz = sysconf(_SC_PAGESIZE);

    struct stat st;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "gim-folios: %s: %s\n", path, strerror(errno));
        goto out;
    }
    len = (size_t)st.st_size;
    size_t n = len / (size_t)psz;
    if (n == 0) {
        printf("FOLIOS file=%s pages=0 cached=0 small=0 large=0 large_pct=0.0 largest_pages=0\n",
               path);
        rc = 0;
        goto out;
    }
    map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    vec = malloc(n);
    ent = malloc(n * sizeof *ent);
    if (map == MAP_FAILED || !vec || !ent) {
        fprintf(stderr, "gim-folios: %s: cannot map it: %s\n", path, strerror(errno));
        goto out;
    }
    if (mincore(map, n * (size_t)psz, vec) != 0) {
        fprintf(stderr, "gim-folios: mincore: %s\n", strerror(errno));
        goto out;
    }
    size_t cached = 0;
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < n; i++)
        if (vec[i] & 1) { /* map the cached folio; an uncached page is left alone (no read) */
            sink ^= map[i * (size_t)psz];
            cached++;
        }
    (void)sink;

    if ((pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0 ||
        pread(pm, ent, n * sizeof *ent, (off_t)((uintptr_t)map / (uintptr_t)psz * sizeof *ent)) !=
            (ssize_t)(n * sizeof *ent)) {
        fprintf(stderr, "gim-folios: /proc/self/pagemap: %s\n", strerror(errno));
        goto out;
    }
    if ((kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "gim-folios: /proc/kpageflags: %s (it needs root)\n", strerror(errno));
        rc = 2;
        goto out;
    }
    size_t small = 0, large = 0, largest = 0, run = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(vec[i] & 1) || !(ent[i] & PM_PRESENT))
            continue;
        uint64_t pfn = ent[i] & PM_PFN, fl = 0;
        if (pfn == 0) { /* present but hidden: the kernel shows frames only with CAP_SYS_ADMIN */
            fprintf(stderr,
                    "gim-folios: the kernel hides frame numbers from this process (root?)\n");
            rc = 2;
            goto out;
        }
        if (pread(kf, &fl, sizeof fl, (off_t)(pfn * sizeof fl)) != (ssize_t)sizeof fl) {
            fprintf(stderr, "gim-folios: /proc/kpageflags: %s\n", strerror(errno));
            goto out;
        }
        if (fl & KPF_HEAD)
            run = 1;
        else if (fl & KPF_TAIL)
            run++;
        else
            run = 0;
        if (run) {
            large++;
            if (run > largest)
                largest = run;
        } else
            small++;
    }
    printf("FOLIOS file=%s pages=%zu cached=%zu small=%zu large=%zu large_pct=%.1f "
           "largest_pages=%zu\n",
           path, n, cached, small, large, cached ? 100.0 * (double)large / (double)cached : 0.0,
           largest);
    rc = 0;
out:
    if (kf >= 0)
        close(kf);
    if (pm >= 0)
        close(pm);
    free(ent);
    free(vec);
    if (map != MAP_FAILED)
        munmap(map, len);
    if (fd >= 0)
        close(fd);
    return rc;
}
