// One run's timeline at /runs/ID (GET /api/runs/ID/timeline): a Gantt chart
// in SVG with a lane per worker, a sub-row per build slot in use at once, and
// a bar per derivation coloured by segment (queue wait, copy in, build, copy
// out); the critical path outlined; each worker's share and where the time
// went. Hover titles are SVG <title> elements, so thousands of bars need no
// event listener. Refreshed every two seconds while the run is active.

const SVG = 'http://www.w3.org/2000/svg';

/** Segment kinds as the API names them, with their colour and label. */
const KINDS = {
  wait: { fill: '#c3ccd7', label: 'queue wait' },
  'copy-in': { fill: '#4c9be8', label: 'copy in' },
  build: { fill: '#2e8b57', label: 'build' },
  'copy-out': { fill: '#d08c1f', label: 'copy out' },
  running: { fill: '#8e63c7', label: 'running' },
};
const CRITICAL = '#c0392b';

const LABEL_WIDTH = 110;
const AXIS_HEIGHT = 24;
const ROW = 14;
const ROW_GAP = 3;
const LANE_GAP = 10;
const REFRESH_MS = 2000;

/** An SVG element with attributes (attributes, unlike style attributes, are allowed by the page's CSP). */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== undefined) el.setAttribute(key, String(value));
  el.append(...children);
  return el;
}

function duration(ms, seconds) {
  return ms < 1000 ? `${Math.round(ms)} ms` : seconds(ms / 1000);
}

function percent(part, whole) {
  return whole > 0 ? `${Math.round((part / whole) * 100)}%` : '–';
}

/** Bars of one worker in sub-rows: each goes to the first row free when its work starts (waits are drawn thin and may overlap). */
function packRows(bars) {
  const rowEnds = [];
  for (const bar of bars.sort((a, b) => a.workStart - b.workStart || a.end - b.end)) {
    let row = rowEnds.findIndex((end) => end <= bar.workStart);
    if (row < 0) row = rowEnds.push(0) - 1;
    rowEnds[row] = bar.end;
    bar.row = row;
  }
  return Math.max(1, rowEnds.length);
}

/** A step of about a tenth of the span, 1, 2 or 5 times a power of ten seconds (at least 1 ms). */
function tickStep(spanMs) {
  const rough = Math.max(1, spanMs / 10);
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? rough;
}

