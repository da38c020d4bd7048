// app.js: the gim web chat. Signs one device in over the gateway's WebSocket,
// syncs its inbox (paging until has_more is false, resuming after the last
// acked seq kept in localStorage), applies pushes with the seq rule, acks what
// it has shown, sends 1:1, group and room text, recalls its own messages, and
// shows every server error. Parameters come from the URL fragment, so links
// can be printed: #user=1&device=11&token=JWT[&name=alice][&to=2]
// [&names=1:alice,2:bob][&ws=ws://host:port/ws][&proto=/proto/][&recall=120].
// The page only ever holds a device token, never the secret that signs them.

import { loadProtocol, big, toLong } from './js/proto.js';
import { Connection, Disconnected } from './js/connection.js';
import { Inbox, conversationOf, MS_RECALL } from './js/inbox.js';

const $ = (id) => document.getElementById(id);
const RT_USER = 1;
const RT_GROUP = 2;
const RT_ROOM = 3;

const params = new URLSearchParams(location.hash.slice(1));
const names = new Map(
  (params.get('names') || '')
    .split(',')
    .filter(Boolean)
    .map((kv) => kv.split(':')),
);

// The Recall button shows while the sender's recall window (gim-logic's
// recall.window_seconds, 120 by default; #recall=SECONDS if yours differs) may
// still be open; the server decides, and says EC_RECALL_EXPIRED if not.
const recallWindowMs = Number(params.get('recall') || 120) * 1000;

let proto;
let conn;
let me; // { user, device, name }
let inbox;
let storageKey;
let synced = false; // the inbox sync since the last (re)connect reached has_more = false
let syncing = false;
let syncAgain = false;
let held = []; // pushes that arrived before the sync finished
let room = null; // { id: '30', inbox, ready, syncing, held }
const opened = new Set(); // conversations opened by hand (no message yet)
const unread = new Map();
let current = null;
const pending = []; // sends without a reply: { localId, requestId, conv, rtype, rid, text, status, error }
let localIds = 0;
let ackTimer = null;
let saveTimer = null;

// ---- errors and state ------------------------------------------------------

function showError(err, context) {
  const li = document.createElement('li');
  li.className = 'error';
  li.dataset.code = err.codeName || '';
  const text = document.createElement('span');
  text.textContent = `${context ? context + ': ' : ''}${err.message}`;
  const close = document.createElement('button');
  close.type = 'button';
  close.textContent = '×';
  close.setAttribute('aria-label', 'Dismiss error');
  close.onclick = () => li.remove();
  li.append(text, close);
  const list = $('errors');
  list.append(li);
  while (list.children.length > 5) list.firstElementChild.remove();
  console.warn('gim:', context, err);
}

function setConnState(state, detail) {
  const el = $('conn-state');
  el.dataset.state = state;
  const label = {
    connecting: 'connecting…',
    'signing-in': 'signing in…',
    online: 'online',
    reconnecting: 'offline, reconnecting',
    stopped: 'offline',
  }[state];
  el.textContent = state === 'reconnecting' ? `${label} ${detail}` : label;
  el.title = detail;
  document.body.classList.toggle('offline', state !== 'online');
}

// ---- names -----------------------------------------------------------------

function userName(id) {
  if (String(id) === me.user) return 'you';
  return names.get(String(id)) || `user ${id}`;
}

function convTitle(key) {
  const [kind, id] = key.split(':');
  if (kind === 'g') return `group ${id}`;
  if (kind === 'r') return `room ${id}`;
  return names.get(id) ? `${names.get(id)} (user ${id})` : `user ${id}`;
}

// ---- persistence -----------------------------------------------------------

function load() {
  try {
    return JSON.parse(localStorage.getItem(storageKey) || 'null');
  } catch {
    return null;
  }
}

function saveNow() {
  clearTimeout(saveTimer);
  const state = { inbox: inbox.toJSON(), room: room?.id ?? null, opened: [...opened], current };
  try {
    localStorage.setItem(storageKey, JSON.stringify(state));
  } catch (e) {
    showError(e, 'saving history locally');
  }
}

