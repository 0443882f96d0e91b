// postbox settings portal: a small script over postbox-api's own routes.
// Every value comes from the API and is written as text (textContent, never
// markup), so whatever a tenant typed shows as typed. Changes carry the
// session's CSRF token. Views: #/ (endpoints), #/new, #/e/<id>,
// #/e/<id>/edit, #/d/<delivery id>, and #/keys (API keys, only for
// sessions the product allowed to manage them).
'use strict';

const S = { csrf: '', role: 'member', types: [], manageKeys: false };
const STATUS = { healthy: 'Healthy', failing: 'Failing', disabled: 'Disabled', paused: 'Paused', suspended: 'Suspended' };
const DELIVERY_STATUSES = ['pending', 'in_flight', 'held', 'succeeded', 'failed', 'cancelled'];

// ---- helpers ---------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

const main = () => document.getElementById('main');
const admin = () => S.role === 'admin';
let uid = 0;
const id = (p) => `${p}-${++uid}`;

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  m.focus();
}

function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
    this.field = body && body.error && body.error.field;
  }
}

async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method !== 'GET') opts.headers['x-csrf-token'] = S.csrf;
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (r.status === 401) {
    expired();
    throw new ApiError(401, data);
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function expired() {
  show(el('h1', { text: 'Your session has ended' }),
    el('p', { text: 'Open the webhook settings again from the product to continue.' }));
}

function failure(e) {
  if (e.status === 401) return;
  show(el('h1', { text: 'Something went wrong' }), el('p', { class: 'error', text: e.message }));
}

const when = (t) => (t ? new Date(t).toLocaleString() : '');

function badge(status, reason) {
  return el('span', { class: `badge ${status}`, title: reason || null },
    STATUS[status] || status, status === 'disabled' && reason ? `: ${reason}` : null);
}

function copyButton(label, text) {
  return el('button', {
    type: 'button', class: 'ghost',
    onclick: async () => {
      try { await navigator.clipboard.writeText(text()); toast('Copied'); } catch (_) { toast('Copy failed: select and copy it by hand'); }
    },
  }, label);
}

// ---- health chart ------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function chart(stats) {
  // One bar per hour (24 h) and per day (7 d): its height is the attempts,
  // the red part the failed ones. SVG drawn with attributes: the page's CSP
  // allows no inline styles.
  const bars = (label, buckets, unit, ok, bad, rate) => {
    const max = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed));
    const w = 10;
    const spark = svg('svg', { class: 'spark', viewBox: `0 0 ${buckets.length * w} 30`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${label}: ${ok} succeeded, ${bad} failed` });
    buckets.forEach((b, i) => {
      const g = svg('g', { class: 'bar' });
      const title = svg('title', {});
      title.textContent = `${b.ago ? `${b.ago} ${unit}${b.ago === 1 ? '' : 's'} ago` : `this ${unit}`}: ${b.succeeded} succeeded, ${b.failed} failed`;
      const hs = (b.succeeded / max) * 30;
      const hf = (b.failed / max) * 30;
      g.append(title,
        svg('rect', { class: 's', x: i * w + 1, width: w - 2, y: 30 - hs, height: hs }),
        svg('rect', { class: 'f', x: i * w + 1, width: w - 2, y: 30 - hs - hf, height: hf }));
      spark.append(g);
    });
    const pct = rate === null || rate === undefined ? 'no attempts' : `${(rate * 100).toFixed(1)}% ok`;
    return el('div', { class: 'chart-row' }, el('span', { class: 'muted label', text: label }), spark,
      el('span', { class: 'muted', text: `${ok} ✓ ${bad} ✗ · ${pct}` }));
  };
  return el('div', { class: 'chart' },
    bars('24 h', stats.hourly, 'hour', stats.succeeded_24h, stats.failed_24h, stats.success_rate_24h),
    bars('7 d', stats.daily, 'day', stats.succeeded_7d, stats.failed_7d, stats.success_rate_7d));
}

function chartInto(box, endpointId) {
  api('GET', `/v1/endpoints/${endpointId}/stats`).then((s) => box.replaceChildren(chart(s))).catch(() => {});
}

// ---- endpoints list --------------------------------------------------------

async function listView() {
  const page = await api('GET', '/v1/endpoints?limit=500');
  const cards = page.data.map((e) => {
    const stats = el('div', { class: 'row' });
    chartInto(stats, e.id);
    return el('div', { class: 'card endpoint', 'data-id': e.id },
      el('div', { class: 'row' },
        el('a', { class: 'url', href: `#/e/${e.id}`, text: e.url }),
        badge(e.status, e.disabled_reason)),
      e.description ? el('div', { class: 'description', text: e.description }) : null,
      el('div', { class: 'events', text: `Events: ${e.event_types.join(', ')}` }),
      stats);
  });
  show(
    el('h1', { text: 'Endpoints' }),
    admin() ? el('div', { class: 'actions' }, el('a', { class: 'button', href: '#/new', id: 'new-endpoint' }, 'Add endpoint')) : null,
    cards.length ? cards : el('p', { class: 'muted', text: 'No endpoints yet.' }));
}

