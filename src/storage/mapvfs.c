/* mapvfs: one memory mapping of the database file per process (see mapvfs.h). */
#include "storage/mapvfs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Segments cover the file from offset 0; a mapping has at most MAX_SEGMENTS
 * (256 GiB with the production segment size). A page past them, or one that
 * would straddle two segments (impossible when the segment size is a multiple
 * of the page size), is read with xRead instead.
 */
#define MAX_SEGMENTS 16384

/*
 * How often a fetch is counted (1 in SAMPLE_EVERY per thread), and how many
 * counts make a period; until the first choice, FIRST_PERIOD_SAMPLES do, so
 * that a service maps its file soon after it starts reading.
 */
#define SAMPLE_EVERY         8
#define PERIOD_SAMPLES       16384
#define FIRST_PERIOD_SAMPLES 64

/*
 * Writes to the main database file start their writeback every
 * WRITEBACK_KICK_BYTES (see mapvfs.h). 32 pages of 4 KiB: 8 to 128 pages
 * measured alike (docs/benchmarks.md, "Issue 15: the checkpoint's writes
 * reach the disk as they are made").
 */
#define WRITEBACK_KICK_BYTES (128 << 10)

/* One file (device, inode), shared by every connection of the process to it. */
struct mapping {
    struct mapping *next; /* registry list, under reg.lock; entries are never freed */
    dev_t dev;
    ino_t ino;
    int fd;                   /* ours, read-only, never closed (mapping_get): mapped, fstat'ed */
    unsigned refs;            /* open main-database files using it, under reg.lock */
    uint64_t seg_bytes;       /* fixed while refs > 0 */
    _Atomic uint64_t size;    /* the file's size as last seen */
    _Atomic uint32_t samples; /* counted fetches in this period */
    _Atomic uint32_t period;  /* samples that make this period */
    atomic_flag choosing;     /* one choice at a time */
    _Atomic(uint8_t *) seg[MAX_SEGMENTS]; /* NULL until mapped; set once, under reg.lock */
    _Atomic uint8_t active[MAX_SEGMENTS]; /* fetched from; set after seg[i] */
    _Atomic uint32_t hits[MAX_SEGMENTS];  /* counted fetches of this period */
    uint32_t score[MAX_SEGMENTS];         /* decayed hits; only the chooser touches it */
    uint8_t cool[MAX_SEGMENTS];           /* drops still due after leaving; chooser only */
};