// Batched: a burst of pushes is written once. Acks are written at once
// (saveNow), so a reload always resumes from the last ack the server has.
function save() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(saveNow, 100);
}

// ---- inbox: sync, pushes, acks ---------------------------------------------

async function sync() {
  if (syncing) {
    syncAgain = true;
    return;
  }
  syncing = true;
  try {
    do {
      syncAgain = false;
      for (;;) {
        const data = await conn.request(
          proto.PT.PT_SYNC,
          proto.encode('SyncInput', { seq: toLong(inbox.last) }),
        );
        const page = proto.SyncOutput.decode(data);
        const msgs = page.messages.map((m) => proto.plainMessage(m));
        noteNew(inbox.applyPage(msgs));
        if (!page.hasMore || msgs.length === 0) break;
      }
    } while (syncAgain);
    synced = true;
  } catch (e) {
    if (!(e instanceof Disconnected)) showError(e, 'sync');
    return;
  } finally {
    syncing = false;
    render();
    scheduleAck();
    save();
  }
  const backlog = held;
  held = [];
  for (const m of backlog) applyInboxPush(m);
}

function applyInboxPush(m) {
  if (!synced || syncing) {
    held.push(m);
    return;
  }
  const r = inbox.applyPush(m);
  if (r === 'applied') {
    noteNew([m]);
    render();
    scheduleAck();
    save();
  } else if (r === 'gap') {
    sync(); // the gap's messages (and this one) come with the sync
  }
}

function scheduleAck() {
  clearTimeout(ackTimer);
  ackTimer = setTimeout(async () => {
    const seq = inbox.ackDue();
    if (seq === null || !conn.ready) return;
    try {
      await conn.request(
        proto.PT.PT_MESSAGE_ACK,
        proto.encode('MessageACK', { deviceAck: toLong(seq), receiveTime: toLong(BigInt(Date.now())) }),
      );
      inbox.acknowledged(seq);
      document.body.dataset.acked = inbox.acked.toString();
      saveNow();
    } catch (e) {
      if (!(e instanceof Disconnected)) showError(e, 'ack');
    }
  }, 150);
}

function noteNew(msgs) {
  for (const m of msgs) {
    if (m.recallOf) continue;
    const key = conversationOf(m, me.user);
    if (key !== current && m.senderId !== me.user) unread.set(key, (unread.get(key) || 0) + 1);
    if (!current) current = key;
  }
}

// ---- rooms -----------------------------------------------------------------

// show: open the room's conversation (a join by hand, not the rejoin after a reload).
async function joinRoom(id, show = true) {
  if (room && room.id !== id) {
    unread.delete(`r:${room.id}`);
    if (current === `r:${room.id}`) current = null;
  }
  if (!room || room.id !== id) room = { id, inbox: new Inbox(), ready: false, syncing: false, held: [] };
  if (show || !current) current = `r:${id}`;
  render();
  save();
  await roomSync();
}

// Subscribes (again) from the last room seq held, paging until has_more is false.
async function roomSync() {
  const r = room;
  if (!r || r.syncing) return;
  r.syncing = true;
  r.ready = false;
  try {
    for (;;) {
      const data = await conn.request(
        proto.PT.PT_SUBSCRIBE_ROOM,
        proto.encode('SubscribeRoomInput', { roomId: toLong(r.id), seq: toLong(r.inbox.last) }),
      );
      const page = proto.SyncOutput.decode(data);
      const msgs = page.messages.map((m) => proto.plainMessage(m));
      r.inbox.applyPage(msgs); // the room's log so far: history, not unread
      if (!page.hasMore || msgs.length === 0) break;
    }
    r.ready = true;
  } catch (e) {
    if (!(e instanceof Disconnected)) showError(e, `joining room ${r.id}`);
    return;
  } finally {
    r.syncing = false;
    render();
  }
  const backlog = r.held;
  r.held = [];
  for (const m of backlog) applyRoomPush(m);
  resendPending(true);
}

