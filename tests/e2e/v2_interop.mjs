// WAMP v2 interop: AutobahnJS 26 and wampy 8 use the demo with json, msgpack and cbor: RPC,
// pub/sub, disclosure, black/white listing, progressive results, patterns, call canceling,
// retained events, the meta API, shared registrations, call timeouts, event history,
// testaments and (on the demo with --auth, when its URL is given) cryptosign.
// usage: node v2_interop.mjs ws://HOST:PORT/ws [ws://AUTH_HOST:PORT/ws]
// Prints one JSON object: {autobahnjs: {json: {...}, ...}, wampy: {json: {...}, ...}}.
import WebSocket from 'ws';
import autobahn from 'autobahn';
import { Wampy } from 'wampy';
import { JsonSerializer } from 'wampy/JsonSerializer.js';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';
import { sign as wampySign } from 'wampy/cryptosign.js';

// AutobahnJS looks for a global WebSocket when it connects (Node 20 has none): ws's, which
// also notes the close frames the client sends itself, so that a session AutobahnJS fails
// (3002 "protocol violation: ...") says why.
const clientCloses = [];
class TracedWebSocket extends WebSocket {
  close(code, reason) {
    // Only the first: ws calls close() again itself to answer the router's close frame.
    if (!this.traced) clientCloses.push([code ?? null, String(reason ?? '')]);
    this.traced = true;
    return super.close(code, reason);
  }
}
globalThis.WebSocket = TracedWebSocket;

const url = process.argv[2];
// The demo with --auth (app::auth_router()), for cryptosign.
const authUrl = process.argv[3];
// erin's published test seed (README, examples/demo/app.rs), and a key that is nobody's.
const ERIN_SEED = '74a554360f01f441eae521d3b18e07639c4e0e440dd15689468352fe886d7837';
const STRANGER_SEED = '11'.repeat(32);
const within = (ms, p) => Promise.race([p, new Promise((_, no) => setTimeout(() => no(new Error('timeout')), ms))]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Polls until `test()` is true (at most `ms`).
async function until(ms, test) {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error('timeout waiting for a condition');
    await sleep(10);
  }
}
// One feature's results, or {failed} with why: one feature failing does not hide the others.
async function step(ms, f) {
  try { return await within(ms, f()); } catch (e) { return { failed: String(e?.errorUri ?? e?.error ?? e?.message ?? e) }; }
}
// What a call ends with: its first result, or its error URI (AutobahnJS's `error`, wampy's
// `errorUri`).
const outcome = (p) => p.then((r) => r?.argsList?.[0] ?? r, (e) => e?.errorUri ?? e?.error ?? String(e));
// Ids as strings: wampy's MessagePack decoder may give a 64-bit integer as a BigInt.
const sameId = (a, b) => String(a) === String(b);
// An event from wamp.subscription.get_events with its ids as strings (see sameId), every
// other key as the library decoded it.
function historyEvent(event) {
  const out = { ...event };
  for (const key of ['subscription', 'publication', 'publisher']) {
    if (key in out) out[key] = String(out[key]);
  }
  return out;
}
// Who published a testament's event: the name in `ids` (session ids as strings) of its publisher.
const whose = (ids, publisher) => Object.keys(ids).find((k) => ids[k] === String(publisher)) ?? String(publisher);

function autobahnSession(serializer) {
  const serializers = {
    json: new autobahn.serializer.JSONSerializer(),
    msgpack: new autobahn.serializer.MsgpackSerializer(),
    cbor: new autobahn.serializer.CBORSerializer(),
  };
  const connection = new autobahn.Connection({ url, realm: 'realm1', serializers: [serializers[serializer]], max_retries: 0 });
  let onClosed;
  const closed = new Promise((resolve) => { onClosed = resolve; });
  return new Promise((resolve, reject) => {
    connection.onopen = (session) => resolve({ session, connection, closed });
    connection.onclose = (reason, details) => {
      onClosed([reason, details?.reason ?? null]);
      reject(new Error(`closed: ${reason}`));
    };
    connection.open();
  });
}

// Leaves (GOODBYE) and waits until the connection is closed.
async function closeAutobahn({ connection, closed }) {
  try { connection.close(); } catch (e) { /* already closed */ }
  await within(5000, closed);
}

