// The dashboard's History section: three small charts of the farm's recent
// past (queue depth per system, builds finished per minute by status, workers
// up beside the workers the scaling signal asks for), from GET /api/history,
// redrawn at each of the coordinator's samples without a reload.

import { paletteColor, timeSeriesChart } from './charts.js';

const RANGE_SECONDS = { '15m': 900, '1h': 3600, '6h': 21600, '24h': 86400 };
/** How long to wait after a failed read before trying again. */
const RETRY_MS = 5000;

const seconds = (sample) => sample.at / 1000;

/** Every system any sample in the range has, in a stable order. */
function systemsOf(samples) {
  return [...new Set(samples.flatMap((s) => s.systems.map((x) => x.system)))].sort();
}

function systemValue(sample, system, field) {
  return sample.systems.find((x) => x.system === system)?.[field] ?? 0;
}

function queueSeries(samples) {
  return systemsOf(samples).flatMap((system, i) => {
    const color = paletteColor(i);
    return [
      { label: `${system} waiting`, color, points: samples.map((s) => [seconds(s), systemValue(s, system, 'waiting')]) },
      { label: `${system} running`, color, dash: [5, 4], points: samples.map((s) => [seconds(s), systemValue(s, system, 'running')]) },
    ];
  });
}

/** Per minute at the sampling interval: each sample holds the builds that ended since the one before. */
function finishedSeries(samples, intervalSeconds) {
  const statuses = [...new Set(samples.flatMap((s) => Object.keys(s.finished)))];
  // Succeeded and failed are always drawn, so an idle farm's chart still says what it would show.
  const shown = [...new Set(['succeeded', 'failed', ...statuses])];
  return shown.map((status) => ({
    label: status,
    points: samples.map((s) => [seconds(s), ((s.finished[status] ?? 0) * 60) / intervalSeconds]),
  }));
}

function workerSeries(samples) {
  const systems = systemsOf(samples);
  const series = [{ label: 'up', color: '#2e8b57', points: samples.map((s) => [seconds(s), s.workersUp]) }];
  if (systems.length > 1) {
    systems.forEach((system, i) => {
      series.push({
        label: `${system} up`,
        color: paletteColor(i),
        points: samples.map((s) => [seconds(s), systemValue(s, system, 'workersUp')]),
      });
    });
  }
  series.push({
    label: 'needed',
    color: '#c0392b',
    dash: [5, 4],
    points: samples.map((s) => [seconds(s), s.systems.reduce((n, x) => n + x.workersNeeded, 0)]),
  });
  return series;
}

/**
 * Starts the section in `section` (the element holding #history-range and
 * the three chart containers); answers a handle whose stop() ends the
 * refreshes and removes the charts (sign-out).
 */
export function startHistory(section) {
  const select = section.querySelector('#history-range');
  const status = section.querySelector('#history-status');
  let range = select.value || '1h';
  /** the coordinator's sampling interval, once known: three of them (and at least a minute) without a sample is a gap in the record */
  let intervalSeconds;
  let timer;
  let stopped = false;
  /** bumped at each read, so an answer for a range no longer chosen is dropped */
  let generation = 0;
  const timeWindow = () => {
    const now = Date.now() / 1000;
    return [now - RANGE_SECONDS[range], now];
  };
  const gapSeconds = () => (intervalSeconds === undefined ? undefined : Math.max(60, 3 * intervalSeconds));
  const chart = (id, title, unit) => timeSeriesChart(section.querySelector(id), { title, unit, series: [], height: 170, timeWindow, gapSeconds });
  const charts = {
    queues: chart('#chart-queues', 'Queue depth per system', 'jobs'),
    finished: chart('#chart-finished', 'Builds finished per minute', '/min'),
    workers: chart('#chart-workers', 'Workers', 'workers'),
  };

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    let next = RETRY_MS;
    try {
      const response = await fetch(`/api/history?range=${encodeURIComponent(range)}`, { credentials: 'same-origin' });
      if (!response.ok) throw new Error(`the coordinator answered ${response.status}`);
      const answer = await response.json();
      if (stopped || mine !== generation) return;
      const { samples } = answer;
      intervalSeconds = answer.intervalSeconds;
      charts.queues.update(queueSeries(samples));
      charts.finished.update(finishedSeries(samples, intervalSeconds));
      charts.workers.update(workerSeries(samples));
      section.dataset.range = range;
      section.dataset.samples = String(samples.length);
      status.textContent = `${samples.length} samples, one every ${intervalSeconds} s`;
      status.classList.remove('error');
      next = intervalSeconds * 1000;
    } catch (error) {
      if (stopped || mine !== generation) return;
      status.textContent = `history not available: ${error.message}`;
      status.classList.add('error');
    }
    timer = setTimeout(refresh, next);
  }

  const onChange = () => {
    range = select.value;
    void refresh();
  };
  select.addEventListener('change', onChange);
  void refresh();

  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      select.removeEventListener('change', onChange);
      for (const c of Object.values(charts)) c.destroy();
    },
  };
}