// ---- create and edit -------------------------------------------------------

function fieldError(name) {
  return el('span', { class: 'error', id: `error-${name}`, 'aria-live': 'polite' });
}

function eventPicker(selected) {
  const all = selected.includes('*');
  const boxes = [];
  const allBox = el('input', { type: 'checkbox', value: '*', checked: all, id: 'event-all' });
  const groups = new Map();
  for (const t of S.types) {
    const g = t.name.split('.')[0];
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(t);
  }
  const nodes = [];
  for (const [g, types] of groups) {
    nodes.push(el('div', { class: 'group-name', text: g }));
    for (const t of types) {
      const box = el('input', { type: 'checkbox', value: t.name, checked: all || selected.includes(t.name), disabled: all, id: id('event') });
      boxes.push(box);
      nodes.push(el('div', { class: 'group' },
        el('label', { class: 'inline', for: box.id }, box, t.name),
        t.description ? el('div', { class: 'event-desc', text: t.description }) : null));
    }
  }
  // "All events" covers every type, those added later too; unticking it
  // starts a choice from none.
  allBox.addEventListener('change', () => boxes.forEach((b) => { b.disabled = allBox.checked; b.checked = allBox.checked; }));
  const chosen = () => (allBox.checked ? ['*'] : boxes.filter((b) => b.checked).map((b) => b.value));
  return { node: el('fieldset', { class: 'field' }, el('legend', { text: 'Events' }),
    el('label', { class: 'inline', for: 'event-all' }, allBox, 'All events'), nodes, fieldError('events')), chosen };
}

function headerRows(initial) {
  const list = el('div', { id: 'headers' });
  const rows = [];
  const add = (name, value) => {
    const n = el('input', { type: 'text', placeholder: 'Name', 'aria-label': 'Header name', value: name || '', class: 'header-name' });
    const v = el('input', { type: 'text', placeholder: 'Value', 'aria-label': 'Header value', value: value || '', class: 'header-value' });
    const err = el('span', { class: 'error header-error', 'aria-live': 'polite' });
    const row = { n, v, err };
    const line = el('div', { class: 'header-row' }, n, v,
      el('button', { type: 'button', class: 'ghost', onclick: () => { rows.splice(rows.indexOf(row), 1); line.remove(); } }, 'Remove'), err);
    rows.push(row);
    list.append(line);
  };
  for (const [k, v] of Object.entries(initial || {})) add(k, v);
  // Checks what the page can know: a name is required and given once. The
  // API names every other rule (reserved names, values).
  const check = () => {
    let ok = true;
    const seen = new Set();
    for (const r of rows) {
      const name = r.n.value.trim().toLowerCase();
      r.err.textContent = '';
      if (!name && !r.v.value) continue;
      if (!name) { r.err.textContent = 'Name required'; ok = false; } else if (seen.has(name)) { r.err.textContent = 'Duplicate: this header is already set'; ok = false; }
      seen.add(name);
    }
    return ok;
  };
  const value = () => {
    const h = {};
    for (const r of rows) if (r.n.value.trim()) h[r.n.value.trim()] = r.v.value;
    return h;
  };
  // Shows an error of the API on the row it names, if it names one.
  const place = (message) => {
    const lower = message.toLowerCase();
    const row = rows.find((r) => r.n.value.trim() && lower.includes(r.n.value.trim().toLowerCase()));
    (row ? row.err : document.getElementById('error-headers')).textContent = message;
  };
  return {
    node: el('fieldset', { class: 'field' }, el('legend', { text: 'Custom headers' }), list,
      el('button', { type: 'button', class: 'ghost', id: 'add-header', onclick: () => add() }, 'Add header'), fieldError('headers')),
    check, value, place, add,
  };
}

