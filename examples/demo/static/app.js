// The demo page: a chat room and an RPC panel. `/` runs on WAMP v1 (our own client,
// wamp.js), `/?wamp=2&serializer=json|msgpack|cbor` on WAMP v2 (AutobahnJS). Both client
// adapters (v1.js, v2.js) have the same small interface, so everything below is shared.
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const v2 = params.get('wamp') === '2';
const serializer = params.get('serializer') || 'json';
const config = await (await fetch('/config.json')).json();
const pending = new Map(); // own chat lines not yet seen back

// The header's protocol switch: mark the current choice.
document.querySelector(`nav a[data-wamp="${v2 ? 2 : 1}"]`).setAttribute('aria-current', 'page');
if (v2) {
  $('serializers').hidden = false;
  [...document.querySelectorAll('#serializers a')]
    .find((a) => a.dataset.serializer === serializer)
    ?.setAttribute('aria-current', 'page');
}

function show(text, cls) {
  const li = document.createElement('li');
  li.textContent = text;
  if (cls) li.className = cls;
  $('messages').append(li);
  return li;
}

function setState(state, sessionId, protocol) {
  $('state').dataset.state = state;
  $('state').textContent = state;
  $('session').textContent = sessionId ?? '–';
  if (protocol) $('subprotocol').textContent = protocol;
}

function showLogin(refusal) {
  if (refusal) {
    $('auth-status').textContent = `login refused: ${refusal.desc} (${refusal.uri})`;
    $('auth-status').dataset.user = '';
  }
  $('login').hidden = false;
}

function join() {
  const joined = client.subscribe((event) => {
    const mine = String(event.from) === String(client.sessionId) && pending.has(event.message);
    if (mine) {
      clearTimeout(pending.get(event.message).timer);
      pending.get(event.message).li.className = 'delivered';
      pending.delete(event.message);
    } else {
      show(`${event.name || event.from}: ${event.message}`);
    }
  });
  // v2 answers the subscription: a refusal is shown, not left unhandled.
  Promise.resolve(joined).catch((e) => show(`(joining the chat refused: ${e.uri ?? e.error ?? e})`, 'refused'));
}

let client;
try {
  const { createClient } = await import(v2 ? '/v2.js' : '/v1.js');
  client = await createClient({ auth: config.auth, serializer, onstate: setState, onjoin: join, onlogin: showLogin });
} catch (e) {
  setState('unavailable', null);
  $('notice').textContent = e.message;
  $('notice').hidden = false;
  throw e;
}
$('protocol').textContent = client.label;
$('chat-topic').textContent = client.names.chat;
$('add-name').textContent = client.names.add;
$('echo-name').textContent = client.names.echo;

async function login(key, secret) {
  $('login').hidden = true;
  try {
    $('auth-status').textContent = await client.login(key, secret);
    $('auth-status').dataset.user = key ?? 'guest';
  } catch (e) {
    showLogin(e);
  }
}

$('login-btn').onclick = () => login($('key').value, $('secret').value);
$('guest-btn').onclick = () => login(null, null);

$('chat-form').onsubmit = async (e) => {
  e.preventDefault();
  const text = $('message').value.trim();
  if (!text) return;
  $('message').value = '';
  const li = show(`${$('name').value || 'me'}: ${text}`, 'sending');
  // The router sends our own line back to us: that marks it delivered. A refusal is an
  // error (v2) or a line that never comes back (v1).
  const refuse = (why) => {
    clearTimeout(timer);
    li.className = 'refused';
    li.textContent += `  (not delivered: ${why})`;
    pending.delete(text);
  };
  const timer = setTimeout(() => refuse('publishing refused'), 1500);
  pending.set(text, { li, timer });
  try {
    await client.publish({ name: $('name').value, message: text });
    // Acknowledged (v2): accepted, so only the echo is awaited, however late it comes.
    if (client.acknowledges) clearTimeout(timer);
  } catch (e) {
    refuse(`${e.uri}: ${e.desc}`);
  }
};

async function rpc(procedure, args) {
  try {
    $('rpc-result').textContent = `${procedure} → ${JSON.stringify(await client.call(procedure, args))}`;
    $('rpc-result').className = 'ok';
  } catch (e) {
    $('rpc-result').textContent = `${procedure} → error ${e.uri}: ${e.desc}`;
    $('rpc-result').className = 'error';
  }
}

$('add-form').onsubmit = (e) => {
  e.preventDefault();
  const args = $('add-args').value.split(',').map((s) => s.trim()).map((s) => (s !== '' && !isNaN(s) ? Number(s) : s));
  rpc(client.names.add, args);
};

$('echo-form').onsubmit = (e) => {
  e.preventDefault();
  rpc(client.names.echo, [$('echo-arg').value]);
};
