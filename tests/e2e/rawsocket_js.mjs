// AutobahnJS 26 over RawSocket (its Node-only `rawsocket` transport) against the demo's
// RawSocket listener: RPC, progressive results, a procedure of its own, pub/sub with the
// publisher disclosed, the chat (which WebSocket clients of the same realm hear), the meta API's
// view of the session, and leaving.
//
// AutobahnJS 26.3.1 speaks only JSON over RawSocket: lib/transport/rawsocket.js hard-codes the
// serializer `json` in the Factory (`new Protocol(socket, {serializer: 'json', ...})`), its
// Protocol knows only `SERIALIZERS = {json: 1}`, refuses any other serializer in the router's
// handshake answer, and writes and reads frames with JSON.stringify and JSON.parse. A connection
// that asks for MessagePack or CBOR (`serializers: [...]`) speaks JSON all the same; the script
// reports what the router saw for such connections, and which serializers the transport knows,
// so that an AutobahnJS that gains them is noticed.
//
// usage: node rawsocket_js.mjs HOST PORT
// Prints one JSON object as its last line:
//   {supported: [...], json: {...}, asked: {msgpack: ..., cbor: ...}}
import autobahn from 'autobahn';
import rawsocket from 'autobahn/lib/transport/rawsocket.js';

const [host, port] = [process.argv[2], Number(process.argv[3])];
const within = (ms, p) => Promise.race([p, new Promise((_, no) => setTimeout(() => no(new Error('timeout')), ms))]);
// One step's results, or {failed} with why: one step failing does not hide the others.
async function step(ms, f) {
  try { return await within(ms, f()); } catch (e) { return { failed: String(e?.error ?? e?.message ?? e) }; }
}

// A session over RawSocket, anonymous in realm1; `serializers` as AutobahnJS takes them (the
// rawsocket transport ignores them).
function open(serializers) {
  const connection = new autobahn.Connection({
    transports: [{ type: 'rawsocket', host, port }],
    realm: 'realm1',
    serializers,
    max_retries: 0,
    retry_if_unreachable: false,
  });
  let onClosed;
  const closed = new Promise((resolve) => { onClosed = resolve; });
  return new Promise((resolve, reject) => {
    connection.onopen = (session, details) => resolve({ session, details, connection, closed });
    connection.onclose = (reason, details) => {
      onClosed([reason, details?.reason ?? null]);
      reject(new Error(`closed: ${reason}`));
    };
    connection.open();
  });
}

// The transport protocol the router's meta API tells for a session (`wamp.session.get`).
async function routerProtocol(session) {
  const me = await session.call('wamp.session.get', [session.id]);
  return me?.transport?.protocol ?? null;
}

async function scenario() {
  const out = {};
  const { session, details, connection, closed } = await within(5000, open(undefined));
  out.session = session.id;
  out.welcome = [details.authrole, details.authmethod];
  out.transport = [details.transport?.type ?? null, details.transport?.protocol ?? null];
  out.router_protocol = await routerProtocol(session);
  out.add = await session.call('com.example.add', [1, 2, 39]);
  // Multi-byte UTF-8 in a RawSocket frame (its length prefix counts bytes).
  out.echo = await session.call('com.example.echo', [{ k: [1, 'ü'] }]);
  try { await session.call('com.example.add', ['x']); } catch (e) { out.add_error = e.error; }
  // Progressive results from the demo's own handler (the promise's progress).
  const countdown = [];
  const liftoff = await session.call('com.example.countdown', [3], {}, { receive_progress: true })
    .then((r) => r, (e) => { throw e; }, (n) => countdown.push(n));
  out.countdown = [countdown, liftoff];
  // A procedure of its own, called by itself through the router; the demo names callers.
  let caller;
  await session.register('com.example.rs.mul', (args, kwargs, d) => {
    caller = [d.caller === session.id, d.caller_authrole];
    return new autobahn.Result([args[0] * args[1]], kwargs);
  });
  const mul = await session.call('com.example.rs.mul', [6, 7], { unit: 'm' });
  out.mul = [mul.args, mul.kwargs];
  out.caller = caller;
  // Pub/sub on a topic of its own; the demo names publishers.
  const news = new Promise((resolve) => session.subscribe('com.example.rs.news', (args, kwargs, d) => {
    resolve([args, kwargs, d.publisher === session.id, d.publisher_authrole]);
  }));
  await new Promise((r) => setTimeout(r, 50));
  const pub = await session.publish('com.example.rs.news', ['over rawsocket'], { n: 1 }, { acknowledge: true, exclude_me: false });
  out.published = pub.id > 0;
  out.news = await within(5000, news);
  // The chat: the demo's broker stamps the message with the sender, for every subscriber of
  // the realm (the test's WAMP v1 client on the WebSocket endpoint too).
  const chat = new Promise((resolve) => session.subscribe('com.example.chat', (args) => resolve(args)));
  await new Promise((r) => setTimeout(r, 50));
  await session.publish('com.example.chat', ['hello from AutobahnJS over RawSocket'], {}, { acknowledge: true, exclude_me: false });
  out.chat = await within(5000, chat);
  // Leaving: GOODBYE, then the connection closes cleanly.
  connection.close();
  out.closed = await within(5000, closed);
  return out;
}

// A connection that asks for `name`: what the router saw it speak, then it leaves.
async function asked(name) {
  const serializer = name === 'msgpack'
    ? new autobahn.serializer.MsgpackSerializer()
    : new autobahn.serializer.CBORSerializer();
  const { session, connection, closed } = await within(5000, open([serializer]));
  const protocol = await routerProtocol(session);
  connection.close();
  await within(5000, closed);
  return protocol;
}

const result = {
  supported: Object.keys(rawsocket.Protocol.prototype.SERIALIZERS),
  json: await step(15000, scenario),
  asked: {
    msgpack: await step(5000, () => asked('msgpack')),
    cbor: await step(5000, () => asked('cbor')),
  },
};
console.log(JSON.stringify(result));
process.exit(0);
