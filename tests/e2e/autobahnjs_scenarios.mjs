// The scenarios of AutobahnJS's own router tests (crossbario/autobahn-js,
// packages/autobahn/test/test_pubsub_*.js, test_rpc_*.js, test_binary.js), written anew for
// tower-wamp: each one drives AutobahnJS 26 sessions against our router and reports what
// the sessions saw, so that tests/autobahnjs_scenarios.rs can compare it with what a WAMP v2
// router must produce. Upstream prints a log and diffs it against a recorded one; here every
// scenario returns the observed values themselves.
//
// usage: node autobahnjs_scenarios.mjs ws://HOST:PORT/ws json|msgpack|cbor
// Prints one JSON line: {scenario: {observed values} | {failed: "why"}}.
//
// Conventions of every scenario:
// - Each runs on sessions of its own (closed, and their close awaited, before the next one)
//   and within SCENARIO_MS.
// - A publisher's events reach each subscriber in the order published (the spec's ordering
//   guarantee), so a publisher ends a batch with an acknowledged "end" event that every
//   subscriber receives (exclude_me: false, no lists): once a subscriber has it, it has
//   everything it was going to get, and a missing or extra event shows in the exact list.
// - Byte strings are reported as {bytes: hex}, BigInts as {bigint: decimal}, AutobahnJS
//   Result objects as {args, kwargs}.
import WebSocket from 'ws';
import autobahn from 'autobahn';

// Node 20 has no global WebSocket; AutobahnJS looks for one when it connects.
if (!globalThis.WebSocket) globalThis.WebSocket = WebSocket;

const [url, SER] = process.argv.slice(2);
const SCENARIO_MS = 6000;
// How long to wait for one expected event (shorter, so that what did arrive is reported).
const WAIT_MS = 4000;
const OVERALL_MS = 30000;
const SERIALIZERS = ['json', 'msgpack', 'cbor'];

// ---- helpers ---------------------------------------------------------------------------

function within(ms, promise, what) {
  let timer;
  const limit = new Promise((_, no) => {
    timer = setTimeout(() => no(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// AutobahnJS's JSON serializer leaves binary to the application: these carry it with the
// WAMP convention for JSON, a string of "\0" and the base64 of the bytes.
function binaryToWire(key, value) {
  const raw = this[key];
  return raw instanceof Uint8Array ? '\0' + Buffer.from(raw).toString('base64') : value;
}
function binaryFromWire(_key, value) {
  return typeof value === 'string' && value.startsWith('\0')
    ? Buffer.from(value.slice(1), 'base64')
    : value;
}

function makeSerializer(name) {
  switch (name) {
    case 'json': return new autobahn.serializer.JSONSerializer(binaryToWire, binaryFromWire);
    case 'msgpack': return new autobahn.serializer.MsgpackSerializer();
    case 'cbor': return new autobahn.serializer.CBORSerializer();
    default: throw new Error(`unknown serializer ${name}`);
  }
}

// A session that announces more callee features than AutobahnJS does (call_canceling, which
// the spec requires before a dealer may stream progressive results to a callee): HELLO's
// roles are changed for the one session being opened.
let helloPatch = null;
const join = autobahn.Session.prototype.join;
autobahn.Session.prototype.join = function (...args) {
  if (helloPatch) {
    const patch = helloPatch;
    const send = this._send_wamp;
    this._send_wamp = (msg) => {
      this._send_wamp = send;
      return send(patch(msg));
    };
  }
  return join.apply(this, args);
};
function withCalleeFeatures(features) {
  return (hello) => {
    const details = { ...hello[2], roles: structuredClone(hello[2].roles) };
    Object.assign(details.roles.callee.features, features);
    return [hello[0], hello[1], details];
  };
}

// The value as plain JSON, with binary, BigInt and AutobahnJS results made visible.
function show(v) {
  if (v === undefined) return { undefined: true };
  if (typeof v === 'bigint') return { bigint: String(v) };
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('hex') };
  if (v instanceof autobahn.Result) return { args: show(v.args), kwargs: show(v.kwargs) };
  if (Array.isArray(v)) return v.map(show);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, show(x)]));
  }
  return v;
}

function why(e) {
  if (e instanceof autobahn.Error || (e && typeof e.error === 'string')) {
    return `${e.error} ${JSON.stringify(show(e.args))} ${JSON.stringify(show(e.kwargs))}`;
  }
  return String(e && e.stack ? e.stack : e);
}

