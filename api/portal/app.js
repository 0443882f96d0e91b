// postbox settings portal: a small script over postbox-api's own routes.
// Every value comes from the API and is written as text (textContent, never
// markup), so whatever a tenant typed shows as typed. Changes carry the
// session's CSRF token. Views: #/ (endpoints), #/new, #/e/<id>,
// #/e/<id>/edit, #/d/<delivery id>, and #/keys (API keys, only for
// sessions the product allowed to manage them).
//
// Paths are relative to the page (<prefix>/portal/), so it works behind a
// proxy that adds a prefix. Lists are read a page at a time with the API's
// cursor. The values the server knows (signature styles, delivery statuses,
// grace periods) come from GET /v1/choices, and what the tenant leaves at
// its default is not sent, so the server's default applies.
'use strict';

// view: counts the views shown, so work for a view the user left (polling a
// test's outcome) stops.
const S = { csrf: '', role: 'member', types: [], choices: null, manageKeys: false, view: 0 };
// Items per page of a list: what one screen shows, and whose statistics
// one request fetches.
const PAGE = 50;
// The API's root: the page is <root>/portal/.
const ROOT = new URL('../', document.baseURI);

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

// A status as a person reads it: in_flight -> In flight.
const label = (s) => (s ? s[0].toUpperCase() + s.slice(1).replace(/_/g, ' ') : '');

// A URL as the tenant typed it: the API stores it normalized (WHATWG), with
// characters such as < > " and spaces percent-encoded. Shown decoded when
// the decoded form reads back as the very same URL (so what is shown, typed
// again, is what is sent); else as stored. Always as text.
function shownUrl(stored) {
  try {
    const typed = decodeURI(stored);
    return new URL(typed).href === stored ? typed : stored;
  } catch (_) {
    return stored;
  }
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

// ---- errors, in words for a person -----------------------------------------

// What to tell a person, by the code of the rule the API names (`rule`; the
// codes are postbox_rules::codes, listed in docs/errors.md). A code not here
// shows the API's own message. rules/tests/codes.rs checks each key is a code.
const RULE_WORDS = {
  required: 'This is required.',
  text_has_nul: 'Remove the invisible NUL character from what you typed.',
  tenant_suspended: 'Webhooks are not available on your plan.',
  tenant_endpoint_limit: 'You have as many endpoints as your plan allows. Delete one to add another.',
  url_invalid: 'Enter a full web address, such as https://example.com/webhooks.',
  url_too_long: 'This address is too long: at most 2048 characters.',
  url_not_https: 'The address must start with https://.',
  url_has_credentials: 'Leave the user name and password out of the address. To send a credential, add a custom header such as Authorization.',
  url_has_fragment: 'Remove the part from # on: it is never sent to a server.',
  url_port_not_allowed: 'Use the standard port (443), or a port from 1024 up.',
  url_host_not_public: 'The address must be a public server on the internet, not a local or private one.',
  headers_not_object: 'Each header needs a name and a value.',
  headers_invalid_json: 'A header holds a character that cannot be stored. Remove it and try again.',
  headers_too_many: 'An endpoint can have at most 20 custom headers.',
  header_name_empty: 'Enter a name for this header.',
  header_name_too_long: 'This name is too long: at most 256 characters.',
  header_name_invalid: 'Header names hold letters, digits and symbols such as - and _, without spaces or colons.',
  header_name_reserved: 'This header is set by postbox or by HTTP itself. Choose another name.',
  header_name_duplicate: 'This header is already set: names are the same whatever their capitals.',
  header_value_not_string: 'Enter the value as text.',
  header_value_empty: 'Enter a value for this header.',
  header_value_too_long: 'This value is too long: at most 4096 characters.',
  header_value_invalid: 'Values hold plain letters, digits, punctuation, spaces and tabs: no accents, emoji or line breaks.',
  signature_style_unknown: 'Choose a signature style from the list.',
  signature_header_not_applicable: 'The default style signs in headers of its own: leave the signature header empty, or choose a hex style.',
  secret_invalid: 'This secret is not one the signature style accepts.',
  event_type_invalid: 'Event types are names such as order.paid: lowercase letters, digits and underscores, with dots between the parts.',
  event_type_unknown: 'This event type does not exist (any more). Choose from the list.',
  event_filter_invalid: 'Choose events from the list, or all events.',
  event_types_empty: 'Choose at least one event, or all events.',
  event_types_too_many: 'Choose at most 100 events, or all events.',
  event_data_invalid: 'The test data must be a JSON object, such as {"id": 1}.',
  event_data_too_large: 'The test data is too large.',
  endpoint_not_found: 'This endpoint does not exist any more.',
  delivery_not_found: 'This delivery does not exist any more, or has not failed.',
  delivery_not_retryable: 'This delivery is still being tried. Only a failed or cancelled one can be sent again.',
  delivery_endpoint_deleted: 'This delivery\'s endpoint was deleted, so it cannot be sent again.',
  replay_range_invalid: 'The start of the period must come before its end.',
  api_key_not_found: 'This API key does not exist any more.',
  api_key_limit: 'You have as many API keys as you may. Revoke one first.',
  api_keys_kept_limit: 'You have as many API keys as you may, counting recently revoked ones. Try again later.',
  api_key_revoked: 'This key is revoked: it cannot be rotated.',
  length_out_of_range: 'This is empty or too long.',
  options_value_invalid: 'Out of range: send 2 to 1000 events per request, and wait 0 to 60000 ms for more.',
  idempotency_key_reused: 'This was already sent with other details. Reload the page and try again.',
};

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(RULE_WORDS[e.rule] || e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.rule = e.rule;
    this.field = e.field;
    this.item = e.item;
    this.apiMessage = e.message;
  }
}

