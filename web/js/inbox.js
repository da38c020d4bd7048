// inbox.js: a device's local copy of one sequence of messages — the user's
// inbox, or one room's log — and the seq rule of docs/protocol.md:
//   * a page (sync or room subscribe) is applied whole;
//   * a push is applied only if its seq is exactly last + 1; a higher seq is a
//     gap (something was dropped) and the caller syncs from `last`;
//   * a recall notice (MT_COMMAND, Command code 1, RecallInput{seq}) turns the
//     message at that seq into "recalled".
// Messages are the plain objects of proto.js (seqs as decimal strings). No DOM
// and no network here, so it is tested in Node (tests/web/inbox.test.mjs).

export const MT_COMMAND = 7;
export const MS_RECALL = 2;
const KEEP = 1000; // messages kept locally (and in localStorage) per inbox

export class Inbox {
  // saved: what toJSON() returned earlier, or undefined for a fresh device.
  constructor(saved) {
    this.last = BigInt(saved?.last ?? 0); // highest seq applied
    this.acked = BigInt(saved?.acked ?? 0); // highest seq the server has our ack for
    this.bySeq = new Map();
    for (const m of saved?.messages ?? []) this.bySeq.set(m.seq, m);
  }

  toJSON() {
    return {
      last: this.last.toString(),
      acked: this.acked.toString(),
      messages: [...this.bySeq.values()],
    };
  }

  // Applies one page of a sync; returns the messages newly applied. A page's
  // messages all come after the seq it was asked from, in ascending order.
  applyPage(messages) {
    const applied = [];
    for (const m of messages) {
      if (this.bySeq.has(m.seq) && !m.recallOf) {
        // A re-synced message (e.g. after a reload from the acked seq): keep
        // the server's status, which may be "recalled" by now.
        this.store(m);
      } else {
        this.store(m);
        applied.push(m);
      }
      if (BigInt(m.seq) > this.last) this.last = BigInt(m.seq);
    }
    this.trim();
    return applied;
  }

  // A push (or a send reply's own copy): 'applied', 'duplicate' or 'gap'.
  applyPush(m) {
    const seq = BigInt(m.seq);
    if (seq <= this.last) return 'duplicate';
    if (seq !== this.last + 1n) return 'gap';
    this.store(m);
    this.last = seq;
    this.trim();
    return 'applied';
  }

  store(m) {
    this.bySeq.set(m.seq, m);
    if (m.recallOf) this.markRecalled(m.recallOf);
  }

  markRecalled(seq) {
    const target = this.bySeq.get(String(seq));
    if (!target) return null;
    target.status = MS_RECALL;
    target.text = null;
    target.summary = null;
    return target;
  }

  // The ack to send now, or null if the server already has it.
  ackDue() {
    return this.last > this.acked ? this.last : null;
  }

  acknowledged(seq) {
    if (seq > this.acked) this.acked = seq;
  }

  // Visible messages (recall notices are not bubbles), ascending.
  messages() {
    return [...this.bySeq.values()]
      .filter((m) => !m.recallOf)
      .sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
  }

  trim() {
    if (this.bySeq.size <= KEEP) return;
    const seqs = [...this.bySeq.keys()].map(BigInt).sort((a, b) => (a < b ? -1 : 1));
    for (const s of seqs.slice(0, seqs.length - KEEP)) this.bySeq.delete(s.toString());
  }
}

// The conversation a message belongs to, seen from user `me`:
// 'u:<peer>' for 1:1, 'g:<group>' for groups, 'r:<room>' for rooms.
export function conversationOf(m, me) {
  if (m.rtype === 2) return `g:${m.rid}`;
  if (m.rtype === 3) return `r:${m.rid}`;
  return `u:${m.senderId === String(me) ? m.rid : m.senderId}`;
}