async function withAutobahn(serializer) {
  const out = {};
  const main = await within(5000, autobahnSession(serializer));
  const { session } = main;
  out.session = session.id > 0;
  out.add = await session.call('com.example.add', [1, 2, 39]);
  out.echo = await session.call('com.example.echo', [{ k: [1, 'ü'] }]);
  try { await session.call('com.example.add', ['x']); } catch (e) { out.add_error = e.error; }
  try { await session.call('com.example.nothing'); } catch (e) { out.notfound = e.error; }
  // A procedure of its own, called by itself through the router.
  // The demo names the caller to the callee and the publisher to subscribers.
  let caller;
  await session.register('com.example.js.mul', (args, kwargs, details) => {
    caller = [details.caller === session.id, details.caller_authrole];
    return new autobahn.Result([args[0] * args[1]], kwargs);
  });
  const mul = await session.call('com.example.js.mul', [6, 7], { unit: 'm' });
  out.mul = [mul.args, mul.kwargs];
  out.caller = caller;
  const got = new Promise((resolve) => session.subscribe('com.example.chat', (args, kwargs, details) => {
    out.publisher = [details.publisher === session.id, details.publisher_authrole];
    resolve([args, kwargs]);
  }));
  await new Promise((r) => setTimeout(r, 50));
  await session.publish('com.example.chat', ['hello from AutobahnJS'], {}, { acknowledge: true, exclude_me: false });
  out.chat = await within(5000, got);
  // The audience by authrole: 1 excludes this session's role, 2 admits only it, 3 ends.
  const audience = [];
  const end = new Promise((resolve) => session.subscribe('com.example.audience', (args) => {
    audience.push(args[0]);
    if (args[0] === 3) resolve();
  }));
  await new Promise((r) => setTimeout(r, 50));
  const own = { acknowledge: true, exclude_me: false };
  await session.publish('com.example.audience', [1], {}, { ...own, exclude_authrole: ['anonymous'] });
  await session.publish('com.example.audience', [2], {}, { ...own, eligible_authrole: ['anonymous'] });
  await session.publish('com.example.audience', [3], {}, own);
  await within(5000, end);
  out.audience = audience;
  // Progressive results (AutobahnJS reports them as the promise's progress).
  const countdown = [];
  const liftoff = await session.call('com.example.countdown', [3], {}, { receive_progress: true })
    .then((r) => r, (e) => { throw e; }, (n) => countdown.push(n));
  out.countdown = [countdown, liftoff];
  // Pattern-based subscription and registration.
  const patternEvent = new Promise((resolve) => session.subscribe('com.example.js.pat.', (args, kwargs, details) => {
    resolve([details.topic, args[0]]);
  }, { match: 'prefix' }));
  await new Promise((r) => setTimeout(r, 50));
  await session.publish('com.example.js.pat.x', [1], {}, own);
  const pattern = [await within(5000, patternEvent)];
  await session.register('com.example.js.rpc.', (args, kwargs, details) => details.procedure, { match: 'prefix' });
  pattern.push(await session.call('com.example.js.rpc.any'));
  out.pattern = pattern;
  out.cancel = await step(15000, () => autobahnCancel(serializer, session));
  out.retained = await step(5000, () => autobahnRetained(serializer, session));
  out.meta = await step(5000, () => autobahnMeta(serializer, session));
  out.shared = await step(5000, () => autobahnShared(serializer, session));
  out.timeout = await step(5000, () => autobahnTimeout(serializer, session));
  out.history = await step(5000, () => autobahnHistory(serializer, session));
  out.testament = await step(8000, () => autobahnTestament(serializer, session));
  out.cryptosign = authUrl ? await step(8000, () => autobahnCryptosign(serializer)) : { skipped: true };
  await closeAutobahn(main);
  return out;
}

// AutobahnJS's call(), for a session that may have been closed (it throws then).
function jsCall(session, ...args) {
  try { return outcome(session.call(...args)); } catch (e) { return Promise.resolve(String(e)); }
}

// A call to the demo's countdown from 100 (2 s), and a promise of its first progressive result.
function autobahnCountdown(session) {
  let first;
  const started = new Promise((resolve) => { first = resolve; });
  const call = session.call('com.example.countdown', [100], {}, { receive_progress: true });
  const ended = outcome(call.then((r) => r, (e) => { throw e; }, (n) => first(n)));
  return { call, started, ended };
}

