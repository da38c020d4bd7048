// Unit tests of web/js/inbox.js, the web chat's seq rule (docs/protocol.md,
// "Push"): pages applied whole, a push applied only at last + 1, a gap
// reported so the page syncs, recall notices, acks and what survives a reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Inbox, conversationOf, MS_RECALL } from '../../web/js/inbox.js';

const msg = (seq, extra = {}) => ({
  seq: String(seq),
  senderId: '1',
  rtype: 1,
  rid: '2',
  type: 1,
  status: 1,
  text: `m${seq}`,
  recallOf: null,
  ...extra,
});

test('a push is applied only when it is the next seq; a higher one is a gap', () => {
  const inbox = new Inbox();
  assert.equal(inbox.applyPush(msg(1)), 'applied');
  assert.equal(inbox.applyPush(msg(3)), 'gap');
  assert.equal(inbox.last, 1n);
  assert.deepEqual(inbox.messages().map((m) => m.seq), ['1']);
  assert.equal(inbox.applyPush(msg(1)), 'duplicate');
  assert.equal(inbox.applyPush(msg(2)), 'applied');
  assert.equal(inbox.applyPush(msg(3)), 'applied');
  assert.equal(inbox.last, 3n);
});

test('a sync page is applied whole and moves last to its highest seq', () => {
  const inbox = new Inbox();
  const applied = inbox.applyPage([msg(4), msg(5), msg(6)]);
  assert.equal(applied.length, 3);
  assert.equal(inbox.last, 6n);
  assert.equal(inbox.applyPush(msg(7)), 'applied');
});

test('seqs beyond 2^53 keep their precision', () => {
  const inbox = new Inbox();
  inbox.applyPage([msg('9007199254740993')]);
  assert.equal(inbox.applyPush(msg('9007199254740994')), 'applied');
  assert.equal(inbox.applyPush(msg('9007199254740996')), 'gap');
  assert.equal(inbox.last.toString(), '9007199254740994');
});

test('a recall notice marks its target recalled and is not a bubble', () => {
  const inbox = new Inbox();
  inbox.applyPage([msg(1), msg(2)]);
  assert.equal(inbox.applyPush(msg(3, { type: 7, text: null, recallOf: '1' })), 'applied');
  const shown = inbox.messages();
  assert.deepEqual(shown.map((m) => m.seq), ['1', '2']);
  assert.equal(shown[0].status, MS_RECALL);
  assert.equal(shown[0].text, null);
  assert.equal(shown[1].text, 'm2');
});

test('acks: due after applying, not again once acknowledged, survive a reload', () => {
  const inbox = new Inbox();
  assert.equal(inbox.ackDue(), null);
  inbox.applyPage([msg(1), msg(2)]);
  assert.equal(inbox.ackDue(), 2n);
  inbox.acknowledged(2n);
  assert.equal(inbox.ackDue(), null);
  inbox.applyPush(msg(3));
  const again = new Inbox(JSON.parse(JSON.stringify(inbox.toJSON())));
  assert.equal(again.acked, 2n);
  assert.equal(again.last, 3n);
  assert.deepEqual(again.messages().map((m) => m.text), ['m1', 'm2', 'm3']);
  // Resuming from the ack re-syncs seq 3: the page dedupes it, with the
  // server's current status.
  again.last = again.acked;
  const applied = again.applyPage([msg(3, { status: MS_RECALL, text: null })]);
  assert.equal(applied.length, 0);
  assert.equal(again.messages().at(-1).status, MS_RECALL);
  assert.equal(again.last, 3n);
});

test('conversations: the peer for 1:1 in both directions, the group, the room', () => {
  assert.equal(conversationOf(msg(1, { senderId: '1', rid: '2' }), '1'), 'u:2');
  assert.equal(conversationOf(msg(1, { senderId: '2', rid: '1' }), '1'), 'u:2');
  assert.equal(conversationOf(msg(1, { rtype: 2, rid: '9' }), '1'), 'g:9');
  assert.equal(conversationOf(msg(1, { rtype: 3, rid: '30' }), '1'), 'r:30');
});