async function formView(existing) {
  const editing = !!existing;
  const e = existing || { url: '', event_types: ['*'], headers: {}, description: '', signature_style: 'standard', enabled: true };
  const url = el('input', { type: 'url', id: 'url', value: e.url, required: true, 'aria-describedby': 'error-url' });
  const events = eventPicker(e.event_types);
  const headers = headerRows(e.headers);
  const description = el('textarea', { id: 'description' });
  description.value = e.description || '';
  const style = el('select', { id: 'signature-style', disabled: editing },
    ['standard', 'sha256-hex', 'hex'].map((s) => el('option', { value: s, selected: s === e.signature_style }, s)));
  const sigHeader = el('input', { type: 'text', id: 'signature-header', value: e.signature_header || '', disabled: editing, placeholder: 'X-Signature' });
  const enabled = el('input', { type: 'checkbox', id: 'enabled', checked: e.enabled });
  const formError = el('p', { class: 'error', id: 'error-form', 'aria-live': 'polite' });
  const form = el('form', { id: 'endpoint-form', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: 'url', text: 'URL' }), url, fieldError('url')),
    events.node,
    headers.node,
    el('div', { class: 'field' }, el('label', { for: 'description', text: 'Description' }), description),
    el('div', { class: 'field' }, el('label', { for: 'signature-style', text: 'Signature style' }), style),
    el('div', { class: 'field' }, el('label', { for: 'signature-header', text: 'Signature header (hex styles)' }), sigHeader),
    el('div', { class: 'field' }, el('label', { class: 'inline', for: 'enabled' }, enabled, 'Enable deliveries')),
    formError,
    el('div', { class: 'actions' },
      el('button', { type: 'submit', id: 'save' }, editing ? 'Save' : 'Create endpoint'),
      el('a', { class: 'button ghost', href: editing ? `#/e/${e.id}` : '#/' }, 'Cancel')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const n of form.querySelectorAll('.error')) n.textContent = '';
    if (!url.value.trim()) { document.getElementById('error-url').textContent = 'URL required'; url.focus(); return; }
    const chosen = events.chosen();
    if (!chosen.length) { document.getElementById('error-events').textContent = 'Choose at least one event, or all events'; return; }
    if (!headers.check()) return;
    const body = { url: url.value.trim(), event_types: chosen, headers: headers.value(), description: description.value, enabled: enabled.checked };
    if (!editing) {
      body.signature_style = style.value;
      if (sigHeader.value.trim()) body.signature_header = sigHeader.value.trim();
    }
    try {
      if (editing) {
        await api('PATCH', `/v1/endpoints/${e.id}`, body);
        toast('Saved');
        location.hash = `#/e/${e.id}`;
      } else {
        const created = await api('POST', '/v1/endpoints', body);
        secretView(created);
      }
    } catch (err) {
      if (err.status === 401) return;
      const m = err.message;
      if (/header/i.test(m)) headers.place(m);
      else if (/url|https|host|address|port/i.test(m)) document.getElementById('error-url').textContent = m;
      else if (/event/i.test(m)) document.getElementById('error-events').textContent = m;
      else formError.textContent = m;
    }
  });
  show(el('h1', { text: editing ? 'Edit endpoint' : 'Add endpoint' }), form);
}