// The inputs whose ids differ from the API's field names.
const FIELD_IDS = { event_types: 'events', signature_style: 'signature-style', signature_header: 'signature-header' };

// Shows an API error beside the input its `field` names (a header's row by
// `item`), in its words; false if the form has no such input.
function placeError(err, headers) {
  if (err.field === 'headers' && err.item && headers && headers.place(err.item, err.message)) return true;
  const name = FIELD_IDS[err.field] || err.field;
  if (!name) return false;
  let spot = document.getElementById(`error-${name}`);
  const input = document.getElementById(name);
  if (!spot && input) {
    spot = el('span', { class: 'error', id: `error-${name}`, 'aria-live': 'polite' });
    input.after(spot);
  }
  if (!spot) return false;
  // An option's words name it already; other items (a header) are prefixed.
  spot.textContent = err.item && err.field !== 'options' ? `${err.item}: ${err.message}` : err.message;
  return true;
}

// Calls the API. `path` is the API's own (/v1/...), resolved against ROOT,
// so a proxy's prefix is kept.
async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: {} };
  if (method !== 'GET') opts.headers['x-csrf-token'] = S.csrf;
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(new URL(path.replace(/^\//, ''), ROOT), opts);
  } catch (_) {
    throw new ApiError(0, { error: { message: 'The server could not be reached. Check the connection and try again.' } });
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not the API's JSON (a proxy's page): the status tells */ }
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
    label(status), status === 'disabled' && reason ? `: ${reason}` : null);
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

// Fills each box (a Map of endpoint id to element) with its endpoint's
// chart, from one request for them all (a page of the list); a failure is
// shown in each box.
async function statsInto(boxes) {
  if (!boxes.size) return;
  try {
    const r = await api('GET', `/v1/endpoints/stats?ids=${[...boxes.keys()].join(',')}`);
    for (const s of r.data) if (boxes.has(s.id)) boxes.get(s.id).replaceChildren(chart(s));
  } catch (e) {
    if (e.status === 401) return;
    for (const box of boxes.values()) box.replaceChildren(el('p', { class: 'error stats-error', text: `Health not shown: ${e.message}` }));
  }
}

