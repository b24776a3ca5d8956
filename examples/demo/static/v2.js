// The page's WAMP v2 client adapter, on AutobahnJS's browser build (the global `autobahn`,
// served at /autobahn.min.js from `npm install --prefix examples/demo`).

function loadAutobahn() {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = '/autobahn.min.js';
    script.onload = resolve;
    script.onerror = () =>
      reject(new Error('AutobahnJS is not installed: run `npm install --prefix examples/demo` for the v2 page'));
    document.head.append(script);
  });
}

// An AutobahnJS error (or a closed connection) as {uri, desc}, like the v1 client's.
const failure = (e) => ({
  uri: e.error ?? 'closed',
  desc: [...(e.args ?? [e.message ?? String(e)]), ...(Object.keys(e.kwargs ?? {}).length ? [e.kwargs] : [])]
    .map((a) => (typeof a === 'string' ? a : JSON.stringify(a)))
    .join(' '),
});

// ui: { auth, serializer, onstate(state, sessionId, protocol), onjoin(), onlogin(refusal) }
export async function createClient(ui) {
  await loadAutobahn();
  const Serializer = {
    json: autobahn.serializer.JSONSerializer,
    msgpack: autobahn.serializer.MsgpackSerializer,
    cbor: autobahn.serializer.CBORSerializer,
  }[ui.serializer];
  if (!Serializer) throw new Error(`unknown serializer ${ui.serializer}: use json, msgpack or cbor`);
  const offered = `wamp.2.${ui.serializer}`;
  let session = null;
  let shutdowns = 0; // reconnections after a server shutdown in a row

  // Opens a connection (with the login, if any, in its HELLO; AutobahnJS repeats it on
  // every reconnect). Resolves with the WELCOME details, rejects with {uri, desc} when the
  // router refuses the session (ABORT).
  function open(login = {}) {
    return new Promise((resolve, reject) => {
      let joined = false;
      const connection = new autobahn.Connection({
        url: `ws://${location.host}/ws`,
        realm: 'realm1',
        serializers: [new Serializer()],
        max_retries: -1, // reconnect forever, every 0.5 s growing to 2 s
        initial_retry_delay: 0.5,
        max_retry_delay: 2,
        ...login,
      });
      connection.onopen = (s, details) => {
        session = s;
        shutdowns = 0;
        joined = true;
        ui.onstate('connected', s.id, details.transport.protocol);
        ui.onjoin();
        resolve(details);
      };
      connection.onclose = (reason, details) => {
        session = null;
        ui.onstate(details.will_retry ? 'connecting' : 'disconnected', null, offered);
        if (details.will_retry) return;
        // A router that shuts down says so (GOODBYE or ABORT wamp.close.system_shutdown):
        // come back as after a lost connection, waiting longer each time (0.5 s to 4 s).
        // Any other end (killed, refused) is final.
        if (details.reason === 'wamp.close.system_shutdown') {
          const delay = Math.min(500 * 2 ** shutdowns++, 4000);
          return setTimeout(() => connection.open(), delay);
        }
        // Otherwise the router refused the session (ABORT, wamp.error.*).
        const refusal = { uri: details.reason ?? reason, desc: details.message || reason };
        if (!joined) reject(refusal);
        else if (ui.auth) ui.onlogin(refusal);
      };
      ui.onstate('connecting', null, offered);
      connection.open();
    });
  }

  ui.onstate('disconnected', null, offered);
  if (ui.auth) ui.onlogin();
  else open().catch(() => {}); // the state shows it

  return {
    label: `WAMP v2 (AutobahnJS, ${ui.serializer})`,
    names: { chat: 'com.example.chat', add: 'com.example.add', echo: 'com.example.echo' },
    get sessionId() {
      return session?.id;
    },
    // A new connection that logs in with WAMP-CRA (key null: as an anonymous guest).
    async login(key, secret) {
      const details = await open(
        key === null
          ? { authmethods: ['anonymous'] }
          : {
              authmethods: ['wampcra'],
              authid: key,
              onchallenge: (_session, _method, extra) =>
                autobahn.auth_cra.sign(
                  extra.salt ? autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen) : secret,
                  extra.challenge,
                ),
            },
      );
      return `logged in as ${key ?? 'guest'}: authid ${details.authid}, authrole ${details.authrole}`;
    },
    acknowledges: true,
    subscribe: (handler) =>
      session.subscribe('com.example.chat', (args) => handler(args[0])).catch((e) => {
        throw failure(e);
      }),
    // Acknowledged, so a refusal arrives as an error; exclude_me: false brings our own
    // event back, which marks the line delivered.
    async publish(event) {
      if (!session) throw { uri: 'closed', desc: 'not connected' };
      try {
        await session.publish('com.example.chat', [event], {}, { acknowledge: true, exclude_me: false });
      } catch (e) {
        throw failure(e);
      }
    },
    async call(procedure, args) {
      if (!session) throw { uri: 'closed', desc: 'not connected' };
      try {
        const result = await session.call(procedure, args);
        // One positional result comes as itself, anything else as an autobahn.Result.
        return result instanceof autobahn.Result ? { args: result.args, kwargs: result.kwargs } : result;
      } catch (e) {
        throw failure(e);
      }
    },
  };
}
