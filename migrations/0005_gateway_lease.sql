-- Gateways that lease (PT_GATEWAY_LEASE, docs/protocol.md "Presence"): the
-- boot id of each one's current process. A lease whose boot_id differs from
-- the stored one means the gateway restarted, so the sessions it held are
-- signed out. Stored (not only in memory) so that this also holds when
-- gim-logic itself restarted in between. Written only when a gateway's boot
-- changes or gim-logic first hears from it, never on every lease.
CREATE TABLE gateway (
    gateway_id TEXT PRIMARY KEY,
    boot_id    INTEGER NOT NULL,
    booted_at  INTEGER NOT NULL  -- ms: when gim-logic first saw this boot_id
) WITHOUT ROWID;

-- The online devices of one gateway: signing out a restarted gateway's
-- sessions must not scan every device ever seen.
CREATE INDEX device_gateway_online ON device (gateway_id) WHERE online = 1;