// ---- endpoints list --------------------------------------------------------

// A page of endpoints at a time, with the API's cursor; "Show more" adds
// the next. Each page's charts come from one request.
async function listView() {
  const list = el('div', { id: 'endpoint-list' });
  const more = el('div', { class: 'actions', id: 'more' });
  const load = async (after) => {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (after) q.set('after', after);
    const page = await api('GET', `/v1/endpoints?${q}`);
    const boxes = new Map();
    list.append(...page.data.map((e) => {
      const stats = el('div', { class: 'row' });
      boxes.set(e.id, stats);
      return el('div', { class: 'card endpoint', 'data-id': e.id },
        el('div', { class: 'row' },
          el('a', { class: 'url', href: `#/e/${e.id}`, text: shownUrl(e.url) }),
          badge(e.status, e.disabled_reason)),
        e.description ? el('div', { class: 'description', text: e.description }) : null,
        el('div', { class: 'events', text: `Events: ${e.event_types.join(', ')}` }),
        stats);
    }));
    statsInto(boxes);
    const button = page.next ? el('button', {
      type: 'button', class: 'ghost', id: 'more-endpoints',
      onclick: async () => {
        button.disabled = true;
        try { await load(page.next); } catch (err) {
          if (err.status === 401) return;
          button.disabled = false;
          more.append(el('p', { class: 'error', text: err.message }));
        }
      },
    }, 'Show more') : null;
    more.replaceChildren(...[button].filter(Boolean));
    return page.data.length;
  };
  const shown = await load();
  show(
    el('h1', { text: 'Endpoints' }),
    admin() ? el('div', { class: 'actions' }, el('a', { class: 'button', href: '#/new', id: 'new-endpoint' }, 'Add endpoint')) : null,
    shown ? [list, more] : el('p', { class: 'muted', text: 'No endpoints yet.' }));
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
  // Shows an error on the row of the header `name`; false if none has it.
  const place = (name, text) => {
    const row = rows.find((r) => r.n.value.trim().toLowerCase() === name.toLowerCase());
    if (row) row.err.textContent = text;
    return !!row;
  };
  return {
    node: el('fieldset', { class: 'field' }, el('legend', { text: 'Custom headers' }), list,
      el('button', { type: 'button', class: 'ghost', id: 'add-header', onclick: () => add() }, 'Add header'), fieldError('headers')),
    check, value, place, add,
  };
}

// The endpoint's batching options (docs/sql-api.md: batch_max_events,
// batch_max_wait_ms): off, or up to N events a request, the first waiting
// up to M ms for company. `options(base)` returns the endpoint's options
// with these set or removed; the API checks the values and names the rule.
function batchingFields(options) {
  const on = (options.batch_max_events || 1) > 1;
  const box = el('input', { type: 'checkbox', id: 'batching', checked: on });
  const events = el('input', { type: 'number', id: 'batch-max-events', min: '2', max: '1000', step: '1',
    value: String(on ? options.batch_max_events : 100), disabled: !on });
  const wait = el('input', { type: 'number', id: 'batch-max-wait', min: '0', max: '60000', step: '1',
    value: String(options.batch_max_wait_ms ?? 100), disabled: !on });
  box.addEventListener('change', () => { events.disabled = !box.checked; wait.disabled = !box.checked; });
  const value = (base) => {
    const o = { ...base };
    delete o.batch_max_events;
    delete o.batch_max_wait_ms;
    if (box.checked) {
      o.batch_max_events = Number(events.value);
      o.batch_max_wait_ms = Number(wait.value);
    }
    return o;
  };
  return {
    node: el('fieldset', { class: 'field' }, el('legend', { text: 'Batching' }),
      el('label', { class: 'inline', for: 'batching' }, box, 'Send several events per request'),
      el('div', { class: 'field' }, el('label', { for: 'batch-max-events', text: 'Most events per request' }), events),
      el('div', { class: 'field' }, el('label', { for: 'batch-max-wait', text: 'Longest wait for more events (ms)' }), wait),
      fieldError('options')),
    value,
  };
}

