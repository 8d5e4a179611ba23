// Small time-series charts drawn with uPlot, for the dashboard's history and
// for any page that wants the same look (the README's screenshot of the
// Grafana board's queries). Works on a blank page too: it needs only this
// file and uPlot's dist files beside it (uPlot.esm.js, uPlot.min.css), and
// loads the stylesheet itself when the page has not. No inline styles or
// scripts: uPlot sets styles through the CSSOM, which a strict CSP allows.
//
//   timeSeriesChart(container, { title, unit, series: [{ label, points: [[unixSeconds, value|null], ...] }], width?, height? })
//     -> { update(series), pointCount(), destroy() }
//
// Optional extras: a series may carry `color` and `dash` (e.g. [4, 3]); the
// options may carry `timeWindow: () => [fromSeconds, toSeconds]`, the span the
// x axis shows (default: the data's own span), and `gapSeconds` (a number or a
// function answering one): consecutive points further apart than that are not
// joined, so a time nothing was recorded (a coordinator stopped) shows as a gap.
//
// What it drew is readable from the container, for tests: data-points (points
// per series: the timestamps of all series together), data-series (the labels,
// as JSON), data-sums (each series' sum of its non-null values, as JSON) and
// data-x-min / data-x-max (the x axis's span in unix seconds).

import uPlot from './uPlot.esm.js';

const STYLESHEET = new URL('./uPlot.min.css', import.meta.url).href;

/** Colours people read without a legend: green for success, red for failure. */
const STATUS_COLORS = {
  succeeded: '#2e8b57',
  failed: '#c0392b',
  aborted: '#c7831a',
  'timed-out': '#8e44ad',
  'log-limit-exceeded': '#6c5ce7',
  'output-limit-exceeded': '#a0522d',
  cancelled: '#7f8c8d',
};
const PALETTE = ['#1f6feb', '#8e44ad', '#16a085', '#d35400', '#2c3e50', '#b03a8c', '#c7831a', '#7f8c8d'];

/** The i-th colour of the charts' palette: pages that colour several series alike (a system's waiting and running) take it from here. */
export function paletteColor(i) {
  return PALETTE[i % PALETTE.length];
}

function ensureStylesheet() {
  if (typeof document === 'undefined') return;
  const present = [...document.querySelectorAll('link[rel="stylesheet"]')].some((l) => l.href === STYLESHEET || /uPlot(\.min)?\.css$/.test(l.href));
  if (present) return;
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = STYLESHEET;
  document.head.append(link);
}

/**
 * uPlot wants aligned columns: one x array and one y array per series.
 * Series with their own timestamps are merged on the union of the times;
 * a series without a value at a time gets null there (drawn as a gap only
 * where it has none on either side: spanGaps).
 */
