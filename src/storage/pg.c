/* The postgres backend's table: one implementation per area (pg_<area>.c). */
#include "storage.h"

extern const struct storage_tx_ops storage_pg_tx;
extern const struct storage_message_ops storage_pg_message;
extern const struct storage_device_ops storage_pg_device;
extern const struct storage_group_ops storage_pg_group;
extern const struct storage_room_ops storage_pg_room;
extern const struct storage_recall_ops storage_pg_recall;
extern const struct storage_maint_ops storage_pg_maint;

const struct storage_ops storage_pg = {
    .name = "postgres",
    .shared_sessions = true,
    .tx = &storage_pg_tx,
    .message = &storage_pg_message,
    .device = &storage_pg_device,
    .group = &storage_pg_group,
    .room = &storage_pg_room,
    .recall = &storage_pg_recall,
    .maint = &storage_pg_maint,
};