function applyRoomPush(m) {
  const r = room;
  if (!r || r.id !== m.rid) return; // a push for a room we have left
  if (!r.ready) {
    r.held.push(m);
    return;
  }
  const res = r.inbox.applyPush(m);
  if (res === 'applied') {
    noteNew([m]);
    render();
  } else if (res === 'gap') {
    roomSync();
  }
}

// ---- sending and recalling -------------------------------------------------

function sendText(text) {
  const [kind, id] = current.split(':');
  const rtype = { u: RT_USER, g: RT_GROUP, r: RT_ROOM }[kind];
  const p = {
    localId: ++localIds,
    requestId: conn.newRequestId(),
    conv: current,
    rtype,
    rid: id,
    text,
    status: 'sending',
    error: null,
  };
  pending.push(p);
  render();
  attemptSend(p);
}

async function attemptSend(p) {
  p.status = 'sending';
  try {
    const data = await conn.request(proto.PT.PT_MESSAGE, proto.textSend(p.rtype, BigInt(p.rid), p.text), {
      requestId: p.requestId,
    });
    pending.splice(pending.indexOf(p), 1);
    const m = proto.plainMessage(proto.MessageSend.decode(data).message);
    if (p.rtype === RT_ROOM) {
      if (room && room.id === m.rid && room.ready && room.inbox.applyPush(m) === 'gap') roomSync();
    } else if (synced && !syncing) {
      const r = inbox.applyPush(m);
      if (r === 'applied') scheduleAck();
      else if (r === 'gap') sync();
      save();
    } else {
      held.push(m);
    }
  } catch (e) {
    if (e instanceof Disconnected) {
      p.status = 'waiting'; // resent with the same request id after the reconnect
    } else {
      p.status = 'failed';
      p.error = e.message;
      showError(e, 'send');
    }
  }
  render();
}

// Sends that lost their connection go again with the same request id (the
// server's idempotency key), once the inbox or the room is back in step.
function resendPending(rooms) {
  for (const p of pending) {
    if (p.status === 'waiting' && p.conv.startsWith('r:') === rooms) attemptSend(p);
  }
}

async function recall(m) {
  try {
    await conn.request(proto.PT.PT_RECALL, proto.encode('RecallInput', { seq: toLong(BigInt(m.seq)) }));
    inbox.markRecalled(m.seq);
    render();
    save();
    sync(); // the recall notice took a seq in our inbox; it is not pushed to this device
  } catch (e) {
    if (!(e instanceof Disconnected)) showError(e, 'recall');
    else showError(new Error('not connected: try again when online'), 'recall');
  }
}

// ---- rendering -------------------------------------------------------------

// Batched per task with a microtask, not requestAnimationFrame: a tab in the
// background gets no animation frames, and its thread must stay current.
let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    renderConversations();
    renderThread();
  });
}

function conversations() {
  const convs = new Map();
  for (const key of opened) convs.set(key, 0);
  for (const m of inbox.messages()) convs.set(conversationOf(m, me.user), m.time);
  if (room) {
    const last = room.inbox.messages().at(-1);
    convs.set(`r:${room.id}`, last ? last.time : Date.now());
  }
  for (const p of pending) if (!convs.has(p.conv)) convs.set(p.conv, Date.now());
  if (current && !convs.has(current)) convs.set(current, Date.now());
  return [...convs.entries()].sort((a, b) => b[1] - a[1]).map(([k]) => k);
}

let shownConversations = '';
function renderConversations() {
  const ul = $('conversations');
  const keys = conversations();
  // Rebuilt only when something in it changed, so focus and clicks survive pushes.
  const signature = JSON.stringify([keys, current, [...unread]]);
  if (signature === shownConversations) return;
  shownConversations = signature;
  const focused = document.activeElement?.dataset?.conv;
  ul.replaceChildren();
  for (const key of keys) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.conv = key;
    b.textContent = convTitle(key);
    if (key === current) b.setAttribute('aria-current', 'true');
    const n = unread.get(key);
    if (n) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = n;
      badge.setAttribute('aria-label', `${n} unread`);
      b.append(' ', badge);
    }
    b.onclick = () => {
      current = key;
      unread.delete(key);
      render();
      save();
      $('text').focus();
    };
    li.append(b);
    ul.append(li);
    if (key === focused) b.focus();
  }
}