// The error URI, args and kwargs of a call expected to fail (or its result if it did not).
async function outcome(promise) {
  try {
    return { result: show(await promise) };
  } catch (e) {
    if (e && typeof e.error === 'string') return { error: e.error, args: show(e.args), kwargs: show(e.kwargs) };
    throw e;
  }
}

// Things received, and a way to wait for one of them.
function inbox() {
  const items = [];
  const waiters = new Set();
  return {
    items,
    push(x) {
      items.push(x);
      for (const w of [...waiters]) w();
    },
    until(pred, what = 'events') {
      return within(WAIT_MS, new Promise((resolve) => {
        const check = () => {
          if (pred(items)) {
            waiters.delete(check);
            resolve(items);
          }
        };
        waiters.add(check);
        check();
      }), what).catch((e) => {
        throw new Error(`${e.message}; got so far: ${JSON.stringify(show(items))}`);
      });
    },
  };
}
const isEnd = (x) => x === 'end' || (Array.isArray(x) && x.includes('end'));
const untilEnd = (box, who) => box.until((items) => items.some(isEnd), `the end marker at ${who}`);

// The sessions of one scenario.
class Scene {
  constructor() {
    this.entries = [];
    // What the scenario is doing, for the report when it fails.
    this.step = 'opening sessions';
  }

  async open(serializer = SER, patch = null) {
    const connection = new autobahn.Connection({
      url, realm: 'realm1', serializers: [makeSerializer(serializer)], max_retries: 0,
    });
    let opened;
    let failed;
    const ready = new Promise((res, rej) => { opened = res; failed = rej; });
    const entry = { connection, session: null };
    entry.closed = new Promise((resolve) => {
      connection.onclose = (reason, details) => {
        failed(new Error(`could not join: ${reason} ${JSON.stringify(details)}`));
        resolve({ reason, details });
        return true;
      };
    });
    connection.onopen = (session) => opened(session);
    this.entries.push(entry);
    helloPatch = patch;
    try {
      connection.open();
      entry.session = await within(3000, ready, `joining with ${serializer}`);
    } finally {
      helloPatch = null;
    }
    return entry.session;
  }

  async sessions(n, serializer = SER) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.open(serializer));
    return out;
  }

  async close(session) {
    const entry = this.entries.find((e) => e.session === session);
    try { entry.connection.close(); } catch { /* already closed */ }
    await within(2000, entry.closed, 'closing');
  }

  async closeAll() {
    await Promise.all(this.entries.map(async (entry) => {
      try { entry.connection.close(); } catch { /* already closed */ }
      try { await within(2000, entry.closed, 'closing'); } catch { /* reported by the scenario */ }
    }));
  }
}

// The ABORT the router ends `session` with, once it does: ['ABORT', reason] (AutobahnJS
// itself only reports that the connection was lost).
function watchAbort(session) {
  const aborted = [];
  const onmessage = session._socket.onmessage;
  session._socket.onmessage = (msg) => {
    if (msg[0] === 3) aborted.push('ABORT', msg[2]);
    return onmessage(msg);
  };
  return aborted;
}

// The end marker of a batch: reaches every subscriber of `topic`, the publisher included.
const publishEnd = (session, topic) => session.publish(topic, ['end'], {}, { acknowledge: true, exclude_me: false });

// ---- publish and subscribe ---------------------------------------------------------------

const scenarios = {};

// test_pubsub_basic: one session publishes a counter, another receives every value in order.
scenarios.pubsub_basic = async (scene) => {
  const [publisher, subscriber] = await scene.sessions(2);
  const got = inbox();
  await subscriber.subscribe('com.myapp.basic', (args) => got.push(args[0]));
  for (let n = 0; n < 6; n++) publisher.publish('com.myapp.basic', [n]);
  await publishEnd(publisher, 'com.myapp.basic');
  await untilEnd(got, 'the subscriber');
  return { received: got.items };
};

