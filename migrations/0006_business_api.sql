-- The business API (PT_ADMIN_GROUP_*, PT_ADMIN_SEND; docs/protocol.md "The
-- business API"): what a company's own backend needs of groups, and the
-- records that make its requests idempotent.

-- A group as the API shows it: an avatar, the business's own free-form
-- extra, and when it last changed (groups made before this migration: when
-- they were created).
ALTER TABLE chat_group ADD COLUMN avatar_url TEXT NOT NULL DEFAULT '';
ALTER TABLE chat_group ADD COLUMN extra TEXT NOT NULL DEFAULT '';
ALTER TABLE chat_group ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE chat_group SET updated_at = created_at;

-- The highest group id ever given out: a dissolved group's id never comes
-- back (its old messages in inboxes still name it), which max(group_id) + 1
-- would not promise once the newest group is dissolved. One row.
CREATE TABLE group_id_high (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    last_id INTEGER NOT NULL
);
INSERT INTO group_id_high (one, last_id) SELECT 1, coalesce(max(group_id), 0) FROM chat_group;

-- Operator requests already answered, by idempotency key (the request's
-- idempotency_key, or "request_id:N" from Input.request_id): a retry gets
-- the stored reply and changes nothing; the same key with another request
-- (type or body, token and key left out) is refused. Written in the same
-- transaction as the change; pruned after idempotency.window_seconds.
CREATE TABLE operator_idempotency (
    idem_key   TEXT    PRIMARY KEY,
    type       INTEGER NOT NULL, -- PackageType
    request    BLOB    NOT NULL, -- the request's data re-encoded without token and key
    reply      BLOB,             -- Output.data of the reply (NULL = none)
    created_at INTEGER NOT NULL
);
CREATE INDEX operator_idempotency_created ON operator_idempotency (created_at);
