// The WAMP v2 half of a cross-version test, on AutobahnJS 26: beside a WAMP v1 autobahn
// 0.8 client (tests/interop/autobahn_v1_peer.py) on the demo.
// usage: node v2_peer.mjs ws://HOST:PORT/ws SERIALIZER
// Registers com.example.js.mul (the product of its args), com.example.js.fail (an error
// with args and kwargs) and com.example.js.both (args and kwargs), subscribes to
// com.example.chat and prints "ready". When the v1 client's chat line arrives it answers
// in the chat and on com.example.js.news (args, kwargs; then nothing), then leaves.
// Prints one JSON object with what it saw, as the last line.
import WebSocket from 'ws';
import autobahn from 'autobahn';

if (!globalThis.WebSocket) globalThis.WebSocket = WebSocket;

const [url, serializer] = process.argv.slice(2);
const serializers = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => new autobahn.serializer.MsgpackSerializer(),
  cbor: () => new autobahn.serializer.CBORSerializer(),
};
const result = { invocations: [] };
const connection = new autobahn.Connection({ url, realm: 'realm1', serializers: [serializers[serializer]()], max_retries: 0 });
const done = (extra) => {
  Object.assign(result, extra);
  console.log(JSON.stringify(result));
  process.exit(0);
};
setTimeout(() => done({ exception: 'timeout' }), 30000);

connection.onopen = async (session) => {
  try {
    result.session = session.id;
    await session.register('com.example.js.mul', (args, kwargs) => {
      result.invocations.push(['mul', args, kwargs]);
      return args.reduce((a, b) => a * b, 1);
    });
    await session.register('com.example.js.fail', (args, kwargs) => {
      result.invocations.push(['fail', args, kwargs]);
      throw new autobahn.Error('com.example.js.failed', ['no good', 7], { reason: 'because' });
    });
    await session.register('com.example.js.both', () => new autobahn.Result([1, 2], { k: 3 }));
    const heard = new Promise((resolve) => session.subscribe('com.example.chat', (args, kwargs) => {
      if (args?.[0]?.message === 'hello v2 from autobahn 0.8') resolve([args, kwargs ?? {}]);
    }));
    console.log('ready');
    result.chat = await heard;
    const ack = { acknowledge: true };
    await session.publish('com.example.chat', [{ message: 'hello v1 from autobahn 26' }], {}, ack);
    // AutobahnJS's JSON serializer has no binary convention: there the bytes go as the
    // spec's "\0" + base64 string; msgpack and cbor carry them as bytes.
    const bytes = serializer === 'json' ? '\u0000AP8=' : new Uint8Array([0, 255]);
    await session.publish('com.example.js.news', [bytes, 2], { k: 'v' }, ack);
    await session.publish('com.example.js.news', [], {}, ack);
    connection.close();
    done({ leave: 'closed' });
  } catch (e) {
    done({ exception: String(e?.error ?? e) });
  }
};
connection.onclose = (reason) => done({ exception: `closed: ${reason}` });
connection.open();
