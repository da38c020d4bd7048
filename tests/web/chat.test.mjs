// The web chat in a real browser: Debian's headless Chromium, driven by
// puppeteer-core, against the real gim-logic and gim-gateway binaries on free
// ports with a temporary database and secret. Two pages (alice on a laptop
// viewport, bob on a phone-sized one) sign in, chat 1:1 both ways, in a group
// and in a room, recall, reload with history paged across several sync pages,
// survive a gateway restart, and show a server error. Screenshots of every
// page go to <build>/web-artifacts/.
//
// Environment (set by tests/CMakeLists.txt): GIM_BUILD_DIR, GIM_LOGIC_BIN,
// GIM_GATEWAY_BIN, GIMCTL_BIN; GIM_CHROMIUM (default /usr/bin/chromium).
// Anything missing is a failure with a message saying what to install, never
// a silent pass.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WEB = path.join(ROOT, 'web');
const env = (name, fallback) => process.env[name] || fallback;
const BUILD = env('GIM_BUILD_DIR', path.join(ROOT, 'build'));
const LOGIC = env('GIM_LOGIC_BIN', path.join(BUILD, 'gim-logic'));
const GATEWAY = env('GIM_GATEWAY_BIN', path.join(BUILD, 'gim-gateway'));
const GIMCTL = env('GIMCTL_BIN', path.join(BUILD, 'tools', 'gimctl'));
const CHROMIUM = env('GIM_CHROMIUM', '/usr/bin/chromium');
const ARTIFACTS = path.join(BUILD, 'web-artifacts');
const PAGE_SIZE = 5; // logic's sync.page_size: 12 messages need at least 3 pages

function requireFile(file, hint) {
  if (!fs.existsSync(file)) throw new Error(`MISSING ${file}: ${hint}`);
}
requireFile(path.join(WEB, 'node_modules', 'puppeteer-core'), 'run `npm ci` in web/ (tools/setup.sh all does)');
requireFile(path.join(WEB, 'node_modules', 'protobufjs'), 'run `npm ci` in web/ (tools/setup.sh all does)');
requireFile(CHROMIUM, 'apt-get install chromium (tools/setup.sh all does)');
for (const bin of [LOGIC, GATEWAY, GIMCTL]) requireFile(bin, 'build the project first (cmake --build build)');

const webRequire = createRequire(path.join(WEB, 'package.json'));
const puppeteer = webRequire('puppeteer-core');
const protobuf = webRequire('protobufjs');
protobuf.util.Long = webRequire('long');
protobuf.configure();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function until(what, fn, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if ((last = await fn())) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// ---- the services ------------------------------------------------------------

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gim-web-'));
const secret = crypto.randomBytes(32).toString('hex');
const procEnv = { ...process.env, GIM_TOKEN_SECRET: secret };
const ports = {};
const procs = {};
let db;

function startProc(name, bin, args) {
  const log = fs.openSync(path.join(ARTIFACTS, `${name}.log`), 'a');
  const p = spawn(bin, args, { env: procEnv, stdio: ['ignore', log, log] });
  p.exitCode_ = null;
  p.on('exit', (code, sig) => (p.exitCode_ = code ?? sig));
  procs[name] = p;
  return p;
}

async function stopProc(name) {
  const p = procs[name];
  if (!p || p.exitCode_ !== null) return null;
  const exited = new Promise((r) => p.once('exit', (code, sig) => r(code ?? sig)));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 15000);
  const code = await exited;
  clearTimeout(t);
  return code;
}

function httpGetStatus(port, urlPath) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () =>
      s.write(`GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`),
    );
    let data = '';
    s.on('data', (d) => (data += d));
    s.on('end', () => resolve(Number((data.match(/^HTTP\/1\.\d (\d+)/) || [])[1] || 0)));
    s.on('error', () => resolve(0));
  });
}

async function startGateway() {
  startProc('gateway', GATEWAY, ['--config', path.join(tmp, 'gateway.yaml')]);
  await until('the gateway to serve /demo/', async () => {
    if (procs.gateway.exitCode_ !== null) throw new Error(`gim-gateway exited: ${procs.gateway.exitCode_}`);
    return (await httpGetStatus(ports.web, '/demo/')) === 200;
  });
}