function timeText(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function bubble(m, { mine, pendingSend } = {}) {
  const li = document.createElement('li');
  li.className = `msg ${mine ? 'mine' : 'theirs'}`;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = mine ? 'you' : m.senderType === 1 ? 'system' : userName(m.senderId);
  const when = document.createElement('time');
  if (m.time) when.dateTime = new Date(m.time).toISOString();
  when.textContent = timeText(m.time);
  meta.append(who, ' ', when);
  const body = document.createElement('p');
  body.className = 'body';
  if (pendingSend) {
    li.classList.add(pendingSend.status);
    li.dataset.local = pendingSend.localId;
    body.textContent = pendingSend.text;
    const st = document.createElement('span');
    st.className = 'state';
    st.textContent = {
      sending: 'sending…',
      waiting: 'waiting for the connection…',
      failed: `not sent: ${pendingSend.error}`,
    }[pendingSend.status];
    li.append(meta, body, st);
    return li;
  }
  li.dataset.seq = m.seq;
  if (m.status === MS_RECALL) {
    li.classList.add('recalled');
    body.textContent = 'message recalled';
  } else {
    body.textContent = m.text ?? m.summary ?? '';
  }
  li.append(meta, body);
  if (mine && m.status !== MS_RECALL && m.rtype !== RT_ROOM && Date.now() - m.time < recallWindowMs) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'recall';
    b.textContent = 'Recall';
    b.setAttribute('aria-label', `Recall your message "${(m.text || '').slice(0, 40)}"`);
    b.onclick = () => recall(m);
    li.append(b);
  }
  return li;
}

function renderThread() {
  const title = $('thread-title');
  const list = $('messages');
  const form = $('composer');
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.replaceChildren();
  if (!current) {
    title.textContent = 'No conversation yet';
    form.hidden = true;
    return;
  }
  form.hidden = false;
  title.textContent = convTitle(current);
  list.dataset.conv = current;
  const msgs = current.startsWith('r:')
    ? room && `r:${room.id}` === current
      ? room.inbox.messages()
      : []
    : inbox.messages().filter((m) => conversationOf(m, me.user) === current);
  for (const m of msgs) list.append(bubble(m, { mine: m.senderId === me.user }));
  for (const p of pending) {
    if (p.conv === current) list.append(bubble({ time: 0 }, { mine: true, pendingSend: p }));
  }
  if (current.startsWith('r:') && !(room && room.ready)) {
    const li = document.createElement('li');
    li.className = 'note';
    li.textContent = 'joining…';
    list.append(li);
  }
  $('text').setAttribute('aria-label', `Message to ${convTitle(current)}`);
  if (nearBottom || list.dataset.stick !== current) list.scrollTop = list.scrollHeight;
  list.dataset.stick = current;
}

// ---- start -----------------------------------------------------------------

