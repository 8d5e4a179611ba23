import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { UndocumentedRouteError, createHttpApi, openApiPath, type HttpApiDeps, type OpenApiDocument, ApiTokens } from '@nixfarm/coordinator';
import { createLogger, runViewSchema, derivationViewSchema, type RunView } from '@nixfarm/shared';

const DRV = '/nix/store/0c1pvmvzxkl0hv1x1d4w8iaq5bh9s00g-hello-2.12.2.drv';
const OUT = '/nix/store/1b3dkmcvhnfmz9bkyf0gvf7k2m1dsdwn-hello-2.12.2';

/** A run as GET /api/runs/:id answers it after a one-attribute build. */
const RUN: RunView = {
  id: 'm3k9x2abcd',
  status: 'succeeded',
  createdAt: 1_763_900_000_000,
  finishedAt: 1_763_900_042_000,
  request: {
    expr: 'with import <nixpkgs> {}; hello',
    attrs: [],
    args: [],
    argstrs: [],
    includes: [],
    priority: 0,
    order: 'critical-path',
    rebuildFailed: false,
    timeoutSeconds: 36000,
    maxSilentSeconds: 3600,
  },
  results: [{ attr: '', drvPath: DRV, outputName: 'out', outputPath: OUT }],
  total: 1,
  counts: { succeeded: 1 },
};

/** A coordinator's HTTP API with every optional part (metrics, logs, the dashboard), on stubs: nothing here answers a request but the document. */
function fullApi(): ReturnType<typeof createHttpApi> {
  const stub = {} as never;
  const deps: HttpApiDeps = {
    runs: stub,
    events: stub,
    workers: stub,
    queues: stub,
    redis: stub,
    logger: createLogger({ name: 'openapi-test', level: 'silent' }),
    metrics: { queueWaits: stub } as never,
    logs: stub,
    graph: stub,
    history: { store: stub, intervalSeconds: 10 },
    tokens: new ApiTokens({ read: 'nixfarm_read_test', admin: 'nixfarm_admin_test' }),
  };
  return createHttpApi(deps);
}

/** The document as GET /api/openapi.json serves it (no token: it is open). */
async function servedDocument(): Promise<OpenApiDocument> {
  const app = fullApi();
  const response = await app.inject({ method: 'GET', url: '/api/openapi.json' });
  await app.close();
  assert.equal(response.statusCode, 200, response.body);
  return response.json<OpenApiDocument>();
}

/**
 * The routes a coordinator with every optional part (metrics, logs) registers,
 * read from Fastify's own route tree: `printRoutes({ commonPrefix: false })`
 * prints one node a line, indented four characters a level, with its methods.
 */
async function registeredRoutes(): Promise<string[]> {
  const app = fullApi();
  await app.ready();
  const tree = app.printRoutes({ commonPrefix: false });
  await app.close();
  const routes: string[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (\S+)(?: \(([^)]*)\))?$/.exec(line);
    if (m === null) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack.push(m[2]!);
    for (const method of (m[3] ?? '').split(', '))
      if (method !== '' && method !== 'HEAD' && method !== 'OPTIONS') routes.push(`${method} ${openApiPath(stack.join(''))}`);
  }
  return routes.sort();
}