// Call canceling. AutobahnJS 26 cancels with the call promise's cancel({mode}) and sends the
// mode it is given ({} without one). Unless the mode is `kill` it rejects the call itself
// ("Cancelled") and forgets it, so the router's ERROR wamp.error.canceled (which the spec has
// the router send at once in `skip` and `killnowait`) reaches a session that no longer knows
// the request, and AutobahnJS fails that session (a close 3002 "protocol violation: CALL-ERROR
// received for non-pending request ID ..."): only `kill` lets its caller see
// wamp.error.canceled, and the other modes run on sessions of their own, whose failing shows
// that the router sent the ERROR. AutobahnJS's callee announces no call_canceling and has no
// INTERRUPT handler (it would fail its session on one), so it cannot show an INTERRUPT: the
// router must treat every mode as `skip` for it, which its staying open shows.
async function autobahnCancel(serializer, session) {
  const out = {};
  // The demo's own handler, cancelled once its first progressive result came.
  const countdown = autobahnCountdown(session);
  const first = await within(2000, countdown.started);
  countdown.call.cancel({ mode: 'kill' });
  out.countdown_kill = [first, await within(2000, countdown.ended)];
  out.countdown_local = {};
  for (const mode of ['', 'skip', 'killnowait']) {
    const own = await within(5000, autobahnSession(serializer));
    clientCloses.length = 0;
    const c = autobahnCountdown(own.session);
    await within(2000, c.started);
    c.call.cancel(mode ? { mode } : undefined);
    const local = await within(2000, c.ended);
    const [closed] = await within(2000, own.closed);
    const sent = clientCloses.map(([code, why]) => [code, why.replace(/\d+$/, 'N')]);
    out.countdown_local[mode || 'none'] = [local, closed, sent];
  }
  // A callee of AutobahnJS's that answers 300 ms after it is invoked, cancelled in `kill`
  // mode once invoked: the caller gets wamp.error.canceled at once and the late YIELD is
  // dropped (AutobahnJS would fail the caller's session on a RESULT for a call it no longer
  // has); the callee gets no INTERRUPT (it would fail its own).
  const callee = await within(5000, autobahnSession(serializer));
  let invoked;
  let answered = false;
  const procedure = `com.example.js.slow.${serializer}`;
  await callee.session.register(procedure, async () => {
    invoked();
    await sleep(300);
    answered = true;
    return 'late';
  });
  const started = new Promise((resolve) => { invoked = resolve; });
  const slow = session.call(procedure);
  const ended = outcome(slow);
  await within(2000, started);
  slow.cancel({ mode: 'kill' });
  const canceled = await within(2000, ended);
  const early = !answered;
  await until(2000, () => answered);
  await sleep(100);
  out.callee_kill = [
    canceled,
    early,
    session.isOpen,
    callee.session.isOpen,
    await jsCall(session, 'com.example.add', [1, 1]),
    await jsCall(callee.session, 'com.example.add', [2, 2]),
  ];
  await closeAutobahn(callee);
  return out;
}

// Retained events: two retained publications (the second replaces the first), then a new
// session subscribes with get_retained and gets the second at once (details.retained true),
// then the live one; a subscription without get_retained gets only the live one.
async function autobahnRetained(serializer, session) {
  const topic = `com.example.js.retained.${serializer}`;
  const own = { acknowledge: true, exclude_me: false };
  await session.publish(topic, ['first'], {}, { ...own, retain: true });
  await session.publish(topic, ['second'], {}, { ...own, retain: true });
  const later = await within(5000, autobahnSession(serializer));
  const got = [];
  await later.session.subscribe(topic, (args, kwargs, details) => got.push([args[0], details.retained]), { get_retained: true });
  const plain = [];
  await session.subscribe(topic, (args, kwargs, details) => plain.push([args[0], details.retained]));
  await until(2000, () => got.length >= 1);
  await session.publish(topic, ['live'], {}, own);
  await until(2000, () => got.length >= 2 && plain.length >= 1);
  await sleep(50);
  await closeAutobahn(later);
  return { later: got, plain };
}

// The meta API: another session's join, the session list, count and details, and the
// lookups of the other session's subscriptions and registrations.
async function autobahnMeta(serializer, session) {
  const out = {};
  const joins = [];
  await session.subscribe('wamp.session.on_join', (args) => joins.push(args[0]));
  const other = await within(5000, autobahnSession(serializer));
  const id = other.session.id;
  await until(2000, () => joins.some((d) => sameId(d.session, id)));
  const joined = joins.find((d) => sameId(d.session, id));
  out.on_join = [joined.authrole, joined.authmethod, joined.transport?.protocol];
  const list = await session.call('wamp.session.list');
  const count = await session.call('wamp.session.count');
  out.sessions = [
    list.some((s) => sameId(s, session.id)),
    list.some((s) => sameId(s, id)),
    Number(count) === list.length,
  ];
  const got = await session.call('wamp.session.get', [id]);
  out.get = [sameId(got.session, id), got.authrole, got.authmethod, got.transport?.protocol];
  const topic = `com.example.js.meta.${serializer}`;
  const prefix = `com.example.js.metap.${serializer}.`;
  const sub = await other.session.subscribe(topic, () => {});
  const psub = await other.session.subscribe(prefix, () => {}, { match: 'prefix' });
  out.subscription = [
    sameId(await session.call('wamp.subscription.lookup', [topic]), sub.id),
    sameId(await session.call('wamp.subscription.lookup', [prefix, { match: 'prefix' }]), psub.id),
    await session.call('wamp.subscription.lookup', [`com.example.js.metanone.${serializer}`]),
    (await session.call('wamp.subscription.list_subscribers', [sub.id])).map((s) => sameId(s, id)),
  ];
  const procedure = `com.example.js.meta.rpc.${serializer}`;
  const reg = await other.session.register(procedure, () => 0);
  const preg = await other.session.register(`${prefix}rpc.`, () => 0, { match: 'prefix' });
  out.registration = [
    sameId(await session.call('wamp.registration.lookup', [procedure]), reg.id),
    sameId(await session.call('wamp.registration.match', [procedure]), reg.id),
    sameId(await session.call('wamp.registration.match', [`${prefix}rpc.x`]), preg.id),
    await session.call('wamp.registration.lookup', [`com.example.js.metanone.${serializer}`]),
  ];
  await closeAutobahn(other);
  return out;
}

