-- A smaller idempotency record: every send with a request_id writes one, so
-- its size is part of every message's (docs/benchmarks.md, "Storage per
-- message"). A user or group send's record is now only its key and the
-- message it answered with: the time the window counts from is that
-- message's send_time (the same clock reading the old created_at held), so
-- created_at goes, and so do room_id and room_seq, which every such record
-- carried as NULLs. A room send's record (a room log entry has no message
-- row) keeps its details in room_idempotency, beside a key row whose
-- message_id is NULL: one lookup by key still finds every record.

ALTER TABLE idempotency RENAME TO idempotency_0006;

-- Room sends already answered: the room log entry and when it was written
-- (the entry may be trimmed by rooms.retain_messages, the record stays
-- until its window ends).
CREATE TABLE room_idempotency (
    device_id  INTEGER NOT NULL,
    request_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL, -- ms since the epoch
    room_id    INTEGER NOT NULL,
    room_seq   INTEGER NOT NULL,
    PRIMARY KEY (device_id, request_id)
) WITHOUT ROWID;

INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq)
SELECT device_id, request_id, created_at, room_id, room_seq FROM idempotency_0006
WHERE message_id IS NULL AND room_id IS NOT NULL AND room_seq IS NOT NULL;

-- Sends already answered, by (device, request_id): a retry within
-- idempotency.window_seconds of the message's send_time gets the same reply.
CREATE TABLE idempotency (
    device_id  INTEGER NOT NULL,
    request_id INTEGER NOT NULL,
    message_id INTEGER, -- the user/group send's message; NULL: a room send (room_idempotency)
    PRIMARY KEY (device_id, request_id)
) WITHOUT ROWID;

-- A record naming neither a message nor a room entry answered nothing and
-- is not carried over. One whose message is gone (a damaged row: retention
-- and erasure delete the record with its message) is carried over and
-- answers EC_NOT_FOUND, as before, until maintenance prunes it.
INSERT INTO idempotency (device_id, request_id, message_id)
SELECT device_id, request_id, message_id FROM idempotency_0006
WHERE message_id IS NOT NULL OR (room_id IS NOT NULL AND room_seq IS NOT NULL)
ORDER BY device_id, request_id;

DROP TABLE idempotency_0006;
