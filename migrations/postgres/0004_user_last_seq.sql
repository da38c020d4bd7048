-- Each user's last seq, under the name SQLite's migration 0008 gives it
-- (migrations/0008_seq_floor.sql), so that admins, gimctl and the tests read
-- one view on either backend. Here user_seq is the counter itself (seqs are
-- taken in the database, seq.h), so the view equals it; the inbox term only
-- keeps the definition the same.
CREATE VIEW user_last_seq (user_id, seq) AS
SELECT user_id, max(seq) FROM (
    SELECT user_id, seq FROM user_seq
    UNION ALL
    SELECT user_id, max(seq) FROM inbox GROUP BY user_id
) x GROUP BY user_id;