// Shared registrations: two sessions register one procedure `roundrobin` (one registration
// id), a third asking for `random` is refused, and calls alternate in registration order.
async function autobahnShared(serializer, session) {
  const procedure = `com.example.js.shared.${serializer}`;
  const b = await within(5000, autobahnSession(serializer));
  const c = await within(5000, autobahnSession(serializer));
  const rb = await b.session.register(procedure, () => 'b', { invoke: 'roundrobin' });
  const rc = await c.session.register(procedure, () => 'c', { invoke: 'roundrobin' });
  const refused = await session.register(procedure, () => 'a', { invoke: 'random' })
    .then(() => 'registered', (e) => e?.error ?? String(e));
  const calls = [];
  for (let i = 0; i < 4; i += 1) calls.push(await jsCall(session, procedure));
  await closeAutobahn(b);
  await closeAutobahn(c);
  return { same_id: sameId(rb.id, rc.id), refused, calls };
}

// A call with a timeout (AutobahnJS passes CALL options as given) to a callee that never
// answers: wamp.error.timeout after the timeout; the callee (no call_canceling) gets no
// INTERRUPT and stays open.
async function autobahnTimeout(serializer, session) {
  const callee = await within(5000, autobahnSession(serializer));
  let invoked = 0;
  const procedure = `com.example.js.silent.${serializer}`;
  await callee.session.register(procedure, () => {
    invoked += 1;
    return new Promise(() => {});
  });
  const t0 = Date.now();
  const error = await jsCall(session, procedure, [], {}, { timeout: 200 });
  const elapsed = Date.now() - t0;
  await sleep(50);
  const out = [error, elapsed >= 200 && elapsed < 2000, invoked, callee.session.isOpen];
  await closeAutobahn(callee);
  return out;
}

// Event history: three acknowledged publications on a topic the demo keeps history for (the
// second with kwargs), then a new session subscribes and asks
// wamp.subscription.get_events(subscription, 2): the two newest, newest first.
async function autobahnHistory(serializer, session) {
  const topic = `com.example.js.history.${serializer}`;
  const ack = { acknowledge: true };
  const published = [];
  published.push((await session.publish(topic, [1, 'one'], null, ack)).id);
  published.push((await session.publish(topic, [2, 'two'], { k: 'v' }, ack)).id);
  published.push((await session.publish(topic, [3, 'three'], null, ack)).id);
  const later = await within(5000, autobahnSession(serializer));
  const sub = await later.session.subscribe(topic, () => {});
  const events = await later.session.call('wamp.subscription.get_events', [sub.id, 2]);
  await closeAutobahn(later);
  return {
    topic,
    subscription: String(sub.id),
    publisher: String(session.id),
    publications: published.map(String),
    events: Array.isArray(events) ? events.map(historyEvent) : events,
  };
}

// Testaments (wamp.session.add_testament) of three sessions on a topic the main session
// subscribes to: A's connection dropped without GOODBYE (AutobahnJS's transport closed under
// its open session) and D's GOODBYE publish theirs; C flushes its own
// (wamp.session.flush_testaments) before its GOODBYE, so the main session's next event on the
// topic is its own marker, published after C left.
async function autobahnTestament(serializer, session) {
  const topic = `com.example.js.will.${serializer}`;
  const ids = { main: String(session.id) };
  const events = [];
  await session.subscribe(topic, (args, kwargs, details) => events.push([args, whose(ids, details.publisher)]));
  const added = [];
  const a = await within(5000, autobahnSession(serializer));
  ids.a = String(a.session.id);
  added.push(await a.session.call('wamp.session.add_testament', [topic, [1], {}]) ?? null);
  a.connection._transport.close(1000);
  const [aClosed] = await within(2000, a.closed);
  await until(2000, () => events.length >= 1);
  const d = await within(5000, autobahnSession(serializer));
  ids.d = String(d.session.id);
  added.push(await d.session.call('wamp.session.add_testament', [topic, [2], {}]) ?? null);
  await closeAutobahn(d);
  await until(2000, () => events.length >= 2);
  const c = await within(5000, autobahnSession(serializer));
  ids.c = String(c.session.id);
  added.push(await c.session.call('wamp.session.add_testament', [topic, [3], {}]) ?? null);
  const flushed = await c.session.call('wamp.session.flush_testaments');
  await closeAutobahn(c);
  await session.publish(topic, ['marker'], null, { acknowledge: true, exclude_me: false });
  await until(2000, () => events.some(([args]) => args[0] === 'marker'));
  await sleep(100);
  return { added, a_closed: aClosed, flushed, events };
}

