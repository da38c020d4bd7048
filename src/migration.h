/*
 * migration: the table of schema migrations compiled into the binary.
 *
 * migrations.c is generated at build time from migrations/NNNN_name.sql by
 * cmake/embed_migrations.cmake; store_migrate() applies them. pg_migrations.c
 * likewise from migrations/postgres/NNNN_name.sql, for pgstore_migrate().
 */
#ifndef GIM_MIGRATION_H
#define GIM_MIGRATION_H

struct migration {
    int version;      /* NNNN of the file name */
    const char *name; /* file name without .sql */
    const char *sql;
};

extern const struct migration migrations[];
extern const int migrations_count;

/* PostgreSQL's, from migrations/postgres/ (pgstore.c applies them). */
extern const struct migration pg_migrations[];
extern const int pg_migrations_count;

#endif
