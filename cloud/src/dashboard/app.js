/*
 * Edge alerts dashboard: a live view of alerts, gateways and devices.
 *
 * The model (alerts, gateways, devices, open charts) is filled from the JSON
 * API and kept current by the server-sent events of /api/stream. Any change
 * marks the page dirty; one requestAnimationFrame then reconciles the DOM,
 * keyed by id, so bursts of events cost one render. Every fetch that answers
 * 401 sends the browser to /login. Server text only ever reaches the DOM as
 * text nodes or attribute values, never as HTML. No dependencies.
 */
'use strict';

const STALE_MS = 5 * 60 * 1000;   // a device unseen this long is stale
const TICK_MS = 15 * 1000;        // relative times are refreshed this often
const REFETCH_MS = 60 * 1000;     // safety-net refetch of everything
const CHART_POINTS = 120;         // points kept per device chart
const RESOLVED_SHOWN = 200;       // resolved alerts rendered at most

// ---- model ----------------------------------------------------------------
const alerts = new Map();   // id -> alert, as served by /api/alerts
const gateways = new Map(); // gateway -> {gateway, status, since}
const devices = new Map();  // "gateway/device" -> {gateway, device, last_seen, readings}
const charts = new Map();   // "gateway/device" -> {gateway, device, series, loading, pending, error}
const user = readCookie('edge_alerts_user');
let journal = null;         // SSE messages seen while a refetch is in flight

const $ = (id) => document.getElementById(id);
const deviceKey = (gateway, device) => `${gateway}/${device}`;

function readCookie(name) {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) {
      try { return decodeURIComponent(v.join('=')); } catch { return v.join('='); }
    }
  }
  return '';
}

// ---- formatting ------------------------------------------------------------
const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const fmtNum = (v) => (typeof v === 'number' && Number.isFinite(v) ? numberFormat.format(v) : '—');
const fmtAbs = (ms) => new Date(ms).toLocaleString();

function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

function fmtAgo(ms) {
  const diff = Date.now() - ms;
  return diff < 10000 ? 'just now' : `${fmtDuration(diff)} ago`;
}

// ---- DOM helpers -------------------------------------------------------------
/** Creates an element; string children become text nodes, null ones are skipped. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Whether `ms` is a time a Date can hold (±8.64e15 ms): devices can send anything. */
const validTime = (ms) => Number.isFinite(ms) && Math.abs(ms) <= 8.64e15;

/** A <time> showing "3 min ago", absolute time in its title; refreshed by tick(). */
function timeAgo(ms, prefix = '') {
  if (typeof ms !== 'number') return h('span', { class: 'muted' }, '—');
  if (!validTime(ms)) return h('span', { class: 'bad', title: `out of range: ${ms}` }, prefix + 'invalid time');
  return h('time', { datetime: new Date(ms).toISOString(), title: fmtAbs(ms),
    'data-ts': ms, 'data-prefix': prefix }, prefix + fmtAgo(ms));
}

const sevClass = (s) => `sev-${['critical', 'warning', 'info'].includes(s) ? s : 'none'}`;

/**
 * Keyed reconciliation of `parent`'s children with `items`: builds missing
 * elements, refreshes those whose signature changed, reorders with minimal
 * moves and drops elements no longer present.
 */
function reconcile(parent, items, cache, key, sig, create, update) {
  const seen = new Set();
  items.forEach((item, i) => {
    const k = key(item);
    const s = sig(item);
    seen.add(k);
    let entry = cache.get(k);
    // One item that cannot be shown (data a device made up) is shown as bad; the rest renders.
    try {
      if (!entry || entry.bad) {
        if (entry) entry.el.remove();
        entry = { el: create(item), sig: null };
        cache.set(k, entry);
      }
      if (entry.sig !== s) {
        update(entry.el, item);
        entry.sig = s;
      }
    } catch (error) {
      if (entry) entry.el.remove();
      entry = { el: h(parent.tagName === 'UL' ? 'li' : 'div', { class: 'bad-row' },
        `This item cannot be shown: ${error.message}`), sig: s, bad: true };
      cache.set(k, entry);
    }
    const at = parent.children[i];
    if (at !== entry.el) parent.insertBefore(entry.el, at || null);
  });
  for (const [k, entry] of cache) {
    if (!seen.has(k)) { entry.el.remove(); cache.delete(k); }
  }
}

