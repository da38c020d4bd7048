#!/usr/bin/env node
// gim-loadgen: a second load generator for gim-logic, written apart from
// gim-bench so that issue 15's figures rest on two tools that share no code
// (docs/benchmarks.md, "Issue 15: both tools side by side"). It speaks to
// the service exactly as a gateway does (docs/protocol.md): an encoded
// pb.GatewayRequest per nng REQ message, a pb.Output per reply. Nothing of
// the C tree is used: the messages are encoded and decoded by protobufjs
// from proto/*.proto at run time (web/node_modules, the web client's own
// dependency, `npm ci` in web/), the sign-in tokens are HS256 JWTs made
// with node:crypto, the seqs a sync starts from are read with the sqlite3
// CLI, and the SP framing below is this file's own.
//
// Why not nng: a binding would be gim-bench's transport again, and the point
// of a second tool is that a fault in one is not in both. The framing is
// nng's TCP transport for REQ (RFC-style: "SP over TCP", nng's
// src/sp/transport/tcp/tcp.c): each side sends 8 bytes {0, 'S', 'P', 0,
// protocol (be16), 0, 0}, REQ being 0x30 and REP 0x31; then every message is
// a be64 length and that many bytes, the first four of which are the request
// id with its high bit set (REQ's header, echoed by REP before the reply).
// One TCP connection carries all C requests in flight, as gim-bench's one
// socket does; --conns spreads them over more.
//
// A closed loop: C requests in flight; each reply is answered with the next
// request, and counted if its request was built and its reply handled
// inside the measured window (after --warmup, for -t seconds). Latency
// runs from when a request is built to when its reply is handled (one
// clock: process.hrtime). The requests built while one read's replies are
// handled are written together at the end of that read, so the tool's own
// handling of a read is counted in its requests' latency, not hidden.
//
// --rate R makes it an open loop, as gim-bench's --rate: request k is due at
// the start of the run + k / R seconds, and at most C are in flight. A
// context that gets its reply takes the oldest request already due, else it
// waits until the next one is due. A request's latency counts from when it
// was due, not from when a context was free to send it, so a service that
// falls behind shows its queue in the latencies (the closed loop hides it:
// "coordinated omission"); backlog_max says how many due requests waited
// for a free context at most. Its timers have millisecond resolution (libuv
// reads its clock once per loop turn), so a request leaves up to 1-2 ms
// after it was due even on an idle service; that delay is counted against
// the service, and p50_sent_ms / p99_sent_ms give the latencies counted from
// when each request was written instead, to show it. This is how the reads
// beside saturating sends are measured (tools/bench-reads-beside-sends.sh,
// TOOL=loadgen).
// Workloads:
//   send  a 1:1 text of --payload bytes from a random user to another one
//   sync  a page of the inbox of a random user, from --sync-from newest (a
//         little more than one page before the user's last seq, as
//         gim-bench does) or random (uniform in 1 .. last - page size, so
//         the page lies anywhere in the history)
// Every --check-every-th reply is decoded whole and checked (a send's stored
// copy: sender, receiver, seq > 0; a sync page: ascending seqs after the
// asked one, at most --page messages, at least one when any remain, has_more
// exactly when the page did not reach the user's last seq); every other
// reply is checked for its code and request id only.
//
//   node tools/gim-loadgen.mjs --url tcp://127.0.0.1:7400 --secret S --users 10000
//        [--user-base 1] [-c 64] [-t 10] [--warmup 1] [-w send|sync]
//        [--sync-from newest|random] [--db gim.db] [--page 50] [--payload 100]
//        [--conns 1] [--gateway ID] [--server-pid PID] [--check-every 8] [--rate R]
//
// The sync workload needs --db (the service's database file, read-only, for
// each user's last seq). Users are user-base .. user-base + users - 1, each
// with one device of the same id, as bench-db.sh builds them. Output: one
// line "RESULT tool=gim-loadgen workload=... ops=... ops_per_s=... p50_ms=...
// p99_ms=... p999_ms=... errors=... acked=... checked=... check_failed=...
// loadgen_cpu_us_per_op=... [server_cpu_us_per_op=... cpus_busy=... cpus=...]"
// (a sync's also sync_from= and avg_page=, the mean size of the pages it
// checked; an open loop's rate=, backlog_max=, p50_sent_ms= and
// p99_sent_ms=) on stdout; progress and the first few failures on stderr.
// ops counts the successful replies inside the window (errors are counted
// apart, their latencies left out); acked every successful reply of the
// run, warm-up and drain included (for a send: every message the service
// said it stored). Exit 0 when no request failed and no check failed, 1
// otherwise, 2 on bad usage.
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import net from 'node:net';

