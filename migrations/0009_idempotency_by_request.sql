-- The idempotency records, keyed by request id first. Keyed (device_id,
-- request_id), every send wrote its record at the end of its own device's
-- records: one more page in the middle of the b-tree per send, about a
-- quarter of each commit's WAL frames and of the checkpointer's page writes
-- with 10,000 devices (docs/benchmarks.md, "Issue 15: idempotency records
-- keyed by request id"). Clients choose request ids from a clock (gim's
-- clients send time.Now().UnixNano(), gim-bench a clock-based counter), so
-- keyed (request_id, device_id) the records arrive in key order and a batch
-- appends them to the same last pages.
--
-- Nothing looks records up by device any more: a record whose message is
-- gone (retention, erasure) or was sent by another user (a device id handed
-- to someone else) is not replayed but taken over by the new send
-- (handle_message.c), and the maintenance sweep prunes those of a deleted
-- device (an erased user's) with the expired ones. room_idempotency keeps
-- its key: room sends are few, and its rows are looked up by device.

ALTER TABLE idempotency RENAME TO idempotency_0008;

-- Sends already answered, by (request_id, device_id): a retry within
-- idempotency.window_seconds of the message's send_time gets the same reply.
CREATE TABLE idempotency (
    device_id  INTEGER NOT NULL,
    request_id INTEGER NOT NULL,
    message_id INTEGER, -- the user/group send's message; NULL: a room send (room_idempotency)
    PRIMARY KEY (request_id, device_id)
) WITHOUT ROWID;

INSERT INTO idempotency (device_id, request_id, message_id)
SELECT device_id, request_id, message_id FROM idempotency_0008
ORDER BY request_id, device_id;

DROP TABLE idempotency_0008;