// ---- rendering ---------------------------------------------------------------
let frame = 0;
function markDirty() {
  if (!frame) frame = requestAnimationFrame(render);
}

const firingCache = new Map();
const resolvedCache = new Map();
const gatewayCache = new Map();
const groupCache = new Map();
const deviceCaches = new Map(); // gateway -> Map for its device list

function render() {
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  renderAlerts();
  renderGateways();
  renderDevices();
}

function renderAlerts() {
  const firing = [], resolved = [];
  for (const a of alerts.values()) (a.resolved_at == null ? firing : resolved).push(a);
  const byDesc = (field) => (x, y) => (y[field] ?? 0) - (x[field] ?? 0) || String(x.id).localeCompare(String(y.id));
  firing.sort(byDesc('fired_at'));
  resolved.sort(byDesc('resolved_at'));
  const shown = resolved.slice(0, RESOLVED_SHOWN);
  const alertSig = (a) => JSON.stringify(a);
  reconcile($('firing'), firing, firingCache, (a) => a.id, alertSig, createAlert, updateAlert);
  reconcile($('resolved'), shown, resolvedCache, (a) => a.id, alertSig, createAlert, updateAlert);
  $('firing-empty').hidden = firing.length > 0;
  $('firing-head').hidden = firing.length === 0;
  $('resolved-empty').hidden = resolved.length > 0;
  $('resolved-head').hidden = resolved.length === 0;
  const more = $('resolved-more');
  more.hidden = resolved.length <= shown.length;
  more.textContent = `${resolved.length - shown.length} older resolved alerts not shown.`;

  const unacked = firing.filter((a) => a.acknowledged_by == null).length;
  $('count-firing').textContent = firing.length;
  $('count-unacked').textContent = unacked;
  document.title = firing.length ? `(${firing.length}) Edge alerts` : 'Edge alerts';
  document.body.dataset.firing = firing.length ? (unacked ? 'unacked' : 'acked') : 'none';
}

function createAlert(a) {
  return h('li', { class: 'alert', 'data-alert-id': a.id, tabindex: -1 });
}

function updateAlert(el, a) {
  const firing = a.resolved_at == null;
  const acked = a.acknowledged_by != null;
  el.className = `alert ${sevClass(a.severity)}`;
  el.dataset.state = firing ? 'firing' : 'resolved';
  el.dataset.acked = String(acked);

  const labels = Object.entries(a.labels || {});
  const when = firing
    ? h('div', { class: 'c-when' }, h('span', { class: 'k' }, 'since '), timeAgo(a.fired_at))
    : h('div', { class: 'c-when' }, h('span', { class: 'k' }, 'resolved '), timeAgo(a.resolved_at),
      a.fired_at != null ? h('span', { class: 'duration' }, `lasted ${fmtDuration(a.resolved_at - a.fired_at)}`) : null);
  const value = firing
    ? h('div', { class: 'c-value', title: a.event ? `event ${a.event}` : null }, h('span', { class: 'k' }, 'value '), fmtNum(a.value))
    : h('div', { class: 'c-value', title: a.event ? `fired by event ${a.event}` : null },
      h('span', { class: 'k' }, 'value '), fmtNum(a.value), ' → ', h('strong', null, fmtNum(a.resolved_value)));
  const ack = acked
    ? h('div', { class: 'c-ack acked' }, `acked by ${a.acknowledged_by}`,
      a.acknowledged_at != null ? [', ', timeAgo(a.acknowledged_at)] : null)
    : h('div', { class: 'c-ack' }, h('button', { type: 'button', class: 'ack' }, 'Acknowledge'));

  el.replaceChildren(
    h('div', { class: 'c-sev' }, h('span', { class: `badge ${sevClass(a.severity)}` }, a.severity ?? 'none')),
    h('div', { class: 'c-rule' }, h('strong', { class: 'rule' }, a.rule ?? '?'),
      labels.length ? h('span', { class: 'labels' }, labels.map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))) : null),
    h('div', { class: 'c-where' }, h('span', { class: 'alert-device' }, a.device ?? '?'), ' ',
      h('span', { class: 'gw' }, `on ${a.gateway ?? '?'}`)),
    when, value, ack);
}