const here = new URL('.', import.meta.url);
const require = createRequire(new URL('../web/package.json', here));

const PT = { SIGN_IN: 1, SYNC: 2, MESSAGE: 4 };
const RT_USER = 1;
const MT_TEXT = 1;
const SP_REQ = 0x30;
const SP_REP = 0x31;

function usage(why) {
  process.stderr.write(`gim-loadgen: ${why}\n(see the comment at the top of tools/gim-loadgen.mjs)\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    url: 'tcp://127.0.0.1:7400', secret: '', users: 0, userBase: 1, c: 64, t: 10, warmup: 1,
    w: 'send', syncFrom: 'newest', db: '', page: 50, payload: 100, conns: 1,
    gateway: 'gim-loadgen', serverPid: 0, checkEvery: 8, rate: 0,
  };
  const names = {
    '--url': 'url', '--secret': 'secret', '--users': 'users', '-u': 'users', '--user-base': 'userBase',
    '-c': 'c', '-t': 't', '--warmup': 'warmup', '-w': 'w', '--sync-from': 'syncFrom', '--db': 'db',
    '--page': 'page', '--payload': 'payload', '--conns': 'conns', '--gateway': 'gateway',
    '--server-pid': 'serverPid', '--check-every': 'checkEvery', '--rate': 'rate',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = names[argv[i]];
    if (!k || i + 1 >= argv.length) usage(`unknown option or missing value: ${argv[i]}`);
    const v = argv[i + 1];
    if (typeof o[k] === 'number') {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) usage(`${argv[i]} needs a number >= 0, not "${v}"`);
      o[k] = n;
    } else {
      o[k] = v;
    }
  }
  const m = /^tcp:\/\/([^:/]+):(\d+)$/.exec(o.url);
  if (!m) usage(`--url must be tcp://HOST:PORT, not "${o.url}"`);
  o.host = m[1];
  o.port = Number(m[2]);
  if (!o.secret) usage('--secret is required (the service\'s auth.secret)');
  if (!Number.isInteger(o.users) || o.users < 2) usage('--users must be an integer >= 2');
  if (!['send', 'sync'].includes(o.w)) usage(`-w must be send or sync, not "${o.w}"`);
  if (!['newest', 'random'].includes(o.syncFrom)) usage('--sync-from must be newest or random');
  if (o.w === 'sync' && !o.db) usage('-w sync needs --db (each user\'s last seq)');
  if (o.c < 1 || o.conns < 1 || o.t <= 0 || o.checkEvery < 1) usage('-c, --conns, -t, --check-every must be positive');
  if (o.payload < 3 || o.payload > 16000) usage('--payload must be 3 .. 16000');
  if (o.rate > 1e6) usage('--rate must be at most 1000000 requests per second (0: a closed loop)');
  return o;
}

async function loadTypes() {
  let protobuf;
  try {
    protobuf = require('protobufjs');
    protobuf.util.Long = require('long');
    protobuf.configure();
  } catch (e) {
    process.stderr.write(`gim-loadgen: protobufjs is missing (run npm ci in web/): ${e.message}\n`);
    process.exit(2);
  }
  const root = await protobuf.load(new URL('../proto/logic.int.proto', here).pathname);
  const t = (n) => root.lookupType(`pb.${n}`);
  return {
    GatewayRequest: t('GatewayRequest'), Output: t('Output'),
    SignInInput: t('SignInInput'), SyncInput: t('SyncInput'), SyncOutput: t('SyncOutput'),
    MessageSend: t('MessageSend'), Text: t('Text'),
  };
}

// An HS256 JWT as docs/protocol.md's PT_SIGN_IN asks: sub a decimal string, did a number.
function token(secret, uid) {
  const b64 = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: String(uid), did: uid, exp: Math.floor(Date.now() / 1000) + 86400 })}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