static struct {
    pthread_mutex_t lock;
    struct mapping *list;
    bool registered;
    sqlite3_vfs vfs;
    _Atomic uint64_t budget;
    _Atomic uint64_t retires;                 /* segments no longer chosen */
    _Atomic uint64_t wal_writes, wal_flushes; /* see struct mapvfs_stats */
    uint64_t seg_bytes;                       /* for mappings created from now on */
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Our sqlite3_file; the default VFS's file follows it in the same allocation. */
struct map_file {
    sqlite3_file base;
    sqlite3_file *real;
    struct mapping *map;      /* NULL: not the main database (or no mapping): pass through */
    sqlite3_int64 mmap_limit; /* what PRAGMA mmap_size set, reported back only */
    bool wal;                 /* opened as a WAL file (SQLITE_OPEN_WAL) */
    /* A WAL file whose appends are combined (mapvfs_combine_wal): the bytes of
     * [wal_off, wal_off + wal_len) are in wal_buf, not yet in the file. */
    bool wal_combine;
    uint8_t *wal_buf; /* WAL_BUF_BYTES, allocated at the first write; ours */
    size_t wal_len;
    sqlite3_int64 wal_off;
    sqlite3_int64 unkicked; /* main file: bytes written since its writeback was last started */
};

/*
 * The unix VFS writes at most 128 KiB - 1 bytes per xWrite (os_unix.c's
 * seekAndWriteFd masks the length with 0x1ffff, so a longer write comes out
 * short), which bounds one combined write. 120 KiB holds 29 frames of 4 KiB
 * pages: a commit of ~150 frames (C=64, docs/benchmarks.md) takes 6 writes
 * instead of 300.
 */
#define WAL_BUF_BYTES (120u << 10)

static sqlite3_vfs *root(void)
{
    return (sqlite3_vfs *)reg.vfs.pAppData;
}

/* ---- the registry ---- */

/* Ready to map again from scratch (a new entry, or the last connection closed). */
static void mapping_reset(struct mapping *m)
{
    for (int i = 0; i < MAX_SEGMENTS; i++) {
        uint8_t *base = atomic_load(&m->seg[i]);
        if (base)
            munmap(base, m->seg_bytes);
        atomic_store(&m->seg[i], NULL);
        atomic_store(&m->active[i], 0);
        atomic_store(&m->hits[i], 0);
        m->score[i] = 0;
        m->cool[i] = 0;
    }
    m->seg_bytes = reg.seg_bytes;
    atomic_store(&m->samples, 0);
    atomic_store(&m->period, FIRST_PERIOD_SAMPLES);
    atomic_flag_clear(&m->choosing);
}

static struct mapping *mapping_find(dev_t dev, ino_t ino)
{
    struct mapping *m = reg.list;
    while (m && !(m->dev == dev && m->ino == ino))
        m = m->next;
    return m;
}

/*
 * The entry for path's file, with one more reference. Entries and their
 * descriptors live as long as the process: closing any descriptor of a file
 * drops every POSIX lock the process holds on it, SQLite's included (the
 * trap os_unix.c works around), so a descriptor of ours is never closed and
 * a file already known is looked up by stat() without opening it again.
 */
static struct mapping *mapping_get(const char *path)
{
    struct stat st;
    struct mapping *m = NULL;
    pthread_mutex_lock(&reg.lock);
    if (stat(path, &st) == 0 && (m = mapping_find(st.st_dev, st.st_ino)) != NULL)
        goto found;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0)
        goto out; /* (an fd that fstat refused stays open: see above) */
    /* The path may name another file by now; the descriptor is what we map. */
    if ((m = mapping_find(st.st_dev, st.st_ino)) != NULL)
        goto found; /* known after all: fd stays open, unused (see above) */
    if ((m = calloc(1, sizeof *m)) == NULL)
        goto out;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    m->fd = fd;
    mapping_reset(m);
    m->next = reg.list;
    reg.list = m;
found:
    if (m->refs++ == 0)
        atomic_store(&m->size, (uint64_t)(fstat(m->fd, &st) == 0 ? st.st_size : 0));
out:
    pthread_mutex_unlock(&reg.lock);
    return m;
}

/* One reference less; the last one unmaps the segments (SQLite has unfetched every page). */
static void mapping_put(struct mapping *m)
{
    pthread_mutex_lock(&reg.lock);
    if (--m->refs == 0)
        mapping_reset(m);
    pthread_mutex_unlock(&reg.lock);
}

static uint8_t *segment_map(struct mapping *m, uint64_t i)
{
    pthread_mutex_lock(&reg.lock);
    uint8_t *base = atomic_load(&m->seg[i]);
    if (!base) {
        /* Past the end of the file is allowed here; it is never touched (see mapvfs.h). */
        void *p = mmap(NULL, m->seg_bytes, PROT_READ, MAP_SHARED, m->fd, (off_t)(i * m->seg_bytes));
        if (p != MAP_FAILED) {
            base = p;
            atomic_store_explicit(&m->seg[i], base, memory_order_release);
        }
    }
    pthread_mutex_unlock(&reg.lock);
    return base;
}

static uint64_t size_refresh(struct mapping *m)
{
    struct stat st;
    if (fstat(m->fd, &st) != 0)
        return atomic_load(&m->size);
    atomic_store(&m->size, (uint64_t)st.st_size);
    return (uint64_t)st.st_size;
}

/*
 * Chooses the segments the budget maps: the ones fetched most, by a count
 * that halves every period, so it follows what the readers read now. A
 * segment that is no longer chosen is dropped from the page tables (madvise
 * MADV_DONTNEED: on a shared file mapping this frees nothing the kernel's
 * page cache holds), and once more a period later, since a reader that
 * fetched a page just before may have touched it since.
 */
