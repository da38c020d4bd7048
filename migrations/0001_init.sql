-- gim-logic initial schema.
-- Times are milliseconds since the Unix epoch (UTC). Enum columns hold the
-- numbers of connect.ext.proto (the v_* views of 0002_admin_views.sql show names).

-- One row per message: its content is stored once, however many inboxes hold it.
CREATE TABLE message (
    id               INTEGER PRIMARY KEY,
    sender_type      INTEGER NOT NULL,          -- SenderType
    sender_id        INTEGER NOT NULL,
    sender_device_id INTEGER NOT NULL,
    receiver_type    INTEGER NOT NULL,          -- ReceiverType: 1 user, 2 group
    receiver_id      INTEGER NOT NULL,          -- user id or group id
    to_user_ids      BLOB,                      -- @mentions: little-endian int64 array; NULL = none
    message_type     INTEGER NOT NULL,          -- MessageType
    content          BLOB,                      -- NULL once recalled (erased, not hidden)
    send_time        INTEGER NOT NULL,
    status           INTEGER NOT NULL DEFAULT 1, -- MessageStatus: 1 normal, 2 recalled
    sender_seq       INTEGER NOT NULL,          -- seq of the sender's copy
    receiver_seq     INTEGER NOT NULL DEFAULT 0 -- RT_USER: seq of the receiver's copy (= sender_seq for self)
);

-- A user's inbox: one row per copy, seq 1..N without gaps.
CREATE TABLE inbox (
    user_id    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;

-- Where the copies of a group message are (recall notices need every copy's seq).
-- 1:1 messages keep their two seqs in message.sender_seq/receiver_seq instead.
CREATE TABLE group_copy (
    message_id INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;

-- The last seq assigned per user: seqs are never reused even if entries are pruned.
CREATE TABLE user_seq (
    user_id INTEGER PRIMARY KEY,
    seq     INTEGER NOT NULL
);

-- Devices and their sessions. online/gateway_id mirror the in-memory presence
-- table at every sign-in and sign-out and are reloaded at start-up.
CREATE TABLE device (
    device_id    INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL,
    gateway_id   TEXT    NOT NULL DEFAULT '',
    client_addr  TEXT    NOT NULL DEFAULT '',
    online       INTEGER NOT NULL DEFAULT 0,
    room_id      INTEGER NOT NULL DEFAULT 0,
    ack_seq      INTEGER NOT NULL DEFAULT 0,    -- highest seq the device acknowledged
    ack_time     INTEGER NOT NULL DEFAULT 0,    -- the client's receive_time of that ack
    created_at   INTEGER NOT NULL,
    signed_in_at INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX device_user ON device (user_id);

-- Sends already answered, by (device, request_id): a retry gets the same reply.
CREATE TABLE idempotency (
    device_id  INTEGER NOT NULL,
    request_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    message_id INTEGER,          -- user/group send
    room_id    INTEGER,          -- room send: (room_id, room_seq)
    room_seq   INTEGER,
    PRIMARY KEY (device_id, request_id)
) WITHOUT ROWID;

CREATE TABLE chat_group (
    group_id   INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL DEFAULT '',
    owner_id   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_member (
    group_id  INTEGER NOT NULL REFERENCES chat_group (group_id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL,
    role      TEXT    NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;

-- Rooms use read diffusion: one row per message in the room's log.
CREATE TABLE room_message (
    room_id          INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    sender_type      INTEGER NOT NULL,
    sender_id        INTEGER NOT NULL,
    sender_device_id INTEGER NOT NULL,
    to_user_ids      BLOB,
    message_type     INTEGER NOT NULL,
    content          BLOB,
    send_time        INTEGER NOT NULL,
    status           INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;

CREATE TABLE room_seq (
    room_id INTEGER PRIMARY KEY,
    seq     INTEGER NOT NULL
);
