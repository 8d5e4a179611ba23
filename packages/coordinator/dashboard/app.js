// The nixfarm dashboard: one snapshot of the farm a second over server-sent
// events (GET /api/dashboard/events), drawn with DOM nodes and textContent
// only (no HTML from data), and the selected build's log followed live
// (GET /api/logs?follow=1 as events). The browser's session cookie, set by
// POST /api/session, authorises the GET requests.

import { startHistory } from './history.js';
import { showTimeline } from './timeline.js';

const $ = (id) => document.getElementById(id);

/** /runs/ID shows that run's timeline (timeline.js) instead of the farm. */
const timelineRun = /^\/runs\/([^/]+)\/?$/.exec(location.pathname)?.[1];

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    // Through the CSSOM: the page's content security policy refuses style attributes.
    else if (key === 'style') Object.assign(el.style, value);
    else if (key === 'onclick') el.addEventListener('click', value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child !== undefined && child !== null) el.append(child);
  return el;
}

function seconds(s) {
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function ago(at) {
  return `${seconds(Math.max(0, (Date.now() - at) / 1000))} ago`;
}

const FAILURE_STATUSES = [
  'failed',
  'timed-out',
  'log-limit-exceeded',
  'output-limit-exceeded',
  'aborted',
  'cached-failure',
  'dependency-failed',
  'cancelled',
  'unsupported',
];

/** The derivation's store name without the hash: what people call it. */
function shortName(drvPath, name) {
  return name || drvPath.replace(/^.*\/[0-9a-z]{32}-/, '').replace(/\.drv$/, '');
}

/** Nix colours its messages; the page shows them plain. */
function plain(text) {
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

function logUrl(drvPath) {
  return `/api/logs?path=${encodeURIComponent(drvPath)}`;
}

function fill(tbody, rows, emptyId) {
  tbody.replaceChildren(...rows);
  $(emptyId).hidden = rows.length > 0;
  tbody.closest('table').hidden = rows.length === 0;
}

// ---------------------------------------------------------------- sections

function renderQueues(snapshot) {
  const needed = new Map(snapshot.scaling.map((s) => [s.system, s.workersNeeded]));
  const rows = snapshot.queues.map((q) =>
    h(
      'tr',
      { dataset: { queue: q.name } },
      h('td', {}, h('strong', {}, q.system), q.features.length > 0 ? h('span', { class: 'muted' }, ` + ${q.features.join(', ')}`) : ''),
      h('td', { dataset: { field: 'waiting' }, class: 'num' }, String(q.waiting)),
      h('td', { dataset: { field: 'running' }, class: 'num' }, String(q.running)),
      h(
        'td',
        { dataset: { field: 'oldest-wait' }, class: q.oldestWaitSeconds > 300 ? 'num warn' : 'num' },
        q.waiting === 0 ? '–' : seconds(q.oldestWaitSeconds),
      ),
      h('td', { dataset: { field: 'workers-needed' }, class: (needed.get(q.system) ?? 0) > 0 ? 'num warn' : 'num' }, String(needed.get(q.system) ?? 0)),
    ),
  );
  fill($('queues').tBodies[0], rows, 'queues-empty');
}

function workerState(w) {
  if (!w.up) return ['down', `no heartbeat for ${seconds(w.heartbeatAgeSeconds)}`];
  if (w.draining) return ['draining', 'finishing its builds, then leaving'];
  if (w.paused !== undefined) return ['paused', w.paused];
  return ['up', `heartbeat ${seconds(w.heartbeatAgeSeconds)} ago`];
}

function renderWorkers(snapshot) {
  const cards = snapshot.workers.map((w) => {
    const [state, detail] = workerState(w);
    const load = Math.min(1, w.running / w.maxJobs);
    return h(
      'article',
      { class: `card worker ${state}`, dataset: { worker: w.name, state } },
      h('header', {}, h('strong', {}, w.name), h('span', { class: `badge ${state}` }, state)),
      h('div', { class: 'muted' }, `${w.systems.join(', ')} · speed ${w.speedFactor} · ${detail}`),
      h(
        'div',
        { class: 'load', title: `${w.running} of ${w.maxJobs} build slots in use` },
        h('div', { class: 'load-bar', style: { width: `${Math.round(load * 100)}%` } }),
        h('span', { class: 'load-text', dataset: { field: 'load' } }, `${w.running} / ${w.maxJobs}`),
      ),
      w.freeDiskBytes === undefined ? '' : h('div', { class: 'muted' }, `${bytes(w.freeDiskBytes)} free in its store`),
      h(
        'ul',
        { class: 'building', dataset: { field: 'building' } },
        w.building.map((b) =>
          h('li', { dataset: { drv: b.drvPath } }, shortName(b.drvPath, b.name), h('span', { class: 'muted elapsed', dataset: { since: b.startedAt } }, '')),
        ),
      ),
    );
  });
  $('workers').replaceChildren(...cards);
  $('workers-empty').hidden = cards.length > 0;
}

let selectedDrv;

function renderRunning(snapshot) {
  const rows = snapshot.running.map((r) =>
    h(
      'tr',
      {
        dataset: { drv: r.drvPath },
        class: r.drvPath === selectedDrv ? 'selected' : undefined,
        onclick: () => follow(r.drvPath, r.name),
        title: 'show its log',
      },
      h('td', {}, shortName(r.drvPath, r.name)),
      h('td', { dataset: { field: 'worker' } }, r.worker),
      h('td', {}, r.system),
      h('td', { class: 'num elapsed', dataset: { since: r.startedAt } }, ''),
      h('td', { class: 'num' }, String(r.attempts)),
      h('td', { class: 'muted' }, r.runIds.join(', ')),
    ),
  );
  fill($('running').tBodies[0], rows, 'running-empty');
  // Follow a build by default so there is always a live log to look at.
  const stillRunning = snapshot.running.some((r) => r.drvPath === selectedDrv);
  if (!stillRunning && !logOpen && snapshot.running.length > 0) {
    const newest = snapshot.running[snapshot.running.length - 1];
    follow(newest.drvPath, newest.name);
  }
}

function renderRuns(snapshot) {
  const items = snapshot.runs.map((run) => {
    const done = Object.entries(run.counts)
      .filter(([status]) => status === 'succeeded' || FAILURE_STATUSES.includes(status))
      .reduce((sum, [, n]) => sum + n, 0);
    const failed = FAILURE_STATUSES.reduce((sum, s) => sum + (run.counts[s] ?? 0), 0);
    // A jobset run starts with no derivations and grows while it evaluates: nothing to show as done before it ends.
    const share = run.total === 0 ? (run.finishedAt === undefined ? 0 : 1) : done / run.total;
    const took = ((run.finishedAt ?? Date.now()) - run.createdAt) / 1000;
    const counts = Object.entries(run.counts)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([status, n]) => `${n} ${status}`)
      .join(' · ');
    return h(
      'article',
      { class: `card run ${run.status}`, dataset: { run: run.id, status: run.status } },
      h(
        'header',
        {},
        h('strong', {}, run.id),
        h('span', { class: 'muted' }, ` ${run.attrs.map((a) => a || '(top level)').join(', ')}`),
        h('a', { href: `/runs/${encodeURIComponent(run.id)}`, class: 'timeline-link', dataset: { field: 'timeline' } }, 'timeline'),
        h('span', { class: `badge ${run.status}`, dataset: { field: 'status' } }, run.status),
      ),
      h(
        'div',
        { class: 'progress', title: `${done} of ${run.total} derivations done` },
        h('div', { class: 'progress-ok', style: { width: `${Math.round(((done - failed) / Math.max(1, run.total)) * 100)}%` } }),
        h('div', { class: 'progress-failed', style: { width: `${Math.round((failed / Math.max(1, run.total)) * 100)}%` } }),
      ),
      h(
        'div',
        { class: 'muted' },
        h('span', { dataset: { field: 'done' } }, `${done} / ${run.total}`),
        ` done (${Math.round(share * 100)}%) · ${counts === '' ? '' : `${counts} · `}${run.finishedAt === undefined ? 'running for' : 'took'} ${seconds(took)}`,
      ),
      run.evaluation === undefined ? '' : renderEvaluation(run.evaluation),
      run.error === undefined ? '' : h('div', { class: 'error' }, plain(run.error)),
    );
  });
  $('runs').replaceChildren(...items);
  $('runs-empty').hidden = items.length > 0;
}

const ATTRIBUTE_OUTCOMES = ['succeeded', 'cached', 'failed', 'dependency-failed', 'unsupported', 'cancelled', 'pending'];

/** A jobset run's evaluation: its state, attributes done, failed and left (a lower bound while sets are still listed), pace, and the attributes' builds. */
function renderEvaluation(e) {
  const known = Math.max(1, e.discovered);
  const left = e.discovering
    ? `${e.left} left of ${e.discovered} discovered so far (still discovering)`
    : e.state === 'evaluating'
      ? `${e.left} of ${e.discovered} left`
      : e.left > 0
        ? `${e.left} of ${e.discovered} never evaluated`
        : '';
  const builds = ATTRIBUTE_OUTCOMES.filter((o) => e.builds[o] > 0)
    .map((o) => `${e.builds[o]} ${o === 'pending' ? 'building or waiting' : o}`)
    .join(' · ');
  return h(
    'div',
    { class: 'evaluation', dataset: { field: 'evaluation', state: e.state } },
    h(
      'div',
      { class: 'progress', title: `${e.done} of ${e.discovered} attributes evaluated${e.discovering ? ' so far' : ''}` },
      h('div', { class: 'progress-ok', style: { width: `${Math.round(((e.done - e.failed) / known) * 100)}%` } }),
      h('div', { class: 'progress-failed', style: { width: `${Math.round((e.failed / known) * 100)}%` } }),
    ),
    h(
      'div',
      { class: 'muted' },
      'evaluation ',
      h('span', { class: `badge ${e.state}`, dataset: { field: 'evaluation-state' } }, e.state),
      ' ',
      h('span', { dataset: { field: 'evaluated' } }, `${e.done} done`),
      ' · ',
      h('span', { dataset: { field: 'evaluation-failed' } }, `${e.failed} failed to evaluate`),
      left === '' ? '' : ' · ',
      left === '' ? '' : h('span', { dataset: { field: 'evaluation-left' } }, left),
      ` · ${seconds(e.elapsedMs / 1000)} · ${e.attributesPerSecond.toFixed(2)} attributes/s`,
    ),
    e.error === undefined ? '' : h('div', { class: 'error' }, `evaluation stopped: ${plain(e.error)}`),
    h('div', { class: 'muted', dataset: { field: 'attribute-builds' } }, `attribute builds: ${builds || 'none yet'}`),
  );
}

function renderFailures(snapshot) {
  const rows = snapshot.failures.map((f) =>
    h(
      'tr',
      { dataset: { drv: f.drvPath } },
      h('td', {}, shortName(f.drvPath, f.name)),
      h('td', { dataset: { field: 'status' } }, h('span', { class: 'badge failed' }, f.status)),
      h('td', {}, f.worker ?? '–'),
      h('td', { class: 'muted' }, f.finishedAt === undefined ? '' : ago(f.finishedAt)),
      h('td', { class: 'error-text' }, plain(f.error ?? '').slice(0, 300)),
      h('td', {}, h('a', { href: logUrl(f.drvPath), target: '_blank', rel: 'noopener', dataset: { field: 'log' } }, 'log')),
    ),
  );
  fill($('failures').tBodies[0], rows, 'failures-empty');
}

function renderUploads(snapshot) {
  const u = snapshot.uploads;
  $('uploads-section').hidden = u === undefined;
  if (u === undefined) return;
  $('uploads-backlog').textContent = u.depth === 0 ? 'every upload is done' : `${u.depth} not done yet; the oldest waits for ${seconds(u.lagSeconds)}`;
  const rows = u.failing.map((f) =>
    h(
      'tr',
      { dataset: { path: f.path } },
      h('td', {}, f.path.replace(/^.*\/[0-9a-z]{32}-/, '')),
      h('td', {}, f.target),
      h('td', { dataset: { field: 'state' } }, h('span', { class: 'badge failed' }, f.state)),
      h('td', {}, String(f.attempts)),
      h('td', { class: 'error-text' }, plain(f.error ?? '').slice(0, 300)),
    ),
  );
  fill($('uploads').tBodies[0], rows, 'uploads-empty');
}

function renderChecks(snapshot) {
  const c = snapshot.checks;
  $('checks-section').hidden = c === undefined;
  if (c === undefined) return;
  const done = c.counts.reproducible + c.counts['not-reproducible'] + c.counts.failed;
  const pending = c.counts.waiting + c.counts.queued + c.counts.running;
  const sampling = c.fraction > 0 ? `sampling ${Math.round(c.fraction * 1000) / 10}% of builds` : 'no background sampling (--check-fraction)';
  $('checks-counts').textContent =
    `${done} checks done: ${c.counts.reproducible} reproducible, ${c.counts['not-reproducible']} not reproducible, ${c.counts.failed} could not finish; ${pending} pending; ${sampling}`;
  const rows = c.mismatches.map((m) =>
    h(
      'tr',
      { dataset: { drv: m.drvPath } },
      h('td', {}, m.name),
      h('td', {}, m.builder ?? '–'),
      h('td', {}, m.checker ?? '–'),
      h('td', { class: 'muted' }, m.finishedAt === undefined ? '' : ago(m.finishedAt)),
      h(
        'td',
        {},
        m.diff === undefined
          ? plain(m.error ?? 'hashes only')
          : h(
              'a',
              { href: m.diff.url, target: '_blank', rel: 'noopener', dataset: { field: 'diff' } },
              `${m.diff.changed} changed, ${m.diff.added} added, ${m.diff.removed} removed`,
            ),
      ),
    ),
  );
  fill($('mismatches').tBodies[0], rows, 'mismatches-empty');
}

function render(snapshot) {
  renderQueues(snapshot);
  renderWorkers(snapshot);
  renderRunning(snapshot);
  renderRuns(snapshot);
  renderFailures(snapshot);
  renderUploads(snapshot);
  renderChecks(snapshot);
  tickElapsed();
  document.body.dataset.snapshotAt = String(snapshot.at);
  $('updated').textContent = `Updated ${new Date(snapshot.at).toLocaleTimeString()}`;
}

/** Elapsed times move every second between snapshots. */
function tickElapsed() {
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = seconds(Math.max(0, (Date.now() - Number(el.dataset.since)) / 1000));
}

// ---------------------------------------------------------------- live log

const LOG_LINES = 200;
let logSource;
let logOpen = false;
let logText = '';

function follow(drvPath, name) {
  if (drvPath === selectedDrv && logOpen) return;
  logSource?.close();
  selectedDrv = drvPath;
  logText = '';
  logOpen = true;
  $('log-panel').hidden = false;
  $('log-panel').dataset.drv = drvPath;
  delete $('log-panel').dataset.ended;
  $('log-name').textContent = shortName(drvPath, name);
  $('log-state').textContent = 'live';
  $('log-tail').textContent = '';
  for (const row of $('running').tBodies[0].rows) row.classList.toggle('selected', row.dataset.drv === drvPath);
  logSource = new EventSource(`${logUrl(drvPath)}&follow=1`);
  logSource.addEventListener('open', () => {
    // A reconnect replays the log from its start.
    logText = '';
  });
  logSource.addEventListener('log', (event) => {
    logText += plain(JSON.parse(event.data));
    const lines = logText.split('\n');
    if (lines.length > LOG_LINES * 2) logText = lines.slice(-LOG_LINES).join('\n');
    const tail = $('log-tail');
    tail.textContent = logText.split('\n').slice(-LOG_LINES).join('\n');
    tail.scrollTop = tail.scrollHeight;
  });
  logSource.addEventListener('end', (event) => {
    const { status } = JSON.parse(event.data);
    $('log-state').textContent = `ended: ${status}`;
    $('log-panel').dataset.ended = status;
    logSource.close();
    logOpen = false;
  });
}

// ---------------------------------------------------------------- session

function showSignIn(message) {
  $('sign-in').hidden = false;
  $('farm').hidden = true;
  $('timeline-page').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in-error').textContent = message ?? '';
  setConnection('signed-out', 'signed out');
}

function setConnection(state, text) {
  $('connection').dataset.state = state;
  $('connection').textContent = text;
}

async function signIn(token) {
  const response = await fetch('/api/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
    credentials: 'same-origin',
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error?.message ?? `sign-in failed (${response.status})`);
  }
}

