#include "dblock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct dblock {
    int fd;
};

/* Whole file, exclusive; OFD first (per open file, not per process), POSIX where it is missing. */
static int lock_fd(int fd)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
#ifdef F_OFD_SETLK
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return 0;
    if (errno != EINVAL)
        return -1;
#endif
    return fcntl(fd, F_SETLK, &fl);
}

/* The holder's line from the sidecar file ("pid 12 on host h since ..."), or a placeholder. */
static void read_holder(int fd, char *buf, size_t len)
{
    ssize_t n = pread(fd, buf, len - 1, 0);
    if (n <= 0) {
        snprintf(buf, len, "a process that has not written its name yet");
        return;
    }
    buf[n] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?'; /* a file anyone could have written: keep our message one clean line */
}

/* Records who holds the lock, for the next process that fails to take it. */
static void write_holder(int fd)
{
    char host[256] = "?", line[400], when[32] = "?";
    time_t now = time(NULL);
    struct tm tm;
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    if (gmtime_r(&now, &tm))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n =
        snprintf(line, sizeof line, "pid %ld on host %s since %s\n", (long)getpid(), host, when);
    /* Best effort: the lock is what protects the database, the line only names its holder. */
    if (ftruncate(fd, 0) != 0 || n <= 0 || pwrite(fd, line, (size_t)n, 0) != n)
        log_warn("database lock holder not recorded", "error=\"%s\"", strerror(errno));
}

gim_err dblock_acquire(const char *db_path, struct dblock **out, char *errbuf, size_t errlen)
{
    char path[4200], holder[300];
    gim_err e = GIM_EIO;
    int fd = -1;
    *out = NULL;
    if (snprintf(path, sizeof path, "%s.lock", db_path) >= (int)sizeof path) {
        snprintf(errbuf, errlen, "database path too long: %s", db_path);
        goto fail;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot open the database lock %s: %s", path, strerror(errno));
        goto fail;
    }
    if (lock_fd(fd) != 0) {
        if (errno == EAGAIN || errno == EACCES) {
            read_holder(fd, holder, sizeof holder);
            snprintf(errbuf, errlen,
                     "database %s is in use by another gim-logic (%s; lock file %s): "
                     "one process per database",
                     db_path, holder, path);
            e = GIM_ELOCKED;
        } else {
            snprintf(errbuf, errlen, "cannot lock %s: %s", path, strerror(errno));
        }
        goto fail;
    }
    struct dblock *l = malloc(sizeof *l);
    if (!l) {
        snprintf(errbuf, errlen, "out of memory");
        e = GIM_ENOMEM;
        goto fail;
    }
    write_holder(fd);
    l->fd = fd;
    *out = l;
    return GIM_OK;
fail:
    if (fd >= 0)
        close(fd);
    return e;
}

void dblock_release(struct dblock *l)
{
    if (!l)
        return;
    close(l->fd); /* drops the lock; the file stays (unlinking it would race a new holder) */
    free(l);
}