function renderGateways() {
  const list = [...gateways.values()].sort((x, y) =>
    (x.status === 'online') - (y.status === 'online') || x.gateway.localeCompare(y.gateway));
  reconcile($('gateways'), list, gatewayCache, (g) => g.gateway, (g) => `${g.status}|${g.since}`,
    (g) => h('li', { class: 'gateway', 'data-gateway': g.gateway }),
    (el, g) => {
      el.dataset.status = g.status;
      el.replaceChildren(h('span', { class: `badge status-${g.status}` }, g.status),
        h('strong', { class: 'gw-name' }, g.gateway), ' ',
        h('span', { class: 'muted' }, 'since ', timeAgo(g.since)));
    });
  $('gateways-empty').hidden = list.length > 0;
}

function renderDevices() {
  const groups = new Map();
  for (const d of devices.values()) {
    if (!groups.has(d.gateway)) groups.set(d.gateway, []);
    groups.get(d.gateway).push(d);
  }
  const names = [...groups.keys()].sort((x, y) => x.localeCompare(y));
  reconcile($('devices'), names, groupCache, (g) => g, () => '',
    (g) => h('section', { class: 'dev-group', 'aria-label': `Devices on ${g}` },
      h('h3', null, g), h('ul', { class: 'devices' })),
    () => {});
  for (const g of names) {
    const list = groups.get(g).sort((x, y) => x.device.localeCompare(y.device));
    if (!deviceCaches.has(g)) deviceCaches.set(g, new Map());
    const ul = groupCache.get(g).el.querySelector('ul');
    reconcile(ul, list, deviceCaches.get(g), (d) => deviceKey(d.gateway, d.device), deviceSig, createDevice, updateDevice);
  }
  for (const g of deviceCaches.keys()) if (!groups.has(g)) deviceCaches.delete(g);
  $('devices-empty').hidden = devices.size > 0;
}

function deviceSig(d) {
  const c = charts.get(deviceKey(d.gateway, d.device));
  return JSON.stringify([d.last_seen, d.readings, c ? [c.version, c.loading, c.error] : null]);
}

function createDevice(d) {
  const key = deviceKey(d.gateway, d.device);
  const button = h('button', { type: 'button', class: 'dev-toggle', 'aria-expanded': 'false',
    'aria-controls': `chart-${key}` });
  return h('li', { class: 'device', 'data-device': key }, button,
    h('div', { class: 'chart', id: `chart-${key}`, hidden: true }));
}

function updateDevice(el, d) {
  const key = deviceKey(d.gateway, d.device);
  const chart = charts.get(key);
  const [button, box] = el.children;
  el.classList.toggle('stale', Date.now() - d.last_seen > STALE_MS);
  el.classList.toggle('open', !!chart);
  button.setAttribute('aria-expanded', String(!!chart));
  const readings = Object.entries(d.readings || {}).sort(([x], [y]) => x.localeCompare(y));
  button.replaceChildren(
    h('span', { class: 'dev-name' }, d.device),
    h('span', { class: 'dev-seen' }, d.last_seen ? timeAgo(d.last_seen, 'seen ') : 'never seen'),
    h('span', { class: 'readings' }, readings.length
      ? readings.map(([k, v]) => h('span', { class: 'reading' }, h('span', { class: 'k' }, k), ' ', fmtNum(v)))
      : h('span', { class: 'muted' }, 'no readings')),
    h('span', { class: 'chevron', 'aria-hidden': 'true' }, chart ? '▾' : '▸'));
  box.hidden = !chart;
  box.replaceChildren(...(chart ? renderChart(chart) : []));
}

