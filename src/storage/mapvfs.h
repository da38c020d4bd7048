/*
 * mapvfs: one memory mapping of the database file for the whole process.
 *
 * SQLite's own memory-mapped I/O (PRAGMA mmap_size) maps the file once per
 * connection and unmaps it whenever a connection starts a read transaction
 * after another one wrote: gim-logic has a writer, a checkpointer and a
 * reader per worker, so the same page was mapped up to six times (and
 * counted six times in VmRSS: 3-4 GiB on a 0.2-2 GiB file, issue 15), and
 * under a steady stream of sends every mapping was torn down and faulted in
 * again at every sync. Without mmap (the default since issue 15) each page
 * a reader's cache misses is copied in with pread, which cost syncs about a
 * fifth of their speed at 1M messages.
 *
 * This module is a SQLite VFS ("gim-map") that wraps the default one and
 * changes only how the main database file is fetched: every connection of
 * the process to the same file (same device and inode) reads through one
 * read-only MAP_SHARED mapping, made of fixed-size segments mapped when
 * first needed and never moved, so a pointer handed to SQLite stays valid
 * until its connection closes; xUnfetch of everything (SQLite's "the file
 * changed, remap") only re-reads the file's size. Everything else (reads,
 * writes, locks, the WAL and its index) goes to the default VFS unchanged;
 * the WAL and journal files are not mapped.
 *
 * The resident size is bounded by a budget: SQLite fetches only from the
 * segments chosen for it, the budget's worth (budget / segment size of
 * them) that were fetched most lately (counted on a sample of fetches, the
 * count halving every period of 4,096 samples); a page of any other segment
 * returns no pointer and SQLite reads it into the connection's cache, as
 * without mmap. A segment no longer chosen is dropped from the page tables
 * (madvise MADV_DONTNEED: on a shared file mapping this frees nothing the
 * kernel's page cache holds, and a late access maps the page again), so the
 * mapping keeps about one budget of file pages resident in VmRSS. A file no
 * larger than the budget ends up mapped whole.
 *
 * Safety is SQLite's own argument for mmap: a connection only fetches pages
 * of its snapshot that are not in the WAL, and those lie inside the file
 * (a checkpoint never shrinks the file under a reader that needs them). A
 * fetch past the size last seen re-reads the size; past the end of the file
 * it returns no pointer and SQLite reads the page with xRead.
 *
 * The module keeps one read-only descriptor per file it ever mapped, open
 * until the process exits: closing a descriptor of the database would drop
 * every POSIX lock the process holds on it, SQLite's included.
 *
 * Not thread-bound: the mapping registry is guarded by a mutex, the fetch
 * path is lock-free (atomics only).
 *
 * The VFS also combines a writer's WAL appends (mapvfs_combine_wal): SQLite
 * writes each WAL frame as two xWrite calls (its 24-byte header, then the
 * page), so a commit of 150 frames was 300 pwrite calls on the writer
 * thread, 16 % of its CPU per send (docs/benchmarks.md, "Issue 15: combined
 * WAL writes"). A combining WAL file keeps contiguous appends in a buffer
 * of its own and writes them in one call as soon as anything else happens
 * to the file: a read, a sync, a size query, a non-contiguous write, a lock,
 * a file control, a truncate or a close. In WAL mode, with synchronous FULL
 * or EXTRA, every commit syncs the WAL before it updates the WAL index that
 * makes it visible, so no other connection can be shown frames still in the
 * buffer; with NORMAL or OFF nothing would flush it before that update, and
 * mapvfs_combine_wal must not be called.
 *
 * Writes to the main database file start their writeback as they are made.
 * In WAL mode only a checkpoint writes that file: it copies the pages the
 * commits changed back in page order, then syncs the file. Left to that
 * sync, a pass's hundreds of random page writes reached the disk together,
 * and the writer's next WAL sync, on the same disk, waited behind them: the
 * sends' slowest commits (gim-diskbound shows the same with no service at
 * all). So every 128 KiB written to the main file, the VFS asks the kernel
 * to start writing the file's dirty pages (sync_file_range with
 * SYNC_FILE_RANGE_WRITE, on the mapping's descriptor: it waits for no I/O
 * and makes nothing durable; the checkpoint's own sync still does both).
 * Sends' p99 fell in every pair measured: 12.9-18.0 against 19.3-22.1 ms at
 * C=64, 42.3-44.5 against 47.9-61.8 at C=256, 40.9-47.4 against 78.1-83.7
 * at C=256 on 10M messages. Their p50 rose by up to 5 ms: at the same rate
 * the same queue now waits more evenly (docs/benchmarks.md, "Issue 15: the
 * checkpoint's writes reach the disk as they are made").
 */
#ifndef GIM_STORAGE_MAPVFS_H
#define GIM_STORAGE_MAPVFS_H

#include <sqlite3.h>
#include <stdint.h>

#include "err.h"

#define MAPVFS_NAME "gim-map"

/* Bytes each segment covers (a multiple of every SQLite page size): the budget's unit. */
#define MAPVFS_SEGMENT_BYTES (16ull << 20)

/*
 * Registers the VFS (once per process; later calls only change the budget)
 * and sets the budget, in bytes, of every mapping of the process (rounded
 * down to whole segments: below one segment nothing is mapped).
 * A connection uses it when opened with MAPVFS_NAME as its VFS and with
 * PRAGMA mmap_size > 0 (SQLite fetches only then; the value itself is not a
 * limit here). segment_bytes is MAPVFS_SEGMENT_BYTES except in tests (a
 * multiple of 65536). GIM_ENOMEM or GIM_EIO if SQLite refuses the VFS.
 */
gim_err mapvfs_register(uint64_t budget_bytes, uint64_t segment_bytes);

/*
 * From now on db's WAL file combines its appends (see above). The caller
 * promises that every commit on db syncs the WAL: journal_mode WAL and
 * synchronous FULL or EXTRA, for as long as db is open. db must be opened
 * with MAPVFS_NAME and its WAL open (it is once PRAGMA journal_mode = WAL
 * returned "wal"). GIM_EINTERNAL otherwise (nothing changes).
 */
gim_err mapvfs_combine_wal(sqlite3 *db);

struct mapvfs_stats {
    uint64_t chosen_bytes; /* segments chosen now: about this much is resident */
    uint64_t retires;      /* times a segment stopped being chosen and was dropped */
    uint32_t files;        /* distinct files mapped now */
    uint64_t wal_writes;   /* SQLite's writes to combining WAL files, since the start */
    uint64_t wal_flushes;  /* the writes that reached the files for them */
};

/* Totals over the process's mappings (for /metrics and tests). */
void mapvfs_stats(struct mapvfs_stats *out);

#endif
