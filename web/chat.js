// The chat-auth web chat: MQTT 5 over WebSockets with the `mqtt` package's browser bundle
// (the global `mqtt`), no framework. What it speaks is the plugin's chat model
// (docs/chat-and-storage.md) and chat history (docs/control-and-history.md):
//
//   inbox   /users/{id}/messages   {"type":"CHAT","fromId":me,"toId":them,"content":...}
//   group   /groups/{id}/messages  {"type":"GROUPCHAT","fromId":me,"toId":group,...}
//   history $CONTROL/chat-history/v1 (answers on $CONTROL/chat-history/v1/response)
//
// Who is who comes from directory.json beside the page (users and groups by id and name;
// scripts/demo writes it from the database: a product has a directory service of its own).
// Whether this user is in a group is what the broker answers to the SUBSCRIBE, not the file.
'use strict';

const HISTORY = '$CONTROL/chat-history/v1';
const HISTORY_RESPONSE = HISTORY + '/response';
const PAGE = 30;

// MQTT 5 reason codes a person may meet here (a refused login, publish or subscribe).
const REASONS = {
  0x80: 'Unspecified error', 0x83: 'Implementation specific error',
  0x84: 'Unsupported protocol version', 0x85: 'Client identifier not valid',
  0x86: 'Bad user name or password', 0x87: 'Not authorized', 0x88: 'Server unavailable',
  0x89: 'Server busy', 0x8a: 'Banned', 0x8c: 'Bad authentication method',
  0x90: 'Topic name invalid', 0x95: 'Packet too large', 0x96: 'Message rate too high',
  0x97: 'Quota exceeded', 0x99: 'Payload format invalid',
};
const hex = (code) => '0x' + code.toString(16).padStart(2, '0');
const reason = (code) => `${hex(code)} ${REASONS[code] || 'refused'}`;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

let state = null; // the logged-in session; null on the login form

// ---- Log in and out -------------------------------------------------------------------

function defaultBroker() {
  const asked = new URLSearchParams(location.search).get('broker');
  if (asked) return asked;
  if (!location.host) return '';
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/mqtt';
}

function loginStatus(text, refused) {
  const status = $('login-status');
  status.textContent = text;
  status.classList.toggle('refused', !!refused);
}

async function loadDirectory() {
  const answer = await fetch('directory.json', { cache: 'no-store' });
  if (!answer.ok) throw new Error(`directory.json: HTTP ${answer.status}`);
  const directory = await answer.json();
  return {
    users: new Map((directory.users || []).map((u) => [String(u.id), u.name])),
    groups: new Map((directory.groups || []).map((g) => [String(g.id), g.name])),
  };
}

function login(username, password, broker) {
  if (typeof mqtt === 'undefined') {
    loginStatus('The MQTT client (mqtt.min.js) did not load: serve the page with scripts/demo.', true);
    return;
  }
  if (!broker) {
    loginStatus('Give the broker\'s WebSocket URL (ws://host:port/mqtt) under "Broker".', true);
    return;
  }
  loginStatus('Connecting to ' + broker + ' ...');
  $('login-form').querySelector('button').disabled = true;
  const client = mqtt.connect(broker, {
    protocolVersion: 5,
    username,
    password,
    clientId: 'web-' + username.replace(/[^A-Za-z0-9_-]/g, '') + '-' + Math.random().toString(16).slice(2, 10),
    clean: true,
    reconnectPeriod: 0, // a refused login is final; reconnecting starts once logged in
    resubscribe: false, // subscribeAll subscribes again after a reconnect, reading the SUBACKs
    connectTimeout: 10000,
  });
  let connected = false;
  let refusal = null;
  client.on('error', (err) => {
    if (connected) return;
    const code = typeof err.code === 'number' ? err.code : null;
    refusal = code !== null
      ? `Login refused by the broker: CONNACK ${reason(code)}. Check the user name and password.`
      : 'Could not log in: ' + err.message;
  });
  client.on('close', () => {
    if (connected) return;
    client.end(true);
    $('login-form').querySelector('button').disabled = false;
    loginStatus(refusal || `No answer from the broker at ${broker}.`, true);
  });
  client.once('connect', async () => {
    connected = true;
    let directory;
    try {
      directory = await loadDirectory();
    } catch (err) {
      client.end(true);
      $('login-form').querySelector('button').disabled = false;
      loginStatus('Logged in, but the user directory could not be read: ' + err.message, true);
      return;
    }
    const myId = [...directory.users].find(([, name]) => name === username)?.[0];
    if (myId === undefined) {
      client.end(true);
      $('login-form').querySelector('button').disabled = false;
      loginStatus(`Logged in, but ${username} is not in the directory (directory.json): no chat identity to use.`, true);
      return;
    }
    $('login-form').querySelector('button').disabled = false;
    loginStatus('');
    startSession(client, { id: myId, name: username }, directory);
  });
}