// Cryptosign on the demo with --auth, with AutobahnJS's own auth_cryptosign: its
// create_connection (authid, authmethods ["cryptosign"], authextra.pubkey, the challenge
// signed by sign_challenge) for erin's key and for a stranger's, and a Connection announcing
// erin's public key whose challenge a stranger's key signs.
async function autobahnCryptosign(serializer) {
  const cs = autobahn.auth_cryptosign;
  const keyPair = (seed) => autobahn.nacl.sign.keyPair.fromSeed(autobahn.util.htob(seed));
  const serializers = {
    json: () => new autobahn.serializer.JSONSerializer(),
    msgpack: () => new autobahn.serializer.MsgpackSerializer(),
    cbor: () => new autobahn.serializer.CBORSerializer(),
  };
  // What WELCOME said and the demo's add (guests may not call it), or how the session closed.
  const attempt = (connection) => within(5000, new Promise((resolve) => {
    connection.onopen = async (session, details) => {
      const add = await outcome(session.call('com.example.add', [1, 2, 39]));
      connection.onclose = () => resolve({ welcome: [details.authid, details.authrole, details.authmethod], add });
      connection.close();
    };
    connection.onclose = (reason, details) => {
      resolve({ closed: [reason, details?.reason ?? null] });
    };
    connection.open();
  }));
  const helper = (seed) => cs.create_connection({
    url: authUrl, realm: 'realm1', authid: 'erin', pkey: keyPair(seed), serializers: [serializers[serializer]()],
  });
  const erin = await attempt(helper(ERIN_SEED));
  const stranger = await attempt(helper(STRANGER_SEED));
  const forger = keyPair(STRANGER_SEED);
  const forged = await attempt(new autobahn.Connection({
    url: authUrl,
    realm: 'realm1',
    serializers: [serializers[serializer]()],
    max_retries: 0,
    authid: 'erin',
    authmethods: ['cryptosign'],
    authextra: { pubkey: cs.public_key(keyPair(ERIN_SEED)) },
    onchallenge: (session, method, extra) => cs.sign_challenge(forger, extra),
  }));
  return { erin, stranger, forged };
}

async function wampySession(serializer) {
  const serializers = { json: new JsonSerializer(), msgpack: new MsgpackSerializer(), cbor: new CborSerializer() };
  const w = new Wampy(url, { realm: 'realm1', ws: WebSocket, serializer: serializers[serializer], autoReconnect: false });
  await within(5000, w.connect());
  return w;
}

