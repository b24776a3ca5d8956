import { WampClient } from '/wamp.js';

const API = 'http://clj-wamp-example/api#';
const EV = 'http://clj-wamp-example/event#';
const $ = (id) => document.getElementById(id);
const config = await (await fetch('/config.json')).json();
let credentials = null; // [key, secret] once the user chose, kept for reconnects
const pending = new Map(); // own chat lines not yet seen back

function show(text, cls) {
  const li = document.createElement('li');
  li.textContent = text;
  if (cls) li.className = cls;
  $('messages').append(li);
  return li;
}

function setState(state, sessionId) {
  $('state').dataset.state = state;
  $('state').textContent = state;
  $('session').textContent = sessionId ?? '–';
}

const client = new WampClient(`ws://${location.host}/ws`, {
  onstate: setState,
  onwelcome: async () => {
    client.prefix('api', API);
    client.prefix('event', EV);
    if (config.auth) {
      if (!credentials) {
        $('login').hidden = false;
        return;
      }
      await login(...credentials);
    }
    join();
  },
});

function join() {
  client.subscribe('event:chat', (event) => {
    const mine = event.from === client.sessionId && pending.has(event.message);
    if (mine) {
      clearTimeout(pending.get(event.message).timer);
      pending.get(event.message).li.className = 'delivered';
      pending.delete(event.message);
    } else {
      show(`${event.name || event.from}: ${event.message}`);
    }
  });
}

async function login(key, secret) {
  try {
    const permissions = await client.authenticate(key, secret);
    const may = (c) => Object.keys(permissions[c] || {}).length;
    $('auth-status').textContent =
      `logged in as ${key ?? 'guest'}: ${may('rpc')} procedures, ${may('subscribe')} subscribable, ${may('publish')} publishable topics`;
    $('auth-status').dataset.user = key ?? 'guest';
    $('login').hidden = true;
    return true;
  } catch (e) {
    $('auth-status').textContent = `login refused: ${e.desc} (${e.uri})`;
    $('auth-status').dataset.user = '';
    credentials = null;
    return false;
  }
}

async function chooseLogin(key, secret) {
  credentials = [key, secret];
  if (await login(key, secret)) join();
}

$('login-btn').onclick = () => chooseLogin($('key').value, $('secret').value);
$('guest-btn').onclick = () => chooseLogin(null, null);

$('chat-form').onsubmit = (e) => {
  e.preventDefault();
  const text = $('message').value.trim();
  if (!text) return;
  $('message').value = '';
  const li = show(`${$('name').value || 'me'}: ${text}`, 'sending');
  // WAMP v1 never acknowledges a publication: the router sends it back to us (the
  // publisher is included), so a line that does not come back was refused.
  const timer = setTimeout(() => {
    li.className = 'refused';
    li.textContent += '  (not delivered: publishing refused)';
    pending.delete(text);
  }, 1500);
  pending.set(text, { li, timer });
  client.publish('event:chat', { name: $('name').value, message: text });
};

async function rpc(procedure, args) {
  try {
    $('rpc-result').textContent = `${procedure} → ${JSON.stringify(await client.call(procedure, ...args))}`;
    $('rpc-result').className = 'ok';
  } catch (e) {
    $('rpc-result').textContent = `${procedure} → error ${e.uri}: ${e.desc}`;
    $('rpc-result').className = 'error';
  }
}

$('add-form').onsubmit = (e) => {
  e.preventDefault();
  const args = $('add-args').value.split(',').map((s) => s.trim()).map((s) => (s !== '' && !isNaN(s) ? Number(s) : s));
  rpc('api:add', args);
};

$('echo-form').onsubmit = (e) => {
  e.preventDefault();
  rpc('api:echo', [$('echo-arg').value]);
};