function logout() {
  if (!state) return;
  state.client.end(true);
  state = null;
  $('chat-view').hidden = true;
  $('login-view').hidden = false;
  $('login-form').password.value = '';
  loginStatus('Logged out.');
}

// ---- The session ----------------------------------------------------------------------

function startSession(client, me, directory) {
  state = {
    client,
    me,
    directory,
    conversations: new Map(), // 'u:2' or 'g:1' -> conversation
    current: null,
    requests: new Map(), // correlationData -> {resolve, timer}
    nextRequest: 1,
  };
  client.options.reconnectPeriod = 3000;
  client.on('message', onMessage);
  client.on('connect', () => { setConnection('connected'); subscribeAll(); catchUp(); });
  client.on('reconnect', () => setConnection('reconnecting ...'));
  client.on('offline', () => setConnection('offline: reconnecting ...'));
  client.on('close', () => { if (state && state.client === client) setConnection('disconnected'); });

  for (const [id, name] of directory.users) {
    if (id !== me.id) conversation('CHAT', id, name);
  }
  for (const [id, name] of directory.groups) conversation('GROUPCHAT', id, name);

  $('me').textContent = `${me.name} (user ${me.id})`;
  notice('');
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  setConnection('connected');
  renderSidebar();
  showConversation(null);
  subscribeAll();
  catchUp();
}

function setConnection(text) {
  const node = $('connection');
  node.textContent = text;
  node.classList.toggle('ok', text === 'connected');
}

function topicOf(type, id) {
  return type === 'CHAT' ? `/users/${id}/messages` : `/groups/${id}/messages`;
}

function keyOf(type, id) {
  return (type === 'CHAT' ? 'u:' : 'g:') + id;
}

function conversation(type, id, title) {
  const key = keyOf(type, id);
  let conv = state.conversations.get(key);
  if (!conv) {
    conv = {
      key, type, id: String(id),
      title: title || (type === 'CHAT' ? `user ${id}` : `group ${id}`),
      topic: topicOf(type, id),
      messages: [], // stamped messages, oldest first
      ids: new Set(),
      pending: [], // sent by this window, not yet seen stamped
      member: type === 'CHAT' ? true : null, // groups: what the broker's SUBACK said
      loaded: false, // a first history page was asked for
      more: false, // older pages exist
      loading: false,
      historyError: null,
      unread: 0,
      // Presence (issue 27, not in the plugin yet): null means unknown and shows nothing.
      // When the plugin publishes /users/{id}/presence, a subscription per contact sets
      // this to true or false and renderSidebar shows it.
      presence: null,
    };
    state.conversations.set(key, conv);
  }
  return conv;
}

// The inbox, every known group (the broker grants members only) and history's answers.
function subscribeAll() {
  const s = state;
  const groups = [...s.conversations.values()].filter((c) => c.type === 'GROUPCHAT');
  const topics = [topicOf('CHAT', s.me.id), HISTORY_RESPONSE, ...groups.map((g) => g.topic)];
  // One SUBACK reason code per topic, in order (mqtt.js passes the packet, refused or not).
  s.client.subscribe(topics, { qos: 1 }, (err, subs, suback) => {
    if (state !== s) return;
    const codes = suback && suback.granted;
    if (!codes || codes.length !== topics.length) {
      notice('The broker did not answer the subscriptions: ' + (err ? err.message : 'no SUBACK'));
      return;
    }
    topics.forEach((topic, i) => {
      const group = groups.find((g) => g.topic === topic);
      if (group) group.member = codes[i] < 0x80;
      else if (codes[i] >= 0x80) notice(`The broker refused the subscription to ${topic}: SUBACK ${reason(codes[i])}.`);
    });
    renderSidebar();
    if (s.current) renderConversation();
  });
}

