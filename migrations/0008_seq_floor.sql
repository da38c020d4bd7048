-- A user's seq counter is no longer written back after every batch. The
-- writer keeps it in memory (seq.h) and, on first use after a start, loads
-- it as the larger of user_seq and the user's last inbox seq: every seq it
-- hands out is in an inbox row of the same transaction, so the inbox alone
-- says where the counter stood. The write-back was 16 % of every commit's
-- pages with 10,000 users (docs/benchmarks.md, "Issue 15: where a send's
-- time goes"), and about a tenth of a send's CPU.
--
-- The inbox only forgets a seq when a row is deleted (retention, erasure,
-- an operator's DELETE): user_seq is now the floor that survives that.
-- Before any inbox row goes, it rises to at least that row's seq, in the
-- same transaction, whoever deletes it. So a deleted newest entry's seq is
-- never handed out again, as before. Existing user_seq rows are valid
-- floors: they were the counter itself.
CREATE TRIGGER inbox_seq_floor BEFORE DELETE ON inbox
BEGIN
    INSERT INTO user_seq (user_id, seq) VALUES (OLD.user_id, OLD.seq)
    ON CONFLICT (user_id) DO UPDATE SET seq = max(seq, excluded.seq);
END;

-- Each user's last seq, as the writer loads it: what admins, gimctl and the
-- checks after a crash read where they read user_seq before.
CREATE VIEW user_last_seq (user_id, seq) AS
SELECT user_id, max(seq) FROM (
    SELECT user_id, seq FROM user_seq
    UNION ALL
    SELECT user_id, max(seq) FROM inbox GROUP BY user_id
) GROUP BY user_id;
