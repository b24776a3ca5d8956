// WAMP v2 interop: AutobahnJS 26 and wampy 8 use the demo with json, msgpack and cbor.
// usage: node v2_interop.mjs ws://HOST:PORT/ws
// Prints one JSON object: {autobahnjs: {json: {...}, ...}, wampy: {json: {...}, ...}}.
import WebSocket from 'ws';
import autobahn from 'autobahn';
import { Wampy } from 'wampy';
import { JsonSerializer } from 'wampy/JsonSerializer.js';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';

// Node 20 has no global WebSocket; AutobahnJS looks for one when it connects.
if (!globalThis.WebSocket) globalThis.WebSocket = WebSocket;

const url = process.argv[2];
const within = (ms, p) => Promise.race([p, new Promise((_, no) => setTimeout(() => no(new Error('timeout')), ms))]);

function autobahnSession(serializer) {
  const serializers = {
    json: new autobahn.serializer.JSONSerializer(),
    msgpack: new autobahn.serializer.MsgpackSerializer(),
    cbor: new autobahn.serializer.CBORSerializer(),
  };
  const connection = new autobahn.Connection({ url, realm: 'realm1', serializers: [serializers[serializer]], max_retries: 0 });
  return new Promise((resolve, reject) => {
    connection.onopen = (session) => resolve({ session, connection });
    connection.onclose = (reason) => reject(new Error(`closed: ${reason}`));
    connection.open();
  });
}

async function withAutobahn(serializer) {
  const out = {};
  const { session, connection } = await within(5000, autobahnSession(serializer));
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
  connection.close();
  return out;
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
  await a.disconnect();
  await b.disconnect();
  return out;
}

const result = { autobahnjs: {}, wampy: {} };
for (const serializer of ['json', 'msgpack', 'cbor']) {
  try { result.autobahnjs[serializer] = await withAutobahn(serializer); } catch (e) { result.autobahnjs[serializer] = { failed: String(e) }; }
  try { result.wampy[serializer] = await withWampy(serializer); } catch (e) { result.wampy[serializer] = { failed: String(e) }; }
}
console.log(JSON.stringify(result));
process.exit(0);
