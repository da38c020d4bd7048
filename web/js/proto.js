// proto.js: the gim protocol in the browser. Loads proto/logic.int.proto (which
// imports connect.ext.proto) at run time with protobufjs's full build, and
// turns decoded messages into plain objects the rest of the page uses.
//
// int64 values (seqs, ids, request ids) would lose precision as JS numbers, so
// `long` is loaded before protobufjs (index.html) and they decode as Long;
// this module converts them to BigInt at its boundary and back when encoding.

const protobuf = globalThis.protobuf;
const Long = globalThis.Long;

export const big = (v) => (v == null ? 0n : BigInt(v.toString()));
export const toLong = (b) => Long.fromString(BigInt(b).toString());

export async function loadProtocol(base = '/proto/') {
  if (!protobuf || !Long || protobuf.util.Long !== Long) {
    throw new Error('protobufjs or long did not load (run npm ci in web/)');
  }
  const root = await protobuf.load(base + 'logic.int.proto');
  return new Protocol(root);
}

export class Protocol {
  constructor(root) {
    this.root = root;
    const t = (name) => root.lookupType('pb.' + name);
    this.Input = t('Input');
    this.Output = t('Output');
    this.SignInInput = t('SignInInput');
    this.SyncInput = t('SyncInput');
    this.SyncOutput = t('SyncOutput');
    this.MessageSend = t('MessageSend');
    this.MessageACK = t('MessageACK');
    this.SubscribeRoomInput = t('SubscribeRoomInput');
    this.RecallInput = t('RecallInput');
    this.Text = t('Text');
    this.Command = t('Command');
    const e = (name) => root.lookupEnum('pb.' + name).values;
    this.PT = e('PackageType');
    this.MT = e('MessageType');
    this.RT = e('ReceiverType');
    this.MS = e('MessageStatus');
    this.ST = e('SenderType');
    this.EC = e('ErrorCode');
    this.ecNames = root.lookupEnum('pb.ErrorCode').valuesById;
    this.ptNames = root.lookupEnum('pb.PackageType').valuesById;
  }

  // One client frame: Input{type, request_id, data}; `data` is already-encoded bytes.
  encodeInput(type, requestId, data) {
    const input = { type, requestId: toLong(requestId) };
    if (data) input.data = data;
    return this.Input.encode(this.Input.create(input)).finish();
  }

  // One server frame, as { type, requestId: BigInt, code, message, data: Uint8Array }.
  decodeOutput(bytes) {
    const o = this.Output.decode(bytes);
    return {
      type: o.type,
      requestId: big(o.requestId),
      code: o.code,
      message: o.message,
      data: o.data,
    };
  }

  encode(typeName, obj) {
    const T = this[typeName];
    const err = T.verify(obj);
    if (err) throw new Error(`${typeName}: ${err}`);
    return T.encode(T.fromObject(obj)).finish();
  }

  errorName(code) {
    return this.ecNames[code] || `code ${code}`;
  }

  // A MessageSend for a text to receiver (rtype, rid).
  textSend(rtype, rid, text) {
    return this.encode('MessageSend', {
      message: {
        receiverType: rtype,
        receiverId: toLong(rid),
        messageType: this.MT.MT_TEXT,
        messageContent: this.Text.encode({ text }).finish(),
      },
    });
  }

  // A pb.Message as a plain, JSON-safe object (seqs and ids as decimal strings).
  // Text content is decoded; a recall notice carries recallOf (the recalled seq).
  plainMessage(m) {
    const s = m.sender || {};
    const out = {
      seq: big(m.seq).toString(),
      senderType: s.senderType || 0,
      senderId: big(s.senderId).toString(),
      senderDevice: big(s.deviceId).toString(),
      rtype: m.receiverType,
      rid: big(m.receiverId).toString(),
      type: m.messageType,
      time: Number(big(m.sendTime)),
      status: m.status,
      text: null,
      recallOf: null,
      summary: null,
    };
    const content = m.messageContent || new Uint8Array();
    try {
      if (m.messageType === this.MT.MT_TEXT) {
        out.text = this.Text.decode(content).text;
      } else if (m.messageType === this.MT.MT_COMMAND) {
        const c = this.Command.decode(content);
        if (c.code === 1) out.recallOf = big(this.RecallInput.decode(c.data).seq).toString();
        else out.summary = `command ${c.code}`;
      } else {
        const name = this.root.lookupEnum('pb.MessageType').valuesById[m.messageType];
        out.summary = `[${(name || 'unknown').replace('MT_', '').toLowerCase()} message]`;
      }
    } catch (e) {
      out.summary = `[undecodable content: ${e.message}]`;
    }
    return out;
  }
}