static void choose(struct mapping *m, uint64_t size, uint64_t budget)
{
    if (atomic_flag_test_and_set(&m->choosing))
        return; /* another thread is choosing */
    atomic_store(&m->samples, 0);
    atomic_store(&m->period, PERIOD_SAMPLES);
    uint64_t n = (size + m->seg_bytes - 1) / m->seg_bytes;
    if (n > MAX_SEGMENTS)
        n = MAX_SEGMENTS;
    for (uint64_t i = 0; i < n; i++)
        m->score[i] =
            m->score[i] / 2 + atomic_exchange_explicit(&m->hits[i], 0, memory_order_relaxed);
    /*
     * Mark the k best in score's top bit; k is small (budget / segment), n at
     * most MAX_SEGMENTS. A chosen segment ranks as if a quarter better, so
     * that under an even spread of reads the choice does not churn (each
     * change costs a drop and refaults).
     */
    const uint32_t chosen = 1u << 31;
    for (uint64_t k = budget / m->seg_bytes; k > 0; k--) {
        uint64_t best = n, best_rank = 0;
        for (uint64_t i = 0; i < n; i++) {
            if ((m->score[i] & chosen) || m->score[i] == 0)
                continue;
            uint64_t rank = m->score[i];
            if (atomic_load_explicit(&m->active[i], memory_order_relaxed))
                rank += rank / 4;
            if (best == n || rank > best_rank)
                best = i, best_rank = rank;
        }
        if (best == n)
            break;
        m->score[best] |= chosen;
    }
    for (uint64_t i = 0; i < MAX_SEGMENTS; i++) {
        if (i >= n && !atomic_load(&m->seg[i]))
            continue;
        bool want = i < n && (m->score[i] & chosen);
        if (i < n)
            m->score[i] &= ~chosen;
        bool is = atomic_load_explicit(&m->active[i], memory_order_relaxed);
        if (want && !is) {
            if (atomic_load(&m->seg[i]) || segment_map(m, i))
                atomic_store_explicit(&m->active[i], 1, memory_order_release);
        } else if (!want && is) {
            atomic_store_explicit(&m->active[i], 0, memory_order_relaxed);
            m->cool[i] = 2;
            atomic_fetch_add(&reg.retires, 1);
        }
        /* Dropped when it leaves, and once more a period later for pages touched late. */
        if (!want && m->cool[i] > 0) {
            m->cool[i]--;
            madvise(atomic_load(&m->seg[i]), m->seg_bytes, MADV_DONTNEED);
        }
    }
    atomic_flag_clear(&m->choosing);
}

/* ---- combined WAL writes (mapvfs_combine_wal) ---- */

/*
 * Writes what the buffer holds, if anything. Every method of a combining
 * WAL file but an appending xWrite calls it first, so the file is complete
 * whenever SQLite looks at it or syncs it, and before a commit becomes
 * visible (the caller of mapvfs_combine_wal promised a sync per commit).
 * The buffer is empty afterwards even on failure: SQLite then fails the
 * transaction, and frames of a failed transaction are never read again.
 */
static int wal_flush(struct map_file *mf)
{
    if (mf->wal_len == 0)
        return SQLITE_OK;
    size_t len = mf->wal_len;
    mf->wal_len = 0;
    atomic_fetch_add_explicit(&reg.wal_flushes, 1, memory_order_relaxed);
    return mf->real->pMethods->xWrite(mf->real, mf->wal_buf, (int)len, mf->wal_off);
}

/* An xWrite of a combining WAL file: true when the bytes are now in the buffer. */
static bool wal_buffered(struct map_file *mf, const void *buf, int amt, sqlite3_int64 off, int *rc)
{
    *rc = SQLITE_OK;
    if (amt <= 0 || (size_t)amt > WAL_BUF_BYTES)
        return false;
    atomic_fetch_add_explicit(&reg.wal_writes, 1, memory_order_relaxed);
    if (mf->wal_len > 0 && off == mf->wal_off + (sqlite3_int64)mf->wal_len &&
        mf->wal_len + (size_t)amt <= WAL_BUF_BYTES) {
        memcpy(mf->wal_buf + mf->wal_len, buf, (size_t)amt);
        mf->wal_len += (size_t)amt;
        return true;
    }
    /* Not an append to what is buffered (SQLite rewrites a frame, or starts the WAL over). */
    if ((*rc = wal_flush(mf)) != SQLITE_OK)
        return true; /* failed, not written */
    if (!mf->wal_buf && !(mf->wal_buf = malloc(WAL_BUF_BYTES))) {
        mf->wal_combine = false; /* out of memory: plain writes from now on */
        return false;
    }
    memcpy(mf->wal_buf, buf, (size_t)amt);
    mf->wal_len = (size_t)amt;
    mf->wal_off = off;
    return true;
}

