/* The sqlite backend's table: one implementation per area (sqlite_<area>.c). */
#include "storage.h"

extern const struct storage_tx_ops storage_sqlite_tx;
extern const struct storage_message_ops storage_sqlite_message;
extern const struct storage_device_ops storage_sqlite_device;
extern const struct storage_group_ops storage_sqlite_group;
extern const struct storage_room_ops storage_sqlite_room;
extern const struct storage_recall_ops storage_sqlite_recall;
extern const struct storage_maint_ops storage_sqlite_maint;

const struct storage_ops storage_sqlite = {
    .name = "sqlite",
    .shared_sessions = false,
    .tx = &storage_sqlite_tx,
    .message = &storage_sqlite_message,
    .device = &storage_sqlite_device,
    .group = &storage_sqlite_group,
    .room = &storage_sqlite_room,
    .recall = &storage_sqlite_recall,
    .maint = &storage_sqlite_maint,
};