async function withWampy(serializer) {
  const out = {};
  const a = await wampySession(serializer);
  const b = await wampySession(serializer);
  out.session = Number(a.getSessionId()) > 0;
  out.add = (await a.call('com.example.add', [1, 2, 39])).argsList;
  try { await a.call('com.example.add', ['x']); } catch (e) { out.add_error = e.error; }
  // wampy's own SUBSCRIBE options, {match: undefined}, as it sends them.
  const got = new Promise((resolve) => a.subscribe('com.example.chat', (e) => {
    // As strings: wampy's MessagePack decoder may give a 64-bit integer as a BigInt.
    out.publisher = [String(e.details.publisher) === String(b.getSessionId()), e.details.publisher_authrole];
    resolve([e.argsList, e.argsDict ?? {}]);
  }));
  await new Promise((r) => setTimeout(r, 50));
  await b.publish('com.example.chat', ['hello from wampy'], { acknowledge: true });
  out.chat = await within(5000, got);
  // The audience by authrole (wampy turns a single string into a list).
  const audience = [];
  const end = new Promise((resolve) => a.subscribe('com.example.audience', (e) => {
    audience.push(e.argsList[0]);
    if (e.argsList[0] === 3) resolve();
  }));
  await new Promise((r) => setTimeout(r, 50));
  await b.publish('com.example.audience', [1], { exclude_authrole: 'anonymous' });
  await b.publish('com.example.audience', [2], { eligible_authrole: ['anonymous'] });
  await b.publish('com.example.audience', [3]);
  await within(5000, end);
  out.audience = audience;
  // Progressive results through wampy's progress_callback.
  const countdown = [];
  const liftoff = await a.call('com.example.countdown', [3], { progress_callback: (r) => countdown.push(r.argsList[0]) });
  out.countdown = [countdown, liftoff.argsList[0]];
  // A wildcard subscription.
  const patternEvent = new Promise((resolve) => a.subscribe('com.example..x', (e) => {
    resolve([e.details.topic, e.argsList[0]]);
  }, { match: 'wildcard' }));
  await new Promise((r) => setTimeout(r, 50));
  await b.publish('com.example.wampy.x', [2], { acknowledge: true });
  out.pattern = await within(5000, patternEvent);
  out.cancel = await step(10000, () => wampyCancel(serializer, a, b));
  out.retained = await step(5000, () => wampyRetained(serializer, a, b));
  out.meta = await step(5000, () => wampyMeta(serializer, a, b));
  out.shared = await step(5000, () => wampyShared(serializer, a, b));
  out.timeout = await step(5000, () => wampyTimeout(serializer, a, b));
  out.history = await step(5000, () => wampyHistory(serializer, a, b));
  out.testament = await step(8000, () => wampyTestament(serializer, a, b));
  out.cryptosign = authUrl ? await step(8000, () => wampyCryptosign(serializer)) : { skipped: true };
  await a.disconnect();
  await b.disconnect();
  return out;
}

// A wampy call and its request id (for cancel), and a promise of its first progressive result.
function wampyCall(w, procedure, payload, options = {}) {
  let first;
  const started = new Promise((resolve) => { first = resolve; });
  const ended = outcome(w.call(procedure, payload, { ...options, progress_callback: (r) => first(r.argsList?.[0]) }));
  return { reqId: w.getOpStatus().reqId, started, ended };
}

// Call canceling: wampy's cancel(reqId, {mode}) sends the mode it is given ({} without one),
// keeps the call until the router answers, and rejects it with the router's error. Its callee
// announces no call_canceling and has no INTERRUPT handler (it fails its session on one), so
// it cannot show an INTERRUPT: the router must treat every mode as `skip` for it, which its
// staying open shows.
async function wampyCancel(serializer, a, b) {
  const out = { countdown: {}, callee: {} };
  for (const mode of ['', 'skip', 'kill', 'killnowait']) {
    // The demo's countdown from 100 (2 s), cancelled once its first progressive result came.
    const call = wampyCall(a, 'com.example.countdown', [100]);
    await within(2000, call.started);
    a.cancel(call.reqId, mode ? { mode } : undefined);
    out.countdown[mode || 'none'] = await within(2000, call.ended);
  }
  // A callee of wampy's that answers 300 ms after it is invoked, cancelled once invoked.
  const procedure = `com.example.wampy.slow.${serializer}`;
  let invoked;
  let answered = 0;
  await b.register(procedure, async () => {
    invoked();
    await sleep(300);
    answered += 1;
    return 'late';
  });
  for (const mode of ['', 'skip', 'kill', 'killnowait']) {
    const started = new Promise((resolve) => { invoked = resolve; });
    const ended = outcome(a.call(procedure));
    const reqId = a.getOpStatus().reqId;
    await within(2000, started);
    const before = answered;
    a.cancel(reqId, mode ? { mode } : undefined);
    out.callee[mode || 'none'] = [await within(2000, ended), answered === before];
  }
  await until(2000, () => answered === 4);
  await sleep(100);
  out.after = [
    await outcome(a.call('com.example.add', [1, 1])),
    await outcome(b.call('com.example.add', [2, 2])),
  ];
  return out;
}

// Retained events. wampy 8.0.2 cannot publish one: publish() checks its `retain` option but
// never puts it into PUBLISH.Options, so its "retained" publication is an ordinary one. An
// AutobahnJS session (same serializer) publishes the retained event; wampy's publication with
// `retain: true` must not replace it; a new wampy subscription with get_retained gets it at
// once (details.retained true), then the live one.
async function wampyRetained(serializer, a, b) {
  const topic = `com.example.wampy.retained.${serializer}`;
  const js = await within(5000, autobahnSession(serializer));
  await js.session.publish(topic, ['retained'], {}, { acknowledge: true, retain: true });
  await closeAutobahn(js);
  await b.publish(topic, ['not retained'], { retain: true });
  const got = [];
  await a.subscribe(topic, (e) => got.push([e.argsList[0], e.details.retained ?? null]), { get_retained: true });
  await until(2000, () => got.length >= 1);
  await b.publish(topic, ['live']);
  await until(2000, () => got.length >= 2);
  return got;
}