/* Flushes before any method that reads, sizes, syncs or otherwise looks at the file. */
#define WAL_FLUSH_FIRST(mf)                                                                        \
    do {                                                                                           \
        int flush_rc_ = wal_flush(mf);                                                             \
        if (flush_rc_ != SQLITE_OK)                                                                \
            return flush_rc_;                                                                      \
    } while (0)

/* ---- the file's methods: the main database's fetches, the rest passed on ---- */

static int mf_close(sqlite3_file *f)
{
    struct map_file *mf = (struct map_file *)f;
    int flushed = wal_flush(mf);
    free(mf->wal_buf);
    mf->wal_buf = NULL;
    int rc = mf->real->pMethods->xClose(mf->real);
    if (mf->map)
        mapping_put(mf->map);
    mf->map = NULL;
    return rc != SQLITE_OK ? rc : flushed;
}

static int mf_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    return mf->real->pMethods->xRead(mf->real, buf, amt, off);
}

static int mf_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
    struct map_file *mf = (struct map_file *)f;
    int rc;
    if (mf->wal_combine && wal_buffered(mf, buf, amt, off, &rc))
        return rc;
    WAL_FLUSH_FIRST(mf);
    rc = mf->real->pMethods->xWrite(mf->real, buf, amt, off);
    if (rc == SQLITE_OK && mf->map && amt > 0 && (mf->unkicked += amt) >= WRITEBACK_KICK_BYTES) {
        mf->unkicked = 0;
        /* Starts the I/O, waits for none and makes nothing durable: the xSync that follows
         * still does, and reports any error; a refusal here only leaves the pages to it. */
        (void)sync_file_range(mf->map->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    return rc;
}

static int mf_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    /* Shrink what fetches may reach before the file shrinks. */
    if (mf->map && size >= 0 && (uint64_t)size < atomic_load(&mf->map->size))
        atomic_store(&mf->map->size, (uint64_t)size);
    int rc = mf->real->pMethods->xTruncate(mf->real, size);
    if (mf->map)
        size_refresh(mf->map);
    return rc;
}

static int mf_sync(sqlite3_file *f, int flags)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    return mf->real->pMethods->xSync(mf->real, flags);
}

static int mf_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    return mf->real->pMethods->xFileSize(mf->real, size);
}

static int mf_lock(sqlite3_file *f, int level)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    return mf->real->pMethods->xLock(mf->real, level);
}

static int mf_unlock(sqlite3_file *f, int level)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    return mf->real->pMethods->xUnlock(mf->real, level);
}

static int mf_check_reserved(sqlite3_file *f, int *out)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    return mf->real->pMethods->xCheckReservedLock(mf->real, out);
}

static int mf_file_control(sqlite3_file *f, int op, void *arg)
{
    struct map_file *mf = (struct map_file *)f;
    WAL_FLUSH_FIRST(mf);
    if (mf->map && op == SQLITE_FCNTL_MMAP_SIZE) {
        /* Not passed on: the default VFS must not map the file a second time. */
        sqlite3_int64 *v = arg, want = *v;
        *v = mf->mmap_limit;
        if (want >= 0)
            mf->mmap_limit = want;
        return SQLITE_OK;
    }
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* Same convention as SQLite's own shims: ours, then the one below. */
        int rc = mf->real->pMethods->xFileControl(mf->real, op, arg);
        if (rc == SQLITE_OK) {
            char **name = arg;
            char *both = sqlite3_mprintf(MAPVFS_NAME "/%z", *name);
            if (!both)
                return SQLITE_NOMEM;
            *name = both;
        }
        return rc;
    }
    return mf->real->pMethods->xFileControl(mf->real, op, arg);
}

static int mf_sector_size(sqlite3_file *f)
{
    struct map_file *mf = (struct map_file *)f;
    return mf->real->pMethods->xSectorSize(mf->real);
}

static int mf_device_characteristics(sqlite3_file *f)
{
    struct map_file *mf = (struct map_file *)f;
    return mf->real->pMethods->xDeviceCharacteristics(mf->real);
}

static int mf_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    struct map_file *mf = (struct map_file *)f;
    return mf->real->pMethods->xShmMap(mf->real, region, size, extend, pp);
}

