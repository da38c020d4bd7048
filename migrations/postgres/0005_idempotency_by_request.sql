-- SQLite's migration 0009 (migrations/0009_idempotency_by_request.sql says
-- why): the send records keyed by request id first, so that clock-made
-- request ids append to the primary key's index instead of landing in the
-- middle of each device's range. Nothing looks records up by device any
-- more (retention, erasure and a device's change of user leave them to the
-- sweep, src/storage/pg_maint.c).
ALTER TABLE idempotency DROP CONSTRAINT idempotency_pkey;
ALTER TABLE idempotency ADD PRIMARY KEY (request_id, device_id);