// The endpoint's ordering options (docs/sql-api.md: ordering,
// ordering_given_up, coalesce): events of one key one at a time, in emit
// order; what a key does when its delivery is given up; and whether only
// the newest waiting event of a key and type is sent.
function orderingFields(options) {
  const box = el('input', { type: 'checkbox', id: 'ordering', checked: options.ordering === 'key' });
  const givenUp = el('select', { id: 'ordering-given-up', disabled: !box.checked },
    el('option', { value: 'skip', selected: options.ordering_given_up !== 'hold' }, 'Send the next event of the key'),
    el('option', { value: 'hold', selected: options.ordering_given_up === 'hold' }, 'Hold the key until the delivery is retried'));
  box.addEventListener('change', () => { givenUp.disabled = !box.checked; });
  const coalesce = el('input', { type: 'checkbox', id: 'coalesce', checked: options.coalesce === true });
  const value = (base) => {
    const o = { ...base };
    delete o.ordering;
    delete o.ordering_given_up;
    delete o.coalesce;
    if (box.checked) {
      o.ordering = 'key';
      o.ordering_given_up = givenUp.value;
    }
    if (coalesce.checked) o.coalesce = true;
    return o;
  };
  return {
    node: el('fieldset', { class: 'field' }, el('legend', { text: 'Ordering' }),
      el('label', { class: 'inline', for: 'ordering' }, box, 'Deliver the events of one key one at a time, in order'),
      el('div', { class: 'field' }, el('label', { for: 'ordering-given-up', text: 'When a delivery is given up' }), givenUp),
      el('label', { class: 'inline', for: 'coalesce' }, coalesce, 'Send only the newest waiting event of a key and type')),
    value,
  };
}