static int mf_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct map_file *mf = (struct map_file *)f;
    return mf->real->pMethods->xShmLock(mf->real, offset, n, flags);
}

static void mf_shm_barrier(sqlite3_file *f)
{
    struct map_file *mf = (struct map_file *)f;
    mf->real->pMethods->xShmBarrier(mf->real);
}

static int mf_shm_unmap(sqlite3_file *f, int delete_flag)
{
    struct map_file *mf = (struct map_file *)f;
    return mf->real->pMethods->xShmUnmap(mf->real, delete_flag);
}

static int mf_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    static _Thread_local unsigned tick;
    struct map_file *mf = (struct map_file *)f;
    struct mapping *m = mf->map;
    *pp = NULL;
    if (!m)
        return mf->real->pMethods->xFetch(mf->real, off, amt, pp);
    uint64_t budget = atomic_load_explicit(&reg.budget, memory_order_relaxed);
    if (off < 0 || amt <= 0 || mf->mmap_limit <= 0 || budget == 0)
        return SQLITE_OK; /* *pp NULL: SQLite reads the page with xRead */
    uint64_t start = (uint64_t)off, end = start + (uint64_t)amt;
    uint64_t size = atomic_load(&m->size);
    if (end > size && end > (size = size_refresh(m)))
        return SQLITE_OK;
    uint64_t i = start / m->seg_bytes;
    if (i >= MAX_SEGMENTS || (end - 1) / m->seg_bytes != i)
        return SQLITE_OK;
    /* Counting 1 fetch in 8 is enough to rank segments and keeps most fetches free of writes. */
    if (++tick % SAMPLE_EVERY == 0) {
        atomic_fetch_add_explicit(&m->hits[i], 1, memory_order_relaxed);
        if (atomic_fetch_add_explicit(&m->samples, 1, memory_order_relaxed) + 1 >=
            atomic_load_explicit(&m->period, memory_order_relaxed))
            choose(m, size, budget);
    }
    if (!atomic_load_explicit(&m->active[i], memory_order_acquire))
        return SQLITE_OK;
    *pp = atomic_load_explicit(&m->seg[i], memory_order_relaxed) + (start - i * m->seg_bytes);
    return SQLITE_OK;
}

static int mf_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    struct map_file *mf = (struct map_file *)f;
    if (!mf->map)
        return mf->real->pMethods->xUnfetch(mf->real, off, p);
    /*
     * p == NULL is SQLite's "unmap everything, the file may have changed".
     * The segments never move, so only the size is read again (a checkpoint
     * of another process may have grown or truncated the file).
     */
    if (!p)
        size_refresh(mf->map);
    return SQLITE_OK;
}

static const sqlite3_io_methods map_io = {
    .iVersion = 3,
    .xClose = mf_close,
    .xRead = mf_read,
    .xWrite = mf_write,
    .xTruncate = mf_truncate,
    .xSync = mf_sync,
    .xFileSize = mf_file_size,
    .xLock = mf_lock,
    .xUnlock = mf_unlock,
    .xCheckReservedLock = mf_check_reserved,
    .xFileControl = mf_file_control,
    .xSectorSize = mf_sector_size,
    .xDeviceCharacteristics = mf_device_characteristics,
    .xShmMap = mf_shm_map,
    .xShmLock = mf_shm_lock,
    .xShmBarrier = mf_shm_barrier,
    .xShmUnmap = mf_shm_unmap,
    .xFetch = mf_fetch,
    .xUnfetch = mf_unfetch,
};

/* ---- the VFS: xOpen wraps the file, everything else is the default VFS's ---- */

static int mv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *outflags)
{
    (void)vfs;
    struct map_file *mf = (struct map_file *)f;
    memset(mf, 0, sizeof *mf);
    mf->real = (sqlite3_file *)&mf[1];
    int rc = root()->xOpen(root(), name, mf->real, flags, outflags);
    if (rc != SQLITE_OK || !mf->real->pMethods) {
        /* SQLite requires pMethods NULL after a failed open. */
        if (mf->real->pMethods)
            mf->real->pMethods->xClose(mf->real);
        mf->base.pMethods = NULL;
        return rc == SQLITE_OK ? SQLITE_CANTOPEN : rc;
    }
    /* Every method of ours is passed on, so the file below must have them all. */
    if (mf->real->pMethods->iVersion < 3) {
        mf->real->pMethods->xClose(mf->real);
        mf->base.pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    if ((flags & SQLITE_OPEN_MAIN_DB) && name)
        mf->map = mapping_get(name); /* NULL: this file goes without a mapping */
    mf->wal = (flags & SQLITE_OPEN_WAL) != 0;
    mf->base.pMethods = &map_io;
    return SQLITE_OK;
}

static int mv_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return root()->xDelete(root(), name, sync_dir);
}