// The inbox page fills the sidebar (who wrote, unread counts) after a login or reconnect.
async function catchUp() {
  const s = state;
  const answer = await history({ type: 'INBOX', limit: 50 });
  if (state !== s) return;
  if (answer.error) {
    notice('History is not available: ' + answer.error);
    return;
  }
  for (const message of answer.data.messages) addMessage(message, { fromHistory: true });
  renderSidebar();
}

// ---- Chat history (request and response) ----------------------------------------------

function history(command) {
  const s = state;
  const correlationData = 'web-' + s.nextRequest++;
  const body = JSON.stringify({ commands: [{ command: 'getHistory', ...command, correlationData }] });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.requests.delete(correlationData);
      resolve({ error: 'no answer from the broker within 10 s' });
    }, 10000);
    s.requests.set(correlationData, { resolve, timer });
    s.client.publish(HISTORY, body, { qos: 1 }, (err) => {
      if (!err) return;
      clearTimeout(timer);
      s.requests.delete(correlationData);
      resolve({ error: `the request was refused (PUBACK ${reason(err.code || 0x80)})` });
    });
  });
}

function onHistoryResponse(payload) {
  let answer;
  try {
    answer = JSON.parse(payload);
  } catch {
    return;
  }
  for (const response of answer.responses || []) {
    const request = state.requests.get(String(response.correlationData));
    if (!request) continue;
    state.requests.delete(String(response.correlationData));
    clearTimeout(request.timer);
    request.resolve(response);
  }
}

async function loadOlder(conv) {
  if (conv.loading) return;
  conv.loading = true;
  renderHistoryBar();
  const command = { type: conv.type, id: Number.isNaN(Number(conv.id)) ? conv.id : Number(conv.id), limit: PAGE };
  if (conv.loaded && conv.messages.length) command.before = conv.messages[0].id;
  const scroller = $('scroller');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const answer = await history(command);
  conv.loading = false;
  conv.loaded = true;
  if (answer.error) {
    conv.historyError = answer.error;
    conv.more = false;
  } else {
    conv.historyError = null;
    conv.more = !!answer.data.more;
    for (const message of answer.data.messages) addMessage(message, { fromHistory: true });
  }
  if (state.current === conv) {
    renderConversation();
    // Keep the reader's place: older messages grow the list above it.
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  }
}

// ---- Messages -------------------------------------------------------------------------

function onMessage(topic, payload) {
  if (topic === HISTORY_RESPONSE) {
    onHistoryResponse(payload.toString());
    return;
  }
  let message;
  try {
    message = JSON.parse(payload.toString());
  } catch {
    return;
  }
  addMessage(message, { fromHistory: false });
}

// The conversation a stamped message belongs to, seen from this user.
function conversationOf(message) {
  const from = String(message.fromId);
  const to = String(message.toId);
  if (message.type === 'GROUPCHAT') return conversation('GROUPCHAT', to, state.directory.groups.get(to));
  if (message.type !== 'CHAT') return null;
  const other = from === state.me.id ? to : from;
  return conversation('CHAT', other, state.directory.users.get(other));
}

function addMessage(message, { fromHistory }) {
  if (typeof message.id !== 'string' || typeof message.ts !== 'number') return;
  const conv = conversationOf(message);
  if (!conv || conv.ids.has(message.id)) return; // a QoS 1 duplicate, or history overlapping
  conv.ids.add(message.id);
  conv.messages.push(message);
  conv.messages.sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (message.clientMsgId) {
    const i = conv.pending.findIndex((p) => p.clientMsgId === message.clientMsgId);
    if (i >= 0) conv.pending.splice(i, 1);
  }
  const mine = String(message.fromId) === state.me.id;
  if (!fromHistory && !mine && state.current !== conv) conv.unread++;
  if (state.current === conv) {
    const scroller = $('scroller');
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    renderConversation();
    if (atBottom || mine || !fromHistory) scroller.scrollTop = scroller.scrollHeight;
  }
  renderSidebar();
}

