import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { farmStatusSchema, type FarmStatus, type DerivationView, type RunView, type WorkerListing } from '@nixfarm/shared';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { runIdOf } from '../harness/build-timeline.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';
import { pollFor, sleep } from '../harness/poll.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition: one sample per line that is not a comment. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of the one sample with this name whose labels include these; fails when there is none or more than one. */
function sampleValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(found.length, 1, `one ${name}${JSON.stringify(labels)} expected, found ${found.length}: ${JSON.stringify(found)}`);
  return found[0]!.value;
}

describe('metrics, status and the scaling signal (real farm)', () => {
  const farm = farmForSuite({ workers: [{ name: 'w1', maxJobs: 2 }] });
  let system: string;

  async function scrape(): Promise<{ text: string; samples: Sample[] }> {
    // A scraper holds the read token.
    const response = await fetch(new URL('/metrics', farm.address.httpUrl), { headers: farm.authHeaders('read') });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    return { text, samples: parseExposition(text) };
  }

  before(async () => {
    const { workers } = await farm.api<{ workers: WorkerListing[] }>('/api/workers');
    system = workers[0]!.systems[0]!;
  });

  it('counts a run of 3 derivations on w1: succeeded counter 3, each timing and byte histogram 3 observations, runs 1 started and 1 succeeded', async () => {
    const result = await farm.build([chain(3, { sleepSeconds: 0.5 }).file, '-A', 'all', '--argstr', 'salt', freshSalt()], { timeoutMs: 120_000 });
    assert.equal(result.exitCode, 0, `${result.stderr}\n${farm.diagnostics()}`);
    const { samples } = await scrape();
    assert.equal(sampleValue(samples, 'nixfarm_derivations_finished_total', { status: 'succeeded', system }), 3);
    assert.equal(samples.filter((s) => s.name === 'nixfarm_derivations_finished_total').length, 1, 'no other status was counted');
    for (const h of ['nixfarm_build_duration_seconds', 'nixfarm_build_total_seconds', 'nixfarm_build_copy_in_seconds', 'nixfarm_build_copy_out_seconds']) {
      assert.equal(sampleValue(samples, `${h}_count`, { system }), 3, h);
      assert.equal(sampleValue(samples, `${h}_bucket`, { system, le: '+Inf' }), 3, h);
    }
    // each builder sleeps 0.5 s: the build time cannot be less, and the total includes it
    assert.ok(sampleValue(samples, 'nixfarm_build_duration_seconds_sum', { system }) >= 1.5);
    assert.ok(sampleValue(samples, 'nixfarm_build_total_seconds_sum', { system }) >= sampleValue(samples, 'nixfarm_build_duration_seconds_sum', { system }));
    // bytes: every build copied its output out (a NAR of a small file and its metadata: over 100 bytes each);
    // the first copied busybox in, a static binary of several hundred KiB
    assert.equal(sampleValue(samples, 'nixfarm_build_copy_out_bytes_count', { system }), 3);
    assert.ok(sampleValue(samples, 'nixfarm_build_copy_out_bytes_sum', { system }) >= 300);
    assert.equal(sampleValue(samples, 'nixfarm_build_copy_in_bytes_count', { system }), 3);
    assert.ok(sampleValue(samples, 'nixfarm_build_copy_in_bytes_sum', { system }) > 100_000, 'busybox was copied in');
    const queue = `build@${system}`;
    assert.equal(sampleValue(samples, 'nixfarm_queue_wait_seconds_count', { queue }), 3, 'each start had its wait observed');
    assert.equal(sampleValue(samples, 'nixfarm_runs_started_total'), 1);
    assert.equal(sampleValue(samples, 'nixfarm_runs_finished_total', { status: 'succeeded' }), 1);
    assert.equal(sampleValue(samples, 'nixfarm_runs_active'), 0);
    // the worker, as its heartbeat says
    assert.equal(sampleValue(samples, 'nixfarm_worker_up', { worker: 'w1' }), 1);
    assert.equal(sampleValue(samples, 'nixfarm_worker_max_jobs', { worker: 'w1' }), 2);
    assert.equal(sampleValue(samples, 'nixfarm_worker_draining', { worker: 'w1' }), 0);
    assert.equal(sampleValue(samples, 'nixfarm_worker_paused', { worker: 'w1' }), 0);
    assert.ok(sampleValue(samples, 'nixfarm_worker_heartbeat_age_seconds', { worker: 'w1' }) < 15);
    assert.ok(sampleValue(samples, 'nixfarm_worker_free_disk_bytes', { worker: 'w1' }) > 0);
    assert.ok(sampleValue(samples, 'nixfarm_worker_running_jobs', { worker: 'w1' }) <= 2);
    // the queue drained; nothing is needed
    assert.equal(sampleValue(samples, 'nixfarm_queue_waiting_jobs', { queue, system, features: '' }), 0);
    assert.equal(sampleValue(samples, 'nixfarm_queue_oldest_wait_seconds', { queue }), 0);
    assert.equal(sampleValue(samples, 'nixfarm_queue_live_workers', { queue }), 1, 'w1 may take it');
    assert.equal(sampleValue(samples, 'nixfarm_workers_needed', { system }), 0);
    // Redis's memory, from INFO memory: the private Redis has no maxmemory
    assert.ok(sampleValue(samples, 'nixfarm_redis_memory_used_bytes') > 100_000);
    assert.equal(sampleValue(samples, 'nixfarm_redis_memory_max_bytes'), 0);
    // process metrics of our own registry
    assert.ok(sampleValue(samples, 'nixfarm_coordinator_process_resident_memory_bytes') > 0);
  });

  it('shows work for a system no worker serves as waiting, ageing, and needing a worker; status --json agrees with /metrics; cancel empties it', async () => {
    const other = 'riscv64-linux';
    const queue = `build@${other}`;
    const build = farm.spawnCli([
      'build',
      '--coordinator',
      farm.address.httpUrl,
      chain(2, { system: other }).file,
      '-A',
      'all',
      '--argstr',
      'salt',
      freshSalt(),
    ]);
    await pollFor(
      () => build.stderrSoFar().includes('UNSUPPORTED'),
      60_000,
      () => `the build to say no worker can build it:\n${build.stderrSoFar()}`,
    );
    const runId = runIdOf(build.stderrSoFar());
    await sleep(1500); // so that the oldest wait is measurably old
    const { text, samples } = await scrape();
    // only link-0 is ready; link-1 waits for it in the graph, not in a queue
    assert.equal(sampleValue(samples, 'nixfarm_queue_waiting_jobs', { queue, system: other, features: '' }), 1);
    assert.equal(sampleValue(samples, 'nixfarm_queue_running_jobs', { queue }), 0);
    const oldest = sampleValue(samples, 'nixfarm_queue_oldest_wait_seconds', { queue });
    assert.ok(oldest >= 1.5 && oldest < 120, `oldest wait ${oldest}`);
    assert.equal(sampleValue(samples, 'nixfarm_queue_live_workers', { queue }), 0, 'no live worker may take it');
    assert.equal(sampleValue(samples, 'nixfarm_unserved_jobs', { system: other }), 1);
    assert.equal(sampleValue(samples, 'nixfarm_workers_needed', { system: other }), 1);
    assert.equal(sampleValue(samples, 'nixfarm_workers_needed', { system }), 0, 'the served system needs nothing');
    assert.equal(sampleValue(samples, 'nixfarm_runs_active'), 1);
    // BullMQ's own export is there, each family announced once
    assert.ok(
      samples.some((s) => s.name === 'bullmq_job_count' && s.labels.queue === queue),
      'BullMQ job counts of the queue',
    );
    assert.equal(text.split('\n').filter((l) => l === '# TYPE bullmq_job_count gauge').length, 1);

    const json = await farm.cli(['status', '--json']);
    assert.equal(json.exitCode, 0, json.stderr);
    const status: FarmStatus = farmStatusSchema.parse(JSON.parse(json.stdout));
    const q = status.queues.find((x) => x.name === queue);
    assert.deepEqual(q && { waiting: q.waiting, running: q.running, system: q.system, liveWorkers: q.liveWorkers }, {
      waiting: 1,
      running: 0,
      system: other,
      liveWorkers: 0,
    });
    assert.ok(q!.oldestWaitSeconds >= oldest, 'the later snapshot sees an older wait');
    assert.deepEqual(
      status.scaling.find((s) => s.system === other),
      { system: other, waiting: 1, freeSlots: 0, unserved: 1, slotsPerWorker: 2, workersNeeded: 1 },
    );
    assert.equal(status.scaling.find((s) => s.system === system)?.workersNeeded, 0);
    assert.equal(status.activeRuns, 1);
    const w1 = status.workers.find((w) => w.name === 'w1');
    assert.equal(w1?.up, true);
    assert.equal(w1?.maxJobs, 2);

    const textView = await farm.cli(['status']);
    assert.equal(textView.exitCode, 0, textView.stderr);
    assert.match(textView.stdout, /Runs: 1 active/);
    assert.match(textView.stdout, new RegExp(`^  ${queue.replace(/[.+]/g, '\\$&')}\\s+1\\s+0\\s+\\d`, 'm'), textView.stdout);
    assert.match(textView.stdout, /^  w1\s+up\s+\d\/2\s+\S+ ago\s+/m, textView.stdout);
    assert.match(textView.stdout, new RegExp(`^  ${other}\\s+1\\s+0\\s+1\\s+1$`, 'm'), textView.stdout);

    const cancelled = await farm.cli(['cancel', runId]);
    assert.equal(cancelled.exitCode, 0, cancelled.stderr);
    await build.result;
    const afterCancel = (await scrape()).samples;
    assert.equal(sampleValue(afterCancel, 'nixfarm_queue_waiting_jobs', { queue }), 0);
    assert.equal(sampleValue(afterCancel, 'nixfarm_queue_oldest_wait_seconds', { queue }), 0);
    assert.equal(sampleValue(afterCancel, 'nixfarm_workers_needed', { system: other }), 0);
    assert.equal(sampleValue(afterCancel, 'nixfarm_runs_finished_total', { status: 'cancelled' }), 1);
  });

  it('serves its OpenAPI 3.1 document, and what the farm answered above fits the schemas it documents', async () => {
    const response = await fetch(new URL('/api/openapi.json', farm.address.httpUrl));
    assert.equal(response.status, 200);
    const doc = (await response.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: object }> }> }>>;
      components: { schemas: Record<string, object> };
    };
    assert.equal(doc.openapi, '3.1.0');
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    for (const [name, schema] of Object.entries(doc.components.schemas)) ajv.addSchema(schema, `#/components/schemas/${name}`);
    const { runs } = await farm.api<{ runs: RunView[] }>('/api/runs');
    assert.ok(runs.length >= 2, 'the two runs of the tests above');
    const answers: Array<[string, string]> = [
      ['/api/runs', '/api/runs'],
      [`/api/runs/${runs[0]!.id}`, '/api/runs/{id}'],
      [`/api/runs/${runs[0]!.id}/derivations`, '/api/runs/{id}/derivations'],
      ['/api/workers', '/api/workers'],
      ['/api/queues', '/api/queues'],
      ['/api/status', '/api/status'],
    ];
    // the hand-written schemas of the why and log-info answers, against the real ones
    const { derivations } = await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runs[0]!.id}/derivations`);
    const drvPath = encodeURIComponent(derivations[0]!.drvPath);
    answers.push([`/api/why?path=${drvPath}`, '/api/why'], [`/api/logs?path=${drvPath}&info=1`, '/api/logs']);
    for (const [url, path] of answers) {
      const validate = ajv.compile(doc.paths[path]!.get!.responses['200']!.content!['application/json']!.schema);
      assert.ok(validate(await farm.api(url)), `${url}: ${JSON.stringify(validate.errors)}`);
    }
  });
});