// test_pubsub_complex: positional lists that grow with the counter, and nested keyword
// arguments (floats, null, lists, objects).
scenarios.pubsub_complex = async (scene) => {
  const [publisher, subscriber] = await scene.sessions(2);
  const got = inbox();
  await subscriber.subscribe('com.myapp.complex', (args, kwargs) => got.push({ args: show(args), kwargs: show(kwargs) }));
  for (let n = 0; n < 6; n++) {
    const list = Array.from({ length: n }, (_, i) => i);
    publisher.publish('com.myapp.complex', list, {
      counter: n,
      foo: [1, n, 2 * n],
      bar: 'This is a test text.',
      baz: { a: 1.23456, b: 10000, c: null, d: 'foo' },
    });
  }
  await publishEnd(publisher, 'com.myapp.complex');
  await got.until((items) => items.some((x) => x.args[0] === 'end'), 'the end marker');
  return { received: got.items };
};

// Three sessions on one topic: `publisher` publishes 0, 1, 2 with each set of options (a
// function of the sessions), then the end marker; what each subscriber got per case.
async function audienceCases(scene, topic, cases, publisherSubscribes = false) {
  const [publisher, s2, s3] = await scene.sessions(3);
  const boxes = {};
  const listen = async (name, session) => {
    await session.subscribe(topic, (args) => boxes[name].push(args[0]));
  };
  const names = publisherSubscribes ? ['publisher', 's2', 's3'] : ['s2', 's3'];
  const sessions = { publisher, s2, s3 };
  for (const name of names) await listen(name, sessions[name]);
  const out = {};
  for (const [label, options] of Object.entries(cases)) {
    for (const name of names) boxes[name] = inbox();
    for (let n = 0; n < 3; n++) publisher.publish(topic, [n], {}, options(sessions));
    await publishEnd(publisher, topic);
    for (const name of names) await untilEnd(boxes[name], `${name} in case ${label}`);
    out[label] = Object.fromEntries(names.map((name) => [name, boxes[name].items]));
  }
  return out;
}

// test_pubsub_eligible: no list, only session 3, both; and the spec's empty list (nobody).
scenarios.pubsub_eligible = (scene) => audienceCases(scene, 'com.myapp.eligible', {
  unset: () => ({}),
  only_s3: ({ s3 }) => ({ eligible: [s3.id] }),
  s2_and_s3: ({ s2, s3 }) => ({ eligible: [s2.id, s3.id] }),
  empty: () => ({ eligible: [] }),
});

// test_pubsub_exclude: no list, session 2, both; and exclude applied after eligible.
scenarios.pubsub_exclude = (scene) => audienceCases(scene, 'com.myapp.exclude', {
  unset: () => ({}),
  s2: ({ s2 }) => ({ exclude: [s2.id] }),
  s2_and_s3: ({ s2, s3 }) => ({ exclude: [s2.id, s3.id] }),
  eligible_both_exclude_s3: ({ s2, s3 }) => ({ eligible: [s2.id, s3.id], exclude: [s3.id] }),
});

// test_pubsub_excludeme: the publisher is subscribed too; exclude_me unset, true, false.
scenarios.pubsub_excludeme = (scene) => audienceCases(scene, 'com.myapp.excludeme', {
  unset: () => ({}),
  exclude_me_true: () => ({ exclude_me: true }),
  exclude_me_false: () => ({ exclude_me: false }),
}, true);

