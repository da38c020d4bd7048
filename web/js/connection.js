// connection.js: one WebSocket to gim-gateway, signed in as one device.
//
// One binary WebSocket message is one encoded pb.Input (up) or pb.Output
// (down). Replies echo (type, request_id) and are matched to their request;
// every other Output is a push. The connection signs in on every (re)connect,
// reconnects with exponential backoff and jitter, and heartbeats while online.
// It reports its state through onState and never retries a sign-in the server
// refused as unauthenticated (a bad or expired token stays bad).

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;
const HEARTBEAT_MS = 30000;
const REPLY_TIMEOUT_MS = 15000;

export class ServerError extends Error {
  constructor(proto, out) {
    super(`${proto.errorName(out.code)} (${out.code}): ${out.message || 'no message'}`);
    this.code = out.code;
    this.codeName = proto.errorName(out.code);
    this.serverMessage = out.message;
  }
}

export class Disconnected extends Error {
  constructor(why) {
    super(why || 'not connected');
  }
}

export class Connection {
  // opts: { url, proto, user, device, token, onState(state, detail), onReady(),
  //         onPush(out), onError(err) }
  constructor(opts) {
    Object.assign(this, opts);
    this.ws = null;
    this.pending = new Map(); // `${type}:${requestId}` -> { resolve, reject, timer }
    this.nextId = BigInt(Date.now()) * 1000n; // fresh per page load: the idempotency key of sends
    this.attempt = 0;
    this.stopped = false;
    this.ready = false;
    this.timer = null;
    this.heartbeat = null;
  }

  newRequestId() {
    this.nextId += 1n;
    return this.nextId;
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.open();
  }

  stop(reason) {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    this.setState('stopped', reason || '');
  }

  setState(state, detail = '') {
    this.state = state;
    this.onState && this.onState(state, detail);
  }

  open() {
    clearTimeout(this.timer);
    this.ready = false;
    this.setState('connecting', this.url);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.onError && this.onError(e);
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => this.signIn();
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      clearInterval(this.heartbeat);
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Disconnected());
      }
      this.pending.clear();
      if (!this.stopped) this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    this.attempt += 1;
    this.setState('reconnecting', `in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempt})`);
    this.timer = setTimeout(() => this.open(), delay);
  }

  async signIn() {
    this.setState('signing-in');
    const p = this.proto;
    try {
      const data = p.encode('SignInInput', {
        userId: globalThis.Long.fromString(this.user),
        deviceId: globalThis.Long.fromString(this.device),
        token: this.token,
      });
      await this.request(p.PT.PT_SIGN_IN, data, { beforeReady: true });
    } catch (e) {
      if (e instanceof Disconnected) return; // onclose reconnects
      this.onError && this.onError(e, 'sign-in');
      if (e instanceof ServerError && e.code === p.EC.EC_UNAUTHENTICATED) {
        this.stop(`sign-in refused: ${e.message}`);
      } else if (this.ws) {
        this.ws.close(); // retried with backoff
      }
      return;
    }
    this.attempt = 0;
    this.ready = true;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      this.request(p.PT.PT_HEARTBEAT).catch((e) => {
        if (!(e instanceof Disconnected)) this.onError && this.onError(e, 'heartbeat');
      });
    }, HEARTBEAT_MS);
    this.setState('online');
    this.onReady && this.onReady();
  }

  // Sends one request; resolves with the Output's data bytes, rejects with a
  // ServerError (code != 0) or Disconnected. requestId may be given (a retry).
  request(type, data, { requestId, beforeReady } = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || (!this.ready && !beforeReady)) {
      return Promise.reject(new Disconnected());
    }
    const id = requestId ?? this.newRequestId();
    const key = `${type}:${id}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // A link that leaves a request unanswered this long is dead: drop it,
        // and the reconnect retries (sends keep their request id).
        this.pending.delete(key);
        reject(new Disconnected(`no reply to ${this.proto.ptNames[type]} within ${REPLY_TIMEOUT_MS} ms`));
        if (this.ws === ws) ws.close();
      }, REPLY_TIMEOUT_MS);
      this.pending.set(key, { resolve, reject, timer });
      ws.send(this.proto.encodeInput(type, id, data));
    });
  }

  receive(buf) {
    let out;
    try {
      out = this.proto.decodeOutput(new Uint8Array(buf));
    } catch (e) {
      this.onError && this.onError(new Error(`undecodable frame from the server: ${e.message}`));
      return;
    }
    const key = `${out.type}:${out.requestId}`;
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      clearTimeout(p.timer);
      if (out.code === 0) p.resolve(out.data);
      else p.reject(new ServerError(this.proto, out));
      return;
    }
    if (out.code !== 0) {
      // An error that answers nothing we asked. PT_SIGN_OUT with an error is
      // gim-logic's "signed in elsewhere": the device's session moved to
      // another connection, and reconnecting would only take it back.
      this.onError && this.onError(new ServerError(this.proto, out), 'server');
      if (out.type === this.proto.PT.PT_SIGN_OUT) this.stop(`signed out by the server: ${out.message}`);
      return;
    }
    this.onPush && this.onPush(out);
  }
}