/** Where to go after signing in: a page of this site (bull-board sends people here first), never elsewhere. */
function nextPage() {
  const next = new URLSearchParams(location.search).get('next');
  return next?.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : undefined;
}

let events;
let historyCharts;

async function start() {
  if (timelineRun !== undefined) return startTimeline();
  const probe = await fetch('/api/dashboard', { credentials: 'same-origin' });
  if (probe.status === 401) return showSignIn();
  if (!probe.ok) return showSignIn(`the coordinator answered ${probe.status}`);
  const next = nextPage();
  if (next !== undefined) return location.assign(next);
  $('sign-in').hidden = true;
  $('farm').hidden = false;
  $('sign-out').hidden = false;
  render(await probe.json());
  historyCharts?.stop();
  historyCharts = startHistory($('history-section'));
  events = new EventSource('/api/dashboard/events');
  events.addEventListener('open', () => setConnection('live', 'live'));
  events.addEventListener('snapshot', (event) => {
    setConnection('live', 'live');
    render(JSON.parse(event.data));
  });
  events.addEventListener('error', () => setConnection('reconnecting', 'reconnecting…'));
}

async function startTimeline() {
  $('sign-in').hidden = true;
  $('farm').hidden = true;
  $('timeline-page').hidden = false;
  $('sign-out').hidden = false;
  await showTimeline($('timeline-page'), decodeURIComponent(timelineRun), { h, seconds, setConnection, showSignIn });
}