/** Small multiples: one sparkline per reading name, each with its own min/max. */
function renderChart(chart) {
  if (chart.error) return [h('p', { class: 'chart-msg error' }, chart.error)];
  if (chart.loading && !chart.series.length) return [h('p', { class: 'chart-msg' }, 'Loading history…')];
  const series = chart.series;
  const names = [...new Set(series.flatMap((p) => Object.keys(p.readings || {})))].sort();
  if (!names.length) return [h('p', { class: 'chart-msg' }, 'No readings in its history yet.')];
  const t0 = series[0].at, t1 = series[series.length - 1].at;
  const rows = names.map((name) => {
    const pts = series.filter((p) => typeof p.readings?.[name] === 'number');
    const vals = pts.map((p) => p.readings[name]);
    const min = Math.min(...vals), max = Math.max(...vals);
    const x = (p, i) => (t1 > t0 ? ((p.at - t0) / (t1 - t0)) * 100 : (i / Math.max(1, pts.length - 1)) * 100);
    const y = (v) => (max > min ? 28 - ((v - min) / (max - min)) * 26 : 15);
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 100 30');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', `${name}: ${pts.length} points, min ${fmtNum(min)}, max ${fmtNum(max)}`);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', pts.map((p, i) => `${x(p, i).toFixed(2)},${y(p.readings[name]).toFixed(2)}`).join(' '));
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
    return h('div', { class: 'spark' },
      h('span', { class: 'spark-name' }, name, h('span', { class: 'spark-last' }, fmtNum(vals[vals.length - 1]))),
      svg,
      h('span', { class: 'spark-axis' }, h('span', { title: 'max' }, fmtNum(max)), h('span', { title: 'min' }, fmtNum(min))));
  });
  return [...rows, h('p', { class: 'chart-span' }, `${series.length} points · `, timeAgo(t0), ' → ', timeAgo(t1))];
}

/** Refreshes relative times and stale marks without a full render. */
function tick() {
  for (const t of document.querySelectorAll('time[data-ts]')) {
    const text = (t.dataset.prefix || '') + fmtAgo(Number(t.dataset.ts));
    if (t.textContent !== text) {
      if (t.firstChild?.nodeType === Node.TEXT_NODE) t.firstChild.data = text; else t.textContent = text;
    }
  }
  for (const el of document.querySelectorAll('[data-device]')) {
    const d = devices.get(el.dataset.device);
    if (d) el.classList.toggle('stale', Date.now() - d.last_seen > STALE_MS);
  }
}

// ---- network -----------------------------------------------------------------
class AuthError extends Error {}
function toLogin() {
  location.assign('/login');
  throw new AuthError('session expired');
}

async function api(url, options = {}) {
  const res = await fetch(url, { credentials: 'same-origin', ...options });
  if (res.status === 401) toLogin();
  return res;
}

