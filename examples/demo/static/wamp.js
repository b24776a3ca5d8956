// A small WAMP v1 client for the browser: the nine JSON array messages, CURIE prefixes,
// WAMP-CRA (Autobahn flavour, salted secrets included) with the Web Crypto API, and
// reconnection after the server goes away.

const AUTHREQ = 'http://api.wamp.ws/procedure#authreq';
const AUTH = 'http://api.wamp.ws/procedure#auth';

const enc = new TextEncoder();

function base64(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

export async function hmacSha256(key, message) {
  const k = await crypto.subtle.importKey('raw', enc.encode(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return base64(await crypto.subtle.sign('HMAC', k, enc.encode(message)));
}

export async function deriveKey(password, { salt, iterations = 10000, keylen = 32 }) {
  const k = await crypto.subtle.importKey('raw', enc.encode(password), 'PBKDF2', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits(
    { name: 'PBKDF2', salt: enc.encode(salt), iterations, hash: 'SHA-256' }, k, keylen * 8);
  return base64(bits);
}

export class WampClient {
  constructor(url, { onstate = () => {}, onwelcome = () => {} } = {}) {
    this.url = url;
    this.onstate = onstate;
    this.onwelcome = onwelcome;
    this.calls = new Map();
    this.handlers = new Map();
    this.prefixes = new Map();
    this.sessionId = null;
    this.retry = 250;
    this.connect();
  }

  connect() {
    this.onstate('connecting', null);
    const ws = new WebSocket(this.url, ['wamp']);
    this.ws = ws;
    ws.onmessage = (e) => this.receive(JSON.parse(e.data));
    ws.onclose = () => {
      this.sessionId = null;
      for (const call of this.calls.values()) call.reject({ uri: 'closed', desc: 'connection closed' });
      this.calls.clear();
      this.onstate('disconnected', null);
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 2000);
    };
  }

  receive(m) {
    switch (m[0]) {
      case 0: // WELCOME
        this.sessionId = m[1];
        this.retry = 250;
        for (const [p, uri] of this.prefixes) this.send([1, p, uri]);
        this.onstate('connected', m[1]);
        this.onwelcome(m[1]);
        break;
      case 3: { // CALLRESULT
        const call = this.calls.get(m[1]);
        this.calls.delete(m[1]);
        if (call) call.resolve(m[2]);
        break;
      }
      case 4: { // CALLERROR
        const call = this.calls.get(m[1]);
        this.calls.delete(m[1]);
        if (call) call.reject({ uri: m[2], desc: m[3], details: m[4] });
        break;
      }
      case 8: { // EVENT: always a full URI
        const handler = this.handlers.get(m[1]);
        if (handler) handler(m[2], m[1]);
        break;
      }
    }
  }

  send(message) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  resolve(curie) {
    const i = curie.indexOf(':');
    if (i > 0 && this.prefixes.has(curie.slice(0, i))) return this.prefixes.get(curie.slice(0, i)) + curie.slice(i + 1);
    return curie;
  }

  prefix(p, uri) {
    this.prefixes.set(p, uri);
    this.send([1, p, uri]);
  }

  call(procedure, ...args) {
    return new Promise((resolve, reject) => {
      const id = Math.random().toString(36).slice(2);
      this.calls.set(id, { resolve, reject });
      this.send([2, id, procedure, ...args]);
    });
  }

  subscribe(topic, handler) {
    this.handlers.set(this.resolve(topic), handler);
    this.send([5, topic]);
  }

  publish(topic, event) {
    this.send([7, topic, event]);
  }

  // WAMP-CRA; key null = anonymous. Resolves with the permissions the server grants.
  async authenticate(key, secret) {
    const challenge = await this.call(AUTHREQ, key);
    if (key === null) return this.call(AUTH, null);
    let signingKey = secret;
    const extra = JSON.parse(challenge).authextra;
    if (extra && extra.salt) signingKey = await deriveKey(secret, extra);
    return this.call(AUTH, await hmacSha256(signingKey, challenge));
  }
}