// The meta API, as for AutobahnJS, with a third wampy session joining. Session ids are
// random in [1, 2^53]: wampy's MessagePack decoder gives one above 2^32 as a BigInt, which
// its encoder sends back as an integer, but its CBOR decoder gives a Number, which its CBOR
// encoder (like its MessagePack one) sends as a float64, not an integer; the router takes a
// float with no fraction as the id (`raw_get`), and the id passed as a BigInt in CBOR goes
// as a CBOR integer (`get`).
async function wampyMeta(serializer, a, b) {
  const out = {};
  const wire = (id) => (serializer === 'cbor' ? BigInt(id) : id);
  const joins = [];
  await a.subscribe('wamp.session.on_join', (e) => joins.push(e.argsList[0]));
  const c = await wampySession(serializer);
  const id = c.getSessionId();
  await until(2000, () => joins.some((d) => sameId(d.session, id)));
  const joined = joins.find((d) => sameId(d.session, id));
  out.on_join = [joined.authrole, joined.authmethod, joined.transport?.protocol];
  const one = async (procedure, args) => (await a.call(procedure, args)).argsList?.[0] ?? null;
  const list = await one('wamp.session.list');
  const count = await one('wamp.session.count');
  out.sessions = [
    list.some((s) => sameId(s, a.getSessionId())),
    list.some((s) => sameId(s, b.getSessionId())),
    list.some((s) => sameId(s, id)),
    Number(count) === list.length,
  ];
  out.raw_get = await a.call('wamp.session.get', [id])
    .then((r) => sameId(r.argsList[0].session, id), (e) => e?.errorUri ?? String(e));
  const got = await one('wamp.session.get', [wire(id)]);
  out.get = [sameId(got.session, id), got.authrole, got.authmethod, got.transport?.protocol];
  const topic = `com.example.wampy.meta.${serializer}`;
  // wampy's URI check refuses a pattern that ends with a dot.
  const prefix = `com.example.wampy.metap.${serializer}`;
  const sub = await c.subscribe(topic, () => {});
  const psub = await c.subscribe(prefix, () => {}, { match: 'prefix' });
  out.subscription = [
    sameId(await one('wamp.subscription.lookup', [topic]), sub.subscriptionId),
    sameId(await one('wamp.subscription.lookup', [prefix, { match: 'prefix' }]), psub.subscriptionId),
    await one('wamp.subscription.lookup', [`com.example.wampy.metanone.${serializer}`]),
    (await one('wamp.subscription.list_subscribers', [wire(sub.subscriptionId)])).map((s) => sameId(s, id)),
  ];
  const procedure = `com.example.wampy.meta.rpc.${serializer}`;
  const reg = await c.register(procedure, () => 0);
  const preg = await c.register(`${prefix}.rpc`, () => 0, { match: 'prefix' });
  out.registration = [
    sameId(await one('wamp.registration.lookup', [procedure]), reg.registrationId),
    sameId(await one('wamp.registration.match', [procedure]), reg.registrationId),
    sameId(await one('wamp.registration.match', [`${prefix}.rpc.x`]), preg.registrationId),
    await one('wamp.registration.lookup', [`com.example.wampy.metanone.${serializer}`]),
  ];
  await c.disconnect();
  return out;
}

// Shared registrations, as for AutobahnJS (wampy's third session asks for `first`).
async function wampyShared(serializer, a, b) {
  const procedure = `com.example.wampy.shared.${serializer}`;
  const c = await wampySession(serializer);
  const rb = await b.register(procedure, () => 'b', { invoke: 'roundrobin' });
  const rc = await c.register(procedure, () => 'c', { invoke: 'roundrobin' });
  const refused = await a.register(procedure, () => 'a', { invoke: 'first' })
    .then(() => 'registered', (e) => e?.errorUri ?? String(e));
  const calls = [];
  for (let i = 0; i < 4; i += 1) calls.push(await outcome(a.call(procedure)));
  await c.disconnect();
  return { same_id: sameId(rb.registrationId, rc.registrationId), refused, calls };
}

// A call with wampy's timeout option to a callee that never answers.
async function wampyTimeout(serializer, a, b) {
  let invoked = 0;
  const procedure = `com.example.wampy.silent.${serializer}`;
  await b.register(procedure, () => {
    invoked += 1;
    return new Promise(() => {});
  });
  const t0 = Date.now();
  const error = await outcome(a.call(procedure, null, { timeout: 200 }));
  const elapsed = Date.now() - t0;
  await sleep(50);
  return [error, elapsed >= 200 && elapsed < 2000, invoked, await outcome(b.call('com.example.add', [2, 2]))];
}

