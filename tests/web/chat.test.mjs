// The web chat (web/) in a real browser against the demo (scripts/demo) on free ports: Debian's
// Chromium, headless, driven by playwright-core over the DevTools protocol, two windows.
// Run by scripts/test as `node --test tests/web/`; skipped, saying why, only where Chromium
// is not installed (scripts/setup installs it). Screenshots of each window: target/web-test/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CHROMIUM = '/usr/bin/chromium';
const out = path.join(root, 'target/web-test');
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (scripts/setup could not install Debian's chromium)`;
if (skip) console.log(`# SKIPPED the web chat's browser test: ${skip}`);

const WAIT = 20_000; // what one step in the page may take
let demo, demoOutput = '', url, mqttPort, socket, browser, runDir;
const windows = {};
const pageErrors = [];
let failed = false; // keeps the run directory and prints the demo's output at the end

// A step of the story: the steps run in order, each on what the ones before left.
function step(name, body) {
  test(name, { skip }, async () => {
    try {
      await body();
    } catch (err) {
      failed = true;
      throw err;
    }
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function sql(query) {
  return execFileSync('mariadb', ['--no-defaults', `--socket=${socket}`, '-uroot', 'chat', '-N', '-B', '-e', query], {
    encoding: 'utf8',
  }).trim();
}

async function eventually(what, check, limit = WAIT) {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > limit) throw new Error(`${what}: not after ${limit} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Starts scripts/demo in a process group of its own and waits until its page is served.
async function startDemo() {
  // Run directories of earlier runs whose process is gone (a failed run keeps its files).
  for (const name of readdirSync(out)) {
    const pid = name.match(/^run-(\d+)$/)?.[1];
    if (pid && !existsSync(`/proc/${pid}`)) rmSync(path.join(out, name), { recursive: true, force: true });
  }
  runDir = path.join(out, `run-${process.pid}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  socket = path.join(runDir, 'mariadb.sock');
  mqttPort = await freePort();
  let webPort = await freePort();
  while (webPort === mqttPort) webPort = await freePort();
  demo = spawn(path.join(root, 'scripts/demo'), [], {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DEMO_DIR: runDir, MQTT_PORT: String(mqttPort), WEB_PORT: String(webPort) },
  });
  demo.stdout.on('data', (chunk) => { demoOutput += chunk; });
  demo.stderr.on('data', (chunk) => { demoOutput += chunk; });
  const exited = new Promise((resolve) => demo.once('exit', (code) => resolve(`scripts/demo exited (${code})`)));
  // The first run of scripts/demo may build the plugin (release): minutes on two cores.
  url = await Promise.race([
    eventually('scripts/demo printing the web chat URL', () => demoOutput.match(/Web chat: (http:\S+)/)?.[1], 900_000),
    exited.then((why) => { throw new Error(`${why} before printing the URL:\n${demoOutput}`); }),
  ]);
  assert.equal(url, `http://127.0.0.1:${webPort}/`);
  await eventually('the page served by mosquitto', async () => {
    try {
      return (await fetch(url)).ok;
    } catch {
      return false;
    }
  });
}

async function stopDemo() {
  if (!demo || demo.exitCode !== null) return;
  const exited = new Promise((resolve) => demo.once('exit', resolve));
  process.kill(-demo.pid, 'SIGTERM');
  const timer = setTimeout(() => { try { process.kill(-demo.pid, 'SIGKILL'); } catch {} }, 15_000);
  await exited;
  clearTimeout(timer);
}

async function openWindow(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 680 } });
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${name}: ${err.message}`));
  page.setDefaultTimeout(WAIT);
  await page.goto(url);
  windows[name] = page;
  return page;
}

async function logIn(page, username, password) {
  await page.fill('#login-form input[name=username]', username);
  await page.fill('#login-form input[name=password]', password);
  await page.click('#login-form button[type=submit]');
}

async function loggedIn(page, username) {
  await page.waitForSelector('#chat-view:not([hidden])');
  assert.match(await page.textContent('#me'), new RegExp(`^${username} \\(user \\d+\\)$`));
  await page.waitForSelector('#connection.ok');
}

function conversationButton(page, name) {
  return page.locator('button.conversation', { has: page.locator('.name', { hasText: new RegExp(`^${name}$`) }) });
}

async function say(page, text) {
  await page.fill('#composer textarea', text);
  await page.press('#composer textarea', 'Enter');
}

async function shot(page, name) {
  const file = path.join(out, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`# screenshot: ${path.relative(root, file)}`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const text = `hello bob, it is alice (${Date.now()})`;
let stamped; // {id, datetime} of alice's message as bob's window showed it

before(async () => {
  if (skip) return;
  mkdirSync(out, { recursive: true });
  failed = true; // until the browser is up
  await startDemo();
  const { chromium } = createRequire(path.join(root, 'target/npm/'))('playwright-core');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false, // --no-sandbox: as root
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  failed = false;
}, { timeout: 960_000 });

after(async () => {
  if (browser) await browser.close();
  await stopDemo();
  if (skip || !runDir) return;
  if (failed) {
    console.log(`# the demo's output (its files are kept in ${path.relative(root, runDir)}):`);
    console.log(demoOutput.split('\n').slice(-60).map((line) => '#   ' + line).join('\n'));
  } else {
    rmSync(runDir, { recursive: true, force: true });
  }
});

step('alice and bob log in, in two windows', async () => {
  const alice = await openWindow('alice');
  const bob = await openWindow('bob');
  await logIn(alice, 'alice', 'secret');
  await logIn(bob, 'bob', 'secret');
  await loggedIn(alice, 'alice');
  await loggedIn(bob, 'bob');
  // The groups as the broker's SUBACKs have them: bob is in 'demo group', not 'alice and carol'.
  await bob.waitForSelector('#groups .name:text-is("demo group")');
  await bob.waitForSelector('#other-groups .name:text-is("alice and carol")');
  await alice.waitForSelector('#groups .name:text-is("alice and carol")');
});

step('alice sends bob a message; bob sees it with the server\'s id and time', async () => {
  const { alice, bob } = windows;
  await conversationButton(alice, 'bob').click();
  await alice.waitForSelector('#history-status:text-is("No messages yet.")');
  await say(alice, text);
  // Bob is not looking at alice's conversation yet: it shows up as unread in his inbox.
  await conversationButton(bob, 'alice').locator('.badge:text-is("1")').waitFor();
  await conversationButton(bob, 'alice').click();
  const message = bob.locator('#messages li.message', { hasText: text });
  await message.waitFor();
  const id = await message.getAttribute('data-id');
  const datetime = await message.locator('time.ts').getAttribute('datetime');
  assert.match(id, UUID);
  assert.match(await message.locator('.stamp').textContent(), new RegExp(`id ${id}$`));
  assert.ok(Math.abs(Date.parse(datetime) - Date.now()) < 60_000, `a server time of now: ${datetime}`);
  stamped = { id, datetime };
  // Alice's own copy gets the same stamp (read back from history once stored).
  await alice.locator(`#messages li.message.mine[data-id="${id}"]`, { hasText: text }).waitFor();
  await shot(alice, 'alice');
});

step('the message is a row in MySQL', async () => {
  const row = await eventually('the row in messages', () =>
    sql(`SELECT type, from_id, to_id, content, server_ts FROM messages WHERE message_id = '${stamped.id}'`));
  const [type, from, to, content, ts] = row.split('\t');
  assert.deepEqual([type, from, to, content], ['CHAT', '1', '2', text]);
  assert.equal(new Date(Number(ts)).toISOString(), stamped.datetime);
});

step('bob\'s history shows it after a reload', async () => {
  const { bob } = windows;
  await bob.reload();
  assert.equal(await bob.inputValue('#login-form input[name=username]'), 'bob'); // remembered
  await logIn(bob, 'bob', 'secret');
  await loggedIn(bob, 'bob');
  await conversationButton(bob, 'alice').click();
  const message = bob.locator(`#messages li.message[data-id="${stamped.id}"]`, { hasText: text });
  await message.waitFor();
  assert.equal(await message.locator('time.ts').getAttribute('datetime'), stamped.datetime);
  await bob.waitForSelector('#history-status:text-is("The beginning of this conversation.")');
  await shot(bob, 'bob');
});

step('a message to a group bob is not in shows a refusal', async () => {
  const { bob } = windows;
  const refusedText = `bob writing where he may not (${Date.now()})`;
  await conversationButton(bob, 'alice and carol').click();
  await bob.waitForSelector('#history-status.refused'); // its history is refused too
  await say(bob, refusedText);
  const refusal = bob.locator('#messages li.message.refused', { hasText: refusedText }).locator('.refusal');
  await refusal.waitFor();
  assert.match(await refusal.textContent(), /PUBACK 0x87 Not authorized.*not a member of alice and carol/);
  await shot(bob, 'bob-refused');
  assert.equal(sql(`SELECT COUNT(*) FROM messages WHERE content = '${refusedText}'`), '0');
});

step('carol scrolls back through a longer conversation, a page at a time', async () => {
  // 40 messages from carol to bob, sent by mosquitto_pub over plain MQTT (one line each): her
  // window knows them only from history (a sender never receives what it sent to an inbox).
  // In two bursts of 20, 4.5 s apart: the default chat rate (chat_rate 5/s, chat_burst 20,
  // docs/limits.md) refuses a user's 21st message in a row.
  const line = (i) =>
    JSON.stringify({ type: 'CHAT', fromId: 3, toId: 2, content: `carol's message ${i + 1} of 40` });
  for (const first of [0, 20]) {
    const lines = Array.from({ length: 20 }, (_, i) => line(first + i)).join('\n');
    execFileSync('mosquitto_pub', ['-p', String(mqttPort), '-u', 'carol', '-P', 'secret', '-q', '1',
      '-t', '/users/2/messages', '-l'], { input: lines + '\n' });
    const rows = String(first + 20);
    await eventually(`the ${rows} rows`, () => sql("SELECT COUNT(*) FROM messages WHERE from_id = '3'") === rows);
    if (first === 0) await new Promise((r) => setTimeout(r, 4_500));
  }
  const carol = await openWindow('carol');
  await logIn(carol, 'carol', 'secret');
  await loggedIn(carol, 'carol');
  await conversationButton(carol, 'bob').click();
  const messages = carol.locator('#messages li.message');
  // The newest page first (30), the newest message last, and a way further back.
  await carol.locator('#older').waitFor();
  assert.equal(await messages.count(), 30);
  assert.equal(await messages.last().locator('.content').textContent(), "carol's message 40 of 40");
  // Scrolling to the top fetches the page before it.
  await carol.locator('#scroller').evaluate((node) => { node.scrollTop = 0; });
  await carol.waitForSelector('#history-status:text-is("The beginning of this conversation.")');
  assert.equal(await messages.count(), 40);
  assert.equal(await messages.first().locator('.content').textContent(), "carol's message 1 of 40");
  assert.ok(await carol.isHidden('#older'));
  await shot(carol, 'carol');
});

step('a wrong password shows a refusal', async () => {
  const page = await openWindow('wrong-password');
  await logIn(page, 'bob', 'not-his-password');
  await page.waitForSelector('#login-status.refused');
  assert.match(await page.textContent('#login-status'), /Login refused by the broker: CONNACK 0x8[67] /);
  assert.ok(await page.isHidden('#chat-view'));
  await shot(page, 'login-refused');
});

step('no script errors in any window', () => {
  assert.deepEqual(pageErrors, []);
});