function secretView(created) {
  show(
    el('h1', { text: 'Endpoint created' }),
    el('div', { class: 'card secret' },
      el('label', { for: 'secret', text: 'Signing secret' }),
      el('pre', { id: 'secret', text: created.secret }),
      el('p', { text: 'Copy it now: it will not be shown again. Use it to verify the signature of each delivery.' }),
      el('div', { class: 'actions' }, copyButton('Copy secret', () => created.secret),
        el('a', { class: 'button', href: `#/e/${created.id}`, id: 'to-endpoint' }, 'Done'))));
}

// ---- one endpoint ----------------------------------------------------------

async function endpointView(endpointId) {
  const e = await api('GET', `/v1/endpoints/${endpointId}`);
  const statsBox = el('div', { class: 'row', id: 'stats' });
  chartInto(statsBox, e.id);
  const panel = el('div', { id: 'panel' });
  const config = () => JSON.stringify({ url: e.url, event_types: e.event_types, headers: e.headers, description: e.description,
    signature_style: e.signature_style, signature_header: e.signature_header, options: e.options, enabled: e.enabled, envelope: e.envelope }, null, 2);
  const actions = admin() ? el('div', { class: 'actions' },
    el('a', { class: 'button ghost', href: `#/e/${e.id}/edit`, id: 'edit' }, 'Edit'),
    el('button', { type: 'button', class: 'ghost', id: 'toggle', onclick: () => toggle(e) }, e.enabled ? 'Pause' : 'Resume'),
    el('button', { type: 'button', class: 'ghost', id: 'rotate', onclick: () => rotate(e, panel) }, 'Rotate secret'),
    el('button', { type: 'button', class: 'ghost', id: 'send-test', onclick: () => testForm(e, panel) }, 'Send a test'),
    copyButton('Copy configuration', config),
    el('button', { type: 'button', class: 'danger', id: 'delete', onclick: () => confirmDelete(e, panel) }, 'Delete'))
    : el('div', { class: 'actions' }, copyButton('Copy configuration', config));
  const secrets = e.secrets.map((s) => el('li', {}, `made ${when(s.created_at)}`, s.expires_at ? `, signs until ${when(s.expires_at)}` : ', current'));
  show(
    el('p', {}, el('a', { href: '#/', text: '← Endpoints' })),
    el('h1', { class: 'url', text: e.url }),
    el('div', { class: 'row' }, badge(e.status, e.disabled_reason), el('span', { class: 'muted', text: `Created ${when(e.created_at)}` })),
    e.description ? el('p', { class: 'description', text: e.description }) : null,
    el('p', { class: 'events', text: `Events: ${e.event_types.join(', ')}` }),
    Object.keys(e.headers).length ? el('p', { class: 'muted headers', text: `Headers: ${Object.entries(e.headers).map(([k, v]) => `${k}: ${v}`).join('; ')}` }) : null,
    el('p', { class: 'muted', text: `Signature: ${e.signature_style}${e.signature_header ? ` (${e.signature_header})` : ''}` }),
    el('h2', { text: 'Health' }), statsBox,
    actions, panel,
    el('h2', { text: 'Signing secrets' }), el('ul', {}, secrets),
    await deliveriesSection(e));
}

async function toggle(e) {
  try {
    await api('PATCH', `/v1/endpoints/${e.id}`, { enabled: !e.enabled });
    toast(e.enabled ? 'Paused' : 'Resumed');
    await endpointView(e.id);
  } catch (err) { failure(err); }
}

