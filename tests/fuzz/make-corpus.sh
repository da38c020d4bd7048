#!/usr/bin/env bash
# Regenerates tests/fuzz/corpus/: one valid encoded pb.GatewayRequest per
# file, covering every PackageType and every message shape, written from
# text protos with `protoc --encode` (the seeds are committed; run this after
# a protocol change).
#
# Envelopes come from user 1, device 1, gateway "g": the session that
# fuzz_request keeps signed in, and group 1 (members 1, 2, 3) exists there.
#
#   tests/fuzz/make-corpus.sh [OUT_DIR]     default: tests/fuzz/corpus
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/tests/fuzz/corpus}
command -v protoc >/dev/null || {
    echo "make-corpus.sh: protoc not found (apt-get install protobuf-compiler)" >&2
    exit 1
}

# enc TYPE TEXT: TEXT (text format) encoded as pb.TYPE on stdout.
enc() {
    printf '%s\n' "$2" | protoc --encode="pb.$1" -I "$ROOT/proto" "$ROOT/proto/logic.int.proto"
}

# esc: stdin as a text-format bytes literal body ("\x0a\x05...").
esc() {
    od -An -v -tx1 | tr -d ' \n' | sed 's/\(..\)/\\x\1/g'
}

# content TYPE TEXT: an encoded message_content, escaped.
content() {
    enc "$1" "$2" | esc
}

# seed NAME PACKAGE_TYPE REQUEST_ID [DATA_TYPE DATA_TEXT]: writes OUT/NAME.
seed() {
    local name=$1 type=$2 rid=$3 data=""
    if (($# > 3)); then
        data="data: \"$(enc "$4" "$5" | esc)\""
    fi
    enc GatewayRequest "user_id: 1 device_id: 1 gateway_id: \"g\" client_addr: \"127.0.0.1:50000\"
input { type: $type request_id: $rid $data }" >"$OUT/$name"
}

# msg NAME RT RECEIVER MT CONTENT_TYPE CONTENT_TEXT [EXTRA]: a PT_MESSAGE send,
# each with its own request_id (a repeated one would be an idempotent retry).
next_send_id=100
msg() {
    local name=$1 rt=$2 rid=$3 mt=$4 ctype=$5 ctext=$6 extra=${7:-}
    next_send_id=$((next_send_id + 1))
    seed "$name" PT_MESSAGE "$next_send_id" MessageSend "message {
  receiver_type: $rt receiver_id: $rid message_type: $mt $extra
  message_content: \"$(content "$ctype" "$ctext")\" }"
}

rm -rf "$OUT"
mkdir -p "$OUT"

seed sign_in PT_SIGN_IN 1 SignInInput 'user_id: 1 device_id: 1 token: "dev-token"'
seed sign_in_other PT_SIGN_IN 2 SignInInput 'user_id: 2 device_id: 2 token: "dev-token"'
seed heartbeat PT_HEARTBEAT 3
seed sync_all PT_SYNC 4 SyncInput 'seq: 0'
seed sync_from PT_SYNC 5 SyncInput 'seq: 3'
seed subscribe_room PT_SUBSCRIBE_ROOM 6 SubscribeRoomInput 'room_id: 7 seq: 0'
seed unsubscribe_room PT_SUBSCRIBE_ROOM 7 SubscribeRoomInput 'room_id: 0'
seed ack PT_MESSAGE_ACK 8 MessageACK 'device_ack: 2 receive_time: 1700000000000'
seed recall PT_RECALL 9 RecallInput 'seq: 1'
seed sign_out PT_SIGN_OUT 10
seed unknown_type 99 11
# gim's ack form: PT_MESSAGE carrying a MessageACK (docs/protocol.md).
seed ack_seed_form PT_MESSAGE 12 MessageACK 'device_ack: 2 receive_time: 1700000000000'
# A gateway's lease: no user, no device.
enc GatewayRequest "gateway_id: \"g\" input { type: PT_GATEWAY_LEASE request_id: 13
data: \"$(enc GatewayLeaseInput 'boot_id: 42' | esc)\" }" >"$OUT/gateway_lease"

msg text_user RT_USER 2 MT_TEXT Text 'text: "hello"'
msg text_self RT_USER 1 MT_TEXT Text 'text: "note to self"'
msg text_group_mentions RT_GROUP 1 MT_TEXT Text 'text: "@2 @3 hi"' 'to_user_ids: [2, 3]'
msg text_room RT_ROOM 7 MT_TEXT Text 'text: "hi room"'
msg face_user RT_USER 2 MT_FACE Face 'face_id: 12 face_url: "https://example.com/f.png"'
msg voice_user RT_USER 2 MT_VOICE Voice 'id: "v1" size: 2048 duration: 3 url: "https://example.com/v1"'
msg image_group RT_GROUP 1 MT_IMAGE Image \
    'id: "i1" width: 640 height: 480 url: "https://example.com/i1" thumbnail_url: "https://example.com/t1"'
msg file_user RT_USER 2 MT_FILE File 'id: 5 name: "a.pdf" size: 1000 url: "https://example.com/a.pdf"'
msg location_user RT_USER 2 MT_LOCATION Location 'desc: "here" latitude: 52.5 longitude: 13.4'
msg command_user RT_USER 2 MT_COMMAND Command 'code: 1000 data: "\x01\x02"'
msg custom_room RT_ROOM 7 MT_CUSTOM Custom 'data: "{\"k\": 1}"'

echo "make-corpus.sh: $(find "$OUT" -type f | wc -l) seeds in $OUT"