// test_pubsub_multiple_matching_subs (crossbar issue 1038): a wildcard, two prefix and an
// exact subscription in four sessions, and a fifth session holding an exact and a wildcard
// subscription that both match; five acknowledged publications on topics that match some,
// all or none of them.
scenarios.pubsub_multiple_matching = async (scene) => {
  const [a, b, c, d, e, f] = await scene.sessions(6);
  const boxes = { b: inbox(), c: inbox(), d: inbox(), e: inbox(), f: inbox() };
  const record = (name) => (args, _kwargs, details) => boxes[name].push([details.topic, args[0]]);
  await b.subscribe('com..topic1', record('b'), { match: 'wildcard' });
  await c.subscribe('com.myapp', record('c'), { match: 'prefix' });
  await d.subscribe('com', record('d'), { match: 'prefix' });
  await e.subscribe('com.myapp.topic1', record('e'), { match: 'exact' });
  const fEvents = [];
  const onF = (args, _kwargs, details, sub) => {
    fEvents.push({ match: sub.options.match, n: args[0], publication: details.publication, subscription: sub.id });
    boxes.f.push([sub.options.match, args[0]]);
  };
  await f.subscribe('com.myapp.topic1', onF, { match: 'exact' });
  await f.subscribe('com..topic1', onF, { match: 'wildcard' });
  const acks = [];
  const topics = ['com.myapp.topic1', 'com.myapp.topic123', 'com.myapp.topic1.foobar', 'de.myapp.topic1', 'com.foobar'];
  for (let n = 0; n < topics.length; n++) {
    acks.push(await a.publish(topics[n], [n + 1], {}, { acknowledge: true }));
  }
  await publishEnd(a, 'com.myapp.topic1');
  // Each of f's two subscriptions gets the end marker.
  await boxes.f.until((items) => items.filter(isEnd).length === 2, 'both end markers at f');
  for (const name of ['b', 'c', 'd', 'e']) await untilEnd(boxes[name], name);
  const first = fEvents.filter((x) => x.n === 1);
  return {
    b_wildcard: boxes.b.items,
    c_prefix_com_myapp: boxes.c.items,
    d_prefix_com: boxes.d.items,
    e_exact: boxes.e.items,
    // One EVENT per matching subscription; their order within a publication is free.
    f_exact_and_wildcard: boxes.f.items.map((x) => JSON.stringify(x)).sort().map((x) => JSON.parse(x)),
    f_one_publication_two_subscriptions: first.length === 2
      && first[0].publication === first[1].publication
      && first[0].subscription !== first[1].subscription,
    acknowledged: acks.map((p) => Number.isInteger(p && p.id)),
  };
};

// test_pubsub_options: acknowledged publications get their publication id, which the
// subscriber's event carries; a publisher that asks (disclose_me) is named; a refused or
// malformed acknowledged publication gets an ERROR.
scenarios.pubsub_options = async (scene) => {
  const [publisher, subscriber] = await scene.sessions(2);
  const got = inbox();
  const events = [];
  await subscriber.subscribe('com.myapp.options', (args, _kwargs, details) => {
    events.push({ n: args[0], details });
    got.push(args[0]);
  });
  const acks = [];
  for (let n = 0; n < 3; n++) {
    const options = { acknowledge: true };
    if (n === 1) options.disclose_me = true;
    acks.push(await publisher.publish('com.myapp.options', [n], {}, options));
  }
  await publishEnd(publisher, 'com.myapp.options');
  await untilEnd(got, 'the subscriber');
  const ids = acks.map((p) => p.id);
  const refused = async (topic) => {
    try {
      await publisher.publish(topic, ['x'], {}, { acknowledge: true });
      return 'published';
    } catch (e) {
      if (e && typeof e.error === 'string') return e.error;
      throw e;
    }
  };
  return {
    events: events.filter((x) => x.n !== 'end').map(({ n, details }) => ({
      n,
      publication_is_the_acknowledged_id: details.publication === ids[n],
      publisher_is_the_publisher: details.publisher === undefined ? null : details.publisher === publisher.id,
      publisher_authrole: details.publisher_authrole ?? null,
    })),
    ids_are_distinct_integers_in_range: new Set(ids).size === 3
      && ids.every((id) => Number.isInteger(id) && id >= 1 && id <= 2 ** 53),
    denied_topic: await refused('com.myapp.readonly'),
    empty_component: await refused('com.myapp..bad'),
    reserved_wamp_topic: await refused('wamp.myapp.topic'),
  };
};

// Publishes [n] on each topic in order, then the end marker on `end`; what the pattern
// subscriber got: [details.topic, n].
async function patternCase(scene, pattern, match, topics, end) {
  const [publisher, subscriber] = await scene.sessions(2);
  const got = inbox();
  await subscriber.subscribe(pattern, (args, _kwargs, details) => got.push([details.topic, args[0]]), { match });
  topics.forEach((topic, n) => publisher.publish(topic, [n]));
  await publishEnd(publisher, end);
  await untilEnd(got, 'the pattern subscriber');
  return { received: got.items };
}

// test_pubsub_prefix_sub: a plain string prefix (com.myapp2 matches com.myapp).
scenarios.pubsub_prefix = (scene) => patternCase(scene, 'com.myapp', 'prefix', [
  'com.myapp.topic1.foobar', 'com.myapp.topic1', 'com.myapp.topi', 'com.myapp2.foobar',
  'com.myapp2', 'com.myapp.2', 'com.myapp',
  'com.app.topic1', 'com.myap', 'com',
], 'com.myapp.end');