function gantt(t, width, seconds) {
  const byDrv = new Map(t.derivations.map((d) => [d.drvPath, d]));
  const lanes = new Map(t.workers.map((w) => [w.name, []]));
  for (const d of t.derivations) {
    if (!d.built || d.worker === undefined) continue;
    const work = d.segments.filter((s) => s.kind !== 'wait');
    const first = d.segments[0];
    const workStart = work[0]?.start ?? first.start;
    lanes.get(d.worker)?.push({ d, workStart, start: first.start, end: d.segments[d.segments.length - 1].end });
  }
  const from = Math.min(t.start, ...[...lanes.values()].flat().map((b) => b.start));
  const to = Math.max(t.end, from + 1);
  const plot = width - LABEL_WIDTH - 10;
  const x = (ms) => LABEL_WIDTH + ((ms - from) / (to - from)) * plot;

  const laneEls = [];
  let y = AXIS_HEIGHT;
  for (const [worker, bars] of lanes) {
    const rows = packRows(bars);
    const height = rows * (ROW + ROW_GAP);
    const lane = svg(
      'g',
      { class: 'lane', 'data-worker': worker, 'data-rows': rows },
      svg('rect', { x: 0, y, width, height, fill: laneEls.length % 2 === 0 ? '#f3f6f9' : '#ffffff' }),
      svg('text', { x: 6, y: y + 12, 'font-size': 12, 'font-weight': 600, fill: '#1b2430' }, worker),
      svg('text', { x: 6, y: y + 25, 'font-size': 10, fill: '#6b7684' }, `${bars.length} builds`),
    );
    for (const bar of bars) {
      const { d } = bar;
      const top = y + bar.row * (ROW + ROW_GAP);
      const parts = d.segments.map((s) => `${KINDS[s.kind].label} ${duration(s.end - s.start, seconds)}`).join(', ');
      const g = svg(
        'g',
        { class: 'bar', 'data-drv': d.drvPath, 'data-worker': worker, 'data-critical': d.critical ? 'true' : 'false', 'data-row': bar.row },
        svg('title', {}, `${d.name} (${d.status}${d.attempts > 1 ? `, ${d.attempts} tries` : ''}${d.critical ? ', on the critical path' : ''}): ${parts}`),
      );
      for (const s of d.segments) {
        const wait = s.kind === 'wait';
        g.append(
          svg('rect', {
            'data-kind': s.kind,
            'data-ms': s.end - s.start,
            x: x(s.start).toFixed(2),
            y: wait ? top + ROW - 4 : top,
            width: Math.max(wait ? 0 : 1, x(s.end) - x(s.start)).toFixed(2),
            height: wait ? 3 : ROW,
            fill: KINDS[s.kind].fill,
          }),
        );
      }
      if (d.critical && bar.workStart < bar.end)
        g.append(
          svg('rect', {
            class: 'critical',
            x: (x(bar.workStart) - 1).toFixed(2),
            y: top - 1,
            width: (Math.max(1, x(bar.end) - x(bar.workStart)) + 2).toFixed(2),
            height: ROW + 2,
            fill: 'none',
            stroke: CRITICAL,
            'stroke-width': 2,
          }),
        );
      // A bar opens its build's log, as a step of a Hydra build links to its log; one link element, no listener per bar.
      lane.append(svg('a', { href: `/api/logs?path=${encodeURIComponent(d.drvPath)}`, target: '_blank', rel: 'noopener' }, g));
    }
    laneEls.push(lane);
    y += Math.max(height, 30) + LANE_GAP;
  }

  // The axis: seconds since the run started.
  const axis = svg('g', { class: 'axis' });
  const step = tickStep(to - from);
  for (let ms = 0; t.start + ms <= to; ms += step) {
    const at = x(t.start + ms);
    axis.append(
      svg('line', { x1: at, x2: at, y1: AXIS_HEIGHT - 4, y2: y, stroke: '#dde3ea' }),
      svg('text', { x: at, y: AXIS_HEIGHT - 8, 'font-size': 10, 'text-anchor': 'middle', fill: '#6b7684' }, step < 1000 ? `${ms} ms` : `${ms / 1000} s`),
    );
  }
  const chart = svg(
    'svg',
    { id: 'timeline-chart', width, height: y, viewBox: `0 0 ${width} ${y}`, 'data-bars': [...lanes.values()].flat().length },
    axis,
    ...laneEls,
  );
  if (t.active) chart.append(svg('line', { x1: x(t.end), x2: x(t.end), y1: AXIS_HEIGHT - 4, y2: y, stroke: '#1f6feb', 'stroke-dasharray': '3 3' }));
  chart.dataset.criticalPath = t.criticalPath.map((p) => byDrv.get(p)?.name ?? p).join(' → ');
  return chart;
}

function legend(h) {
  return h(
    'p',
    { class: 'timeline-legend' },
    ...Object.values(KINDS).map((k) => h('span', {}, h('span', { class: 'swatch', style: { background: k.fill } }), k.label)),
    h('span', {}, h('span', { class: 'swatch critical', style: { borderColor: CRITICAL } }), 'critical path'),
  );
}

function workersTable(t, h, seconds) {
  const rows = t.workers.map((w) =>
    h(
      'tr',
      { dataset: { worker: w.name }, class: w.name === t.bottleneck ? 'bottleneck' : undefined },
      h('td', {}, h('strong', {}, w.name), w.name === t.bottleneck ? h('span', { class: 'badge failed' }, 'bottleneck') : ''),
      h('td', { class: 'num', dataset: { field: 'builds' } }, String(w.builds)),
      h('td', { class: 'num', dataset: { field: 'busy' } }, duration(w.busyMs, seconds)),
      h('td', { class: 'num', dataset: { field: 'share' } }, percent(w.busyMs, t.wallMs)),
      h('td', { class: 'num' }, duration(w.copyInMs + w.copyOutMs, seconds)),
      h('td', { class: 'num' }, duration(w.buildMs, seconds)),
      h('td', { class: 'num', dataset: { field: 'critical' } }, `${duration(w.criticalPathMs, seconds)} (${w.criticalPathBuilds})`),
    ),
  );
  return h(
    'table',
    { id: 'timeline-workers' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ...['Worker', 'Builds', 'Busy', 'Of the run', 'Copying', 'Building', 'Critical path'].map((c, i) => h('th', { class: i > 0 ? 'num' : undefined }, c)),
      ),
    ),
    h('tbody', {}, ...rows),
  );
}