async function main() {
  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await signIn($('token').value.trim());
      $('token').value = '';
      await start();
    } catch (error) {
      showSignIn(error.message);
    }
  });
  $('sign-out').addEventListener('click', async () => {
    events?.close();
    logSource?.close();
    historyCharts?.stop();
    historyCharts = undefined;
    await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin' });
    showSignIn();
  });
  setInterval(tickElapsed, 1000);

  // A sign-in link opened on a page already showing the dashboard changes only the fragment.
  window.addEventListener('hashchange', () => {
    signInFromLink()
      .then((signedIn) => (signedIn ? restart() : undefined))
      .catch((error) => showSignIn(error.message));
  });
  if ((await signInFromLink()) === false) return;
  await start();
}

/**
 * `nixfarm dashboard` links here with #token=…: the fragment never reaches a
 * server; it is traded for the cookie and dropped from the address bar.
 * Answers undefined when there is no token in the fragment, false when it was refused.
 */
async function signInFromLink() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromLink === null) return undefined;
  history.replaceState(null, '', location.pathname + location.search);
  try {
    await signIn(fromLink);
    return true;
  } catch (error) {
    showSignIn(error.message);
    return false;
  }
}

async function restart() {
  events?.close();
  await start();
}

main().catch((error) => showSignIn(error.message));