function documentedRoutes(doc: OpenApiDocument): string[] {
  return Object.entries(doc.paths)
    .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`))
    .sort();
}

/** Every `$ref` anywhere in the value. */
function refsIn(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(refsIn);
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, v]) => (key === '$ref' && typeof v === 'string' ? [v] : refsIn(v)));
}

describe('OpenAPI document', () => {
  let doc: OpenApiDocument;
  let ajv: Ajv2020;
  before(async () => {
    doc = await servedDocument();
    ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false, allErrors: true });
    for (const [name, schema] of Object.entries(doc.components.schemas)) ajv.addSchema(schema, `#/components/schemas/${name}`);
  });

  it('is an OpenAPI 3.1 object: info, paths with operations that answer, resolvable refs, a bearer scheme', () => {
    assert.equal(doc.openapi, '3.1.0');
    assert.equal(typeof doc.info.title, 'string');
    assert.equal(typeof doc.info.version, 'string');
    assert.ok(Object.keys(doc.paths).length > 0);
    const ids = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths)) {
      assert.match(path, /^\//);
      const pathParams = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      for (const [method, op] of Object.entries(ops)) {
        assert.ok(['get', 'post', 'put', 'patch', 'delete'].includes(method), `${method} ${path}`);
        assert.ok(!ids.has(op.operationId), `duplicate operationId ${op.operationId}`);
        ids.add(op.operationId);
        assert.ok(
          Object.keys(op.responses).some((code) => /^2\d\d$/.test(code)),
          `${method} ${path} has no success response`,
        );
        for (const [code, response] of Object.entries(op.responses)) {
          assert.match(code, /^[1-5]\d\d$/);
          assert.equal(typeof response.description, 'string', `${method} ${path} ${code}`);
        }
        const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
        assert.deepEqual(declared.sort(), [...pathParams].sort(), `${method} ${path}: path parameters`);
        for (const p of op.parameters ?? []) if (p.in === 'path') assert.equal(p.required, true);
        for (const requirement of op.security) for (const scheme of Object.keys(requirement)) assert.ok(scheme in doc.components.securitySchemes);
      }
    }
    for (const ref of refsIn(doc)) {
      const name = /^#\/components\/schemas\/(\w+)$/.exec(ref)?.[1];
      assert.ok(name !== undefined && name in doc.components.schemas, `unresolved ${ref}`);
    }
    assert.deepEqual(doc.components.securitySchemes.bearerAuth, { ...doc.components.securitySchemes.bearerAuth, type: 'http', scheme: 'bearer' });
  });

  it('documents every API route the coordinator registers, and no other; the rest are the web pages', async () => {
    const registered = await registeredRoutes();
    const isApi = (route: string): boolean => /^\w+ \/(api\/|metrics$)/.test(route);
    assert.deepEqual(documentedRoutes(doc), registered.filter(isApi));
    // Not API: the dashboard's page and files, and bull-board's pages and its own API under /queues.
    const pages = registered.filter((r) => !isApi(r));
    assert.deepEqual(
      pages.filter((r) => !r.includes(' /queues')),
      ['GET /', 'GET /dashboard/{asset}', 'GET /runs/{id}'],
    );
    assert.ok(pages.includes('GET /queues'), pages.join(', '));
    assert.ok(
      pages.filter((r) => r.includes(' /queues')).every((r) => /^\w+ \/queues(\/|$)/.test(r)),
      pages.join(', '),
    );
  });

  it('needs the admin scope exactly for starting and cancelling runs and forgetting a worker; health, the document and the browser sign-in are open', () => {
    const scoped = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops).map(([m, op]) => [`${m.toUpperCase()} ${path}`, op['x-nixfarm-scope'] ?? 'none', op.security] as const),
    );
    assert.deepEqual(
      scoped
        .filter(([, scope]) => scope === 'admin')
        .map(([route]) => route)
        .sort(),
      ['DELETE /api/workers/{name}', 'POST /api/runs', 'POST /api/runs/{id}/cancel'],
    );
    assert.deepEqual(
      scoped
        .filter(([, scope]) => scope === 'none')
        .map(([route]) => route)
        .sort(),
      ['DELETE /api/session', 'GET /api/health', 'GET /api/openapi.json', 'POST /api/session'],
    );
    for (const [route, scope, security] of scoped) assert.deepEqual(security, scope === 'none' ? [] : [{ bearerAuth: [scope] }], route);
  });

  it('describes every component schema in valid JSON Schema 2020-12', () => {
    for (const name of Object.keys(doc.components.schemas)) assert.doesNotThrow(() => ajv.getSchema(`#/components/schemas/${name}`), name);
  });

  it('accepts a real run view in GET /api/runs/{id}, and refuses a broken one', () => {
    assert.ok(runViewSchema.safeParse(RUN).success, 'the example is a run view');
    const schema = doc.paths['/api/runs/{id}']!.get!.responses['200']!.content!['application/json']!.schema;
    const validate = ajv.compile(schema);
    assert.ok(validate(RUN), JSON.stringify(validate.errors));
    assert.ok(validate({ ...RUN, extra: 'a later field' }), 'responses may grow');
    assert.equal(validate({ ...RUN, status: 'exploded' }), false);
    assert.equal(validate({ ...RUN, results: [{ ...RUN.results[0]!, drvPath: OUT }] }), false, 'an output path is not a .drv path');
    assert.equal(validate({ ...RUN, results: [{ ...RUN.results[0]!, outputPath: '/tmp/hello' }] }), false, 'not a store path');
    const { total: _total, ...withoutTotal } = RUN;
    assert.equal(validate(withoutTotal), false);
  });

  it('accepts a derivation view with timings, and run requests with exactly one of file or expr', () => {
    const drv = {
      drvPath: DRV,
      name: 'hello-2.12.2',
      system: 'x86_64-linux',
      requiredFeatures: [],
      status: 'succeeded',
      worker: 'w1',
      pendingInputs: 0,
      attempts: 1,
      queuedAt: 1,
      startedAt: 2,
      finishedAt: 3,
      timings: { copyInMs: 1, buildMs: 2, copyOutMs: 3, totalMs: 6 },
    };
    assert.ok(derivationViewSchema.safeParse(drv).success);
    const derivations = ajv.compile(doc.paths['/api/runs/{id}/derivations']!.get!.responses['200']!.content!['application/json']!.schema);
    assert.ok(derivations({ derivations: [drv] }), JSON.stringify(derivations.errors));
    assert.equal(derivations({ derivations: [{ ...drv, timings: { buildMs: 2 } }] }), false);

    const request = ajv.compile(doc.paths['/api/runs']!.post!.requestBody!.content['application/json']!.schema);
    assert.ok(request({ expr: '1' }), JSON.stringify(request.errors));
    assert.ok(request({ file: '/srv/release.nix', attrs: ['hello'] }), JSON.stringify(request.errors));
    assert.equal(request({ file: '/srv/release.nix', expr: '1' }), false, 'both');
    assert.equal(request({ attrs: ['hello'] }), false, 'neither');
    assert.equal(request({ file: 'release.nix' }), false, 'relative file');
    assert.equal(request({ expr: '1', unknown: true }), false, 'requests are strict');
  });

  it('says the events route streams RunEvent objects and the log and metrics routes answer text', () => {
    const events = doc.paths['/api/runs/{id}/events']!.get!;
    assert.deepEqual(events.responses['200']!.content!['text/event-stream']!.schema['x-nixfarm-event-data'], { $ref: '#/components/schemas/RunEvent' });
    assert.ok(events.parameters!.some((p) => p.name === 'after' && p.in === 'query'));
    const runEvent = ajv.getSchema('#/components/schemas/RunEvent')!;
    assert.ok(runEvent({ type: 'drv-started', drvPath: DRV, worker: 'w1', at: 1 }), JSON.stringify(runEvent.errors));
    assert.equal(runEvent({ type: 'drv-started', drvPath: DRV, at: 1 }), false);
    assert.ok('text/plain' in doc.paths['/metrics']!.get!.responses['200']!.content!);
    const logs = doc.paths['/api/logs']!.get!;
    assert.ok('text/plain' in logs.responses['200']!.content!);
    assert.deepEqual(logs.parameters!.map((p) => p.name).sort(), ['attr', 'follow', 'info', 'path', 'run']);
    assert.ok('text/event-stream' in logs.responses['200']!.content!, 'live logs as server-sent events');
    const dashboard = doc.paths['/api/dashboard/events']!.get!;
    assert.deepEqual(dashboard.responses['200']!.content!['text/event-stream']!.schema['x-nixfarm-event-data'], {
      $ref: '#/components/schemas/DashboardSnapshot',
    });
  });

  it('refuses to start with an API route that does not describe itself', async () => {
    const app = fullApi();
    void app.register(async (api) => {
      api.get('/api/undocumented', async () => ({}));
    });
    await assert.rejects(
      async () => app.ready(),
      (error: unknown) => error instanceof UndocumentedRouteError && /GET \/api\/undocumented .*operationId/.test(error.message),
    );
    await app.close();
  });
});
