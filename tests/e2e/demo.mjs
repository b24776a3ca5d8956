// End-to-end: the demo page in headless Chromium, driven as a person would.
// Usage: node demo.mjs PLAIN_URL AUTH_URL SCREENSHOT_DIR
// Talks to its runner on stdio: prints "restart-server", waits for "restarted".
// Prints one JSON line of findings at the end; any failed wait exits non-zero.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';

const [plainUrl, authUrl, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const findings = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const open = async (url) => {
    const page = await (await browser.newContext({ viewport: { width: 1100, height: 620 } })).newPage();
    page.setDefaultTimeout(10000);
    await page.goto(url);
    await page.waitForSelector('#state[data-state=connected]');
    return page;
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
  console.log('restart-server');
  const reply = await lines.next();
  if (reply.value !== 'restarted') throw new Error(`runner said ${reply.value}`);
  await ada.waitForFunction((old) => {
    const s = document.querySelector('#state').dataset.state;
    return s === 'connected' && document.querySelector('#session').textContent !== old;
  }, before, { timeout: 15000 });
  await bob.waitForSelector('#state[data-state=connected]');
  findings.reconnected = before !== (await ada.textContent('#session'));
  await say(bob, 'still here after the restart');
  await ada.waitForSelector('#messages li:text("Bob: still here after the restart")');

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
  await guest.screenshot({ path: `${shots}/demo-guest-refused.png` });
  await carol.screenshot({ path: `${shots}/demo-auth.png` });
  console.log(JSON.stringify(findings));
} finally {
  await browser.close();
}
process.exit(0);
