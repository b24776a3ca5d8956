// The page's WAMP v1 client adapter, on our own small client (wamp.js): clj-wamp's URIs
// through CURIE prefixes, WAMP-CRA over the open session.
import { WampClient } from '/wamp.js';

const API = 'http://clj-wamp-example/api#';
const EV = 'http://clj-wamp-example/event#';

// ui: { auth, onstate(state, sessionId, protocol), onjoin(), onlogin(refusal) }
export function createClient(ui) {
  let credentials = null; // [key, secret] once logged in, kept for reconnects
  const client = new WampClient(`ws://${location.host}/ws`, {
    onstate: (state, sessionId) => ui.onstate(state, sessionId, 'wamp'),
    onwelcome: async () => {
      client.prefix('api', API);
      client.prefix('event', EV);
      if (ui.auth) {
        if (!credentials) return ui.onlogin();
        try {
          await client.authenticate(...credentials);
        } catch (e) {
          credentials = null;
          return ui.onlogin(e);
        }
      }
      ui.onjoin();
    },
  });
  return {
    label: 'WAMP v1',
    names: { chat: 'event:chat', add: 'api:add', echo: 'api:echo' },
    get sessionId() {
      return client.sessionId;
    },
    // WAMP-CRA on the open session (key null: anonymous). Resolves with a status line,
    // rejects with {uri, desc}.
    async login(key, secret) {
      const permissions = await client.authenticate(key, secret);
      credentials = [key, secret];
      ui.onjoin();
      const may = (c) => Object.keys(permissions[c] || {}).length;
      return `logged in as ${key ?? 'guest'}: ${may('rpc')} procedures, ${may('subscribe')} subscribable, ${may('publish')} publishable topics`;
    },
    subscribe: (handler) => client.subscribe('event:chat', handler),
    // WAMP v1 never acknowledges a publication: the router sends it back to us (the
    // publisher is included), so a line that does not come back was refused.
    publish: async (event) => client.publish('event:chat', event),
    call: (procedure, args) => client.call(procedure, ...args),
  };
}
