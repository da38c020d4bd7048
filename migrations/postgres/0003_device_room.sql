-- Rooms on PostgreSQL (issue 17, phase 2). A room send reads its push
-- targets, the devices subscribed to the room, from device inside its
-- transaction (src/room.c, PG_SUBSCRIBERS), since a device may have
-- subscribed through another instance; SQLite has one instance and serves
-- them from memory (presence), so this index has no SQLite twin
-- (tests/test_pg_schema_it.sh lists it as PostgreSQL's own). Partial: only
-- the devices in a room are in it, so a sign-in (room 0) does not touch it.
CREATE INDEX device_room ON device (room_id) WHERE room_id <> 0;