function totalsTable(t, h, seconds) {
  const parts = [
    ['queue wait', 'wait', t.totals.queueWaitMs],
    ['copy in', 'copy-in', t.totals.copyInMs],
    ['build', 'build', t.totals.buildMs],
    ['copy out', 'copy-out', t.totals.copyOutMs],
  ];
  const sum = parts.reduce((n, [, , ms]) => n + ms, 0);
  return h(
    'table',
    { id: 'timeline-totals' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Where the time went'), h('th', { class: 'num' }, 'Summed over builds'), h('th', { class: 'num' }, 'Share'))),
    h(
      'tbody',
      {},
      ...parts.map(([label, kind, ms]) =>
        h(
          'tr',
          { dataset: { kind } },
          h('td', {}, h('span', { class: 'swatch', style: { background: KINDS[kind].fill } }), label),
          h('td', { class: 'num', dataset: { field: 'ms', ms: String(ms) } }, duration(ms, seconds)),
          h('td', { class: 'num' }, percent(ms, sum)),
        ),
      ),
    ),
  );
}

/** The chain that decided when the run ended, first input first. */
function criticalList(t, h, seconds) {
  const byDrv = new Map(t.derivations.map((d) => [d.drvPath, d]));
  return h(
    'ol',
    { id: 'timeline-critical' },
    ...t.criticalPath.map((p) => {
      const d = byDrv.get(p);
      const work = d.segments.filter((s) => s.kind !== 'wait').reduce((n, s) => n + s.end - s.start, 0);
      return h('li', { dataset: { drv: p, worker: d.worker ?? '' } }, `${d.name} on ${d.worker ?? '?'} (${duration(work, seconds)})`);
    }),
  );
}

function render(root, t, kit) {
  const { h, seconds } = kit;
  const built = t.derivations.filter((d) => d.built).length;
  const width = Math.max(700, root.clientWidth - 34);
  root.dataset.run = t.runId;
  root.dataset.status = t.status;
  root.dataset.active = String(t.active);
  root.replaceChildren(
    h(
      'section',
      {},
      h('p', {}, h('a', { href: '/', id: 'timeline-back' }, '← the farm')),
      h('h2', {}, `Run ${t.runId} `, h('span', { class: `badge ${t.status}`, dataset: { field: 'status' } }, t.status)),
      h(
        'p',
        { class: 'muted', id: 'timeline-summary' },
        `${t.active ? 'running for' : 'took'} ${seconds(t.wallMs / 1000)} · ${built} of ${t.derivations.length} derivations built by this run (the rest were valid, failed before, or never started) · `,
        t.bottleneck === undefined
          ? 'no bottleneck: nothing was built'
          : h('span', {}, 'bottleneck: ', h('strong', { id: 'timeline-bottleneck' }, t.bottleneck)),
      ),
      legend(h),
      h('div', { class: 'timeline-scroll' }, gantt(t, width, seconds)),
      h(
        'p',
        { class: 'muted' },
        'Bars are laid out on the worker that built each derivation, one row per build slot in use at once; the thin bar before each is its wait in the queue. ',
        'The critical path runs back from the derivation that ended last through the input of each that ended last; the bottleneck is the worker that held most of its work.',
      ),
    ),
    h(
      'section',
      {},
      h('h2', {}, 'Workers'),
      workersTable(t, h, seconds),
      h('h2', {}, 'Critical path'),
      t.criticalPath.length === 0 ? h('p', { class: 'empty' }, 'Nothing was built.') : criticalList(t, h, seconds),
      totalsTable(t, h, seconds),
    ),
  );
}

/**
 * Shows the run's timeline in root, refreshed while the run is active.
 * `kit` is the page's helpers: h (elements), seconds (durations), setConnection, showSignIn.
 */
export async function showTimeline(root, runId, kit) {
  const load = async () => {
    const response = await fetch(`/api/runs/${encodeURIComponent(runId)}/timeline`, { credentials: 'same-origin' });
    if (response.status === 401) return kit.showSignIn();
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      root.replaceChildren(
        kit.h(
          'section',
          {},
          kit.h('p', {}, kit.h('a', { href: '/' }, '← the farm')),
          kit.h('p', { class: 'error', id: 'timeline-error' }, body.error?.message ?? `the coordinator answered ${response.status}`),
        ),
      );
      kit.setConnection('signed-out', 'no such run');
      return;
    }
    render(root, body, kit);
    document.body.dataset.timelineAt = String(Date.now());
    kit.setConnection(body.active ? 'live' : 'ended', body.active ? 'live' : `run ${body.status}`);
    if (body.active) setTimeout(refresh, REFRESH_MS);
  };
  // A refresh that fails (the coordinator restarting) is tried again.
  const refresh = () =>
    load().catch((error) => {
      kit.setConnection('reconnecting', `reconnecting… (${error.message})`);
      setTimeout(refresh, REFRESH_MS);
    });
  await load();
}