async function formView(existing) {
  const editing = !!existing;
  const e = existing || { url: '', event_types: ['*'], headers: {}, description: '', enabled: true };
  const url = el('input', { type: 'url', id: 'url', value: shownUrl(e.url), required: true, 'aria-describedby': 'error-url' });
  const events = eventPicker(e.event_types);
  const headers = headerRows(e.headers);
  const batching = batchingFields(e.options || {});
  const ordering = orderingFields(e.options || {});
  const description = el('textarea', { id: 'description' });
  description.value = e.description || '';
  // A new endpoint's style: the server's default unless one is chosen.
  const style = el('select', { id: 'signature-style', disabled: editing },
    editing ? null : el('option', { value: '' }, `Default (${S.choices.defaults.signature_style})`),
    S.choices.signature_styles.map((s) => el('option', { value: s, selected: s === e.signature_style }, s)));
  const sigHeader = el('input', { type: 'text', id: 'signature-header', value: e.signature_header || '', disabled: editing, placeholder: 'X-Signature' });
  const enabled = el('input', { type: 'checkbox', id: 'enabled', checked: e.enabled });
  const formError = el('p', { class: 'error', id: 'error-form', 'aria-live': 'polite' });
  const form = el('form', { id: 'endpoint-form', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: 'url', text: 'URL' }), url, fieldError('url')),
    events.node,
    headers.node,
    el('div', { class: 'field' }, el('label', { for: 'description', text: 'Description' }), description),
    batching.node,
    ordering.node,
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
    const body = { url: url.value.trim(), event_types: chosen, headers: headers.value(), description: description.value, enabled: enabled.checked,
      options: ordering.value(batching.value(e.options || {})) };
    if (!editing) {
      if (style.value) body.signature_style = style.value;
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
      if (!placeError(err, headers)) formError.textContent = err.message;
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
  statsInto(new Map([[e.id, statsBox]]));
  const panel = el('div', { id: 'panel' });
  const log = await deliveriesSection(e);
  const config = () => JSON.stringify({ url: e.url, event_types: e.event_types, headers: e.headers, description: e.description,
    signature_style: e.signature_style, signature_header: e.signature_header, options: e.options, enabled: e.enabled, envelope: e.envelope }, null, 2);
  const actions = admin() ? el('div', { class: 'actions' },
    el('a', { class: 'button ghost', href: `#/e/${e.id}/edit`, id: 'edit' }, 'Edit'),
    el('button', { type: 'button', class: 'ghost', id: 'toggle', onclick: () => toggle(e) }, e.enabled ? 'Pause' : 'Resume'),
    el('button', { type: 'button', class: 'ghost', id: 'rotate', onclick: () => rotate(e, panel) }, 'Rotate secret'),
    el('button', { type: 'button', class: 'ghost', id: 'send-test', onclick: () => testForm(e, panel, log.reload) }, 'Send a test'),
    copyButton('Copy configuration', config),
    el('button', { type: 'button', class: 'danger', id: 'delete', onclick: () => confirmDelete(e, panel) }, 'Delete'))
    : el('div', { class: 'actions' }, copyButton('Copy configuration', config));
  const secrets = e.secrets.map((s) => el('li', {}, `made ${when(s.created_at)}`, s.expires_at ? `, signs until ${when(s.expires_at)}` : ', current'));
  show(
    el('p', {}, el('a', { href: '#/', text: '← Endpoints' })),
    el('h1', { class: 'url', text: shownUrl(e.url) }),
    el('div', { class: 'row' }, badge(e.status, e.disabled_reason), el('span', { class: 'muted', text: `Created ${when(e.created_at)}` })),
    e.description ? el('p', { class: 'description', text: e.description }) : null,
    el('p', { class: 'events', text: `Events: ${e.event_types.join(', ')}` }),
    Object.keys(e.headers).length ? el('p', { class: 'muted headers', text: `Headers: ${Object.entries(e.headers).map(([k, v]) => `${k}: ${v}`).join('; ')}` }) : null,
    el('p', { class: 'muted', text: `Signature: ${e.signature_style}${e.signature_header ? ` (${e.signature_header})` : ''}` }),
    (e.options.batch_max_events || 1) > 1
      ? el('p', { class: 'muted batching', text: `Batches: up to ${e.options.batch_max_events} events a request, waiting up to ${e.options.batch_max_wait_ms ?? 100} ms for more` })
      : null,
    e.options.ordering === 'key'
      ? el('p', { class: 'muted ordering', text: `Ordered per key; a given-up delivery ${e.options.ordering_given_up === 'hold' ? 'holds its key until retried' : 'lets its key go on'}` })
      : null,
    e.options.coalesce === true
      ? el('p', { class: 'muted coalesce', text: 'Coalesced: only the newest waiting event of a key and type is sent' })
      : null,
    el('h2', { text: 'Health' }), statsBox,
    actions, panel,
    el('h2', { text: 'Signing secrets' }), el('ul', {}, secrets),
    log.node);
}

async function toggle(e) {
  try {
    await api('PATCH', `/v1/endpoints/${e.id}`, { enabled: !e.enabled });
    toast(e.enabled ? 'Paused' : 'Resumed');
    // A new screen: what the old one polls (a test's outcome) stops.
    S.view++;
    await endpointView(e.id);
  } catch (err) { failure(err); }
}