function gimctl(...args) {
  return execFileSync(GIMCTL, args, { env: procEnv, encoding: 'utf8' }).trim();
}

// ---- the browser ---------------------------------------------------------------

let browser;
const pages = {}; // name -> { page, sent: [decoded Input], errors: [] }
let Input;
let SyncInput;
const PT = {};

function link(user, device, name, extra = '') {
  const token = gimctl('token', '--user', String(user), '--device', String(device));
  return `http://127.0.0.1:${ports.web}/#user=${user}&device=${device}&name=${name}&names=1:alice,2:bob${extra}&token=${token}`;
}

// Opens a page and records every WebSocket frame it sends, decoded.
async function openPage(name, url, viewport) {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  const rec = { page, sent: [], errors: [] };
  page.on('pageerror', (e) => rec.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') rec.errors.push(m.text());
  });
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketFrameSent', ({ response }) => {
    if (response.opcode !== 2) return;
    rec.sent.push(Input.decode(Buffer.from(response.payloadData, 'base64')));
  });
  await page.goto(url);
  pages[name] = rec;
  return rec;
}

const online = (rec) => rec.page.waitForSelector('#conn-state[data-state="online"]', { timeout: 15000 });

// Pages in the background get no animation frames, which puppeteer's clicks
// and default waits rely on: interact with the page in front, poll by timer.
const front = (rec) => rec.page.bringToFront();
const POLL = { polling: 100 };

async function openConversation(rec, key) {
  await front(rec);
  await rec.page.waitForSelector(`#conversations button[data-conv="${key}"]`, { timeout: 10000 });
  // Clicked in the page: a push may re-render the list between a lookup from
  // here and a click from here.
  await rec.page.$eval(`#conversations button[data-conv="${key}"]`, (b) => b.click());
  await rec.page.waitForFunction((k) => document.getElementById('messages').dataset.conv === k, POLL, key);
}

async function send(rec, text) {
  await front(rec);
  await rec.page.focus('#text');
  await rec.page.type('#text', text);
  await rec.page.keyboard.press('Enter');
}

// The bubbles of the open conversation: [{ text, seq, mine, recalled, state }].
function bubbles(rec) {
  return rec.page.$$eval('#messages li.msg', (lis) =>
    lis.map((li) => ({
      text: li.querySelector('.body').textContent,
      seq: li.dataset.seq || null,
      mine: li.classList.contains('mine'),
      recalled: li.classList.contains('recalled'),
      state: li.querySelector('.state')?.textContent || null,
    })),
  );
}

async function waitBubble(rec, text, opts = {}) {
  await rec.page.waitForFunction(
    (t, recalled) =>
      [...document.querySelectorAll('#messages li.msg[data-seq]')].some(
        (li) => li.querySelector('.body').textContent === t && (!recalled || li.classList.contains('recalled')),
      ),
    { ...POLL, timeout: opts.timeout ?? 10000 },
    text,
    !!opts.recalled,
  );
}