async function getJSON(url) {
  const res = await api(url, { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return res.json();
}

let noticeTimer = 0, refreshFailed = false;
function notice(text, ms = 0) {
  const el = $('notice');
  refreshFailed = false;
  el.textContent = text || '';
  el.hidden = !text;
  clearTimeout(noticeTimer);
  if (text && ms) noticeTimer = setTimeout(() => notice(''), ms);
}

let refetching = null, refetchAgain = false;
/** Reloads alerts, gateways and devices; SSE messages that race it are replayed. */
function refetchAll() {
  if (refetching) { refetchAgain = true; return refetching; }
  journal = [];
  refetching = (async () => {
    try {
      const [as, gs, ds] = await Promise.all([
        getJSON('/api/alerts?limit=500'), getJSON('/api/gateways'), getJSON('/api/devices')]);
      alerts.clear();
      for (const a of as) alerts.set(a.id, a);
      gateways.clear();
      for (const g of gs) gateways.set(g.gateway, g);
      devices.clear();
      for (const d of ds) devices.set(deviceKey(d.gateway, d.device), d);
      for (const [type, data] of journal) apply(type, data, true);
      if (refreshFailed) notice('');
      for (const chart of charts.values()) loadHistory(chart);
      markDirty();
    } catch (e) {
      if (!(e instanceof AuthError)) {
        notice(`Could not refresh: ${e.message}`);
        refreshFailed = true;
      }
    } finally {
      journal = null;
      refetching = null;
      if (refetchAgain) { refetchAgain = false; refetchAll(); }
    }
  })();
  return refetching;
}

async function loadHistory(chart) {
  if (chart.fetching) return; // one request per chart at a time
  chart.fetching = true;
  chart.loading = true;
  chart.pending = [];
  chart.version++;
  const url = `/api/devices/${encodeURIComponent(chart.gateway)}/${encodeURIComponent(chart.device)}/history?limit=${CHART_POINTS}`;
  try {
    const history = await getJSON(url);
    if (charts.get(deviceKey(chart.gateway, chart.device)) !== chart) return; // closed meanwhile
    chart.series = history;
    for (const p of chart.pending) addPoint(chart, p);
    chart.error = null;
  } catch (e) {
    if (e instanceof AuthError) return;
    chart.error = `Could not load history: ${e.message}`;
  } finally {
    chart.fetching = false;
    chart.loading = false;
    chart.pending = [];
    chart.version++;
    markDirty();
  }
}

/** Inserts a point in time order (skipping duplicates) and caps the series. */
function addPoint(chart, p) {
  const s = chart.series;
  let i = s.length;
  while (i > 0 && s[i - 1].at > p.at) i--;
  if (i > 0 && s[i - 1].at === p.at) return;
  s.splice(i, 0, p);
  if (s.length > CHART_POINTS) s.splice(0, s.length - CHART_POINTS);
  chart.version++;
}

function toggleChart(key) {
  if (charts.has(key)) {
    charts.delete(key);
  } else {
    const d = devices.get(key);
    if (!d) return;
    const chart = { gateway: d.gateway, device: d.device, series: [], pending: [],
      loading: true, fetching: false, error: null, version: 0 };
    charts.set(key, chart);
    loadHistory(chart);
  }
  markDirty();
}

async function acknowledge(id, button) {
  const by = user || prompt('Your name, recorded with the acknowledgement:')?.trim();
  if (!by) return;
  const refocus = document.activeElement === button; // disabling drops the focus
  button.disabled = true;
  button.textContent = 'Acknowledging…';
  try {
    const res = await api(`/api/alerts/${encodeURIComponent(id)}/ack`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ by }) });
    if (res.status === 404) {
      notice('That alert is no longer known to the server.', 8000);
      alerts.delete(id);
      refetchAll();
    } else if (!res.ok) {
      throw new Error(`the server answered ${res.status}`);
    } else {
      const body = await res.json();
      // The server answers with the acknowledgement it keeps: the first one.
      const a = alerts.get(id);
      if (a) {
        a.acknowledged_by = body.acknowledged_by ?? by;
        a.acknowledged_at = body.acknowledged_at ?? Date.now();
      }
      if (body.already) notice(`${body.acknowledged_by} had already acknowledged it.`, 6000);
      render(); // show the result now, then keep keyboard focus on the alert
      if (refocus) (firingCache.get(id) || resolvedCache.get(id))?.el.focus();
    }
  } catch (e) {
    if (e instanceof AuthError) return;
    notice(`Could not acknowledge: ${e.message}`, 8000);
    if (button.isConnected) {
      button.disabled = false;
      button.textContent = 'Acknowledge';
      if (refocus) button.focus();
    }
  }
}