function rotate(e, panel) {
  const grace = el('select', { id: 'grace' },
    [[0, 'Stop the old secret now'], [3600, 'Keep the old secret for 1 hour'], [86400, 'Keep the old secret for 24 hours'], [604800, 'Keep the old secret for 7 days']]
      .map(([s, t]) => el('option', { value: s, selected: s === 86400 }, t)));
  panel.replaceChildren(el('div', { class: 'card' },
    el('label', { for: 'grace', text: 'Grace period' }), grace,
    el('div', { class: 'actions' }, el('button', {
      type: 'button', id: 'rotate-confirm',
      onclick: async () => {
        try {
          const r = await api('POST', `/v1/endpoints/${e.id}/rotate-secret`, { grace_seconds: Number(grace.value) });
          const until = new Date(Date.now() + Number(grace.value) * 1000);
          panel.replaceChildren(el('div', { class: 'card secret' },
            el('label', { for: 'secret', text: 'New signing secret' }), el('pre', { id: 'secret', text: r.secret }),
            el('p', { text: `It will not be shown again. ${Number(grace.value) ? `The old secret keeps signing until ${until.toLocaleString()}.` : 'The old secret no longer signs.'}` }),
            copyButton('Copy secret', () => r.secret)));
        } catch (err) { panel.replaceChildren(el('p', { class: 'error', text: err.message })); }
      },
    }, 'Rotate'))));
}

function confirmDelete(e, panel) {
  panel.replaceChildren(el('div', { class: 'confirm', role: 'alertdialog', 'aria-label': 'Confirm deletion' },
    el('p', { text: 'Delete this endpoint? Its pending deliveries are cancelled; its log stays.' }),
    el('div', { class: 'actions' },
      el('button', {
        type: 'button', class: 'danger', id: 'delete-confirm',
        onclick: async () => {
          try { await api('DELETE', `/v1/endpoints/${e.id}`); toast('Deleted'); location.hash = '#/'; } catch (err) { failure(err); }
        },
      }, 'Delete'),
      el('button', { type: 'button', class: 'ghost', onclick: () => panel.replaceChildren() }, 'Cancel'))));
  panel.querySelector('#delete-confirm').focus();
}

function testForm(e, panel) {
  const type = el('select', { id: 'test-type' }, S.types.map((t) => el('option', { value: t.name, selected: t.name === 'webhook.test' }, t.name)));
  const outcome = el('div', { id: 'test-outcome', 'aria-live': 'polite' });
  panel.replaceChildren(el('div', { class: 'card' },
    el('label', { for: 'test-type', text: 'Event type (its example payload is sent)' }), type,
    el('div', { class: 'actions' }, el('button', {
      type: 'button', id: 'test-send',
      onclick: async () => {
        outcome.textContent = 'Sending…';
        try {
          const q = await api('POST', `/v1/endpoints/${e.id}/test`, { event_type: type.value });
          outcome.replaceChildren(await testOutcome(e.id, type.value, q.event_id));
        } catch (err) { outcome.replaceChildren(el('p', { class: 'error', text: err.message })); }
      },
    }, 'Send')), outcome));
}