// ---- set-up and tear-down ----------------------------------------------------------

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) fs.rmSync(path.join(ARTIFACTS, f), { force: true });
  const root = await protobuf.load(path.join(ROOT, 'proto', 'logic.int.proto'));
  Input = root.lookupType('pb.Input');
  SyncInput = root.lookupType('pb.SyncInput');
  Object.assign(PT, root.lookupEnum('pb.PackageType').values);

  for (const k of ['req', 'pub', 'web', 'tcp']) ports[k] = await freePort();
  db = path.join(tmp, 'gim.db');
  fs.writeFileSync(
    path.join(tmp, 'logic.yaml'),
    [
      `listen: [tcp://127.0.0.1:${ports.req}]`,
      `publish: [tcp://127.0.0.1:${ports.pub}]`,
      `http: ""`,
      `database: {path: ${db}, synchronous: normal}`,
      `sync: {page_size: ${PAGE_SIZE}}`,
      '',
    ].join('\n'),
  );
  fs.writeFileSync(
    path.join(tmp, 'gateway.yaml'),
    [
      `gateway_id: webtest`,
      `listeners:`,
      `  - {url: "tcp://127.0.0.1:${ports.tcp}"}`,
      `  - {url: "ws://127.0.0.1:${ports.web}/ws"}`,
      `http: ""`,
      `logic: {requests: ["tcp://127.0.0.1:${ports.req}"], publish: ["tcp://127.0.0.1:${ports.pub}"]}`,
      `web: {root: "${WEB}", proto_dir: "${path.join(ROOT, 'proto')}"}`,
      '',
    ].join('\n'),
  );
  startProc('logic', LOGIC, ['--config', path.join(tmp, 'logic.yaml')]);
  await until('gim-logic to listen', async () => {
    if (procs.logic.exitCode_ !== null) throw new Error(`gim-logic exited: ${procs.logic.exitCode_}`);
    return new Promise((r) => {
      const s = net.connect(ports.req, '127.0.0.1', () => r(s.end() || true));
      s.on('error', () => r(false));
    });
  });
  await startGateway();

  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 30000, // a stuck browser call fails the test in 30 s, not puppeteer's 180 s
    userDataDir: fs.mkdtempSync(path.join(tmp, 'chromium-')),
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  if (browser) {
    for (const [name, rec] of Object.entries(pages)) {
      if (rec.page.isClosed()) continue;
      await front(rec); // a background page would never paint its screenshot
      await rec.page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
    }
    await browser.close();
  }
  await stopProc('gateway');
  await stopProc('logic');
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---- the tests (in order: each builds on the state the previous left) ---------

let alice;
let bob;
let group;