static int mv_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return root()->xAccess(root(), name, flags, out);
}

static int mv_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return root()->xFullPathname(root(), name, n, out);
}

static void *mv_dl_open(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return root()->xDlOpen(root(), name);
}

static void mv_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    root()->xDlError(root(), n, msg);
}

static void (*mv_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return root()->xDlSym(root(), h, sym);
}

static void mv_dl_close(sqlite3_vfs *v, void *h)
{
    (void)v;
    root()->xDlClose(root(), h);
}

static int mv_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return root()->xRandomness(root(), n, out);
}

static int mv_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return root()->xSleep(root(), us);
}

static int mv_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return root()->xCurrentTime(root(), out);
}

static int mv_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return root()->xGetLastError(root(), n, out);
}

static int mv_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return root()->xCurrentTimeInt64(root(), out);
}

gim_err mapvfs_register(uint64_t budget_bytes, uint64_t segment_bytes)
{
    gim_err e = GIM_OK;
    pthread_mutex_lock(&reg.lock);
    atomic_store(&reg.budget, budget_bytes);
    if (segment_bytes == 0 || segment_bytes % 65536 != 0)
        segment_bytes = MAPVFS_SEGMENT_BYTES;
    reg.seg_bytes = segment_bytes;
    if (!reg.registered) {
        sqlite3_vfs *def = sqlite3_vfs_find(NULL);
        if (!def || def->iVersion < 2) {
            e = GIM_EIO;
            goto out;
        }
        reg.vfs = (sqlite3_vfs){
            .iVersion = 2,
            .szOsFile = (int)sizeof(struct map_file) + def->szOsFile,
            .mxPathname = def->mxPathname,
            .zName = MAPVFS_NAME,
            .pAppData = def,
            .xOpen = mv_open,
            .xDelete = mv_delete,
            .xAccess = mv_access,
            .xFullPathname = mv_full_pathname,
            .xDlOpen = mv_dl_open,
            .xDlError = mv_dl_error,
            .xDlSym = mv_dl_sym,
            .xDlClose = mv_dl_close,
            .xRandomness = mv_randomness,
            .xSleep = mv_sleep,
            .xCurrentTime = mv_current_time,
            .xGetLastError = mv_last_error,
            .xCurrentTimeInt64 = mv_current_time64,
        };
        int rc = sqlite3_vfs_register(&reg.vfs, 0);
        if (rc != SQLITE_OK) {
            e = rc == SQLITE_NOMEM ? GIM_ENOMEM : GIM_EIO;
            goto out;
        }
        reg.registered = true;
    }
out:
    pthread_mutex_unlock(&reg.lock);
    return e;
}

gim_err mapvfs_combine_wal(sqlite3 *db)
{
    sqlite3_file *f = NULL;
    /* The pager's journal file: its WAL in WAL mode (a rollback journal must not combine:
     * nothing promises a sync before the database file is written). */
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK || !f ||
        f->pMethods != &map_io || !((struct map_file *)f)->wal)
        return GIM_EINTERNAL;
    ((struct map_file *)f)->wal_combine = true;
    return GIM_OK;
}

void mapvfs_stats(struct mapvfs_stats *out)
{
    memset(out, 0, sizeof *out);
    out->retires = atomic_load(&reg.retires);
    out->wal_writes = atomic_load(&reg.wal_writes);
    out->wal_flushes = atomic_load(&reg.wal_flushes);
    pthread_mutex_lock(&reg.lock);
    for (struct mapping *m = reg.list; m; m = m->next) {
        if (m->refs == 0)
            continue;
        out->files++;
        for (uint64_t i = 0; i < MAX_SEGMENTS; i++)
            if (atomic_load(&m->active[i]))
                out->chosen_bytes += m->seg_bytes;
    }
    pthread_mutex_unlock(&reg.lock);
}