function send(conv, content) {
  const s = state;
  const clientMsgId = 'web-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 10);
  const id = Number.isNaN(Number(conv.id)) ? conv.id : Number(conv.id);
  const fromId = Number.isNaN(Number(s.me.id)) ? s.me.id : Number(s.me.id);
  const payload = { type: conv.type, fromId, toId: id, content, clientMsgId };
  const pending = { clientMsgId, content, sentAt: Date.now(), status: 'sending', detail: '' };
  conv.pending.push(pending);
  renderConversation();
  $('scroller').scrollTop = $('scroller').scrollHeight;
  s.client.publish(conv.topic, JSON.stringify(payload), { qos: 1 }, (err) => {
    if (state !== s) return;
    if (err) {
      const code = typeof err.code === 'number' ? err.code : 0x80;
      pending.status = 'refused';
      pending.detail = `Not delivered: the broker refused it (PUBACK ${reason(code)}). ` + whyRefused(conv, content, code);
      renderIfCurrent(conv);
      return;
    }
    if (!conv.pending.includes(pending)) return; // its stamped copy is already here
    pending.status = 'sent';
    renderIfCurrent(conv);
    // A group message comes back on the group's topic; a message to someone's inbox does not
    // come back to its sender: its id and time are read from history once it is stored.
    fetchStamp(conv, pending, 0);
  });
}

function whyRefused(conv, content, code) {
  if (code === 0x97 || code === 0x96) return 'You are sending faster than the server allows: wait a moment.';
  if (conv.type === 'GROUPCHAT' && conv.member === false) return `You are not a member of ${conv.title}.`;
  if (new TextEncoder().encode(content).length > 4096) return 'It may be over the server\'s size limit.';
  return 'Nothing was delivered or stored.';
}

const STAMP_WAITS = [150, 300, 600, 1200, 2400, 4800];

async function fetchStamp(conv, pending, attempt) {
  const s = state;
  await new Promise((r) => setTimeout(r, STAMP_WAITS[attempt]));
  if (state !== s || !conv.pending.includes(pending)) return;
  const answer = await history({ type: conv.type, id: Number.isNaN(Number(conv.id)) ? conv.id : Number(conv.id), limit: 20 });
  if (state !== s || !conv.pending.includes(pending)) return;
  const stored = answer.data && answer.data.messages.find((m) => m.clientMsgId === pending.clientMsgId);
  if (stored) {
    addMessage(stored, { fromHistory: true });
  } else if (attempt + 1 < STAMP_WAITS.length) {
    fetchStamp(conv, pending, attempt + 1);
  } else {
    pending.detail = answer.error
      ? 'Delivered; its stamp could not be read: ' + answer.error
      : 'Delivered; not yet in history, so its server id and time are not known here.';
    renderIfCurrent(conv);
  }
}

// ---- Rendering ------------------------------------------------------------------------

// A refusal or failure that belongs to no one message (shown under the top bar).
function notice(text) {
  const node = $('notice');
  node.textContent = text;
  node.hidden = !text;
}

function renderSidebar() {
  const lists = { people: $('people'), groups: $('groups'), 'other-groups': $('other-groups') };
  for (const list of Object.values(lists)) list.replaceChildren();
  for (const conv of state.conversations.values()) {
    const list = conv.type === 'CHAT' ? lists.people : conv.member === false ? lists['other-groups'] : lists.groups;
    const item = el('li');
    const button = el('button', 'conversation');
    button.type = 'button';
    button.dataset.key = conv.key;
    if (state.current === conv) button.classList.add('current');
    const top = el('span', 'line');
    if (conv.presence !== null) top.append(el('span', conv.presence ? 'presence online' : 'presence', conv.presence ? 'online' : 'offline'));
    top.append(el('span', 'name', conv.title));
    if (conv.type === 'GROUPCHAT' && conv.member === null) top.append(el('span', 'hint', 'checking ...'));
    if (conv.unread) top.append(el('span', 'badge', String(conv.unread)));
    button.append(top);
    const last = conv.messages[conv.messages.length - 1];
    if (last) button.append(el('span', 'snippet', `${senderName(last)}: ${last.content}`));
    button.addEventListener('click', () => showConversation(conv));
    item.append(button);
    list.append(item);
  }
  for (const [name, list] of Object.entries(lists)) {
    if (!list.children.length) list.append(el('li', 'hint', name === 'other-groups' ? 'none' : 'nobody yet'));
  }
}

function senderName(message) {
  const from = String(message.fromId);
  if (from === state.me.id) return 'you';
  return state.directory.users.get(from) || `user ${from}`;
}