test('alice (laptop) and bob (phone) sign in with tokens from the link', async () => {
  alice = await openPage('alice', link(1, 11, 'alice', '&to=2'), { width: 1100, height: 720 });
  bob = await openPage('bob', link(2, 21, 'bob', '&to=1'), { width: 390, height: 760, isMobile: true });
  await online(alice);
  await online(bob);
  assert.equal(await alice.page.$eval('#whoami', (e) => e.textContent), 'alice · device 11');
  assert.equal(await bob.page.$eval('#whoami', (e) => e.textContent), 'bob · device 21');
  assert.equal(alice.sent[0].type, PT.PT_SIGN_IN);
  // int64 keeps its precision in the page (long is loaded before protobufjs):
  // a request id and a seq above 2^53 survive an encode and a decode.
  const big = await alice.page.evaluate(() => {
    const p = window.gim.proto;
    const seq = window.Long.fromString('9007199254740995');
    const bytes = p.encodeInput(p.PT.PT_SYNC, 9007199254740993n, p.encode('SyncInput', { seq }));
    const back = p.Input.decode(bytes);
    return [back.requestId.toString(), p.SyncInput.decode(back.data).seq.toString()];
  });
  assert.deepEqual(big, ['9007199254740993', '9007199254740995']);
  // The redirect at / brought the page to /demo/.
  assert.match(alice.page.url(), /\/demo\/#user=1/);
});

test('1:1 text is sent and received live, both ways', async () => {
  await send(alice, 'hello bob');
  await waitBubble(bob, 'hello bob');
  await send(bob, 'hi alice');
  await waitBubble(alice, 'hi alice');
  const a = await bubbles(alice);
  assert.deepEqual(
    a.map((b) => [b.text, b.mine]),
    [
      ['hello bob', true],
      ['hi alice', false],
    ],
  );
  // Bob received alice's text as a push, not from a sync.
  assert.equal(bob.sent.filter((i) => i.type === PT.PT_SYNC).length, 1);
  // What was shown is acked.
  await until('bob to ack his seq 2', () => bob.page.evaluate(() => document.body.dataset.acked === '2'));
});

test('a lost push leaves a seq gap: the next push triggers a sync that fills it', async () => {
  // Drop the next push in the page, as a gateway drops pushes to a slow client.
  await bob.page.evaluate(() => {
    const deliver = window.gim.conn.onPush;
    let dropped = false;
    window.gim.conn.onPush = (out) => (dropped ? deliver(out) : (dropped = true));
  });
  const syncsBefore = bob.sent.filter((i) => i.type === PT.PT_SYNC).length;
  await send(alice, 'lost on the way');
  await waitBubble(alice, 'lost on the way');
  await send(alice, 'after the gap');
  await waitBubble(bob, 'after the gap');
  await waitBubble(bob, 'lost on the way');
  const texts = (await bubbles(bob)).map((b) => b.text);
  assert.deepEqual(texts, ['hello bob', 'hi alice', 'lost on the way', 'after the gap']);
  const syncs = bob.sent.filter((i) => i.type === PT.PT_SYNC);
  assert.equal(syncs.length, syncsBefore + 1);
  assert.equal(SyncInput.decode(syncs.at(-1).data).seq.toString(), '2', 'synced from the last seq before the gap');
});

test('group text reaches every member', async () => {
  // Through the service's business API, with an operator token from the test's secret.
  group = gimctl('--url', `tcp://127.0.0.1:${ports.req}`, 'group', 'create', '--owner', '1', '--members', '2', '--name', 'team');
  assert.match(group, /^[1-9][0-9]*$/);
  await front(alice);
  await alice.page.select('#nc-kind', 'g');
  await alice.page.type('#nc-id', group);
  await alice.page.click('#new-chat button[type="submit"]');
  await send(alice, 'hello team');
  await openConversation(bob, `g:${group}`);
  await waitBubble(bob, 'hello team');
  await send(bob, 'team, hi');
  await waitBubble(alice, 'team, hi');
});

test('room chat: both join room 30 and talk', async () => {
  for (const rec of [alice, bob]) {
    await front(rec);
    await rec.page.type('#room-id', '30');
    await rec.page.click('#join-room button[type="submit"]');
    await rec.page.waitForFunction(() => document.getElementById('messages').dataset.conv === 'r:30', POLL);
  }
  await until('both to be subscribed', async () =>
    (await alice.page.evaluate(() => window.gim.room()?.ready)) && (await bob.page.evaluate(() => window.gim.room()?.ready)),
  );
  await send(alice, 'anyone in the room?');
  await waitBubble(bob, 'anyone in the room?');
  await send(bob, 'me!');
  await waitBubble(alice, 'me!');
});

test('a recall shows "message recalled" on both sides', async () => {
  await openConversation(alice, 'u:2');
  await openConversation(bob, 'u:1');
  await send(alice, 'oops, wrong chat');
  await waitBubble(bob, 'oops, wrong chat');
  await waitBubble(alice, 'oops, wrong chat');
  const mine = (await bubbles(alice)).find((b) => b.text === 'oops, wrong chat');
  await front(alice);
  await alice.page.click(`#messages li.msg[data-seq="${mine.seq}"] button.recall`);
  await waitBubble(alice, 'message recalled', { recalled: true });
  await waitBubble(bob, 'message recalled', { recalled: true });
  for (const rec of [alice, bob]) {
    const texts = (await bubbles(rec)).map((b) => b.text);
    assert.ok(!texts.includes('oops, wrong chat'), `${texts} still shows the recalled text`);
    assert.ok(texts.includes('after the gap'));
  }
});

test('server errors are shown: a send to a group that does not exist, a bad token', async () => {
  await front(alice);
  await alice.page.select('#nc-kind', 'g');
  await alice.page.type('#nc-id', '999999');
  await alice.page.click('#new-chat button[type="submit"]');
  await send(alice, 'is anybody there?');
  await alice.page.waitForSelector('#errors li[data-code="EC_NOT_FOUND"]', { timeout: 10000 });
  const err = await alice.page.$eval('#errors li[data-code="EC_NOT_FOUND"]', (e) => e.textContent);
  assert.match(err, /^send: EC_NOT_FOUND \(4\): .+/);
  const failed = await bubbles(alice);
  assert.equal(failed.length, 1);
  assert.match(failed[0].state, /^not sent: EC_NOT_FOUND/);

  // A token minted for device 12 does not sign in device 13: the page says
  // so and offers the sign-in form instead of retrying forever.
  const wrong = link(1, 12, 'mallory').replace('device=12', 'device=13');
  const rec = await openPage('bad-token', wrong, { width: 800, height: 600 });
  await rec.page.waitForSelector('#errors li[data-code="EC_UNAUTHENTICATED"]', { timeout: 10000 });
  await rec.page.waitForSelector('#signin:not([hidden])');
  assert.equal(await rec.page.$eval('#conn-state', (e) => e.dataset.state), 'stopped');
  await front(rec);
  await rec.page.screenshot({ path: path.join(ARTIFACTS, 'bad-token.png') });
  await rec.page.close();
  delete pages['bad-token'];
});

test('one page per device: a second tab of device 11 does not sign in', async () => {
  const rec = await openPage('second-tab', link(1, 11, 'alice'), { width: 800, height: 600 });
  await rec.page.waitForFunction(
    () => [...document.querySelectorAll('#errors li')].some((li) => li.textContent.includes('already open in another tab')),
    { ...POLL, timeout: 10000 },
  );
  await sleep(500);
  assert.equal(rec.sent.length, 0, 'the second tab sent nothing');
  await rec.page.close();
  delete pages['second-tab'];
  // The first tab kept its session.
  await openConversation(alice, 'u:2');
  await send(alice, 'still here');
  await waitBubble(bob, 'still here');
});

test('signed in elsewhere: the page stops instead of taking the session back, and can connect again', async () => {
  // gimctl signs device 11 in at its own gateway: gim-logic tells ours.
  gimctl('--url', `tcp://127.0.0.1:${ports.req}`, '--user', '1', '--device', '11', 'ping');
  // The notice, not merely the first EC_UNAUTHENTICATED: a request of the page's own that
  // was on its way (an ack) is refused too once the session has moved, and can be shown
  // first ("ack: EC_UNAUTHENTICATED ... no session for device 11", seen under ctest -j6).
  await alice.page.waitForFunction(
    () =>
      [...document.querySelectorAll('#errors li[data-code="EC_UNAUTHENTICATED"]')].some((li) =>
        /signed in elsewhere/.test(li.textContent),
      ),
    { ...POLL, timeout: 10000 },
  );
  await alice.page.waitForSelector('#conn-state[data-state="stopped"]', { timeout: 10000 });
  await sleep(1500); // longer than the first reconnect delay: none happens
  assert.equal(await alice.page.$eval('#conn-state', (e) => e.dataset.state), 'stopped');
  await front(alice);
  await alice.page.click('#reconnect');
  await online(alice);
  await send(bob, 'you are back');
  await waitBubble(alice, 'you are back');
  // The errors can be dismissed.
  await front(alice);
  while (await alice.page.$('#errors li button')) await alice.page.click('#errors li button');
  assert.equal(await alice.page.$$eval('#errors li', (l) => l.length), 0);
});

test('history after a reload: resumes after the acked seq and pages until has_more is false', async () => {
  await openConversation(alice, 'u:2');
  // Bob's page acks what it received asynchronously: read the ack once it has caught up with
  // the last message, or the page may ack one more before it closes (a busy machine: "11 !== 10").
  await until('bob to ack everything before the reload', async () =>
    (await bob.page.evaluate(() => window.gim.inbox().acked === window.gim.inbox().last)),
  );
  const ackedBefore = await bob.page.evaluate(() => window.gim.inbox().acked.toString());
  assert.notEqual(ackedBefore, '0');
  // Bob's page closes (the gateway signs device 21 out); alice writes 12 texts.
  await bob.page.close();
  const N = 12;
  for (let i = 1; i <= N; i++) await send(alice, `while you were away ${i}`);
  await waitBubble(alice, `while you were away ${N}`);
  // Bob comes back in the same browser profile: local history plus a sync.
  bob = await openPage('bob', link(2, 21, 'bob', '&to=1'), { width: 390, height: 760, isMobile: true });
  await online(bob);
  await openConversation(bob, 'u:1');
  await waitBubble(bob, `while you were away ${N}`);
  const texts = (await bubbles(bob)).map((b) => b.text);
  const expected = ['hello bob', 'hi alice', 'lost on the way', 'after the gap', 'message recalled'];
  expected.push('still here', 'you are back');
  for (let i = 1; i <= N; i++) expected.push(`while you were away ${i}`);
  assert.deepEqual(texts, expected);
  const syncs = bob.sent.filter((i) => i.type === PT.PT_SYNC).map((i) => SyncInput.decode(i.data).seq.toString());
  assert.equal(syncs[0], ackedBefore, 'the first sync after the reload starts at the acked seq');
  assert.ok(syncs.length >= Math.ceil(N / PAGE_SIZE), `${syncs.length} sync pages for ${N} messages`);
  // Each page asked from the last seq of the previous one: strictly rising.
  for (let i = 1; i < syncs.length; i++) assert.ok(BigInt(syncs[i]) > BigInt(syncs[i - 1]), syncs.join(','));
  await until('bob to ack the last page', async () =>
    (await bob.page.evaluate(() => window.gim.inbox().acked === window.gim.inbox().last)),
  );
});

test('reconnect after the gateway restarts; a send made while offline arrives once', async () => {
  assert.equal(await stopProc('gateway'), 0, 'gim-gateway exits 0 on SIGTERM');
  for (const rec of [alice, bob]) {
    await rec.page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: 15000 });
  }
  await send(bob, 'sent while offline');
  await bob.page.waitForFunction(
    () => [...document.querySelectorAll('#messages li.msg.waiting')].some((li) => li.textContent.includes('sent while offline')),
    { ...POLL, timeout: 10000 },
  );
  await startGateway();
  await online(alice);
  await online(bob);
  await waitBubble(alice, 'sent while offline', { timeout: 20000 });
  await waitBubble(bob, 'sent while offline');
  await send(alice, 'welcome back');
  await waitBubble(bob, 'welcome back');
  const texts = (await bubbles(alice)).map((b) => b.text);
  assert.equal(texts.filter((t) => t === 'sent while offline').length, 1);
  // The room subscription was renewed on reconnect.
  await openConversation(alice, 'r:30');
  await openConversation(bob, 'r:30');
  await until('both to be back in the room', async () =>
    (await alice.page.evaluate(() => window.gim.room()?.ready)) && (await bob.page.evaluate(() => window.gim.room()?.ready)),
  );
  await send(bob, 'room is back');
  await waitBubble(alice, 'room is back');
  await openConversation(alice, 'u:2');
  await openConversation(bob, 'u:1');
});