// test_pubsub_wildcard_sub: an empty component matches exactly one component.
scenarios.pubsub_wildcard = (scene) => patternCase(scene, 'com.example..create', 'wildcard', [
  'com.example.foobar.create', 'com.example.1.create',
  'com.example.foobar.delete', 'com.example.foobar.create2', 'com.example.foobar.create.barbaz',
  'com.example.foobar', 'com.example.create', 'com.example',
], 'com.example.end.create');

// ---- remote procedure calls --------------------------------------------------------------

// test_rpc_arguments: no arguments, positional, keyword, both; a callee in one session, the
// caller in another, all calls at once.
scenarios.rpc_arguments = async (scene) => {
  const [callee, caller] = await scene.sessions(2);
  const orders = Array.from({ length: 50 }, (_, i) => i);
  const procedures = {
    // Returns nothing (null: AutobahnJS's MessagePack cannot encode undefined).
    ping: () => null,
    add2: (args) => args[0] + args[1],
    stars: (_args, kwargs) => `${kwargs.nick || 'somebody'} starred ${kwargs.stars || 0}x`,
    orders: (_args, kwargs) => orders.slice(0, kwargs.limit || 5),
    arglen: (args, kwargs) => [args.length, Object.keys(kwargs).length],
  };
  for (const [name, fn] of Object.entries(procedures)) {
    await callee.register(`com.myapp.arguments.${name}`, fn);
  }
  const call = (name, args, kwargs) => caller.call(`com.myapp.arguments.${name}`, args, kwargs).then(show);
  const [ping, add2, stars, ordersOut, arglen] = await Promise.all([
    call('ping'),
    call('add2', [2, 3]),
    Promise.all([
      call('stars'),
      call('stars', [], { nick: 'Homer' }),
      call('stars', [], { stars: 5 }),
      call('stars', [], { nick: 'Homer', stars: 5 }),
    ]),
    Promise.all([call('orders', ['coffee']), call('orders', ['coffee'], { limit: 10 })]),
    Promise.all([
      call('arglen'),
      call('arglen', [1, 2, 3]),
      call('arglen', [], { a: 1, b: 2, c: 3 }),
      call('arglen', [1, 2, 3], { a: 1, b: 2, c: 3 }),
    ]),
  ]);
  return { ping, add2, stars, orders: ordersOut, arglen };
};

// test_rpc_complex: results with several positional values, keyword values only, both; an
// echo of every shape of args and kwargs, one call after the other.
scenarios.rpc_complex = async (scene) => {
  const [callee, caller] = await scene.sessions(2);
  await callee.register('com.myapp.complex.add_complex', (args) => new autobahn.Result([], { c: args[0] + args[2], ci: args[1] + args[3] }));
  await callee.register('com.myapp.complex.split_name', (args) => new autobahn.Result(args[0].split(' ')));
  await callee.register('com.myapp.complex.echo', (args, kwargs) => new autobahn.Result(args, kwargs));
  const out = {};
  out.add_complex = show(await caller.call('com.myapp.complex.add_complex', [2, 3, 4, 5]));
  out.split_name = show(await caller.call('com.myapp.complex.split_name', ['Homer Simpson']));
  const shapes = [
    [null, null],
    [null, { a: 23, b: 'hello' }],
    [[1, 2, 3], null],
    [[], {}],
    [[], { a: 23, b: 'hello' }],
    [[1, 2, 3], {}],
    [[1, 2, 3], { a: 23, b: 'hello' }],
    [[1, 2, 3, { a: 23, b: 'hello' }], { a: 23, b: 'hello', c: [1, 2, 3] }],
  ];
  out.echo = [];
  for (const [args, kwargs] of shapes) {
    out.echo.push(show(await caller.call('com.myapp.complex.echo', args, kwargs)));
  }
  return out;
};