// Waits (up to a minute) for the test's first attempt and shows it.
async function testOutcome(endpointId, type, eventId) {
  for (let i = 0; i < 120; i++) {
    const page = await api('GET', `/v1/endpoints/${endpointId}/deliveries?event_type=${encodeURIComponent(type)}&limit=50`);
    const d = page.data.find((x) => x.event_id === eventId);
    if (d) {
      const full = await api('GET', `/v1/deliveries/${d.id}`);
      const a = full.attempts[full.attempts.length - 1];
      if (a) return attemptNode(a, true);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return el('p', { class: 'muted', text: 'No attempt yet: the delivery is queued. See the log below.' });
}

function attemptNode(a, brief) {
  const result = a.response ? `HTTP ${a.response.status_code}` : 'no answer';
  return el('div', { class: 'card attempt' },
    el('div', { class: 'row' }, el('strong', { class: 'outcome', text: `${a.outcome}: ${result}` }),
      el('span', { class: 'muted', text: `attempt ${a.attempt}, ${when(a.started_at)}, ${a.duration_ms} ms` })),
    a.error ? el('p', { class: 'error', text: a.error }) : null,
    a.response && a.response.body_excerpt ? [el('div', { class: 'muted', text: 'Response' }), el('pre', { class: 'response', text: a.response.body_excerpt })] : null,
    brief ? null : [el('div', { class: 'muted', text: 'Headers sent (without the signature)' }), el('pre', { text: JSON.stringify(a.request.headers, null, 2) }),
      el('div', { class: 'muted', text: 'Payload' }), el('pre', { class: 'payload', text: JSON.stringify(a.request.data, null, 2) })]);
}

// ---- deliveries ------------------------------------------------------------

async function deliveriesSection(e) {
  const box = el('section', { id: 'deliveries' });
  const status = el('select', { id: 'filter-status' }, el('option', { value: '' }, 'Any status'), DELIVERY_STATUSES.map((s) => el('option', { value: s }, s)));
  const type = el('select', { id: 'filter-type' }, el('option', { value: '' }, 'Any event type'), S.types.map((t) => el('option', { value: t.name }, t.name)));
  const table = el('div', { id: 'delivery-table' });
  const load = async (before) => {
    const q = new URLSearchParams({ limit: '20' });
    if (status.value) q.set('status', status.value);
    if (type.value) q.set('event_type', type.value);
    if (before) q.set('before', before);
    const page = await api('GET', `/v1/endpoints/${e.id}/deliveries?${q}`);
    const rows = page.data.map((d) => el('tr', { class: 'delivery' },
      el('td', {}, el('a', { href: `#/d/${d.id}`, text: `#${d.id}` })),
      el('td', { text: d.event_type || '' }),
      el('td', { class: 'status', text: d.status }),
      el('td', { text: `${d.attempts} attempt${d.attempts === 1 ? '' : 's'}${d.last_status_code ? `, HTTP ${d.last_status_code}` : ''}` }),
      el('td', { text: when(d.created_at) })));
    table.replaceChildren(...[rows.length
      ? el('table', {}, el('thead', {}, el('tr', {}, ['Delivery', 'Event', 'Status', 'Attempts', 'Queued'].map((h) => el('th', { scope: 'col', text: h })))), el('tbody', {}, rows))
      : el('p', { class: 'muted', text: 'No deliveries match.' }),
    page.next ? el('div', { class: 'actions' }, el('button', { type: 'button', class: 'ghost', id: 'older', onclick: () => load(page.next) }, 'Older')) : null].filter(Boolean));
  };
  status.addEventListener('change', () => load());
  type.addEventListener('change', () => load());
  await load();
  const since = el('input', { type: 'datetime-local', id: 'replay-since' });
  const until = el('input', { type: 'datetime-local', id: 'replay-until' });
  const replay = admin() ? el('div', { class: 'card' }, el('h2', { text: 'Replay' }),
    el('p', { class: 'muted', text: 'Sends again every failed or cancelled delivery queued in this range.' }),
    el('div', { class: 'filters' },
      el('div', { class: 'field' }, el('label', { for: 'replay-since', text: 'From' }), since),
      el('div', { class: 'field' }, el('label', { for: 'replay-until', text: 'Until (empty: now)' }), until),
      el('button', {
        type: 'button', id: 'replay',
        onclick: async () => {
          if (!since.value) { toast('Choose when the range starts'); return; }
          try {
            const body = { since: new Date(since.value).toISOString() };
            if (until.value) body.until = new Date(until.value).toISOString();
            const r = await api('POST', `/v1/endpoints/${e.id}/replay`, body);
            toast(`${r.queued} deliveries queued again`);
            await load();
          } catch (err) { toast(err.message); }
        },
      }, 'Replay'))) : null;
  box.append(el('h2', { text: 'Deliveries' }),
    el('div', { class: 'filters' },
      el('div', { class: 'field' }, el('label', { for: 'filter-status', text: 'Status' }), status),
      el('div', { class: 'field' }, el('label', { for: 'filter-type', text: 'Event type' }), type)),
    table, replay);
  return box;
}

async function deliveryView(deliveryId) {
  const d = await api('GET', `/v1/deliveries/${deliveryId}`);
  const retry = admin() && (d.status === 'failed' || d.status === 'cancelled')
    ? el('button', {
      type: 'button', id: 'retry',
      onclick: async () => {
        try { await api('POST', `/v1/deliveries/${d.id}/retry`); toast('Queued again'); await deliveryView(d.id); } catch (err) { toast(err.message); }
      },
    }, 'Retry') : null;
  show(
    el('p', {}, el('a', { href: `#/e/${d.endpoint_id}`, text: '← Endpoint' })),
    el('h1', { text: `Delivery #${d.id}` }),
    el('p', {}, el('span', { class: 'status', text: d.status }), ` · ${d.event_type || ''} · event ${d.event_id} · queued ${when(d.created_at)}`),
    d.last_error ? el('p', { class: 'error', text: d.last_error }) : null,
    el('div', { class: 'actions' }, retry),
    el('h2', { text: 'Attempts' }),
    d.attempts.length ? d.attempts.map((a) => attemptNode(a, false)) : el('p', { class: 'muted', text: 'No attempt yet.' }));
}

// ---- API keys (sessions the product allowed to manage them) ----------------

function keyShown(title, r) {
  return el('div', { class: 'card secret', id: 'new-key' },
    el('label', { for: 'api-key', text: title }), el('pre', { id: 'api-key', text: r.key }),
    el('p', { text: 'Copy it now: it will not be shown again. Send it as Authorization: Bearer <key>.' }),
    copyButton('Copy key', () => r.key));
}

async function keysView(shown) {
  const keys = (await api('GET', '/v1/api-keys?limit=500')).data;
  const panel = el('div', { id: 'key-panel' }, shown || null);
  const label = el('input', { type: 'text', id: 'key-label', required: true, maxlength: 200 });
  const role = el('select', { id: 'key-role' },
    el('option', { value: 'member', text: 'Read only' }), el('option', { value: 'admin', text: 'Read and write' }));
  const err = el('span', { class: 'error', id: 'error-label', 'aria-live': 'polite' });
  const form = el('form', { class: 'card', id: 'key-form' },
    el('div', { class: 'field' }, el('label', { for: 'key-label', text: 'Label (whose key, or what for)' }), label, err),
    el('div', { class: 'field' }, el('label', { for: 'key-role', text: 'Access' }), role),
    el('div', { class: 'actions' }, el('button', { type: 'submit', id: 'generate-key' }, 'Generate API key')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    try {
      const r = await api('POST', '/v1/api-keys', { label: label.value, role: role.value });
      await keysView(keyShown('New API key', r));
    } catch (e) { err.textContent = e.message; }
  });
  const row = (k) => el('tr', { class: 'key' },
    el('td', { class: 'key-label', text: k.label }),
    el('td', { text: k.role === 'admin' ? 'read and write' : 'read only' }),
    el('td', { class: 'mono', text: `${k.prefix}…` }),
    el('td', { text: k.last_used_at ? when(k.last_used_at) : 'never' }),
    el('td', { class: 'key-status', text: k.revoked_at ? `revoked ${when(k.revoked_at)}` : 'active' }),
    el('td', {}, k.revoked_at ? null : el('div', { class: 'actions' },
      el('button', {
        type: 'button', class: 'ghost rotate-key',
        onclick: async () => {
          try { await keysView(keyShown(`New value for ${k.label}`, await api('POST', `/v1/api-keys/${k.id}/rotate`))); } catch (e) { failure(e); }
        },
      }, 'Rotate'),
      el('button', {
        type: 'button', class: 'danger revoke-key',
        onclick: () => {
          panel.replaceChildren(el('div', { class: 'confirm', role: 'alertdialog', 'aria-label': 'Confirm revocation' },
            el('p', { text: `Revoke ${k.label}? It stops working at once.` }),
            el('div', { class: 'actions' },
              el('button', {
                type: 'button', class: 'danger', id: 'revoke-confirm',
                onclick: async () => { try { await api('DELETE', `/v1/api-keys/${k.id}`); toast('Revoked'); await keysView(); } catch (e) { failure(e); } },
              }, 'Revoke'),
              el('button', { type: 'button', class: 'ghost', onclick: () => panel.replaceChildren() }, 'Cancel'))));
          panel.querySelector('#revoke-confirm').focus();
        },
      }, 'Revoke'))));
  show(
    el('p', {}, el('a', { href: '#/', text: '← Endpoints' })),
    el('h1', { text: 'API keys' }),
    el('p', { class: 'muted', text: 'Keys for your own tools to manage these webhooks. You see the keys you made here.' }),
    panel, form,
    keys.length ? el('table', { class: 'keys' },
      el('thead', {}, el('tr', {}, ['Label', 'Access', 'Key', 'Last used', 'Status', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, keys.map(row)))
      : el('p', { class: 'muted', id: 'no-keys', text: 'No API keys yet.' }));
}

async function signOut() {
  try {
    await api('POST', '/v1/portal/sign-out');
  } catch (_) { /* already ended: signed out either way */ }
  S.csrf = '';
  for (const i of ['sign-out', 'keys-link']) document.getElementById(i).hidden = true;
  document.getElementById('who').textContent = '';
  show(el('h1', { text: 'You have signed out' }),
    el('p', { text: 'Open the webhook settings again from the product to continue.' }));
}

// ---- routing ---------------------------------------------------------------

async function route() {
  const h = location.hash || '#/';
  let m;
  try {
    if ((m = h.match(/^#\/e\/([0-9a-f-]{36})\/edit$/))) {
      if (!admin()) { location.hash = `#/e/${m[1]}`; return; }
      await formView(await api('GET', `/v1/endpoints/${m[1]}`));
    } else if ((m = h.match(/^#\/e\/([0-9a-f-]{36})$/))) await endpointView(m[1]);
    else if ((m = h.match(/^#\/d\/(\d+)$/))) await deliveryView(m[1]);
    else if (h === '#/new' && admin()) await formView(null);
    else if (h === '#/keys' && S.manageKeys) await keysView();
    else await listView();
  } catch (e) { failure(e); }
}

function theme(choice) {
  const dark = choice === 'dark';
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  document.getElementById('theme').textContent = dark ? 'Light theme' : 'Dark theme';
  try { localStorage.setItem('postbox-theme', dark ? 'dark' : 'light'); } catch (_) { /* storage may be off in iframes */ }
}

async function start() {
  let stored = null;
  try { stored = localStorage.getItem('postbox-theme'); } catch (_) { /* ignore */ }
  theme(stored || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));
  document.getElementById('theme').addEventListener('click', () => theme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark'));
  document.getElementById('sign-out').addEventListener('click', signOut);
  try {
    const s = await api('GET', '/v1/portal/session');
    S.csrf = s.csrf_token;
    S.role = s.role;
    S.manageKeys = s.manage_keys;
    document.getElementById('keys-link').hidden = !s.manage_keys;
    document.getElementById('who').textContent = `${s.tenant} · ${s.role === 'admin' ? 'can change settings' : 'view only'}`;
    if (s.logo) { const l = document.getElementById('logo'); l.src = '/portal/logo'; l.hidden = false; }
    S.types = (await api('GET', '/v1/event-types')).data;
  } catch (e) { failure(e); return; }
  window.addEventListener('hashchange', route);
  await route();
}

document.addEventListener('DOMContentLoaded', start);