test('both pages side by side after a reload (the picture in docs/web-chat.png)', async () => {
  // One same-origin page framing alice (laptop width) and bob (phone width):
  // the frames start over from localStorage plus a sync.
  const frame = (user, device, name, to, width) =>
    `<iframe title="${name}" src="${link(user, device, name, `&to=${to}`).replace('/#', '/demo/#')}"
       style="width:${width}px;height:600px;border:1px solid #999;border-radius:8px;background:#fff"></iframe>`;
  for (const [name, rec] of [['alice', alice], ['bob', bob]]) {
    await front(rec);
    await rec.page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
    await rec.page.close();
  }
  // The frame holder must have the gateway's origin (else the frames' storage
  // is partitioned): the page without a token, which only shows its form.
  const rec = await openPage('side-by-side', `http://127.0.0.1:${ports.web}/demo/`, {
    width: 1440,
    height: 640,
  });
  await rec.page.setContent(
    `<body style="margin:0;padding:12px;display:flex;gap:16px;background:#e9ecf1;align-items:flex-start">
       ${frame(1, 11, 'alice', 2, 980)}${frame(2, 21, 'bob', 1, 400)}</body>`,
  );
  for (const f of rec.page.frames().filter((f) => f !== rec.page.mainFrame())) {
    await f.waitForSelector('#conn-state[data-state="online"]', { timeout: 15000 });
    await f.waitForFunction(
      () => [...document.querySelectorAll('#messages .body')].some((b) => b.textContent === 'welcome back'),
      { ...POLL, timeout: 10000 },
    );
  }
  await rec.page.screenshot({ path: path.join(ARTIFACTS, 'side-by-side.png') });
});

test('no page logged a JavaScript error', () => {
  for (const [name, rec] of Object.entries(pages)) {
    // The WebSocket's failed reconnect attempts while the gateway was down are expected.
    const errors = rec.errors.filter((e) => !/WebSocket connection to .* failed/.test(e));
    assert.deepEqual(errors, [], `${name}: ${errors.join('\n')}`);
  }
});
