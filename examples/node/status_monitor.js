#!/usr/bin/env node
// A status monitor that speaks mapid's wire protocol directly: no mapid library, only
// ZeroMQ (the `zeromq` package, v6) and MessagePack (`@msgpack/msgpack`). It prints what
// examples/status_monitor.py prints: every session's status table, then each change.
//
//   npm ci                              # once, in examples/node
//   node status_monitor.js              # follow until Ctrl-C
//   node status_monitor.js --once       # print the tables and stop
//   node status_monitor.js --count 5    # stop after five changes
//
// The section numbers are those of docs/protocol.md.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");

const FIRST_HEARTBEAT_MS = 1000; // 7.3 step 2
const SILENCE_MS = 3000; // 7.3 step 5: three seconds without a heartbeat means re-sync
const REPLY_TIMEOUT_MS = 5000;

// 7.2, Appendix D: the values of PR_RESOURCE_TYPE and the bits of PR_STATUS_CODE, by name.
const RESOURCE_TYPES = {
  33: "MAPI_STORE_PROVIDER",
  34: "MAPI_AB",
  35: "MAPI_AB_PROVIDER",
  36: "MAPI_TRANSPORT_PROVIDER",
  37: "MAPI_SPOOLER",
  38: "MAPI_PROFILE_PROVIDER",
  39: "MAPI_SUBSYSTEM",
  40: "MAPI_HOOK_PROVIDER",
};
const STATUS_BITS = [
  [0x00000001, "STATUS_AVAILABLE"],
  [0x00000002, "STATUS_OFFLINE"],
  [0x00000004, "STATUS_FAILURE"],
  [0x00010000, "STATUS_INBOUND_ENABLED"],
  [0x00020000, "STATUS_INBOUND_ACTIVE"],
  [0x00040000, "STATUS_INBOUND_FLUSH"],
  [0x00100000, "STATUS_OUTBOUND_ENABLED"],
  [0x00200000, "STATUS_OUTBOUND_ACTIVE"],
  [0x00400000, "STATUS_OUTBOUND_FLUSH"],
  [0x00800000, "STATUS_REMOTE_ACCESS"],
];

function parseArgs(argv) {
  const opts = { once: false, count: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--once") opts.once = true;
    else if (argv[i] === "--count" && /^[1-9][0-9]*$/.test(argv[i + 1] || "")) {
      opts.count = Number(argv[++i]);
    } else {
      const usage = "usage: node status_monitor.js [--once] [--count N]";
      if (argv[i] === "--help" || argv[i] === "-h") {
        console.log(`${usage}\n\nPrint the status tables and their changes.`);
        process.exit(0);
      }
      fail(`${usage}\nunknown argument ${argv[i]}`, 2);
    }
  }
  return opts;
}

function fail(message, code = 1) {
  console.error(`status_monitor.js: ${message}`);
  process.exit(code);
}

// 1: the runtime directory holds the connection file, mapid.json.
function runtimeDir() {
  if (process.env.MAPID_RUNTIME_DIR) return process.env.MAPID_RUNTIME_DIR;
  const xdg = process.env.XDG_RUNTIME_DIR;
  const mine = xdg && path.isAbsolute(xdg) ? path.join(xdg, "mapid") : `/tmp/mapid-${process.getuid()}`;
  // No daemon of this user, but the machine's (the system unit's) runs: use that one.
  if (!fs.existsSync(path.join(mine, "mapid.json")) && fs.existsSync("/run/mapid/mapid.json")) {
    return "/run/mapid";
  }
  return mine;
}

const hex = (bytes) => Buffer.from(bytes).toString("hex");

function show(mark, profile, row) {
  const kind = RESOURCE_TYPES[row.PR_RESOURCE_TYPE] || String(row.PR_RESOURCE_TYPE);
  const code = row.PR_STATUS_CODE >>> 0;
  const status = STATUS_BITS.filter(([bit]) => code & bit).map(([, name]) => name).join("|");
  const name = String(row.PR_DISPLAY_NAME);
  const fields = [mark, profile.padEnd(8), name.padEnd(18), kind.padEnd(22), (status || "-").padEnd(17)];
  console.log(`${fields.join(" ")} ${row.PR_STATUS_STRING || ""}`.trimEnd());
}

class Resync extends Error {}

class Monitor {
  constructor(conn, opts) {
    this.opts = opts;
    this.changes = 0;
    this.state = null; // { epoch, seq, sessions: Map(id -> SESSION), tables: Map(id -> Map) }
    // 1, 7.3 step 1: SUB on the events endpoint. "" subscribes to every topic, "hb" included.
    this.sub = new zmq.Subscriber({ linger: 0, receiveTimeout: FIRST_HEARTBEAT_MS });
    this.sub.connect(conn.events);
    this.sub.subscribe("");
    // 3: requests go over a DEALER; a routing id of our own keeps the daemon's reply cache.
    this.dealer = new zmq.Dealer({
      linger: 0,
      receiveTimeout: REPLY_TIMEOUT_MS,
      routingId: `node-monitor-${crypto.randomBytes(6).toString("hex")}`,
    });
    this.dealer.connect(conn.request);
    this.ids = 0;
  }

  close() {
    this.sub.close();
    this.dealer.close();
  }

