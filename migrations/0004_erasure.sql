-- Right-to-erasure (PT_ADMIN_ERASE, `gimctl erase`): one row per user erased,
-- kept as the record that it was done. An erasure runs in bounded steps, one
-- transaction each; this row says where it stands, so a retry resumes it.
CREATE TABLE erasure (
    user_id     INTEGER PRIMARY KEY,
    upto_seq    INTEGER NOT NULL,           -- inbox entries up to this seq go (the user's last seq at the start)
    room_id     INTEGER NOT NULL DEFAULT 0, -- room logs are scanned in (room_id, seq) order:
    room_seq    INTEGER NOT NULL DEFAULT 0, -- everything up to here is done
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0  -- 0 while in progress
);

-- A user's memberships, without scanning every group: erasure deletes them,
-- and the business API will list a user's groups.
CREATE INDEX group_member_user ON group_member (user_id);