function wsUrl() {
  if (params.get('ws')) return params.get('ws');
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

function showSignIn(message) {
  $('signin').hidden = false;
  $('chat').hidden = true;
  $('f-user').value = params.get('user') || '';
  $('f-device').value = params.get('device') || '';
  $('f-token').value = '';
  if (message) $('signin-note').textContent = message;
}

function wireForms() {
  $('signin-form').onsubmit = (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams(location.hash.slice(1));
    p.set('user', $('f-user').value.trim());
    p.set('device', $('f-device').value.trim());
    p.set('token', $('f-token').value.trim());
    location.hash = p.toString();
    location.reload();
  };
  $('new-chat').onsubmit = (ev) => {
    ev.preventDefault();
    const id = $('nc-id').value.trim();
    if (!/^[1-9][0-9]{0,18}$/.test(id)) {
      showError(new Error('an id is a positive whole number'), 'new chat');
      return;
    }
    const key = `${$('nc-kind').value}:${id}`;
    opened.add(key);
    current = key;
    $('nc-id').value = '';
    render();
    save();
    $('text').focus();
  };
  $('join-room').onsubmit = (ev) => {
    ev.preventDefault();
    const id = $('room-id').value.trim();
    if (!/^[1-9][0-9]{0,18}$/.test(id)) {
      showError(new Error('a room id is a positive whole number'), 'join room');
      return;
    }
    $('room-id').value = '';
    joinRoom(id);
  };
  $('composer').onsubmit = (ev) => {
    ev.preventDefault();
    const text = $('text').value;
    if (!text.trim() || !current) return;
    $('text').value = '';
    sendText(text);
  };
  $('forget').onclick = () => {
    localStorage.removeItem(storageKey);
    location.reload();
  };
  $('sign-out').onclick = () => {
    conn.stop('signed out');
    const p = new URLSearchParams(location.hash.slice(1));
    p.delete('token');
    location.hash = p.toString();
    showSignIn('Signed out. The token was removed from the address.');
  };
}

async function main() {
  wireForms();
  const user = params.get('user');
  const device = params.get('device');
  const token = params.get('token');
  if (!user || !device || !token) {
    showSignIn();
    return;
  }
  me = { user, device, name: params.get('name') || names.get(user) || `user ${user}` };
  if (params.get('name')) names.set(user, params.get('name'));
  $('whoami').textContent = `${me.name} · device ${device}`;
  $('signin').hidden = true;
  $('chat').hidden = false;
  document.title = `${me.name} — gim chat`;

  try {
    proto = await loadProtocol(params.get('proto') || '/proto/');
  } catch (e) {
    showError(e, 'loading the protocol');
    setConnState('stopped', '');
    return;
  }

  storageKey = `gim-web:${user}:${device}`;
  const saved = load();
  inbox = new Inbox(saved?.inbox);
  inbox.last = inbox.acked; // resume after the last acked seq; the cached copies dedupe
  for (const k of saved?.opened ?? []) opened.add(k);
  current = saved?.current ?? null;
  if (params.get('to') && !current) {
    current = `u:${params.get('to')}`;
    opened.add(current);
  }
  const savedRoom = saved?.room;
  if (current?.startsWith('r:') && current !== `r:${savedRoom}`) current = null;
  document.body.dataset.acked = inbox.acked.toString();
  render();

  conn = new Connection({
    url: wsUrl(),
    proto,
    user,
    device,
    token,
    onError: (e, context) => showError(e, context),
    onPush: (out) => {
      if (out.type !== proto.PT.PT_MESSAGE) return;
      let m;
      try {
        m = proto.plainMessage(proto.MessageSend.decode(out.data).message);
      } catch (e) {
        showError(new Error(`undecodable push: ${e.message}`), 'push');
        return;
      }
      if (m.rtype === RT_ROOM) applyRoomPush(m);
      else applyInboxPush(m);
    },
    onReady: () => {
      synced = false;
      held = [];
      sync().then(() => resendPending(false));
      if (room) roomSync();
      else if (savedRoom) joinRoom(String(savedRoom), current === `r:${savedRoom}`);
    },
  });
  window.gim = { conn, proto, inbox: () => inbox, room: () => room, pending }; // for the console and tests
  conn.onState = (state, detail) => {
    setConnState(state, detail);
    const refused = state === 'stopped' && detail.startsWith('sign-in refused');
    if (refused) showSignIn(detail);
    $('reconnect').hidden = state !== 'stopped' || refused;
  };
  $('reconnect').onclick = () => conn.start();
  addEventListener('pagehide', () => saveTimer && saveNow());
  // One page per device: two tabs signed in as the same device would take the
  // session from each other on every reconnect. Web Locks exist in secure
  // contexts (https, localhost); elsewhere the check is skipped.
  if (navigator.locks) {
    const got = await new Promise((resolve) => {
      navigator.locks.request(`gim-device:${user}:${device}`, { ifAvailable: true }, (lock) => {
        resolve(!!lock);
        return lock ? new Promise(() => {}) : undefined; // held for the page's life
      });
    });
    if (!got) {
      setConnState('stopped', '');
      showError(
        new Error(`device ${device} is already open in another tab of this browser: use that tab, or another device id`),
        'sign-in',
      );
      return;
    }
  }
  conn.start();
}

main();
