// End-to-end: the demo page in headless Chromium, driven as a person would.
// Usage: node demo.mjs PLAIN_URL AUTH_URL SCREENSHOT_DIR NO_AUTOBAHN_URL
// (the last: a plain server whose AutobahnJS file is missing)
// Talks to its runner on stdio: prints "restart-server", waits for "restarted".
// Prints one JSON line of findings at the end; any failed wait exits non-zero.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';

const [plainUrl, authUrl, shots, noAutobahnUrl] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const findings = { page_errors: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const load = async (url) => {
    const page = await (await browser.newContext({ viewport: { width: 1100, height: 620 } })).newPage();
    page.setDefaultTimeout(10000);
    page.on('pageerror', (e) => findings.page_errors.push(`${url}: ${e.message}`));
    await page.goto(url);
    return page;
  };
  const open = async (url) => {
    const page = await load(url);
    await page.waitForSelector('#state[data-state=connected]');
    return page;
  };
  const texts = (page) => page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent));
  const call = async (page, form, input, value) => {
    await page.fill(input, value);
    await page.click(`${form} button`);
  };
  const say = async (page, text) => {
    await page.fill('#message', text);
    await page.click('#chat-form button');
  };

  // Two people join the chat and see each other's messages.
  const ada = await open(plainUrl);
  const bob = await open(plainUrl);
  await ada.fill('#name', 'Ada');
  await bob.fill('#name', 'Bob');
  await say(ada, 'hello from Ada');
  await bob.waitForSelector('#messages li:text("Ada: hello from Ada")');
  await ada.waitForSelector('#messages li.delivered:has-text("hello from Ada")');
  await say(bob, 'hi Ada, Bob here');
  await ada.waitForSelector('#messages li:text("Bob: hi Ada, Bob here")');
  findings.chat = true;

  // WAMP v2 pages (AutobahnJS, one per serializer) join the same chat room.
  const v2 = {};
  findings.v2_protocols = {};
  for (const [serializer, name] of [['json', 'Cyd'], ['msgpack', 'Dan'], ['cbor', 'Eve']]) {
    v2[serializer] = await open(`${plainUrl}?wamp=2&serializer=${serializer}`);
    await v2[serializer].fill('#name', name);
    findings.v2_protocols[serializer] = [
      await v2[serializer].textContent('#protocol'),
      await v2[serializer].textContent('#subprotocol'),
    ];
  }
  await say(ada, 'Ada to everyone');
  for (const page of Object.values(v2)) await page.waitForSelector('#messages li:text("Ada: Ada to everyone")');
  for (const [serializer, page] of Object.entries(v2)) {
    const name = await page.inputValue('#name');
    const text = `${name} over ${serializer}`;
    await say(page, text);
    await page.waitForSelector(`#messages li.delivered:has-text("${text}")`);
    for (const other of [ada, bob, ...Object.values(v2)].filter((p) => p !== page)) {
      await other.waitForSelector(`#messages li:text("${name}: ${text}")`);
    }
  }
  findings.v1_page_lines = await texts(bob);
  findings.v2_page_lines = await texts(v2.msgpack);

  // RPC on v2: a result, an error with its URI, unicode, under each serializer.
  findings.v2_rpc = {};
  for (const [serializer, page] of Object.entries(v2)) {
    const got = (findings.v2_rpc[serializer] = {});
    await call(page, '#add-form', '#add-args', '1, 2, 3.5');
    await page.waitForSelector('#rpc-result.ok:text("com.example.add → 6.5")');
    got.add = await page.textContent('#rpc-result');
    await call(page, '#add-form', '#add-args', '1, two');
    await page.waitForSelector('#rpc-result.error:has-text("wamp.error.invalid_argument")');
    got.add_error = await page.textContent('#rpc-result');
    await call(page, '#echo-form', '#echo-arg', 'ünïcødé ✓');
    await page.waitForSelector('#rpc-result.ok:has-text("ünïcødé ✓")');
    got.echo = await page.textContent('#rpc-result');
  }
  await v2.json.screenshot({ path: `${shots}/demo-v2.png` });

  // RPC: a result and an error.
  await ada.fill('#add-args', '1, 2, 3.5');
  await ada.click('#add-form button');
  await ada.waitForSelector('#rpc-result.ok:text("api:add → 6.5")');
  findings.add = await ada.textContent('#rpc-result');
  await ada.fill('#echo-arg', 'ünïcødé');
  await ada.click('#echo-form button');
  await ada.waitForSelector('#rpc-result.ok:has-text("ünïcødé")');
  await ada.fill('#add-args', '1, two');
  await ada.click('#add-form button');
  await ada.waitForSelector('#rpc-result.error:has-text("invalid-argument")');
  findings.add_error = await ada.textContent('#rpc-result');
  await ada.fill('#add-args', '1, 2, 3');
  await ada.click('#add-form button');
  await ada.waitForSelector('#rpc-result.ok:text("api:add → 6")');
  await ada.screenshot({ path: `${shots}/demo-chat-rpc.png` });

  // The server restarts: the page reconnects with a new session and chat works again.
  const before = await ada.textContent('#session');
  const v2Before = {};
  for (const [serializer, page] of Object.entries(v2)) v2Before[serializer] = await page.textContent('#session');
  console.log('restart-server');
  const reply = await lines.next();
  if (reply.value !== 'restarted') throw new Error(`runner said ${reply.value}`);
  await ada.waitForFunction((old) => {
    const s = document.querySelector('#state').dataset.state;
    return s === 'connected' && document.querySelector('#session').textContent !== old;
  }, before, { timeout: 15000 });
  await bob.waitForSelector('#state[data-state=connected]');
  findings.reconnected = before !== (await ada.textContent('#session'));
  findings.v2_reconnected = {};
  for (const [serializer, page] of Object.entries(v2)) {
    await page.waitForFunction((old) => {
      const s = document.querySelector('#state').dataset.state;
      return s === 'connected' && document.querySelector('#session').textContent !== old;
    }, v2Before[serializer], { timeout: 15000 });
    findings.v2_reconnected[serializer] = v2Before[serializer] !== (await page.textContent('#session'));
  }
  await say(bob, 'still here after the restart');
  await ada.waitForSelector('#messages li:text("Bob: still here after the restart")');
  for (const page of Object.values(v2)) await page.waitForSelector('#messages li:text("Bob: still here after the restart")');
  await say(v2.cbor, 'Eve is back too');
  await v2.cbor.waitForSelector('#messages li.delivered:has-text("Eve is back too")');
  await bob.waitForSelector('#messages li:text("Eve: Eve is back too")');
  await v2.json.waitForSelector('#messages li:text("Eve: Eve is back too")');

  // Authenticated mode: a guest's publish is refused and shown as such; a user logs in.
  const guest = await open(authUrl);
  await guest.waitForSelector('#login:not([hidden])');
  await guest.click('#guest-btn');
  await guest.waitForSelector('#auth-status[data-user=guest]');
  await guest.fill('#name', 'Guest');
  await say(guest, 'may I speak?');
  await guest.waitForSelector('#messages li.refused:has-text("may I speak?")');
  await guest.fill('#add-args', '2, 2');
  await guest.click('#add-form button');
  await guest.waitForSelector('#rpc-result.error:has-text("unauthorized")');
  findings.guest_refused = true;
  const carol = await open(authUrl);
  await carol.fill('#key', 'carol');
  await carol.fill('#secret', 'wrong');
  await carol.click('#login-btn');
  await carol.waitForSelector('#auth-status:has-text("invalid-signature")');
  await carol.fill('#secret', 'secret');
  await carol.click('#login-btn');
  await carol.waitForSelector('#auth-status[data-user=carol]');
  await carol.fill('#name', 'Carol');
  await say(carol, 'salted and signed in the browser');
  await carol.waitForSelector('#messages li.delivered:has-text("salted and signed")');
  await guest.waitForSelector('#messages li:text("Carol: salted and signed in the browser")');
  findings.login = await carol.textContent('#auth-status');

  // Authenticated mode on v2: the login form comes before connecting.
  const v2guest = await load(`${authUrl}?wamp=2`);
  await v2guest.waitForSelector('#login:not([hidden])');
  await v2guest.click('#guest-btn');
  await v2guest.waitForSelector('#auth-status[data-user=guest]');
  await v2guest.waitForSelector('#state[data-state=connected]');
  await v2guest.fill('#name', 'Guest2');
  await say(v2guest, 'may I speak on v2?');
  await v2guest.waitForSelector('#messages li.refused:has-text("may I speak on v2?")');
  findings.v2_guest_publish = (await texts(v2guest)).at(-1);
  await call(v2guest, '#add-form', '#add-args', '2, 2');
  await v2guest.waitForSelector('#rpc-result.error:has-text("com.example.add")');
  findings.v2_guest_add = await v2guest.textContent('#rpc-result');
  await call(v2guest, '#echo-form', '#echo-arg', 'guests may echo');
  await v2guest.waitForSelector('#rpc-result.ok:has-text("guests may echo")');
  const carol2 = await load(`${authUrl}?wamp=2&serializer=msgpack`);
  await carol2.waitForSelector('#login:not([hidden])');
  await carol2.fill('#key', 'carol');
  await carol2.fill('#secret', 'wrong');
  await carol2.click('#login-btn');
  await carol2.waitForSelector('#auth-status:has-text("login refused")');
  await carol2.waitForSelector('#login:not([hidden])');
  findings.v2_login_refused = await carol2.textContent('#auth-status');
  await carol2.fill('#secret', 'secret');
  await carol2.click('#login-btn');
  await carol2.waitForSelector('#auth-status[data-user=carol]');
  await carol2.waitForSelector('#state[data-state=connected]');
  findings.v2_login = await carol2.textContent('#auth-status');
  await carol2.fill('#name', 'Carol2');
  await say(carol2, 'signed by AutobahnJS');
  await carol2.waitForSelector('#messages li.delivered:has-text("signed by AutobahnJS")');
  await guest.waitForSelector('#messages li:text("Carol2: signed by AutobahnJS")');
  await v2guest.waitForSelector('#messages li:text("Carol2: signed by AutobahnJS")');
  await say(carol, 'from v1 to the v2 guest');
  await v2guest.waitForSelector('#messages li:text("Carol: from v1 to the v2 guest")');
  await carol2.waitForSelector('#messages li:text("Carol: from v1 to the v2 guest")');
  findings.v2_auth_chat = true;
  await v2guest.screenshot({ path: `${shots}/demo-v2-guest.png` });

  // Without AutobahnJS installed the v2 page says what to do; the v1 page still works.
  const bare = await (await browser.newContext()).newPage();
  await bare.goto(`${noAutobahnUrl}?wamp=2`);
  await bare.waitForSelector('#state[data-state=unavailable]');
  findings.no_autobahn_notice = await bare.textContent('#notice');
  findings.no_autobahn_http = await bare.evaluate(async () => {
    const r = await fetch('/autobahn.min.js');
    return [r.status, await r.text()];
  });
  const bareV1 = await open(noAutobahnUrl);
  await call(bareV1, '#add-form', '#add-args', '20, 22');
  await bareV1.waitForSelector('#rpc-result.ok:text("api:add → 42")');
  findings.no_autobahn_v1 = true;
  await guest.screenshot({ path: `${shots}/demo-guest-refused.png` });
  await carol.screenshot({ path: `${shots}/demo-auth.png` });
  console.log(JSON.stringify(findings));
} finally {
  await browser.close();
}
process.exit(0);
