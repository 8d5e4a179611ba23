import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { DashboardSnapshot, DerivationView, HistoryResponse, RunTimeline, RunView, QueueSummary, WorkerListing } from '@nixfarm/shared';
import type { RunningCommand } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { freshSalt, scriptedFixture, tickingWorkload, type TickingWorkload } from '../harness/nix-fixtures.js';
import { pollFor } from '../harness/poll.js';
import { artifactDir, launchChromium } from '../harness/headless-browser.js';
import { runIdOf } from '../harness/build-timeline.js';

/**
 * The web dashboard in headless Chromium during a real run: two workers in
 * simulated machines build three talking derivations and one that fails.
 * What the page shows is checked against the API, the page is never
 * reloaded, and screenshots are saved under test-artifacts/dashboard/.
 */
describe('web dashboard (headless Chromium, real farm)', () => {
  // registered before the farm's hooks, so that it runs before the farm stops
  after(async () => {
    await browser?.close();
  });
  const farm = farmForSuite({
    workers: [
      { name: 'w1', maxJobs: 2 },
      { name: 'w2', maxJobs: 2, speedFactor: 2 },
    ],
    // a history sample a second, so the charts have points to count within the run
    coordinatorArgs: ['--history-interval-seconds', '1'],
  });
  let browser: Browser;
  let page: Page;
  let fixture: TickingWorkload;
  let build: RunningCommand;
  let runId: string;
  const shots = artifactDir('dashboard');
  /** script errors and console errors of the page: none is expected */
  const pageErrors: string[] = [];

  const shot = async (name: string): Promise<void> => {
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  };

  /** Text of the elements matching a selector, in page order. */
  const texts = (selector: string): Promise<string[]> => page.locator(selector).allTextContents();
  const attrs = (selector: string, name: string): Promise<string[]> =>
    page.locator(selector).evaluateAll((els, n) => els.map((e) => e.getAttribute(n) ?? ''), name);

  const derivations = async (): Promise<DerivationView[]> => (await farm.api<{ derivations: DerivationView[] }>(`/api/runs/${runId}/derivations`)).derivations;

  before(async () => {
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(`${message.text()} (${message.location().url} on ${page.url()})`);
    });
  });

  it('asks a browser without a session to sign in, refuses a wrong token by name, and sends /queues to the sign-in', async () => {
    await page.goto(farm.address.httpUrl);
    await page.locator('#sign-in').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#farm').isVisible(), false);
    await page.fill('#token', 'nixfarm_read_not-a-real-token');
    await page.click('#sign-in-form button');
    await pollFor(
      async () => ((await page.textContent('#sign-in-error')) ?? '').includes("not one of this coordinator's API tokens") || undefined,
      10_000,
      () => 'no sign-in error shown',
    );
    await shot('01-sign-in-refused');

    const queues = await fetch(new URL('/queues', farm.address.httpUrl), { headers: { accept: 'text/html' }, redirect: 'manual' });
    assert.equal(queues.status, 303);
    assert.equal(queues.headers.get('location'), '/?next=%2Fqueues');
    const data = await fetch(new URL('/api/dashboard', farm.address.httpUrl));
    assert.equal(data.status, 401, 'the data needs a token');
  });

  it('shows the queues, the workers with their load and builds, and the running builds as the API does, with a live log tail', async () => {
    fixture = tickingWorkload({ tickers: 3, ticks: 16 });
    build = farm.spawnCli(
      ['build', '--coordinator', farm.address.httpUrl, fixture.file, ...fixture.attrs.flatMap((a) => ['-A', a]), '--argstr', 'salt', freshSalt()],
      { timeoutMs: 180_000 },
    );
    runId = await pollFor(
      async () => /run (\w+)/.exec(build.stderrSoFar())?.[1],
      60_000,
      () => `the CLI did not name the run:\n${build.stderrSoFar()}`,
    );

    // The link `nixfarm dashboard` prints, opened afresh: the token rides in the fragment, which no server sees.
    const wrong = await farm.cli(['dashboard', '--coordinator', farm.address.httpUrl, '--token', 'nixfarm_read_wrong']);
    assert.equal(wrong.exitCode, 2);
    assert.match(wrong.stderr, /refused the token: that is not one of this coordinator's API tokens/);
    const linked = await farm.cli(['dashboard', '--coordinator', farm.address.httpUrl, '--state-dir', farm.coordinatorStateDir]);
    assert.equal(linked.exitCode, 0, linked.stderr);
    const link = linked.stdout.trim();
    assert.equal(link, `${farm.address.httpUrl}/#token=${encodeURIComponent(farm.apiToken('read'))}`);
    await page.goto('about:blank');
    await page.goto(link);
    await page.locator('#farm').waitFor({ state: 'visible', timeout: 15_000 });
    assert.equal(new URL(page.url()).hash, '', 'the token is taken out of the address bar');
    await page.evaluate(() => {
      (globalThis as unknown as { nixfarmSamePage: string }).nixfarmSamePage = 'not reloaded';
    });
    await pollFor(
      async () => (await page.getAttribute('#connection', 'data-state')) === 'live' || undefined,
      10_000,
      () => 'the event stream never went live',
    );

    // Workers: the cards name the API's workers with their slots; both are up.
    const { workers } = await farm.api<{ workers: WorkerListing[] }>('/api/workers');
    assert.deepEqual((await attrs('[data-worker]', 'data-worker')).sort(), workers.map((w) => w.name).sort());
    assert.deepEqual(await attrs('[data-worker]', 'data-state'), ['up', 'up']);

    // Running builds: at some moment the page's rows are exactly the derivations the API shows running, with their workers.
    const agreed = await pollFor(
      async () => {
        const shown = await page
          .locator('#running tbody tr')
          .evaluateAll((rows) => rows.map((r) => `${r.getAttribute('data-drv')} on ${r.querySelector('[data-field="worker"]')?.textContent}`).sort());
        const api = (await derivations())
          .filter((d) => d.status === 'running')
          .map((d) => `${d.drvPath} on ${d.worker}`)
          .sort();
        return shown.length >= 2 && JSON.stringify(shown) === JSON.stringify(api) ? shown : undefined;
      },
      60_000,
      () => 'the running builds shown never matched the API',
      250,
    );
    assert.ok(agreed.length >= 2);

    // Each worker card lists what it builds and its load reads running / max-jobs of the same moment.
    const cards = await page.locator('[data-worker]').evaluateAll((els) =>
      els.map((e) => ({
        name: e.getAttribute('data-worker'),
        load: e.querySelector('[data-field="load"]')?.textContent,
        building: e.querySelectorAll('[data-field="building"] li').length,
      })),
    );
    for (const card of cards) {
      const w = workers.find((x) => x.name === card.name)!;
      assert.equal(card.load, `${card.building} / ${w.maxJobs}`, `load bar of ${card.name}`);
    }

    // Queues: one row per queue the API lists.
    const { queues } = await farm.api<{ queues: QueueSummary[] }>('/api/queues');
    assert.deepEqual((await attrs('#queues tbody tr', 'data-queue')).sort(), queues.map((q) => q.name).sort());

    // The log panel follows a running build and grows while it builds.
    const followed = await pollFor(
      async () => (await page.getAttribute('#log-panel', 'data-drv')) ?? undefined,
      10_000,
      () => 'no log followed',
    );
    const name = /-(ticker-\d|broken-step)\.drv$/.exec(followed)?.[1];
    assert.ok(name !== undefined, `follows one of the workload's builds: ${followed}`);
    const firstTicks = await pollFor(
      async () => ((await page.textContent('#log-tail')) ?? '').match(/tick \d+/g)?.length,
      15_000,
      () => 'no tick in the log tail',
    );
    if (name.startsWith('ticker')) {
      await pollFor(
        async () => (((await page.textContent('#log-tail')) ?? '').match(/tick \d+/g)?.length ?? 0) > firstTicks || undefined,
        10_000,
        () => 'the log tail did not grow',
      );
      const tail = (await page.textContent('#log-tail')) ?? '';
      assert.match(tail, new RegExp(`${name}: tick 1\\b`));
    }
    await shot('02-running');

    // The raw queue view in a second tab of the same session, while the builds run.
    const board = await page.context().newPage();
    await board.goto(`${farm.address.httpUrl}/queues`);
    for (const q of queues) await board.getByText(q.name, { exact: false }).first().waitFor({ timeout: 20_000 });
    await board.screenshot({ path: join(shots, '02-queues-running.png'), fullPage: true });
    await board.close();
  });

  it('charts the history during the run: as many points as GET /api/history has samples, growing, finished builds by status, and the range choice', async () => {
    const history = (range: string) => farm.api<HistoryResponse>(`/api/history?range=${range}`);
    const chartIds = ['chart-queues', 'chart-finished', 'chart-workers'];
    const chart = (id: string) => page.locator(`#${id}`);
    const points = async (id: string) => Number(await chart(id).getAttribute('data-points'));
    /** Each chart draws one point per sample of the range, give or take the sample taken between the two reads. */
    const matchesApi = async (range: string): Promise<number[] | undefined> => {
      const before = (await history(range)).samples.length;
      const drawn = await Promise.all(chartIds.map(points));
      const after = (await history(range)).samples.length;
      return drawn.every((n) => n >= before - 1 && n <= after + 1) ? drawn : undefined;
    };

    // The three charts render (a uPlot canvas each) with the API's samples.
    for (const id of chartIds) await chart(id).locator('canvas').first().waitFor({ timeout: 15_000 });
    const first = await pollFor(
      () => matchesApi('1h'),
      15_000,
      () => 'the charts never drew as many points as the API has samples',
      200,
    );
    assert.ok(first[0]! > 0, 'samples were taken while the run went on');
    assert.equal(await page.getAttribute('#history-section', 'data-range'), '1h');
    // They grow with the samples, without a reload.
    await pollFor(
      async () => ((await Promise.all(chartIds.map(points))).every((n, i) => n > first[i]!) ? true : undefined),
      15_000,
      () => 'the charts did not grow',
    );
    await pollFor(
      () => matchesApi('1h'),
      15_000,
      () => 'the grown charts no longer match the API',
      200,
    );
    assert.deepEqual(JSON.parse((await chart('chart-workers').getAttribute('data-series')) ?? '[]'), ['up', 'needed']);
    await page.locator('#history-section').screenshot({ path: join(shots, '02b-history-during-run.png') });

    // The finished-per-minute chart counts the run's builds by status: at one sample a second, a build is 60 a minute.
    const result = await build.result;
    assert.equal(result.exitCode, 1, result.stderr);
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    const { intervalSeconds } = await history('1h');
    assert.equal(intervalSeconds, 1);
    const drawnCounts = await pollFor(
      async () => {
        const labels = JSON.parse((await chart('chart-finished').getAttribute('data-series')) ?? '[]') as string[];
        const sums = JSON.parse((await chart('chart-finished').getAttribute('data-sums')) ?? '[]') as number[];
        const count = (status: string) => Math.round(((sums[labels.indexOf(status)] ?? 0) * intervalSeconds) / 60);
        return count('succeeded') === run.counts.succeeded && count('failed') === run.counts.failed ? labels : undefined;
      },
      15_000,
      () => `the finished chart never counted the run's ${run.counts.succeeded} succeeded and ${run.counts.failed} failed builds`,
    );
    assert.ok(drawnCounts.includes('succeeded') && drawnCounts.includes('failed'));
    const api = await history('1h');
    const total = (status: string) => api.samples.reduce((n, s) => n + (s.finished[status] ?? 0), 0);
    assert.equal(total('succeeded'), run.counts.succeeded, "the API's samples hold the same builds");
    assert.equal(total('failed'), 1);
    await page.locator('#history-section').screenshot({ path: join(shots, '02c-history-run-finished.png') });

    // The range choice changes the span drawn, and each range draws the samples the API gives for it.
    for (const [range, span] of [
      ['15m', 900],
      ['6h', 21_600],
      ['1h', 3600],
    ] as const) {
      await page.selectOption('#history-range', range);
      await pollFor(
        async () => ((await page.getAttribute('#history-section', 'data-range')) === range ? true : undefined),
        10_000,
        () => `the charts never switched to ${range}`,
      );
      await pollFor(
        () => matchesApi(range),
        10_000,
        () => `the ${range} charts do not match the API`,
        200,
      );
      for (const id of chartIds) {
        const drawnSpan = Number(await chart(id).getAttribute('data-x-max')) - Number(await chart(id).getAttribute('data-x-min'));
        assert.ok(Math.abs(drawnSpan - span) <= 5, `${id} spans ${drawnSpan} s for ${range}`);
      }
      await page.locator('#history-section').screenshot({ path: join(shots, `02d-history-${range}.png`) });
    }

    // A range the API does not know is refused by name.
    const bad = await fetch(new URL('/api/history?range=2d', farm.address.httpUrl), { headers: farm.authHeaders('read') });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: { message: string } }).error.message, /15m, 1h, 6h, 24h/);
  });

  it("shows the run's progress, its failure linked to the stored log, and updates to the end without a reload", async () => {
    const result = await build.result;
    assert.equal(result.exitCode, 1, `the run fails (broken-step):\n${result.stderr}`);
    assert.equal(runIdOf(result.stderr), runId);
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    assert.equal(run.status, 'failed');

    const card = page.locator(`[data-run="${runId}"]`);
    await pollFor(
      async () => (await card.getAttribute('data-status')) === 'failed' || undefined,
      15_000,
      () => 'the run card never showed failed',
    );
    const done = Object.entries(run.counts)
      .filter(([s]) => s !== 'waiting' && s !== 'queued' && s !== 'running')
      .reduce((n, [, c]) => n + c, 0);
    // Done counts succeeded and failure statuses, as the page does; the API's counts are the truth.
    assert.equal(run.counts.succeeded, fixture.names.tickers.length + 1, 'the tickers and all');
    assert.equal(run.counts.failed, 1);
    assert.equal(
      await card.locator('[data-field="done"]').textContent(),
      `${run.counts.succeeded! + run.counts.failed! + (run.counts['dependency-failed'] ?? 0)} / ${run.total}`,
    );
    assert.ok(done <= run.total);

    // The failure: the broken derivation, its status, and a link to its log that answers the stored log.
    const broken = (await derivations()).find((d) => d.name === fixture.names.broken)!;
    assert.equal(broken.status, 'failed');
    const row = page.locator(`#failures tbody tr[data-drv="${broken.drvPath}"]`);
    await row.waitFor({ timeout: 10_000 });
    assert.equal(await row.locator('[data-field="status"]').textContent(), 'failed');
    const href = await row.locator('a[data-field="log"]').getAttribute('href');
    assert.equal(href, `/api/logs?path=${encodeURIComponent(broken.drvPath)}`);
    // Opened as the browser opens it: with its session cookie, no bearer header.
    const logText = await page.evaluate(async (url) => (await fetch(url, { credentials: 'same-origin' })).text(), href!);
    assert.match(logText, new RegExp(fixture.brokenLine));
    // The same log as server-sent events (what the page's live tail reads): the text as `log` events, then `end` with the status.
    const events = await page.evaluate(async (url) => (await fetch(`${url}&follow=1`, { headers: { accept: 'text/event-stream' } })).text(), href!);
    const logData = [...events.matchAll(/^event: log\ndata: (.*)$/gm)].map((m) => JSON.parse(m[1]!) as string).join('');
    assert.match(logData, new RegExp(fixture.brokenLine));
    assert.match(events, /event: end\ndata: \{"status":"failed"\}\n\n$/);

    // The followed build's tail says it ended, with the build's status.
    await pollFor(
      async () => (await page.getAttribute('#log-panel', 'data-ended')) ?? undefined,
      15_000,
      () => 'the log panel never said its build ended',
    );

    // Nothing runs any more: the page shows no running build and idle workers.
    await pollFor(
      async () => ((await page.locator('#running tbody tr').count()) === 0 ? true : undefined),
      15_000,
      () => 'running builds still shown',
    );
    await pollFor(
      async () => ((await texts('[data-worker] [data-field="load"]')).every((t) => t.startsWith('0 /')) ? true : undefined),
      15_000,
      () => 'workers still shown busy',
    );
    const snapshot = await farm.api<DashboardSnapshot>('/api/dashboard');
    assert.equal(snapshot.running.length, 0);
    assert.ok(snapshot.failures.some((f) => f.drvPath === broken.drvPath && f.runId === runId));

    const same = await page.evaluate(() => (globalThis as unknown as { nixfarmSamePage?: string }).nixfarmSamePage);
    assert.equal(same, 'not reloaded', 'the page updated itself: no reload happened');
    await shot('03-finished');
  });

  it("shows a jobset run's evaluation live on its card: evaluating with done, failed and left, then done with its attributes' builds", async () => {
    const slow = 'builtins.length (builtins.attrNames (builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 1000000)))';
    const sets = Array.from(
      { length: 3 },
      (_, i) => `    g-${i} = { recurseForDerivations = true; s = builtins.seq (${slow}) (mk "dash-s-${i}" "echo s-${i} \${salt} > $out"); };`,
    ).join('\n');
    const file = scriptedFixture('dashboard-jobset', `  throws = throw "throw-message";\n  slow = {\n    recurseForDerivations = true;\n${sets}\n  };\n`);
    const jobset = await farm.submitInBackground([file, '--jobset', '--eval-workers', '1', '--argstr', 'salt', freshSalt()]);
    const evaluation = page.locator(`[data-run="${jobset.runId}"] [data-field="evaluation"]`);
    // Mid-way, as the page draws it from the live snapshots.
    await pollFor(
      async () => {
        if ((await evaluation.getAttribute('data-state', { timeout: 500 })) !== 'evaluating') return undefined;
        const left = (await evaluation.locator('[data-field="evaluation-left"]').textContent({ timeout: 500 })) ?? '';
        return /^[1-9]\d* (left of|of) /.test(left) || undefined;
      },
      60_000,
      () => 'the run card never showed its evaluation under way with attributes left',
    );
    assert.equal(await evaluation.locator('[data-field="evaluation-state"]').textContent(), 'evaluating');
    // A jobset run has no attributes of its own: its card names what it evaluates.
    assert.equal((await page.locator(`[data-run="${jobset.runId}"] header .muted`).textContent())?.trim(), `jobset ${file}`);
    await shot('03b-jobset-evaluating');

    const { exitCode } = await jobset.build.result;
    assert.equal(exitCode, 1, 'one attribute throws');
    await pollFor(
      async () => (await evaluation.getAttribute('data-state', { timeout: 500 })) === 'done' || undefined,
      15_000,
      () => 'the run card never showed its evaluation done',
    );
    const run = await farm.api<RunView>(`/api/runs/${jobset.runId}`);
    assert.equal(run.evaluation?.done, 4);
    assert.equal(run.evaluation?.failed, 1);
    await pollFor(
      async () => ((await evaluation.locator('[data-field="attribute-builds"]').textContent()) === 'attribute builds: 3 succeeded' ? true : undefined),
      15_000,
      () => 'the card never showed the attributes built',
    );
    assert.equal(await evaluation.locator('[data-field="evaluated"]').textContent(), '4 done');
    assert.equal(await evaluation.locator('[data-field="evaluation-failed"]').textContent(), '1 failed to evaluate');
    assert.equal(await evaluation.locator('[data-field="evaluation-left"]').count(), 0, 'nothing left');
    // A plain run's card has no evaluation.
    assert.equal(await page.locator(`[data-run="${runId}"] [data-field="evaluation"]`).count(), 0);
    await shot('03c-jobset-done');
  });

  it('mounts bull-board at /queues for the signed-in browser, read-only, listing the build queues', async () => {
    const { queues } = await farm.api<{ queues: QueueSummary[] }>('/api/queues');
    assert.ok(queues.length >= 1);
    await page.goto(`${farm.address.httpUrl}/queues`);
    for (const q of queues) await page.getByText(q.name, { exact: false }).first().waitFor({ timeout: 20_000 });
    await shot('04-queues');
    // Its changing routes need the admin scope, and a cookie never authorises a change.
    const viaCookie = await page.evaluate(
      async (name) => (await fetch(`/queues/api/queues/${encodeURIComponent(name)}/empty`, { method: 'PUT', credentials: 'same-origin' })).status,
      queues[0]!.name,
    );
    assert.equal(viaCookie, 401);
    const withRead = await fetch(new URL(`/queues/api/queues/${encodeURIComponent(queues[0]!.name)}/empty`, farm.address.httpUrl), {
      method: 'PUT',
      headers: farm.authHeaders('read'),
    });
    assert.equal(withRead.status, 403);
  });

  it('an open dashboard does not hold up a coordinator stop, and goes live again by itself when it is back', async () => {
    await page.goto(farm.address.httpUrl);
    await pollFor(
      async () => (await page.getAttribute('#connection', 'data-state')) === 'live' || undefined,
      10_000,
      () => 'not live',
    );
    await page.evaluate(() => {
      (globalThis as unknown as { nixfarmSamePage: string }).nixfarmSamePage = 'before the restart';
    });
    const mark = pageErrors.length;
    // SIGTERM: a graceful stop ends the open event stream instead of waiting for the browser to leave.
    const stopped = await Promise.race([
      farm.killCoordinator('SIGTERM').then(() => 'exited'),
      new Promise((r) => setTimeout(() => r('still running after 20 s'), 20_000)),
    ]);
    assert.equal(stopped, 'exited');
    await pollFor(
      async () => (await page.getAttribute('#connection', 'data-state')) === 'reconnecting' || undefined,
      10_000,
      () => 'the page did not notice',
    );
    const restartedAt = Date.now();
    await farm.restartCoordinator();
    // The history lives in Redis: the restarted coordinator still answers the samples from before.
    const kept = await farm.api<HistoryResponse>('/api/history?range=1h');
    assert.ok(kept.samples.some((s) => s.at < restartedAt) && kept.samples.some((s) => s.at >= restartedAt), 'samples from before and after the restart');
    const before = Number(await page.getAttribute('body', 'data-snapshot-at'));
    await pollFor(
      async () => (await page.getAttribute('#connection', 'data-state')) === 'live' || undefined,
      20_000,
      () => 'the page did not reconnect',
    );
    await pollFor(
      async () => Number(await page.getAttribute('body', 'data-snapshot-at')) > before || undefined,
      10_000,
      () => 'no snapshot after the restart',
    );
    assert.deepEqual((await attrs('[data-worker]', 'data-worker')).sort(), ['w1', 'w2']);
    const same = await page.evaluate(() => (globalThis as unknown as { nixfarmSamePage?: string }).nixfarmSamePage);
    assert.equal(same, 'before the restart', 'reconnected without a reload');
    // While the coordinator was away the browser logged its refused reconnects; those, and only those, are expected.
    const whileAway = pageErrors.splice(mark);
    assert.deepEqual(
      whileAway.filter((e) => !/ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE_CHUNKED_ENCODING/.test(e)),
      [],
    );
  });

  it('signs out: the cookie is cleared and the data refused again', async () => {
    await page.goto(farm.address.httpUrl);
    await page.locator('#farm').waitFor({ state: 'visible' });
    await page.click('#sign-out');
    await page.locator('#sign-in').waitFor({ state: 'visible' });
    const status = await page.evaluate(async () => (await fetch('/api/dashboard', { credentials: 'same-origin' })).status);
    assert.equal(status, 401);
    // The refused wrong token of the first test logs a 401 in the console; nothing else may have gone wrong.
    assert.deepEqual(
      pageErrors.filter((e) => !/401/.test(e)),
      [],
    );
  });

  it("opens a run's timeline from `nixfarm dashboard RUN` and from the run card: a bar per build on its worker's lane, segments, critical path and bottleneck as the API says", async () => {
    const mark = pageErrors.length;
    const unknown = await farm.cli(['dashboard', 'nosuchrun0', '--coordinator', farm.address.httpUrl, '--state-dir', farm.coordinatorStateDir]);
    assert.equal(unknown.exitCode, 2);
    assert.match(unknown.stderr, /no timeline for "nosuchrun0" .*no run with id "nosuchrun0"/);
    assert.equal(unknown.stdout, '', 'no link for a run that does not exist');
    const missing = await fetch(new URL('/api/runs/nosuchrun0/timeline', farm.address.httpUrl), { headers: farm.authHeaders('read') });
    assert.equal(missing.status, 404);
    assert.match(((await missing.json()) as { error: { message: string } }).error.message, /nosuchrun0/);

    // The API's answer agrees with the derivations' own timings: segments are those durations, ending at finishedAt, after the queue wait.
    const t = await farm.api<RunTimeline>(`/api/runs/${runId}/timeline`);
    const views = new Map((await derivations()).map((d) => [d.drvPath, d]));
    assert.equal(t.active, false);
    const built = t.derivations.filter((d) => d.built);
    assert.equal(built.length, fixture.names.tickers.length + 2, 'the tickers, all, and the broken step were built by the run');
    const sum = { queueWaitMs: 0, copyInMs: 0, buildMs: 0, copyOutMs: 0 };
    for (const d of built) {
      const v = views.get(d.drvPath)!;
      const ms = Object.fromEntries(d.segments.map((s) => [s.kind, s.end - s.start]));
      assert.equal(d.worker, v.worker);
      assert.deepEqual([ms['copy-in'], ms.build, ms['copy-out']], [v.timings!.copyInMs, v.timings!.buildMs, v.timings!.copyOutMs], d.name);
      assert.equal(d.segments.at(-1)!.end, v.finishedAt);
      assert.equal(ms.wait, v.startedAt! - v.queuedAt!, `${d.name} waited from queued to started`);
      sum.queueWaitMs += ms.wait ?? 0;
      sum.copyInMs += v.timings!.copyInMs;
      sum.buildMs += v.timings!.buildMs;
      sum.copyOutMs += v.timings!.copyOutMs;
    }
    assert.deepEqual(t.totals, sum);
    assert.deepEqual(
      t.workers.map((w) => [w.name, w.builds]).sort(),
      [...new Set(built.map((d) => d.worker!))].sort().map((w) => [w, built.filter((d) => d.worker === w).length]),
    );
    // The chain that ended last: the ticker that ended last, then `all`, which needs every ticker.
    const lastTicker = built.filter((d) => fixture.names.tickers.includes(d.name)).sort((a, b) => b.segments.at(-1)!.end - a.segments.at(-1)!.end)[0]!;
    assert.deepEqual(
      t.criticalPath.map((p) => views.get(p)!.name),
      [lastTicker.name, fixture.names.all],
    );
    const holder = t.workers.reduce((a, b) => (b.criticalPathMs > a.criticalPathMs ? b : a));
    assert.equal(t.bottleneck, holder.name);

    // The link opens the timeline signed in, the token taken out of the address bar.
    const linked = await farm.cli(['dashboard', runId, '--coordinator', farm.address.httpUrl, '--state-dir', farm.coordinatorStateDir]);
    assert.equal(linked.exitCode, 0, linked.stderr);
    assert.equal(linked.stdout.trim(), `${farm.address.httpUrl}/runs/${runId}#token=${encodeURIComponent(farm.apiToken('read'))}`);
    await page.goto('about:blank');
    await page.goto(linked.stdout.trim());
    await page.locator('#timeline-chart').waitFor({ state: 'visible', timeout: 15_000 });
    assert.equal(new URL(page.url()).hash, '');
    assert.equal(new URL(page.url()).pathname, `/runs/${runId}`);

    // One bar per built derivation, on the lane of the worker that built it, its segments the API's durations, drawn to one scale.
    const bars = await page.locator('#timeline-chart g.bar').evaluateAll((els) =>
      els.map((g) => ({
        drv: g.getAttribute('data-drv')!,
        worker: g.getAttribute('data-worker'),
        lane: g.closest('g.lane')?.getAttribute('data-worker'),
        critical: g.getAttribute('data-critical') === 'true',
        rects: [...g.querySelectorAll('rect[data-kind]')].map((r) => ({
          kind: r.getAttribute('data-kind')!,
          ms: Number(r.getAttribute('data-ms')),
          width: Number(r.getAttribute('width')),
        })),
      })),
    );
    assert.deepEqual(bars.map((b) => b.drv).sort(), built.map((d) => d.drvPath).sort());
    // The scale, from the longest segment: every other one is drawn to it.
    const longest = bars.flatMap((b) => b.rects).reduce((a, b) => (b.ms > a.ms ? b : a));
    const pxPerMs = longest.width / longest.ms;
    for (const bar of bars) {
      const d = t.derivations.find((x) => x.drvPath === bar.drv)!;
      assert.equal(bar.worker, d.worker);
      assert.equal(bar.lane, d.worker);
      assert.equal(bar.critical, d.critical);
      assert.deepEqual(
        bar.rects.map((r) => [r.kind, r.ms]),
        d.segments.map((s) => [s.kind, s.end - s.start]),
      );
      for (const r of bar.rects)
        if (r.kind !== 'wait' && r.ms > 100) assert.ok(Math.abs(r.width - r.ms * pxPerMs) <= 1.5, `${d.name} ${r.kind}: ${r.width} px for ${r.ms} ms`);
    }
    // Each bar links to its build's log, which the page's session may read.
    const logLinks = await attrs('#timeline-chart a', 'href');
    assert.deepEqual([...logLinks].sort(), built.map((d) => `/api/logs?path=${encodeURIComponent(d.drvPath)}`).sort());
    const log = await page.evaluate(async (href) => (await fetch(href, { credentials: 'same-origin' })).status, logLinks[0]!);
    assert.equal(log, 200, "a bar's log opens with the page's session");
    assert.deepEqual(await attrs('#timeline-critical li', 'data-drv'), t.criticalPath);
    assert.equal(await page.textContent('#timeline-bottleneck'), t.bottleneck);
    assert.deepEqual(await attrs('#timeline-workers tr.bottleneck', 'data-worker'), [t.bottleneck]);
    assert.deepEqual(await page.locator('#timeline-totals [data-field="ms"]').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-ms')))), [
      t.totals.queueWaitMs,
      t.totals.copyInMs,
      t.totals.buildMs,
      t.totals.copyOutMs,
    ]);
    await shot('05-timeline');

    // From the farm page: the run card's link leads to the same timeline.
    await page.goto(farm.address.httpUrl);
    const link = page.locator(`[data-run="${runId}"] a[data-field="timeline"]`);
    await link.waitFor({ timeout: 15_000 });
    await link.click();
    await page.waitForURL(`**/runs/${runId}`);
    await page.locator('#timeline-chart').waitFor({ state: 'visible', timeout: 15_000 });
    assert.equal(await page.getAttribute('#timeline-page', 'data-run'), runId);
    assert.equal(await page.locator('#timeline-chart g.bar').count(), built.length);
    await page.click('#timeline-back');
    await page.locator('#farm').waitFor({ state: 'visible', timeout: 15_000 });
    assert.deepEqual(pageErrors.slice(mark), []);
  });
});