// test_rpc_error: a result, a plain exception (AutobahnJS answers wamp.error.runtime_error)
// and an application error with URI, args and kwargs, from a client callee and from a
// handler of the router; and a procedure nobody registered.
scenarios.rpc_error = async (scene) => {
  const [callee, caller] = await scene.sessions(2);
  await callee.register('com.myapp.error.sqrt', (args) => {
    const x = args[0];
    if (x === 0) throw 'zero is a dull question';
    if (x < 0) throw new autobahn.Error('com.myapp.error.negative', ['no real square root'], { a: 23, b: 9 });
    return Math.sqrt(x).toFixed(6);
  });
  const client = await Promise.all([2, 0, -2].map((x) => outcome(caller.call('com.myapp.error.sqrt', [x]))));
  const router = await Promise.all([2, -2].map((x) => outcome(caller.call('com.example.sqrt', [x]))));
  const nobody = await outcome(caller.call('com.myapp.error.nobody_registered_this'));
  return { client, router, unregistered: nobody.error ?? nobody };
};

// test_rpc_options: the callee learns who calls when the caller asks (disclose_me), and
// publishes from inside the invocation: a plain publication (which its own subscription does
// not get back, exclude_me being the default) and one that excludes its caller.
scenarios.rpc_options = async (scene) => {
  const [callee, caller, observer] = await scene.sessions(3);
  const topic = 'com.myapp.options.square_on_nonpositive';
  const boxes = { callee: inbox(), caller: inbox(), observer: inbox() };
  const sessions = { callee, caller, observer };
  for (const [name, session] of Object.entries(sessions)) {
    await session.subscribe(topic, (args) => boxes[name].push(args[0]));
  }
  const invocations = [];
  await callee.register('com.myapp.options.square', (args, _kwargs, details) => {
    const x = args[0];
    invocations.push([
      x,
      details.caller === undefined ? null : details.caller === caller.id,
      details.caller_authrole ?? null,
    ]);
    if (x < 0) callee.publish(topic, [x]);
    else if (x === 0) callee.publish(topic, [x], {}, { exclude: [details.caller] });
    return x * x;
  });
  const results = [];
  results.push(await caller.call('com.myapp.options.square', [2]));
  results.push(await caller.call('com.myapp.options.square', [0], {}, { disclose_me: true }));
  results.push(await caller.call('com.myapp.options.square', [-2], {}, { disclose_me: true }));
  await publishEnd(callee, topic);
  for (const name of Object.keys(boxes)) await untilEnd(boxes[name], name);
  return {
    results,
    invocations,
    events: Object.fromEntries(Object.entries(boxes).map(([name, box]) => [name, box.items])),
  };
};

// test_rpc_progress: progressive results in order before the final one. The spec lets a
// dealer stream to a callee only if it announced progressive_call_results and
// call_canceling; AutobahnJS 26 announces only the first, so a plain AutobahnJS callee is
// not offered progress, and one that also announces call_canceling is. Also from a handler
// of the router, and to a caller that did not ask.
scenarios.rpc_progress = async (scene) => {
  const longop = (offered) => (args, _kwargs, details) => {
    const n = args[0];
    offered.push(Boolean(details.progress));
    return new Promise((resolve) => {
      let i = 0;
      const step = () => {
        if (details.progress && i < n) {
          details.progress([i]);
          i += 1;
          setTimeout(step, 20);
        } else {
          setTimeout(() => resolve(n), 20);
        }
      };
      step();
    });
  };
  const plain = await scene.open();
  const canceling = await scene.open(SER, withCalleeFeatures({ call_canceling: true }));
  const caller = await scene.open();
  const offeredPlain = [];
  const offeredCanceling = [];
  await plain.register('com.myapp.progress.plain', longop(offeredPlain));
  await canceling.register('com.myapp.progress.canceling', longop(offeredCanceling));
  const run = async (procedure, options) => {
    const progress = [];
    const final = await caller.call(procedure, [3], {}, options)
      .then((r) => r, (e) => { throw e; }, (p) => progress.push(show(p)));
    return { progress, final: show(final) };
  };
  const out = {};
  out.plain_callee = await run('com.myapp.progress.plain', { receive_progress: true });
  out.canceling_callee = await run('com.myapp.progress.canceling', { receive_progress: true });
  out.canceling_callee_not_asked = await run('com.myapp.progress.canceling', {});
  out.router_handler = await run('com.example.countdown', { receive_progress: true });
  out.offered = { plain_callee: offeredPlain, canceling_callee: offeredCanceling };
  return out;
};