  // 3: two frames out (empty delimiter, payload), two frames back; match the reply by `id`.
  async call(op, args) {
    const id = `node-${++this.ids}`;
    await this.dealer.send(["", encode({ v: 1, id, op, args })]);
    for (;;) {
      const frames = await this.dealer.receive(); // rejects after REPLY_TIMEOUT_MS
      const reply = decode(frames[frames.length - 1]);
      if (reply.id !== id) continue; // a late answer to an earlier request, or a notification
      if (!reply.ok) throw new Error(`${op}: ${reply.error.code}: ${reply.error.message}`);
      return reply.result;
    }
  }

  // 7.3 steps 3 and 4: the snapshot, in parts when it is big (6.1 `next`).
  async snapshot() {
    let part = await this.call("daemon.snapshot", { prefix: "" });
    const state = { epoch: part.epoch, seq: part.seq, sessions: new Map(), tables: new Map() };
    for (;;) {
      for (const info of part.sessions) state.sessions.set(info.session, info);
      for (const [id, rows] of Object.entries(part.status)) {
        state.tables.set(id, new Map(rows.map((row) => [hex(row.PR_INSTANCE_KEY), row])));
      }
      if (!part.next) break;
      part = await this.call("daemon.snapshot", { cursor: part.next });
    }
    this.state = state;
    this.lastHeartbeat = Date.now();
  }

  // 7.1, 7.3 step 5: apply one event, or throw Resync when the stream cannot be trusted.
  apply(topic, event) {
    const state = this.state;
    if (event.epoch !== state.epoch) throw new Resync(`the daemon restarted (epoch ${event.epoch})`);
    if (topic === "hb") {
      this.lastHeartbeat = Date.now();
      if (event.seq > state.seq) throw new Resync(`lost events ${state.seq + 1}..${event.seq}`);
      return;
    }
    if (event.seq <= state.seq) return; // already in the snapshot
    if (event.seq !== state.seq + 1) throw new Resync(`lost events ${state.seq + 1}..${event.seq - 1}`);
    state.seq = event.seq;
    const [kind, id] = [topic.slice(0, topic.indexOf(".")), event.session];
    if (kind === "session") {
      if (event.type === "logoff") {
        state.sessions.delete(id);
        state.tables.delete(id);
      } else {
        state.sessions.set(id, event.info);
        if (!state.tables.has(id)) state.tables.set(id, new Map());
      }
      if (event.type === "logon" || event.type === "logoff") {
        this.print(() => console.log(`${event.type} ${event.info.profile} ${id}`));
      }
    } else if (kind === "status") {
      const table = state.tables.get(id) || new Map();
      state.tables.set(id, table);
      const profile = (state.sessions.get(id) || {}).profile || "?";
      const key = hex(event.instance_key || []);
      if (event.type === "TABLE_ROW_ADDED" || event.type === "TABLE_ROW_MODIFIED") {
        table.set(key, event.row);
        this.print(() => show(event.type === "TABLE_ROW_ADDED" ? "+" : "~", profile, event.row));
      } else if (event.type === "TABLE_ROW_DELETED") {
        table.delete(key);
        this.print(() => console.log(`- ${profile.padEnd(8)} row ${key}`));
      } else if (event.type === "TABLE_RELOAD") {
        state.tables.set(id, new Map(event.rows.map((row) => [hex(row.PR_INSTANCE_KEY), row])));
      }
    }
  }

  print(line) {
    if (this.opts.count !== null && this.changes >= this.opts.count) return;
    line();
    this.changes++;
  }

  done() {
    return this.opts.count !== null && this.changes >= this.opts.count;
  }

  async receive() {
    try {
      const [topic, payload] = await this.sub.receive();
      return [topic.toString("utf8"), decode(payload)];
    } catch (err) {
      if (err.code === "EAGAIN") return null; // nothing within receiveTimeout
      throw err;
    }
  }

  async run() {
    // 7.3 step 2: wait for the first heartbeat (at most a second). Events that come before
    // it are kept; those after it wait in the socket's queue until the snapshot is loaded.
    const kept = [];
    for (const end = Date.now() + FIRST_HEARTBEAT_MS; Date.now() < end; ) {
      const got = await this.receive();
      if (got === null || got[0] === "hb") break;
      kept.push(got);
    }
    await this.snapshot();
    for (const [id, info] of this.state.sessions) {
      const rows = [...(this.state.tables.get(id) || new Map()).values()];
      rows.sort((a, b) => a.PR_ROWID - b.PR_ROWID);
      for (const row of rows) show(" ", info.profile, row);
    }
    console.log(`-- ${this.state.sessions.size} session(s); following changes`);
    if (this.opts.once) return;
    while (!this.done()) {
      const got = kept.length ? kept.shift() : await this.receive();
      try {
        if (got !== null) this.apply(got[0], got[1]);
        if (Date.now() - this.lastHeartbeat > SILENCE_MS) throw new Resync("no heartbeat for 3 s");
      } catch (err) {
        if (!(err instanceof Resync)) throw err;
        console.error(`status_monitor.js: ${err.message}: taking a new snapshot`);
        await this.snapshot(); // 7.3 step 5: back to step 3
      }
    }
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const file = path.join(runtimeDir(), "mapid.json");
  let conn;
  try {
    conn = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    fail(`no daemon is running: no connection file ${file} (start one with \`mapid run\`)`);
  }
  if (conn.protocol !== 1) fail(`the daemon speaks protocol ${conn.protocol}, not 1`);
  const monitor = new Monitor(conn, opts);
  process.on("SIGINT", () => {
    monitor.close();
    process.exit(0);
  });
  try {
    await monitor.run();
  } catch (err) {
    fail(err.code === "EAGAIN" ? "the daemon did not answer daemon.snapshot" : err.message);
  } finally {
    monitor.close();
  }
}

main();