// Event history as for AutobahnJS: b publishes (wampy's publish() always asks for
// acknowledgement and resolves with the publication id), a new wampy session asks.
async function wampyHistory(serializer, a, b) {
  const topic = `com.example.wampy.history.${serializer}`;
  const published = [];
  published.push((await b.publish(topic, [1, 'one'])).publicationId);
  published.push((await b.publish(topic, { argsList: [2, 'two'], argsDict: { k: 'v' } })).publicationId);
  published.push((await b.publish(topic, [3, 'three'])).publicationId);
  const c = await wampySession(serializer);
  const sub = await c.subscribe(topic, () => {});
  const got = await c.call('wamp.subscription.get_events', [sub.subscriptionId, 2]);
  await c.disconnect();
  const events = got.argsList?.[0];
  return {
    topic,
    subscription: String(sub.subscriptionId),
    publisher: String(b.getSessionId()),
    publications: published.map(String),
    events: Array.isArray(events) ? events.map(historyEvent) : events,
  };
}

// Testaments as for AutobahnJS: A drops its connection with wampy's abort(), which on an open
// session sends no GOODBYE (nor ABORT) and closes the WebSocket; D leaves with disconnect()
// (GOODBYE); C flushes before its disconnect(); b publishes the marker.
async function wampyTestament(serializer, a, b) {
  const topic = `com.example.wampy.will.${serializer}`;
  const ids = { b: String(b.getSessionId()) };
  const events = [];
  await a.subscribe(topic, (e) => events.push([e.argsList, whose(ids, e.details.publisher)]));
  const one = async (w, procedure, args) => (await w.call(procedure, args)).argsList?.[0] ?? null;
  const added = [];
  const wa = await wampySession(serializer);
  ids.a = String(wa.getSessionId());
  added.push(await one(wa, 'wamp.session.add_testament', [topic, [1], {}]));
  wa.abort();
  await until(2000, () => events.length >= 1);
  const wd = await wampySession(serializer);
  ids.d = String(wd.getSessionId());
  added.push(await one(wd, 'wamp.session.add_testament', [topic, [2], {}]));
  await wd.disconnect();
  await until(2000, () => events.length >= 2);
  const wc = await wampySession(serializer);
  ids.c = String(wc.getSessionId());
  added.push(await one(wc, 'wamp.session.add_testament', [topic, [3], {}]));
  const flushed = await one(wc, 'wamp.session.flush_testaments');
  await wc.disconnect();
  await b.publish(topic, ['marker']);
  await until(2000, () => events.some(([args]) => args[0] === 'marker'));
  await sleep(100);
  return { added, flushed: Number(flushed), events };
}

// Cryptosign with wampy's own plugin (wampy/cryptosign.js: sign(seed) signs the challenge;
// wampy needs authid, authmethods and authextra.pubkey given, the public key from tweetnacl,
// which AutobahnJS exports): erin's key, a stranger's, and erin's public key with the
// challenge signed by a stranger's key.
async function wampyCryptosign(serializer) {
  const pubkey = (seed) => autobahn.util.btoh(autobahn.nacl.sign.keyPair.fromSeed(autobahn.util.htob(seed)).publicKey);
  const serializers = { json: () => new JsonSerializer(), msgpack: () => new MsgpackSerializer(), cbor: () => new CborSerializer() };
  const attempt = async (announced, signer) => {
    const w = new Wampy(authUrl, {
      realm: 'realm1',
      ws: WebSocket,
      serializer: serializers[serializer](),
      autoReconnect: false,
      authid: 'erin',
      authmethods: ['cryptosign'],
      authextra: { pubkey: pubkey(announced) },
      authMode: 'auto',
      authPlugins: { cryptosign: wampySign(signer) },
    });
    let details;
    try {
      details = await within(5000, w.connect());
    } catch (e) {
      return { aborted: e?.errorUri ?? String(e) };
    }
    const add = await outcome(w.call('com.example.add', [1, 2, 39]));
    await w.disconnect();
    return { welcome: [details.authid, details.authrole, details.authmethod], add };
  };
  return {
    erin: await attempt(ERIN_SEED, ERIN_SEED),
    stranger: await attempt(STRANGER_SEED, STRANGER_SEED),
    forged: await attempt(ERIN_SEED, STRANGER_SEED),
  };
}

const result = { autobahnjs: {}, wampy: {} };
for (const serializer of ['json', 'msgpack', 'cbor']) {
  try { result.autobahnjs[serializer] = await withAutobahn(serializer); } catch (e) { result.autobahnjs[serializer] = { failed: String(e) }; }
  try { result.wampy[serializer] = await withWampy(serializer); } catch (e) { result.wampy[serializer] = { failed: String(e) }; }
}
console.log(JSON.stringify(result));
process.exit(0);