// A span of seconds as a person says it: 3600 -> 1 hour.
function duration(seconds) {
  for (const [unit, n] of [['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (seconds >= n && seconds % n === 0) return `${seconds / n} ${unit}${seconds === n ? '' : 's'}`;
  }
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

function rotate(e, panel) {
  // The grace periods the API offers; the first choice sends none, so the
  // server's default applies. What it was is read back after the rotation.
  const grace = el('select', { id: 'grace' },
    el('option', { value: '', selected: true }, `Keep the old secret for ${duration(S.choices.defaults.grace_seconds)} (the default)`),
    S.choices.grace_seconds.map((s) => el('option', { value: s }, s ? `Keep the old secret for ${duration(s)}` : 'Stop the old secret now')));
  panel.replaceChildren(el('div', { class: 'card' },
    el('label', { for: 'grace', text: 'Grace period' }), grace,
    el('div', { class: 'actions' }, el('button', {
      type: 'button', id: 'rotate-confirm',
      onclick: async () => {
        try {
          const r = await api('POST', `/v1/endpoints/${e.id}/rotate-secret`, grace.value === '' ? {} : { grace_seconds: Number(grace.value) });
          const older = (await api('GET', `/v1/endpoints/${e.id}`)).secrets.filter((x) => x.expires_at).map((x) => x.expires_at).sort();
          panel.replaceChildren(el('div', { class: 'card secret' },
            el('label', { for: 'secret', text: 'New signing secret' }), el('pre', { id: 'secret', text: r.secret }),
            el('p', { text: `It will not be shown again. ${older.length ? `The old secret keeps signing until ${when(older[older.length - 1])}.` : 'The old secret no longer signs.'}` }),
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

// reload: the delivery log's, to show the test there too.
function testForm(e, panel, reload) {
  // The first choice sends no type: the server's default test event.
  const type = el('select', { id: 'test-type' }, el('option', { value: '' }, `Default test event (${S.choices.defaults.test_event_type})`),
    S.types.map((t) => el('option', { value: t.name }, t.name)));
  const outcome = el('div', { id: 'test-outcome', 'aria-live': 'polite' });
  panel.replaceChildren(el('div', { class: 'card' },
    el('label', { for: 'test-type', text: 'Event type (its example payload is sent)' }), type,
    el('div', { class: 'actions' }, el('button', {
      type: 'button', id: 'test-send',
      onclick: async () => {
        const view = S.view;
        outcome.textContent = 'Sending…';
        try {
          const q = await api('POST', `/v1/endpoints/${e.id}/test`, type.value ? { event_type: type.value } : {});
          await reload();
          const node = await testOutcome(e.id, type.value, q.event_id, view);
          if (!node) return; // the user left the screen
          outcome.replaceChildren(node);
          await reload();
        } catch (err) { if (view === S.view) outcome.replaceChildren(el('p', { class: 'error', text: err.message })); }
      },
    }, 'Send')), outcome));
}

// Waits (up to a minute) for the test's first attempt and shows it; null
// as soon as the user leaves the view it was sent from.
async function testOutcome(endpointId, type, eventId, view) {
  const q = new URLSearchParams({ limit: '50' });
  if (type) q.set('event_type', type);
  for (let i = 0; i < 120; i++) {
    if (view !== S.view) return null;
    const page = await api('GET', `/v1/endpoints/${endpointId}/deliveries?${q}`);
    const d = page.data.find((x) => x.event_id === eventId);
    if (d) {
      const full = await api('GET', `/v1/deliveries/${d.id}`);
      const a = full.attempts[full.attempts.length - 1];
      if (a) return attemptNode(a, true, full.attempts.length);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return view === S.view ? el('p', { class: 'muted', text: 'No attempt yet: the delivery is queued. See the log below.' }) : null;
}

// n: the attempt's place in the delivery's log. (The API's `attempt` counts
// within a schedule, which a retry or a replay starts again at 1.)
function attemptNode(a, brief, n) {
  const result = a.response ? `HTTP ${a.response.status_code}` : 'no answer';
  return el('div', { class: 'card attempt' },
    el('div', { class: 'row' }, el('strong', { class: 'outcome', text: `${a.outcome}: ${result}` }),
      el('span', { class: 'muted', text: `attempt ${n}, ${when(a.started_at)}, ${a.duration_ms} ms` })),
    a.batch ? el('p', { class: 'muted batch', text: `In batch ${a.batch.id} of ${a.batch.events} events${a.outcome === 'split' ? ': sent again at once in halves' : ''}` }) : null,
    a.error ? el('p', { class: 'error', text: a.error }) : null,
    a.response && a.response.body_excerpt ? [el('div', { class: 'muted', text: 'Response' }), el('pre', { class: 'response', text: a.response.body_excerpt })] : null,
    brief ? null : [el('div', { class: 'muted', text: 'Headers sent (without the signature)' }), Object.keys(a.request.headers || {}).length
      ? el('pre', { text: JSON.stringify(a.request.headers, null, 2) })
      : el('p', { class: 'muted', text: 'None: the request was not sent.' }),
      el('div', { class: 'muted', text: 'Payload' }), el('pre', { class: 'payload', text: JSON.stringify(a.request.data, null, 2) })]);
}

// ---- deliveries ------------------------------------------------------------

// The endpoint's delivery log, newest first, a page at a time ("Older"
// follows the API's cursor). Returns the section and `reload`, which shows
// the newest page again (after a test send, say).
async function deliveriesSection(e) {
  const box = el('section', { id: 'deliveries' });
  const status = el('select', { id: 'filter-status' }, el('option', { value: '' }, 'Any status'),
    S.choices.delivery_statuses.map((s) => el('option', { value: s }, label(s))));
  const type = el('select', { id: 'filter-type' }, el('option', { value: '' }, 'Any event type'), S.types.map((t) => el('option', { value: t.name }, t.name)));
  const table = el('div', { id: 'delivery-table' });
  let latest = 0; // only the answer to the latest request is shown
  const load = async (before) => {
    const mine = ++latest;
    const q = new URLSearchParams({ limit: '20' });
    if (status.value) q.set('status', status.value);
    if (type.value) q.set('event_type', type.value);
    if (before) q.set('before', before);
    const page = await api('GET', `/v1/endpoints/${e.id}/deliveries?${q}`);
    if (mine !== latest) return;
    const rows = page.data.map((d) => el('tr', { class: 'delivery' },
      el('td', {}, el('a', { href: `#/d/${d.id}`, text: `#${d.id}` })),
      el('td', { text: d.event_type || '' }),
      el('td', { class: 'status', text: label(d.status) }),
      el('td', { text: `${d.attempts} attempt${d.attempts === 1 ? '' : 's'}${d.last_status_code ? `, HTTP ${d.last_status_code}` : ''}` }),
      el('td', { text: when(d.created_at) })));
    table.replaceChildren(...[rows.length
      ? el('table', {}, el('thead', {}, el('tr', {}, ['Delivery', 'Event', 'Status', 'Attempts', 'Queued'].map((h) => el('th', { scope: 'col', text: h })))), el('tbody', {}, rows))
      : el('p', { class: 'muted', text: 'No deliveries match.' }),
    page.next ? el('div', { class: 'actions' }, el('button', { type: 'button', class: 'ghost', id: 'older', onclick: () => shown(page.next) }, 'Older')) : null].filter(Boolean));
  };
  // Loads, and shows a failure in the log's place.
  const shown = (before) => load(before).catch((err) => {
    if (err.status !== 401) table.replaceChildren(el('p', { class: 'error', text: err.message }));
  });
  status.addEventListener('change', () => shown());
  type.addEventListener('change', () => shown());
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
    ...[table, replay].filter(Boolean));
  return { node: box, reload: () => shown() };
}

async function deliveryView(deliveryId) {
  const d = await api('GET', `/v1/deliveries/${deliveryId}`);
  const retry = admin() && ['failed', 'cancelled', 'coalesced'].includes(d.status)
    ? el('button', {
      type: 'button', id: 'retry',
      onclick: async () => {
        try { await api('POST', `/v1/deliveries/${d.id}/retry`); toast('Queued again'); await deliveryView(d.id); } catch (err) { toast(err.message); }
      },
    }, 'Retry') : null;
  show(
    el('p', {}, el('a', { href: `#/e/${d.endpoint_id}`, text: '← Endpoint' })),
    el('h1', { text: `Delivery #${d.id}` }),
    el('p', {}, el('span', { class: 'status', text: label(d.status) }), ` · ${d.event_type || ''} · event ${d.event_id} · queued ${when(d.created_at)}`),
    d.last_error ? el('p', { class: 'error', text: d.last_error }) : null,
    el('div', { class: 'actions' }, retry),
    el('h2', { text: 'Attempts' }),
    d.attempts.length ? d.attempts.map((a, i) => attemptNode(a, false, i + 1)) : el('p', { class: 'muted', text: 'No attempt yet.' }));
}

// ---- API keys (sessions the product allowed to manage them) ----------------

function keyShown(title, r) {
  return el('div', { class: 'card secret', id: 'new-key' },
    el('label', { for: 'api-key', text: title }), el('pre', { id: 'api-key', text: r.key }),
    el('p', { text: 'Copy it now: it will not be shown again. Send it as Authorization: Bearer <key>.' }),
    copyButton('Copy key', () => r.key));
}

async function keysView(shown) {
  const first = await api('GET', `/v1/api-keys?limit=${PAGE}`);
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
  // A page at a time, with the API's cursor.
  const rows = el('tbody', {}, first.data.map(row));
  const more = el('div', { class: 'actions' });
  const pager = (next) => {
    const button = next ? el('button', {
      type: 'button', class: 'ghost', id: 'more-keys',
      onclick: async () => {
        button.disabled = true;
        try {
          const page = await api('GET', `/v1/api-keys?${new URLSearchParams({ limit: String(PAGE), after: next })}`);
          rows.append(...page.data.map(row));
          pager(page.next);
        } catch (e) {
          if (e.status === 401) return;
          button.disabled = false;
          more.append(el('p', { class: 'error', text: e.message }));
        }
      },
    }, 'Show more') : null;
    more.replaceChildren(...[button].filter(Boolean));
  };
  pager(first.next);
  show(
    el('p', {}, el('a', { href: '#/', text: '← Endpoints' })),
    el('h1', { text: 'API keys' }),
    el('p', { class: 'muted', text: 'Keys for your own tools to manage these webhooks. You see the keys you made here.' }),
    panel, form,
    first.data.length ? [el('table', { class: 'keys' },
      el('thead', {}, el('tr', {}, ['Label', 'Access', 'Key', 'Last used', 'Status', ''].map((h) => el('th', { text: h })))),
      rows), more]
      : el('p', { class: 'muted', id: 'no-keys', text: 'No API keys yet.' }));
}

async function signOut() {
  try {
    await api('POST', '/v1/portal/sign-out');
  } catch (e) {
    // 401: the session had already ended, so signed out either way. Any
    // other failure leaves it open: say so.
    if (e.status !== 401) { toast(`Not signed out: ${e.message}`); return; }
  }
  S.csrf = '';
  for (const i of ['sign-out', 'keys-link']) document.getElementById(i).hidden = true;
  document.getElementById('who').textContent = '';
  show(el('h1', { text: 'You have signed out' }),
    el('p', { text: 'Open the webhook settings again from the product to continue.' }));
}

// ---- routing ---------------------------------------------------------------

async function route() {
  S.view++;
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
    if (s.logo) { const l = document.getElementById('logo'); l.src = 'logo'; l.hidden = false; }
    const [types, choices] = await Promise.all([api('GET', '/v1/event-types'), api('GET', '/v1/choices')]);
    S.types = types.data;
    S.choices = choices;
  } catch (e) { failure(e); return; }
  window.addEventListener('hashchange', route);
  await route();
}

document.addEventListener('DOMContentLoaded', start);
