import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { spawnNixfarm } from '../harness/test-farm.js';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { chain, freshSalt } from '../harness/nix-fixtures.js';

interface ApiAnswer {
  status: number;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
}

/** Where the CLI would otherwise find a token: nowhere. */
const NO_TOKEN = { NIXFARM_TOKEN: '', NIXFARM_STATE_DIR: '/nonexistent/nixfarm-state' };

describe('API tokens: read and admin scopes (real farm)', () => {
  const farm = farmForSuite({ workers: [{ name: 'w1' }] });
  let readToken: string;
  let adminToken: string;

  before(async () => {
    readToken = farm.apiToken('read');
    adminToken = farm.apiToken('admin');
  });

  async function call(
    path: string,
    options: { token?: string; authorization?: string; method?: string; body?: unknown; cookie?: string } = {},
  ): Promise<ApiAnswer & { setCookie?: string }> {
    const headers: Record<string, string> = {};
    if (options.cookie !== undefined) headers.cookie = options.cookie;
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(new URL(path, farm.address.httpUrl), {
      method: options.method ?? 'GET',
      headers,
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    });
    const text = await response.text();
    let body: ApiAnswer['body'] = {};
    try {
      body = JSON.parse(text) as ApiAnswer['body'];
    } catch {
      body = { text };
    }
    return { status: response.status, body, ...(response.headers.get('set-cookie') === null ? {} : { setCookie: response.headers.get('set-cookie')! }) };
  }

  it('makes one token per scope in the state dir, 0600, distinct, and never logs them', () => {
    for (const scope of ['admin', 'read']) {
      const mode = statSync(join(farm.coordinatorStateDir, `api-token-${scope}`)).mode & 0o777;
      assert.equal(mode, 0o600, `api-token-${scope} is ${mode.toString(8)}`);
    }
    assert.notEqual(readToken, adminToken);
    assert.match(adminToken, /^nixfarm_admin_[A-Za-z0-9_-]{43}$/);
    const log = readFileSync(join(farm.dir, 'coordinator.log'), 'utf8');
    assert.match(log, /API tokens: .*api-token-admin \(admin\), .*api-token-read \(read\)/, 'the start says where the tokens are');
    assert.ok(!log.includes(adminToken) && !log.includes(readToken), 'no token in the coordinator log');
    assert.ok(!readFileSync(join(farm.coordinatorStateDir, 'coordinator.json'), 'utf8').includes(adminToken), 'nor in the world-readable coordinator.json');
  });

  it('GET /api/health needs no token', async () => {
    const answer = await call('/api/health');
    assert.equal(answer.status, 200);
    assert.equal(answer.body.ok, true);
  });

  it('refuses a request without a token with 401, saying how to send one', async () => {
    for (const path of ['/api/runs', '/api/workers', '/api/status', '/metrics', '/api/no-such-route']) {
      const answer = await call(path);
      assert.equal(answer.status, 401, path);
      assert.equal(answer.body.error?.code, 'unauthorized');
      assert.match(
        answer.body.error?.message ?? '',
        /send Authorization: Bearer <token>; nixfarm reads it from --token, NIXFARM_TOKEN or the coordinator's state dir/,
      );
    }
    const submit = await call('/api/runs', { method: 'POST', body: { expr: '1' } });
    assert.equal(submit.status, 401, 'refused before the body is looked at');
  });

  it('refuses a wrong token, and a token sent other than as Bearer, with 401', async () => {
    const wrong = await call('/api/runs', { token: `${adminToken}x` });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error?.code, 'unauthorized');
    assert.match(wrong.body.error?.message ?? '', /not one of this coordinator's API tokens/);
    assert.equal((await call('/api/runs', { token: 'short' })).status, 401);
    assert.equal((await call('/api/runs', { authorization: `Basic ${adminToken}` })).status, 401);
    assert.equal((await call('/api/runs', { authorization: adminToken })).status, 401);
  });

  it('a read token reads runs, workers, queues, status and metrics, but may not submit or cancel (403 naming admin)', async () => {
    for (const path of ['/api/runs', '/api/workers', '/api/queues', '/api/status', '/metrics']) {
      assert.equal((await call(path, { token: readToken })).status, 200, path);
    }
    const submit = await call('/api/runs', { token: readToken, method: 'POST', body: { expr: '1' } });
    assert.equal(submit.status, 403);
    assert.equal(submit.body.error?.code, 'forbidden');
    assert.match(submit.body.error?.message ?? '', /POST \/api\/runs needs a token with the admin scope; the token sent has the read scope/);
    const cancel = await call('/api/runs/abcdef123/cancel', { token: readToken, method: 'POST' });
    assert.equal(cancel.status, 403);
    assert.match(cancel.body.error?.message ?? '', /needs a token with the admin scope/);
  });

  it('a browser signs in with a token for an HttpOnly, SameSite=Strict cookie that reads but never changes anything', async () => {
    const refused = await call('/api/session', { method: 'POST', body: { token: `${readToken}x` } });
    assert.equal(refused.status, 401);
    assert.match(refused.body.error?.message ?? '', /not one of this coordinator's API tokens/);
    assert.equal(refused.setCookie, undefined);
    const malformed = await call('/api/session', { method: 'POST', body: { password: readToken } });
    assert.equal(malformed.status, 400);
    assert.match(malformed.body.error?.message ?? '', /token/);
    assert.ok(!JSON.stringify(malformed.body).includes(readToken), 'the refused body is not echoed');

    const signedIn = await call('/api/session', { method: 'POST', body: { token: adminToken } });
    assert.equal(signedIn.status, 200);
    assert.equal(signedIn.body.scope, 'admin');
    assert.match(signedIn.setCookie ?? '', /^nixfarm_token=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=604800$/);
    const cookie = signedIn.setCookie!.split(';')[0]!;
    for (const path of ['/api/runs', '/api/dashboard', '/api/status', '/metrics']) assert.equal((await call(path, { cookie })).status, 200, path);
    // Even an admin token's cookie: a page of another site can make the browser send it, so it never authorises a POST.
    const submit = await call('/api/runs', { cookie, method: 'POST', body: { expr: '1' } });
    assert.equal(submit.status, 401);
    assert.equal((await call('/api/runs', { cookie: 'nixfarm_token=nixfarm_read_forged' })).status, 401);

    const signedOut = await call('/api/session', { method: 'DELETE' });
    assert.equal(signedOut.status, 204);
    assert.match(signedOut.setCookie ?? '', /^nixfarm_token=; .*Max-Age=0/);
  });

  it('the dashboard page and its files are open, hold no farm data, and forbid inline script and framing', async () => {
    const page = await fetch(new URL('/', farm.address.httpUrl));
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'.*frame-ancestors 'none'/);
    const html = await page.text();
    assert.ok(html.includes('/dashboard/app.js') && !html.includes('w1'), 'the page names no worker: data comes from the API');
    assert.equal((await fetch(new URL('/dashboard/app.js', farm.address.httpUrl))).status, 200);
    const missing = await call('/dashboard/secrets.txt');
    assert.equal(missing.status, 404);
    assert.match(missing.body.error?.message ?? '', /no dashboard file secrets.txt; it has app.js, app.css, logo.svg/);
  });

  it('an admin token submits a run, and reads too', async () => {
    const fixture = chain(1);
    const submitted = await call('/api/runs', {
      token: adminToken,
      method: 'POST',
      body: { file: fixture.file, attrs: ['all'], argstrs: [{ name: 'salt', value: freshSalt() }] },
    });
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    const id = submitted.body.id as string;
    assert.equal((await call(`/api/runs/${id}`, { token: adminToken })).status, 200);
    const waited = await farm.cli(['wait', id]);
    assert.equal(waited.exitCode, 0, waited.stderr);
  });

  it('nixfarm build without a token exits 2 with the message; with NIXFARM_TOKEN it builds', async () => {
    const fixture = chain(1);
    const refused = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()], { env: NO_TOKEN });
    assert.equal(refused.exitCode, 2, refused.stderr);
    assert.match(refused.stderr, /unauthorized/);
    assert.match(refused.stderr, /send Authorization: Bearer <token>; nixfarm reads it from --token, NIXFARM_TOKEN/);
    const built = await farm.build([fixture.file, '-A', 'all', '--argstr', 'salt', freshSalt()], { env: { ...NO_TOKEN, NIXFARM_TOKEN: adminToken } });
    assert.equal(built.exitCode, 0, built.stderr);
  });

  it('the CLI takes --token, or finds the token in the coordinator state dir (NIXFARM_STATE_DIR)', async () => {
    const viaFlag = await farm.cli(['runs', '--token', readToken], { env: NO_TOKEN });
    assert.equal(viaFlag.exitCode, 0, viaFlag.stderr);
    const viaStateDir = await farm.cli(['workers'], { env: { NIXFARM_TOKEN: '', NIXFARM_STATE_DIR: farm.coordinatorStateDir } });
    assert.equal(viaStateDir.exitCode, 0, viaStateDir.stderr);
    assert.match(viaStateDir.stdout, /w1/);
    const cancel = await farm.cli(['cancel', 'abcdef123', '--token', readToken], { env: NO_TOKEN });
    assert.equal(cancel.exitCode, 2);
    assert.match(cancel.stderr, /403 \(forbidden\).*needs a token with the admin scope/);
    const status = await farm.cli(['status'], { env: NO_TOKEN });
    assert.equal(status.exitCode, 2);
    assert.match(status.stderr, /401 \(unauthorized\)/);
  });

  it("nixfarm api-token prints a scope's token", async () => {
    const read = await farm.cli(['api-token', '--state-dir', farm.coordinatorStateDir, '--scope', 'read']);
    assert.equal(read.exitCode, 0, read.stderr);
    assert.equal(read.stdout.trim(), readToken);
    const admin = await farm.cli(['api-token', '--state-dir', farm.coordinatorStateDir, '--scope', 'admin']);
    assert.equal(admin.stdout.trim(), adminToken);
    const bad = await farm.cli(['api-token', '--state-dir', farm.coordinatorStateDir, '--scope', 'root']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /--scope takes read or admin/);
    const missing = await farm.cli(['api-token', '--state-dir', join(farm.dir, 'nowhere')]);
    assert.equal(missing.exitCode, 2);
    assert.match(missing.stderr, /does not exist: the coordinator makes its tokens at its first start/);
  });

  it('a coordinator refuses to start with a token file others can read', async () => {
    const stateDir = join(farm.dir, 'loose-state');
    mkdirSync(stateDir, { recursive: true });
    const file = join(stateDir, 'api-token-admin');
    writeFileSync(file, 'nixfarm_admin_0123456789abcdef0123456789\n');
    chmodSync(file, 0o644);
    const result = await spawnNixfarm(
      ['coordinator', '--state-dir', stateDir, '--redis', farm.redis.url, '--http-port', '0', '--ssh-port', '0', '--ssh-host', '127.0.0.1'],
      { timeoutMs: 30_000 },
    ).result;
    assert.equal(result.exitCode, 2, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `cannot use API token file ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: its mode is 644, so group or others can read or write it; chmod 600`,
      ),
    );
    assert.ok(!result.stderr.includes('0123456789abcdef0123456789'), 'the token is not printed');
  });
});
