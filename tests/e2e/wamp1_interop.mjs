// Interop: the npm `wamp1` client (an independent WAMP v1 client) against the demo.
// Usage: node wamp1_interop.mjs WS_URL ; prints one JSON line of what it received.
import WebSocket from 'ws';
import Wamp from 'wamp1';

const url = process.argv[2];
const API = 'http://clj-wamp-example/api#';
const EV = 'http://clj-wamp-example/event#';
const out = {};
const call = (w, ...args) => new Promise((resolve) =>
  w.call(...args, (err, result) => resolve(err ? { error: { uri: err.uri, desc: err.message } } : { result })));
const timeout = setTimeout(() => { console.error('timed out', JSON.stringify(out)); process.exit(2); }, 10000);

const socket = new WebSocket(url, ['wamp']);
const w = new Wamp(socket, {}, async (welcome) => {
  out.session = welcome.sessionId;
  w.prefix('api', API);
  out.add = await call(w, 'api:add', 23, 99);
  out.echo = await call(w, API + 'echo', { nested: [1, 'two'] });
  out.bad = await call(w, 'api:add', 1, 'abc');
  const events = [];
  w.subscribe(EV + 'prefix-news', (e) => events.push(['prefix-news', e]));
  w.subscribe(EV + 'chat', (e) => {
    events.push(['chat', e]);
    out.events = events;
    console.log(JSON.stringify(out));
    clearTimeout(timeout);
    socket.close();
  });
  await call(w, 'api:echo', 0); // subscriptions are in place
  w.publish(EV + 'prefix-news', { n: 1 });
  w.publish(EV + 'chat', 'hello from wamp1');
});
