# Turns migrations/NNNN_name.sql into a C table so the binary carries its own
# schema history (the files stay the source of truth; nothing generated is
# committed). Invoked with -DSRC_DIR=... -DOUT=... [-DPREFIX=pg_]: PREFIX names
# the table (PREFIXmigrations), so that each backend's history is its own
# (migrations/ for SQLite, migrations/postgres/ for PostgreSQL).
file(GLOB files "${SRC_DIR}/[0-9][0-9][0-9][0-9]_*.sql")
list(SORT files)
set(body "")
set(n 0)
foreach(f ${files})
  get_filename_component(name "${f}" NAME_WE)
  string(SUBSTRING "${name}" 0 4 ver)
  math(EXPR ver "${ver}")
  file(READ "${f}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND body "static const char ${PREFIX}m${n}[] = {${hex} 0};\n")
  string(APPEND tab "    {${ver}, \"${name}\", ${PREFIX}m${n}},\n")
  math(EXPR n "${n} + 1")
endforeach()
file(WRITE "${OUT}.tmp" "/* generated from migrations/ by cmake/embed_migrations.cmake */\n#include \"migration.h\"\n${body}const struct migration ${PREFIX}migrations[] = {\n${tab}};\nconst int ${PREFIX}migrations_count = ${n};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