function align(series) {
  const times = [...new Set(series.flatMap((s) => s.points.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = series.map((s) => {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s.points) column[index.get(t)] = v === undefined ? null : v;
    return column;
  });
  return [times, ...columns];
}

/** Large values with a metric suffix (1.5 G rather than 1500000000), so axis labels fit their gutter. */
const SUFFIXES = [
  [1e12, 'T'],
  [1e9, 'G'],
  [1e6, 'M'],
  [1e4, 'k'],
];

function formatValue(value, unit) {
  if (value === null || value === undefined) return '–';
  const suffix = SUFFIXES.find(([size]) => Math.abs(value) >= size);
  if (suffix !== undefined) {
    const [size, letter] = suffix;
    const scaled = Math.round((value / (letter === 'k' ? 1e3 : size)) * 10) / 10;
    return `${scaled} ${letter}${unit}`.trim();
  }
  const rounded = Math.abs(value) >= 100 || Number.isInteger(value) ? Math.round(value) : Math.round(value * 100) / 100;
  return unit ? `${rounded} ${unit}` : String(rounded);
}

function colorOf(s, i) {
  return s.color ?? STATUS_COLORS[s.label] ?? paletteColor(i);
}

/**
 * Gaps where consecutive times lie further apart than `gapSeconds` (canvas
 * pixels, in order). uPlot's own gaps at nulls are dropped: a series without
 * a value at another series' time is joined across it, as with spanGaps.
 */
function gapsOver(gapSeconds) {
  return (u, _seriesIdx, idx0, idx1) => {
    const limit = typeof gapSeconds === 'function' ? gapSeconds() : gapSeconds;
    const gaps = [];
    if (limit === undefined || limit === null) return gaps;
    const xs = u.data[0];
    for (let i = idx0; i < idx1; i++) {
      if (xs[i + 1] - xs[i] > limit) gaps.push([Math.round(u.valToPos(xs[i], 'x', true)), Math.round(u.valToPos(xs[i + 1], 'x', true))]);
    }
    return gaps;
  };
}

function seriesOptions(series, unit, gapSeconds) {
  return [
    {},
    ...series.map((s, i) => ({
      label: s.label,
      stroke: colorOf(s, i),
      width: 1.5,
      ...(s.dash === undefined ? {} : { dash: s.dash }),
      // uPlot asks for the gaps only of a series that does not span them
      ...(gapSeconds === undefined ? { spanGaps: true } : { spanGaps: false, gaps: gapsOver(gapSeconds) }),
      points: { show: false },
      value: (_u, v) => formatValue(v, unit),
    })),
  ];
}

/** A line chart of one or more series over time in `container`; see the header for the contract. */
export function timeSeriesChart(container, { title, unit = '', series, width, height = 180, timeWindow, gapSeconds }) {
  ensureStylesheet();
  let current = series;
  let plot;
  let labels = '';

  const measure = () => width ?? Math.max(240, Math.floor(container.clientWidth || 400));

  const options = () => ({
    title,
    width: measure(),
    height,
    series: seriesOptions(current, unit, gapSeconds),
    scales: {
      x: { time: true, ...(timeWindow === undefined ? {} : { range: (_u, min, max) => windowOr(min, max) }) },
      y: { range: (_u, _min, max) => [0, Math.max(1, max ?? 1) * 1.1] },
    },
    axes: [{}, { label: unit || undefined, size: 50, values: (_u, ticks) => ticks.map((v) => formatValue(v, '')) }],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    hooks: { draw: [(u) => describeScale(u)] },
  });

  const windowOr = (min, max) => {
    const span = timeWindow?.();
    return span === undefined ? [min, max] : span;
  };

  function describeScale(u) {
    const { min, max } = u.scales.x;
    if (min !== undefined && min !== null) container.dataset.xMin = String(Math.round(min));
    if (max !== undefined && max !== null) container.dataset.xMax = String(Math.round(max));
  }

  function describe(data) {
    container.dataset.points = String(data[0].length);
    container.dataset.series = JSON.stringify(current.map((s) => s.label));
    container.dataset.sums = JSON.stringify(data.slice(1).map((column) => column.reduce((sum, v) => sum + (v ?? 0), 0)));
  }

  function draw() {
    const data = align(current);
    const nextLabels = JSON.stringify(current.map((s) => [s.label, s.color, s.dash]));
    // A new or vanished series (a new system, a status seen for the first time) changes the legend: build anew.
    if (plot === undefined || nextLabels !== labels) {
      plot?.destroy();
      plot = new uPlot(options(), data, container);
      labels = nextLabels;
    } else {
      plot.setData(data);
    }
    describe(data);
  }

  const resize =
    width === undefined && typeof ResizeObserver !== 'undefined'
      ? new ResizeObserver(() => {
          const w = measure();
          if (plot !== undefined && Math.abs(plot.width - w) > 1) plot.setSize({ width: w, height });
        })
      : undefined;
  resize?.observe(container);
  draw();

  return {
    update(next) {
      current = next;
      draw();
    },
    pointCount() {
      return plot === undefined ? 0 : plot.data[0].length;
    },
    destroy() {
      resize?.disconnect();
      plot?.destroy();
      plot = undefined;
      for (const key of ['points', 'series', 'sums', 'xMin', 'xMax']) delete container.dataset[key];
    },
  };
}