// Each user's last seq, by the sqlite3 CLI: one index seek per user.
function lastSeqs(db, base, n) {
  const sql = `WITH RECURSIVE u(id) AS (SELECT ${base} UNION ALL SELECT id + 1 FROM u WHERE id < ${base + n - 1}) ` +
    'SELECT id, coalesce((SELECT max(seq) FROM inbox WHERE user_id = u.id), 0) FROM u;';
  const out = execFileSync('sqlite3', ['-readonly', '-batch', '-separator', ' ', db, sql], {
    encoding: 'utf8', maxBuffer: 64 << 20,
  });
  const last = new Float64Array(n);
  let rows = 0;
  for (const line of out.split('\n')) {
    if (!line) continue;
    const [id, seq] = line.split(' ').map(Number);
    last[id - base] = seq;
    rows++;
  }
  if (rows !== n) throw new Error(`sqlite3 gave ${rows} users of ${n}`);
  return last;
}

// One TCP connection speaking nng's REQ: a handshake, then be64-framed messages.
class SpConn {
  constructor(host, port, onReply, onClose) {
    this.pending = 0;
    this.buf = Buffer.alloc(0);
    this.shook = false;
    this.out = [];
    this.onReply = onReply;
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.ready = new Promise((resolve, reject) => {
      this.sock.once('connect', () => {
        this.sock.write(Buffer.from([0, 0x53, 0x50, 0, 0, SP_REQ, 0, 0]));
      });
      this.sock.once('error', reject);
      this.resolve = resolve;
    });
    this.sock.on('data', (d) => this.data(d));
    this.sock.on('close', () => onClose(this));
  }