// test_rpc_request_id_sequence: the client numbers its requests 1, 2, 3, 4 (REGISTER and
// three CALLs), which the router (strict about request ids here) accepts; the router numbers
// its INVOCATIONs to the callee 1, 2, 3, and on. A second session's CALL that skips ahead
// (request 5 after 1) is a protocol violation the strict router ends that session for,
// without invoking the callee.
scenarios.rpc_request_id_sequence = async (scene) => {
  const session = await scene.open();
  const sent = [];
  const send = session._send_wamp;
  session._send_wamp = (msg) => {
    if (msg[0] === 64 || msg[0] === 48) sent.push(msg[1]); // REGISTER, CALL
    return send(msg);
  };
  const invocations = [];
  const invocation = session._MESSAGE_MAP[68];
  session._MESSAGE_MAP[68] = (msg) => {
    invocations.push(msg[1]);
    return invocation(msg);
  };
  await session.register('com.myapp.sequence.do_nothing', () => null);
  const results = [];
  for (let i = 0; i < 3; i++) results.push(await session.call('com.myapp.sequence.do_nothing'));

  const skipper = await scene.open();
  const entry = scene.entries.find((e) => e.session === skipper);
  const aborted = watchAbort(skipper);
  await skipper.call('com.myapp.sequence.do_nothing'); // request 1
  skipper._new_request_id = () => 5; // then 5 instead of 2
  skipper.call('com.myapp.sequence.do_nothing').catch(() => {});
  await within(3000, entry.closed, 'the skipping session to be ended');
  // Its first call was the callee's INVOCATION 4; had the second been forwarded, this one
  // would be 6.
  results.push(await session.call('com.myapp.sequence.do_nothing'));
  return {
    sent,
    invocations,
    results,
    skipping_ahead: aborted,
  };
};

// test_rpc_routing: the callee in one session, the caller in another; a second REGISTER of
// the name fails; once the callee has left, the name is free again.
scenarios.rpc_routing = async (scene) => {
  const [callee, caller, rival] = await scene.sessions(3);
  const callers = [];
  await callee.register('com.myapp.routing.square', (args, _kwargs, details) => {
    callers.push(details.caller === caller.id);
    return args[0] * args[0];
  });
  let duplicate;
  try {
    await rival.register('com.myapp.routing.square', () => 0);
    duplicate = 'registered';
  } catch (e) {
    duplicate = e.error ?? why(e);
  }
  const result = await caller.call('com.myapp.routing.square', [23], {}, { disclose_me: true });
  await scene.close(callee);
  const afterLeave = await outcome(caller.call('com.myapp.routing.square', [23]));
  return {
    result,
    caller_named: callers,
    second_register: duplicate,
    after_callee_left: afterLeave.error ?? afterLeave,
  };
};

// test_rpc_slowsquare: a slow call and a quick one issued in that order; the quick result
// comes first (the router does not queue a caller's calls behind each other), from a client
// callee and from handlers of the router.
scenarios.rpc_slow_square = async (scene) => {
  const [callee, caller] = await scene.sessions(2);
  await callee.register('com.myapp.slow.square', (args) => args[0] * args[0]);
  await callee.register('com.myapp.slow.slowsquare', (args) => new Promise((r) => setTimeout(() => r(args[0] * args[0]), 300)));
  const race = async (slow, quick) => {
    const order = [];
    const results = await Promise.all([
      caller.call(slow, [3]).then((r) => { order.push('slow'); return r; }),
      caller.call(quick, [3]).then((r) => { order.push('quick'); return r; }),
    ]);
    return { order, results };
  };
  return {
    client_callee: await race('com.myapp.slow.slowsquare', 'com.myapp.slow.square'),
    router_handlers: await race('com.example.slowsquare', 'com.example.square'),
  };
};

// ---- binary ------------------------------------------------------------------------------