// ---- live updates ------------------------------------------------------------
/** Merges one SSE message into the model. `replay`: re-applied after a refetch. */
function apply(type, m, replay = false) {
  if (type === 'alert') {
    let a = alerts.get(m.id);
    if (!a) {
      a = { id: m.id, gateway: m.gateway, rule: m.rule, device: m.device, severity: m.severity ?? null,
        state: 'firing', fired_at: null, value: null, event: null, resolved_at: null, resolved_value: null,
        labels: m.labels || {}, acknowledged_by: null, acknowledged_at: null };
      alerts.set(m.id, a);
    }
    a.gateway = m.gateway ?? a.gateway;
    a.rule = m.rule ?? a.rule;
    a.device = m.device ?? a.device;
    a.severity = m.severity ?? a.severity;
    if (m.labels) a.labels = m.labels;
    if (m.state === 'firing') { a.fired_at = m.at; a.value = m.value ?? null; a.event = m.event ?? null; }
    if (m.state === 'resolved') { a.resolved_at = m.at; a.resolved_value = m.value ?? null; }
    a.state = a.resolved_at == null ? 'firing' : 'resolved';
  } else if (type === 'ack') {
    const a = alerts.get(m.id);
    if (a) { a.acknowledged_by = m.by; a.acknowledged_at = m.at; }
  } else if (type === 'event') {
    const key = deviceKey(m.gateway, m.device);
    const d = devices.get(key);
    const seen = m.received_at;
    if (!d) devices.set(key, { gateway: m.gateway, device: m.device, last_seen: seen, readings: m.readings || {} });
    else if (seen >= d.last_seen) { d.last_seen = seen; d.readings = m.readings || {}; }
    const chart = charts.get(key);
    if (chart && !replay) {
      const p = { at: seen, readings: m.readings || {} };
      if (chart.loading) chart.pending.push(p);
      addPoint(chart, p);
    }
  } else if (type === 'status') {
    gateways.set(m.gateway, { gateway: m.gateway, status: m.online ? 'online' : 'offline', since: m.since });
  }
}

function setLive(open) {
  const el = $('live');
  el.dataset.state = open ? 'open' : 'closed';
  el.textContent = open ? 'live' : 'reconnecting…';
}

let source = null, retryMs = 2000;
function connect() {
  source = new EventSource('/api/stream');
  source.addEventListener('open', () => { setLive(true); retryMs = 2000; refetchAll(); });
  source.addEventListener('error', () => {
    setLive(false);
    if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    // The browser gave up (e.g. a 401 or a non-stream answer): probe, then retry.
    source = null;
    setTimeout(async () => {
      try { await api('/api/gateways'); } catch (e) { if (e instanceof AuthError) return; }
      connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 60000);
  });
  for (const type of ['alert', 'ack', 'event', 'status']) {
    source.addEventListener(type, (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      apply(type, data);
      if (journal) journal.push([type, data]);
      markDirty();
    });
  }
  source.addEventListener('resync', () => refetchAll());
}

// ---- start -------------------------------------------------------------------
function start() {
  $('user-name').textContent = user || 'anonymous';
  $('alerts').addEventListener('click', (e) => {
    const button = e.target.closest('button.ack');
    const item = button?.closest('[data-alert-id]');
    if (item && !button.disabled) acknowledge(item.dataset.alertId, button);
  });
  $('devices').addEventListener('click', (e) => {
    const item = e.target.closest('button.dev-toggle')?.closest('[data-device]');
    if (item) toggleChart(item.dataset.device);
  });
  refetchAll();
  connect();
  setInterval(tick, TICK_MS);
  setInterval(refetchAll, REFETCH_MS);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) { tick(); markDirty(); } });
}

start();