  data(d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let off = 0;
    if (!this.shook) {
      if (this.buf.length < 8) return;
      const h = this.buf;
      if (h[0] !== 0 || h[1] !== 0x53 || h[2] !== 0x50 || h[3] !== 0 || h.readUInt16BE(4) !== SP_REP) {
        this.sock.destroy(new Error(`not an nng REP peer (header ${h.subarray(0, 8).toString('hex')})`));
        return;
      }
      this.shook = true;
      off = 8;
      this.resolve();
    }
    while (this.buf.length - off >= 8) {
      const hi = this.buf.readUInt32BE(off);
      const len = this.buf.readUInt32BE(off + 4);
      if (hi !== 0 || len < 4) {
        this.sock.destroy(new Error(`bad frame length ${hi}:${len}`));
        return;
      }
      if (this.buf.length - off - 8 < len) break;
      const id = this.buf.readUInt32BE(off + 8);
      const body = this.buf.subarray(off + 12, off + 8 + len);
      off += 8 + len;
      this.pending--;
      this.onReply(id, body);
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
    this.flush();
  }

  // Requests are queued and written together once the replies at hand are
  // handled: one write per batch of replies instead of one per request.
  send(id, body) {
    const f = Buffer.allocUnsafe(12);
    f.writeUInt32BE(0, 0);
    f.writeUInt32BE(body.length + 4, 4);
    f.writeUInt32BE(id, 8);
    this.out.push(f, body);
    this.pending++;
  }

  flush() {
    if (this.out.length === 0) return;
    const b = Buffer.concat(this.out);
    this.out = [];
    this.sock.write(b);
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function procCpuUs(pid) {
  // utime and stime, fields 14 and 15 of /proc/PID/stat, after the comm's ")".
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100; // USER_HZ is 100 on Linux
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const T = await loadTypes();
  const last = o.w === 'sync' ? lastSeqs(o.db, o.userBase, o.users) : null;
  const conns = [];
  const inflight = new Map(); // request id -> the request's context
  let nextSp = 0;
  let nextRid = Date.now() * 1000; // a clock-made request id, as gim's clients make them
  let phase = 'signin';
  let complaints = 0;
  let signinFailed = 0;
  let closedEarly = null;
  const stats = { ops: 0, acked: 0, errors: 0, checked: 0, checkFailed: 0, lat: [], pages: 0, msgs: 0, latSent: [] };
  // An encoded pb.Text of at most --payload bytes (tag, varint length, text)
  // that starts with the request id in hex, as gim-bench's do.
  const textLen = o.payload - 2 - (o.payload - 2 >= 128 ? 1 : 0);
  const filler = 'a'.repeat(textLen);
  const text = (rid) => T.Text.encode({ text: (rid.toString(16).padStart(16, '0') + filler).slice(0, textLen) }).finish();
  // Only the first few problems are printed; every one is counted where it belongs.
  const complain = (why) => {
    if (++complaints <= 5) process.stderr.write(`gim-loadgen: ${why}\n`);
  };
  const rnd = (n) => Math.floor(Math.random() * n);

  const onClose = (c) => {
    if (phase !== 'done') closedEarly = `connection closed with ${c.pending} requests in flight`;
  };

  // ctx's next request; its latency counts from t0 (an open loop's due
  // time), else from now.
  function issue(ctx, t0 = null) {
    const rid = nextRid++;
    let input;
    if (ctx.kind === 'signin') {
      input = { type: PT.SIGN_IN, requestId: rid, data: T.SignInInput.encode({ deviceId: ctx.uid, userId: ctx.uid, token: token(o.secret, ctx.uid) }).finish() };
    } else if (o.w === 'send') {
      const s = rnd(o.users);
      let r = rnd(o.users - 1);
      if (r >= s) r++;
      ctx.uid = o.userBase + s;
      ctx.peer = o.userBase + r;
      input = { type: PT.MESSAGE, requestId: rid, data: T.MessageSend.encode({ message: { receiverType: RT_USER, receiverId: ctx.peer, messageType: MT_TEXT, messageContent: text(rid) } }).finish() };
    } else {
      const u = rnd(o.users);
      ctx.uid = o.userBase + u;
      ctx.last = last[u];
      const span = ctx.last - o.page;
      if (o.syncFrom === 'random' && span >= 1) ctx.from = 1 + rnd(span);
      else ctx.from = Math.max(0, ctx.last - (o.page + 10));
      input = { type: PT.SYNC, requestId: rid, data: T.SyncInput.encode({ seq: ctx.from }).finish() };
    }
    ctx.rid = rid;
    ctx.type = input.type;
    const body = T.GatewayRequest.encode({ userId: ctx.uid, deviceId: ctx.uid, gatewayId: o.gateway, clientAddr: '127.0.0.1:1', input }).finish();
    const sp = (0x80000000 | (nextSp++ & 0x7fffffff)) >>> 0;
    inflight.set(sp, ctx);
    ctx.tSent = process.hrtime.bigint();
    ctx.t0 = t0 ?? ctx.tSent;
    ctx.conn.send(sp, body);
  }

  // The open loop (--rate): request k is due at tBegin + k * interval; only
  // the requests due up to the window's end are ever issued.
  const interval = o.rate > 0 ? BigInt(Math.round(1e9 / o.rate)) : 0n;
  let tBegin = 0n;
  let issued = 0n;
  let dueEnd = 0n;
  let backlogMax = 0n;
  const idle = [];
  let pacer = null;
  const dueAt = (now) => {
    let due = now < tBegin ? 0n : (now - tBegin) / interval + 1n;
    if (due > dueEnd) due = dueEnd;
    if (due - issued > backlogMax) backlogMax = due - issued;
    return due;
  };
  // ctx takes the oldest request already due; false: none is due yet.
  const takeDue = (ctx) => {
    if (issued >= dueAt(process.hrtime.bigint())) return false;
    issue(ctx, tBegin + issued++ * interval);
    return true;
  };
  // Wakes when the next request is due while some context is idle (a timer
  // per request only while one could be sent), and hands the due ones out.
  const armPacer = () => {
    if (pacer || idle.length === 0 || phase !== 'run' || issued >= dueEnd) return;
    const wait = Number(tBegin + issued * interval - process.hrtime.bigint()) / 1e6;
    pacer = setTimeout(() => {
      pacer = null;
      while (idle.length && takeDue(idle[idle.length - 1])) idle.pop();
      for (const c of conns) c.flush();
      armPacer();
    }, Math.max(0, wait));
  };

  function check(ctx, out) {
    if (o.w === 'send') {
      const m = T.MessageSend.decode(out.data).message;
      if (!m) return 'send reply without its message';
      if (!m.sender || Number(m.sender.senderId) !== ctx.uid || Number(m.sender.deviceId) !== ctx.uid) return 'sender is not the sending device';
      if (m.receiverType !== RT_USER || Number(m.receiverId) !== ctx.peer) return 'receiver differs from the request';
      if (!(Number(m.seq) > 0)) return 'stored copy without a seq';
      return null;
    }
    const p = T.SyncOutput.decode(out.data);
    let prev = ctx.from;
    for (const m of p.messages) {
      const s = Number(m.seq);
      if (!(s > prev)) return `seq ${s} after ${prev}: not ascending past the asked seq ${ctx.from}`;
      prev = s;
    }
    stats.pages++;
    stats.msgs += p.messages.length;
    if (p.messages.length > o.page) return `${p.messages.length} messages in a page of ${o.page}`;
    // Sends of other runs may have raised a user's last seq since --db was
    // read (never this run's: it only syncs), so more may exist, never less.
    if (ctx.from < ctx.last && p.messages.length === 0) return `empty page from ${ctx.from} below the last seq ${ctx.last}`;
    if (!p.hasMore && prev < ctx.last) return `has_more false at ${prev}, below the last seq ${ctx.last}`;
    return null;
  }

  let window0 = 0n;
  let window1 = 0n;
  let doneSignIn;
  const signedIn = new Promise((r) => { doneSignIn = r; });
  let todo = 0;
  let signed = 0;

  const onReply = (sp, body) => {
    const ctx = inflight.get(sp);
    if (!ctx) {
      complain(`a reply to no request (id ${sp.toString(16)})`);
      stats.errors++;
      return;
    }
    inflight.delete(sp);
    const t1 = process.hrtime.bigint();
    let out;
    try {
      out = T.Output.decode(body);
    } catch (e) {
      out = null;
    }
    const inWindow = ctx.kind === 'load' && ctx.t0 >= window0 && t1 <= window1;
    if (!out || out.code !== 0 || Number(out.requestId) !== ctx.rid || out.type !== ctx.type) {
      complain(out ? `request ${ctx.rid} (type ${ctx.type}): code ${out.code} "${out.message}", reply id ${out.requestId} type ${out.type}` : 'an undecodable reply');
      if (ctx.kind === 'load') stats.errors++;
      else signinFailed++;
    } else if (ctx.kind === 'load') {
      stats.acked++;
      // Only successful replies are operations, as in gim-bench: an error's
      // latency is not in the percentiles (it is counted in errors).
      if (inWindow) {
        stats.ops++;
        stats.lat.push(Number(t1 - ctx.t0) / 1e6);
        stats.latSent.push(Number(t1 - ctx.tSent) / 1e6);
      }
      // Decoded whole only every --check-every-th time: a full decode of a
      // sync page costs more than the rest of the request here.
      if (++ctx.n % o.checkEvery === 0) {
        stats.checked++;
        let why;
        try {
          why = check(ctx, out);
        } catch (e) {
          why = `undecodable data: ${e.message}`;
        }
        if (why) {
          stats.checkFailed++;
          complain(`check failed: ${why}`);
        }
      }
    }
    if (ctx.kind === 'signin') {
      signed++;
      if (todo < o.users) {
        ctx.uid = o.userBase + todo++;
        issue(ctx);
      } else if (signed === o.users) {
        doneSignIn();
      }
      return;
    }
    if (phase !== 'run') return;
    if (!interval) {
      issue(ctx);
    } else if (!takeDue(ctx)) {
      idle.push(ctx);
      armPacer();
    }
  };

  for (let i = 0; i < o.conns; i++) conns.push(new SpConn(o.host, o.port, onReply, onClose));
  try {
    await Promise.all(conns.map((c) => c.ready));
  } catch (e) {
    process.stderr.write(`gim-loadgen: cannot reach ${o.url}: ${e.message}\n`);
    process.exit(1);
  }
  const ctxs = [];
  for (let i = 0; i < o.c; i++) ctxs.push({ kind: 'signin', conn: conns[i % conns.length], n: i });

  // Every user's device signs in first (C at a time), as gim-bench does.
  const tSign = process.hrtime.bigint();
  for (const ctx of ctxs) {
    if (todo >= o.users) break;
    ctx.uid = o.userBase + todo++;
    issue(ctx);
  }
  for (const c of conns) c.flush();
  const guard = setInterval(() => {
    if (closedEarly) {
      process.stderr.write(`gim-loadgen: ${closedEarly}\n`);
      process.exit(1);
    }
  }, 100);
  await signedIn;
  if (signinFailed) {
    process.stderr.write(`gim-loadgen: ${signinFailed} sign-ins failed (wrong --secret?)\n`);
    process.exit(1);
  }
  process.stderr.write(`gim-loadgen: signed in ${o.users} devices in ${(Number(process.hrtime.bigint() - tSign) / 1e9).toFixed(2)} s\n`);

  phase = 'run';
  const now = process.hrtime.bigint();
  window0 = now + BigInt(Math.round(o.warmup * 1e9));
  window1 = window0 + BigInt(Math.round(o.t * 1e9));
  let cpu0 = null;
  let srv0 = 0;
  setTimeout(() => {
    cpu0 = process.cpuUsage();
    if (o.serverPid) srv0 = procCpuUs(o.serverPid);
  }, o.warmup * 1000);
  tBegin = now;
  if (interval) dueEnd = (window1 - tBegin + interval - 1n) / interval;
  for (const ctx of ctxs) {
    ctx.kind = 'load';
    if (!interval) issue(ctx);
    else if (!takeDue(ctx)) idle.push(ctx);
  }
  for (const c of conns) c.flush();
  armPacer();
  await new Promise((r) => setTimeout(r, (o.warmup + o.t) * 1000));
  const cpu = process.cpuUsage(cpu0);
  const srv = o.serverPid ? procCpuUs(o.serverPid) - srv0 : 0;
  phase = 'drain';
  if (pacer) clearTimeout(pacer);
  // The requests still in flight finish (they are not counted) before the
  // connections close: closing a link with a reply on its way is what wedges
  // nng 1.5.2's reaper (docs/protocol.md).
  const t0 = Date.now();
  while (inflight.size > 0 && Date.now() - t0 < 30000) await new Promise((r) => setTimeout(r, 10));
  phase = 'done';
  clearInterval(guard);
  for (const c of conns) c.sock.end();

  const lat = Float64Array.from(stats.lat).sort();
  const f = (x) => x.toFixed(3);
  const line = [
    'RESULT tool=gim-loadgen', `workload=${o.w}`, `c=${o.c}`, `conns=${o.conns}`, `ops=${stats.ops}`,
    `ops_per_s=${(stats.ops / o.t).toFixed(1)}`, `p50_ms=${f(percentile(lat, 0.5))}`,
    `p99_ms=${f(percentile(lat, 0.99))}`, `p999_ms=${f(percentile(lat, 0.999))}`,
    `errors=${stats.errors}`, `acked=${stats.acked}`, `checked=${stats.checked}`, `check_failed=${stats.checkFailed}`,
  ];
  if (o.w === 'sync') line.push(`sync_from=${o.syncFrom}`, `avg_page=${(stats.pages ? stats.msgs / stats.pages : 0).toFixed(1)}`);
  if (interval) {
    const sent = Float64Array.from(stats.latSent).sort();
    line.push(`rate=${o.rate}`, `backlog_max=${backlogMax}`, `p50_sent_ms=${f(percentile(sent, 0.5))}`,
      `p99_sent_ms=${f(percentile(sent, 0.99))}`);
  }
  line.push(`users=${o.users}`, `secs=${o.t}`, `loadgen_cpu_us_per_op=${((cpu.user + cpu.system) / Math.max(1, stats.ops)).toFixed(1)}`);
  if (o.serverPid) {
    // The cores the service and this tool kept busy over the window, against the machine's.
    const busy = (srv + cpu.user + cpu.system) / 1e6 / o.t;
    line.push(`server_cpu_us_per_op=${(srv / Math.max(1, stats.ops)).toFixed(1)}`,
      `cpus_busy=${busy.toFixed(2)}`, `cpus=${availableParallelism()}`);
  }
  if (inflight.size) line.push(`unanswered=${inflight.size}`);
  process.stdout.write(line.join(' ') + '\n');
  process.exit(stats.errors || stats.checkFailed || inflight.size ? 1 : 0);
}

main().catch((e) => {
  process.stderr.write(`gim-loadgen: ${e.stack || e}\n`);
  process.exit(1);
});