// test_binary: values (bytes among them, alone, nested and empty) echoed unchanged by a
// callee of the same serializer, by one of another serializer (which must receive them as
// bytes of its own serializer, not as the JSON convention's string) and by a handler of the
// router; and byte strings published to subscribers of every serializer.
const bytesOf = (n, f) => Buffer.from(Array.from({ length: n }, (_, i) => f(i)));
scenarios.binary = async (scene) => {
  const other = SERIALIZERS[(SERIALIZERS.indexOf(SER) + 1) % SERIALIZERS.length];
  const caller = await scene.open();
  const same = await scene.open();
  const cross = await scene.open(other);
  // The callees echo args[0] and note what they received (args[1] is its index).
  const seen = { same: [], other: [] };
  const echo = (where) => (args) => {
    if (args.length > 1) seen[where][args[1]] = show(args[0]);
    return args[0];
  };
  await same.register('com.myapp.binary.echo_same', echo('same'));
  await cross.register('com.myapp.binary.echo_other', echo('other'));
  const values = [
    1.7,
    'hello',
    [1, 2, -3],
    { a: 5, b: 'hello2', c: [1, 2, 3] },
    [-9007199254740991, 9007199254740991],
    null,
    Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]),
    bytesOf(32, (i) => (i * 73 + 41) % 256),
    { a: 5, b: 'hello2', c: bytesOf(32, (i) => 255 - i * 7) },
    Buffer.alloc(0),
  ];
  const echoAll = (procedure, list) => Promise.all(list.map((v, i) => within(1500, caller.call(procedure, [v, i]), 'an echo')
    .then(show, (e) => ({ failed: why(e) }))));
  const out = {};
  scene.step = 'echoing through a callee of the same serializer';
  out.same_serializer = await echoAll('com.myapp.binary.echo_same', values);
  scene.step = `echoing through a callee of ${other}`;
  out.other_serializer = await echoAll('com.myapp.binary.echo_other', values);
  scene.step = 'echoing through a handler of the router';
  out.router_handler = await echoAll('com.example.echo', values);
  out.same_serializer_callee_received = seen.same;
  out.other_serializer_callee_received = seen.other;
  scene.step = 'publishing to subscribers of every serializer';
  const boxes = {};
  for (const ser of SERIALIZERS) {
    scene.step = `subscribing in ${ser}`;
    const subscriber = await scene.open(ser);
    boxes[ser] = inbox();
    await subscriber.subscribe('com.myapp.binary.event', (args, kwargs) => boxes[ser].push([show(args), show(kwargs)]));
  }
  scene.step = 'publishing';
  caller.publish('com.myapp.binary.event', [Uint8Array.from([0xde, 0xad, 0xbe, 0xef])], { blob: bytesOf(4, (i) => i) });
  await publishEnd(caller, 'com.myapp.binary.event');
  scene.step = 'waiting for the events';
  out.event = {};
  for (const ser of SERIALIZERS) {
    await boxes[ser].until((items) => items.some(([args]) => args[0] === 'end'), `the end marker at the ${ser} subscriber`);
    out.event[ser] = boxes[ser].items;
  }
  return out;
};

// Integers beyond 2^53, which only AutobahnJS's CBOR serializer carries (BigInt, which
// node-cbor sends as a tag 2 or tag 3 bignum whatever its size): a 64-bit one, upstream's
// 2^128 - 1 and -2^64, echoed by a CBOR callee; each from a caller of its own, since the
// router may end the session of one it cannot read.
if (SER === 'cbor') {
  scenarios.cbor_wide_integers = async (scene) => {
    const callee = await scene.open();
    await callee.register('com.myapp.wide.echo', (args) => args[0]);
    const echoed = [];
    for (const v of ['1558266424841951553', '340282366920938463463374607431768211455', '-18446744073709551616']) {
      scene.step = `echoing ${v}`;
      const caller = await scene.open();
      const aborted = watchAbort(caller);
      try {
        echoed.push(show(await within(1500, caller.call('com.myapp.wide.echo', [BigInt(v)]), 'an echo')));
      } catch (e) {
        echoed.push(aborted.length ? aborted : { failed: why(e) });
      }
    }
    return { echoed };
  };
}

// ---- run ---------------------------------------------------------------------------------

// An exception AutobahnJS raises outside a scenario's promises (in a handler's reply, say)
// must not end the run: the scenario it belongs to then times out and says so.
process.on('unhandledRejection', (e) => console.error('unhandled rejection:', e));
process.on('uncaughtException', (e) => console.error('uncaught exception:', e));

const result = {};
const deadline = Date.now() + OVERALL_MS;
for (const [name, scenario] of Object.entries(scenarios)) {
  if (Date.now() > deadline) {
    result[name] = { failed: 'not run: the overall deadline passed' };
    continue;
  }
  const scene = new Scene();
  try {
    result[name] = await within(SCENARIO_MS, scenario(scene), name);
  } catch (e) {
    result[name] = { failed: `${why(e)} (while ${scene.step})` };
  }
  await scene.closeAll();
}
console.log(JSON.stringify(result));
process.exit(0);