function showConversation(conv) {
  state.current = conv;
  const composer = $('composer');
  composer.content.disabled = !conv;
  composer.querySelector('button').disabled = !conv;
  $('history-status').classList.remove('refused');
  $('history-status').textContent = '';
  if (!conv) {
    $('conversation-title').textContent = 'Pick a conversation';
    $('conversation-topic').textContent = '';
    $('messages').replaceChildren();
    $('older').hidden = true;
    return;
  }
  conv.unread = 0;
  $('conversation-title').textContent = conv.type === 'CHAT' ? conv.title : `${conv.title} (group)`;
  $('conversation-topic').textContent = conv.topic;
  renderSidebar();
  renderConversation();
  $('scroller').scrollTop = $('scroller').scrollHeight;
  if (!conv.loaded) loadOlder(conv);
  composer.content.focus();
}

function renderIfCurrent(conv) {
  if (state.current === conv) renderConversation();
}

function renderHistoryBar() {
  const conv = state.current;
  const older = $('older');
  const status = $('history-status');
  older.hidden = !conv || !conv.more || conv.loading;
  status.classList.toggle('refused', !!(conv && conv.historyError));
  if (!conv) return;
  if (conv.loading) status.textContent = 'Loading history ...';
  else if (conv.historyError) status.textContent = 'History refused by the server: ' + conv.historyError;
  else if (conv.loaded && !conv.more) status.textContent = conv.messages.length ? 'The beginning of this conversation.' : 'No messages yet.';
  else status.textContent = '';
}

function renderConversation() {
  const conv = state.current;
  renderHistoryBar();
  if (!conv) return;
  const list = $('messages');
  list.replaceChildren();
  if (conv.type === 'GROUPCHAT' && conv.member === false) {
    list.append(el('li', 'notice refused', `The broker did not let you subscribe to ${conv.topic} (not a member): you will not receive this group's messages.`));
  }
  for (const message of conv.messages) list.append(renderMessage(message));
  for (const pending of conv.pending) list.append(renderPending(pending));
}

function renderMessage(message) {
  const mine = String(message.fromId) === state.me.id;
  const item = el('li', mine ? 'message mine' : 'message');
  item.dataset.id = message.id;
  if (message.clientMsgId) item.dataset.clientMsgId = message.clientMsgId;
  item.append(el('span', 'from', mine ? 'You' : senderName(message)));
  item.append(el('p', 'content', String(message.content)));
  const stamp = el('span', 'stamp');
  const when = new Date(message.ts);
  const time = el('time', 'ts', formatTime(when));
  time.dateTime = when.toISOString();
  time.title = `server time ${when.toISOString()} (${message.ts} ms)`;
  stamp.append(time, document.createTextNode(' \u00b7 id '), el('code', 'id', message.id));
  item.append(stamp);
  return item;
}

function renderPending(pending) {
  const item = el('li', 'message mine ' + pending.status);
  item.dataset.clientMsgId = pending.clientMsgId;
  item.append(el('span', 'from', 'You'));
  item.append(el('p', 'content', pending.content));
  const words = { sending: 'Sending ...', sent: 'Delivered; waiting for its server id and time ...', refused: '' };
  item.append(el('span', pending.status === 'refused' ? 'refusal' : 'stamp', pending.detail || words[pending.status]));
  return item;
}

function formatTime(date) {
  const today = new Date().toDateString() === date.toDateString();
  const clock = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return today ? clock : `${date.toLocaleDateString([], { day: 'numeric', month: 'short', year: 'numeric' })} ${clock}`;
}

// ---- Wiring ---------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  const form = $('login-form');
  form.broker.value = defaultBroker();
  form.username.value = localStorage.getItem('chat-auth-username') || '';
  if (form.username.value) form.password.focus();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const username = form.username.value.trim();
    localStorage.setItem('chat-auth-username', username);
    login(username, form.password.value, form.broker.value.trim());
  });
  $('logout').addEventListener('click', logout);
  $('older').addEventListener('click', () => state && state.current && loadOlder(state.current));
  $('scroller').addEventListener('scroll', () => {
    const conv = state && state.current;
    if (conv && conv.more && !conv.loading && $('scroller').scrollTop < 30) loadOlder(conv);
  });
  const composer = $('composer');
  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const content = composer.content.value;
    if (!state || !state.current || !content.trim()) return;
    composer.content.value = '';
    send(state.current, content);
  });
  composer.content.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
});
