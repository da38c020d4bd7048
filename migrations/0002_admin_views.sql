-- Views for humans at the sqlite3 prompt (docs/admin.md): names instead of
-- enum numbers, UTC times instead of milliseconds. The service never reads
-- them. Each is a plain SELECT over one table so that SQLite flattens it into
-- the query that uses it: filtering v_inbox by user_id still walks the inbox
-- primary key instead of building the whole view.

-- Messages. text is the string of an MT_TEXT message (an encoded pb.Text:
-- tag 0x0a, a varint length of one or two bytes, the UTF-8 bytes), read
-- straight from the blob; other types show content_bytes only.
CREATE VIEW v_message AS
SELECT
    m.id,
    strftime('%Y-%m-%d %H:%M:%f', m.send_time / 1000.0, 'unixepoch') AS sent_utc,
    CASE m.sender_type WHEN 1 THEN 'system' WHEN 2 THEN 'user' WHEN 3 THEN 'business'
        ELSE 'unknown' END AS sender_kind,
    m.sender_id,
    m.sender_device_id,
    CASE m.receiver_type WHEN 1 THEN 'user' WHEN 2 THEN 'group' WHEN 3 THEN 'room'
        ELSE 'unknown' END AS receiver_kind,
    m.receiver_id,
    CASE m.message_type WHEN 1 THEN 'text' WHEN 2 THEN 'face' WHEN 3 THEN 'voice'
        WHEN 4 THEN 'image' WHEN 5 THEN 'file' WHEN 6 THEN 'location' WHEN 7 THEN 'command'
        WHEN 8 THEN 'custom' ELSE 'unknown' END AS type,
    CASE m.status WHEN 1 THEN 'normal' WHEN 2 THEN 'recalled' ELSE 'unknown' END AS status,
    length(m.content) AS content_bytes,
    CASE
        WHEN m.message_type <> 1 OR m.content IS NULL THEN NULL
        WHEN length(m.content) = 0 THEN ''
        WHEN substr(m.content, 1, 1) <> x'0a' THEN NULL
        -- one-byte length (< 128)
        WHEN substr(m.content, 2, 1) < x'80' THEN CAST(substr(m.content, 3,
            (instr('0123456789ABCDEF', substr(hex(substr(m.content, 2, 1)), 1, 1)) - 1) * 16 +
             instr('0123456789ABCDEF', substr(hex(substr(m.content, 2, 1)), 2, 1)) - 1) AS TEXT)
        -- two-byte length (128..16383): low 7 bits first
        WHEN substr(m.content, 3, 1) < x'80' THEN CAST(substr(m.content, 4,
            ((instr('0123456789ABCDEF', substr(hex(substr(m.content, 2, 1)), 1, 1)) - 1) * 16 +
              instr('0123456789ABCDEF', substr(hex(substr(m.content, 2, 1)), 2, 1)) - 1 - 128) +
            ((instr('0123456789ABCDEF', substr(hex(substr(m.content, 3, 1)), 1, 1)) - 1) * 16 +
              instr('0123456789ABCDEF', substr(hex(substr(m.content, 3, 1)), 2, 1)) - 1) * 128)
            AS TEXT)
    END AS text,
    m.sender_seq,
    m.receiver_seq,
    m.send_time
FROM message m;

-- Inbox entries with their message: one row per (user_id, seq).
CREATE VIEW v_inbox AS
SELECT
    i.user_id,
    i.seq,
    v.id AS message_id,
    v.sent_utc,
    v.sender_id,
    v.sender_device_id,
    v.receiver_kind,
    v.receiver_id,
    v.type,
    v.status,
    v.content_bytes,
    v.text
FROM inbox i
JOIN v_message v ON v.id = i.message_id;

-- Devices: presence as the service last recorded it, readable times.
CREATE VIEW v_device AS
SELECT
    d.device_id,
    d.user_id,
    CASE d.online WHEN 1 THEN 'online' ELSE 'offline' END AS online,
    d.gateway_id,
    d.client_addr,
    d.room_id,
    d.ack_seq,
    CASE WHEN d.ack_time > 0
        THEN strftime('%Y-%m-%d %H:%M:%f', d.ack_time / 1000.0, 'unixepoch') END AS ack_utc,
    CASE WHEN d.signed_in_at > 0
        THEN strftime('%Y-%m-%d %H:%M:%f', d.signed_in_at / 1000.0, 'unixepoch') END
        AS signed_in_utc,
    strftime('%Y-%m-%d %H:%M:%f', d.updated_at / 1000.0, 'unixepoch') AS updated_utc,
    strftime('%Y-%m-%d %H:%M:%f', d.created_at / 1000.0, 'unixepoch') AS created_utc
FROM device d;

-- Groups with their member counts.
CREATE VIEW v_group AS
SELECT
    g.group_id,
    g.name,
    g.owner_id,
    (SELECT count(*) FROM group_member gm WHERE gm.group_id = g.group_id) AS members,
    (SELECT count(*) FROM group_member gm
        WHERE gm.group_id = g.group_id AND gm.role IN ('owner', 'admin')) AS admins,
    strftime('%Y-%m-%d %H:%M:%f', g.created_at / 1000.0, 'unixepoch') AS created_utc
FROM chat_group g;
