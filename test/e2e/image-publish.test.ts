import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import type { RunView } from '@nixfarm/shared';
import { farmForSuite } from '../harness/farm-for-suite.js';
import { startRegistry, type TestRegistry } from '../harness/docker-registry.js';
import { freePort } from '../harness/free-port.js';
import { freshSalt, scriptedFixture } from '../harness/nix-fixtures.js';
import { removeTreeSync } from '../harness/process-cleanup.js';

/**
 * Images made with busybox in the builder: a layer tar holding one file, a
 * config JSON with the layer's sha256 as its diff_id; `app` wraps them as a
 * docker-archive (manifest.json), `oci` as an OCI layout, `broken` is a
 * docker-archive without its layer, `plain` is no image at all.
 */
function imageFixture(): string {
  return scriptedFixture(
    'images',
    `  app = mk "app-image" (prelude "app" + ''
    mkdir $L
    mv layer.tar $L/layer.tar
    mv config.json $C.json
    printf '[{"Config":"%s.json","RepoTags":[],"Layers":["%s/layer.tar"]}]' $C $L > manifest.json
    tar -cf $out manifest.json $C.json $L/layer.tar
  '');
  oci = mk "oci-image" (prelude "oci" + ''
    mkdir -p $out/blobs/sha256
    cp layer.tar $out/blobs/sha256/$L
    cp config.json $out/blobs/sha256/$C
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' $C $CS $L $LS > manifest.json
    M=$(sha256sum manifest.json | cut -d' ' -f1)
    cp manifest.json $out/blobs/sha256/$M
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' $M $(wc -c < manifest.json) > $out/index.json
    printf '{"imageLayoutVersion":"1.0.0"}' > $out/oci-layout
  '');
  broken = mk "broken-image" (prelude "broken" + ''
    mv config.json $C.json
    printf '[{"Config":"%s.json","RepoTags":[],"Layers":["%s/layer.tar"]}]' $C $L > manifest.json
    tar -cf $out manifest.json $C.json
  '');
  plain = mk "plain" ''echo "just text \${salt}" > $out'';
`,
    `  prelude = what: ''
    set -e
    B=\${bb}/bin/busybox
    $B mkdir tools
    for a in tar sha256sum cut wc mkdir mv cp; do $B ln -s $B tools/$a; done
    export PATH=$PWD/tools
    mkdir rootfs
    echo "hello from \${what} \${salt}" > rootfs/hello.txt
    (cd rootfs && tar -cf ../layer.tar hello.txt)
    L=$(sha256sum layer.tar | cut -d' ' -f1)
    LS=$(wc -c < layer.tar)
    printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' $L > config.json
    C=$(sha256sum config.json | cut -d' ' -f1)
    CS=$(wc -c < config.json)
  '';
`,
  );
}

interface Inspected {
  Digest: string;
  Layers: string[];
}

function skopeo(args: readonly string[]): string {
  return execFileSync('skopeo', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('publishing images to a registry', () => {
  let registry: TestRegistry;
  let file: string;
  let dir: string;
  before(async () => {
    registry = await startRegistry();
    file = imageFixture();
    dir = mkdtempSync(join(tmpdir(), 'nixfarm-image-auth-'));
  });
  after(async () => {
    await registry?.stop();
    if (dir !== undefined) removeTreeSync(dir);
  });
  const farm = farmForSuite({
    workers: [{ name: 'w1', maxJobs: 2 }],
    // A registry that is down gets three tries, 200 ms then 400 ms apart.
    coordinatorArgs: ['--image-publish-attempts', '3', '--image-publish-backoff-ms', '200'],
  });

  it('pushes a docker-archive and an OCI layout with their layers, skips a plain output, and fails a broken image on its own', async () => {
    const salt = freshSalt();
    const secret = `s3cret-${salt}`;
    const auth = join(dir, 'auth.json');
    writeFileSync(auth, JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`tester:${secret}`).toString('base64') } } }), { mode: 0o600 });
    const repository = `${registry.host}/nixfarm-test/app`;
    const result = await farm.build(
      [file, '-A', 'app', '-A', 'oci', '-A', 'plain', '-A', 'broken', '--argstr', 'salt', salt, '--json'].concat([
        '--publish-images',
        repository,
        '--registry-insecure',
        '--tag-latest',
        '--registry-auth',
        auth,
      ]),
      { timeoutMs: 180_000 },
    );
    assert.equal(result.exitCode, 1, `the broken image fails the command\n${result.stderr}\n${farm.diagnostics()}`);
    const run = JSON.parse(result.stdout) as RunView;
    assert.equal(run.status, 'succeeded', 'every build succeeded: publishing is after the builds');
    const images = new Map((run.images ?? []).map((p) => [p.attr, p]));
    assert.equal(images.size, 4, JSON.stringify(run.images));

    assert.equal(images.get('plain')?.state, 'not-an-image', JSON.stringify(images.get('plain')));
    assert.equal(images.get('plain')?.error, undefined);
    assert.equal(images.get('broken')?.state, 'failed');
    assert.match(images.get('broken')?.error ?? '', /not a valid image: .*manifest\.json names files the archive lacks/);
    assert.equal(images.get('broken')?.attempts, 1, 'a broken image is not retried');

    for (const attr of ['app', 'oci']) {
      const publication = images.get(attr)!;
      const outputPath = run.results.find((r) => r.attr === attr)!.outputPath;
      const hash = outputPath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      assert.equal(publication.state, 'published', JSON.stringify(publication));
      assert.deepEqual(publication.references, [`${repository}:${attr}-${hash}`, `${repository}:latest`]);
      assert.match(publication.digest ?? '', /^sha256:[0-9a-f]{64}$/);
      // The registry holds that digest under the tag, with one layer whose content is the built layer.
      const inspected = JSON.parse(skopeo(['inspect', '--tls-verify=false', `docker://${publication.references[0]}`])) as Inspected;
      assert.equal(inspected.Digest, publication.digest);
      assert.equal(inspected.Layers.length, 1);
      const builtLayer =
        attr === 'app'
          ? (JSON.parse(execFileSync('tar', ['-xOf', outputPath, 'manifest.json'], { encoding: 'utf8' })) as Array<{ Layers: string[] }>)[0]!.Layers[0]!.split(
              '/',
            )[0]!
          : (
              JSON.parse(
                readFileSync(
                  join(
                    outputPath,
                    'blobs',
                    'sha256',
                    (JSON.parse(readFileSync(join(outputPath, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }).manifests[0]!.digest.slice(
                      7,
                    ),
                  ),
                  'utf8',
                ),
              ) as { layers: Array<{ digest: string }> }
            ).layers[0]!.digest.slice(7);
      const config = JSON.parse(skopeo(['inspect', '--tls-verify=false', '--config', `docker://${publication.references[0]}`])) as {
        rootfs: { diff_ids: string[] };
      };
      assert.deepEqual(config.rootfs.diff_ids, [`sha256:${builtLayer}`]);
      // The registry may hold the layer compressed (skopeo compresses for it): its content, uncompressed, is the built layer.
      const blob = Buffer.from(await (await fetch(`http://${registry.host}/v2/nixfarm-test/app/blobs/${inspected.Layers[0]}`)).arrayBuffer());
      assert.equal(`sha256:${sha256(blob)}`, inspected.Layers[0], 'the blob is what the manifest names');
      assert.equal(sha256(blob[0] === 0x1f && blob[1] === 0x8b ? gunzipSync(blob) : blob), builtLayer);
      assert.match(result.stderr, new RegExp(`published ${attr} as ${repository}:${attr}-${hash}, ${repository}:latest \\(${publication.digest}\\)`));
    }
    const latest = JSON.parse(skopeo(['inspect', '--tls-verify=false', `docker://${repository}:latest`])) as Inspected;
    assert.ok([images.get('app')?.digest, images.get('oci')?.digest].includes(latest.Digest), 'latest is one of the two images');
    assert.match(result.stderr, /plain: not an image \(.*\), not published/);
    assert.match(result.stderr, /IMAGE NOT PUBLISHED: broken: not a valid image/);
    // The credentials went to skopeo as a file only.
    assert.ok(!farm.tail('coordinator', 1_000_000).includes(secret), 'the secret is not in the coordinator log');
    assert.ok(!result.stderr.includes(secret) && !result.stdout.includes(secret), 'nor in the command output');
  });

  it('publishes the images of a jobset run, attribute by attribute', async () => {
    const salt = freshSalt();
    const repository = `${registry.host}/nixfarm-test/jobset`;
    const result = await farm.build([file, '--jobset', '--argstr', 'salt', salt, '--publish-images', repository, '--registry-insecure'], {
      timeoutMs: 180_000,
    });
    assert.equal(result.exitCode, 1, `the broken image fails the command\n${result.stderr}\n${farm.diagnostics()}`);
    const runId = /run (\S+):/.exec(result.stderr)?.[1];
    const run = await farm.api<RunView>(`/api/runs/${runId}`);
    assert.equal(run.status, 'succeeded', 'every attribute built');
    const states = Object.fromEntries((run.images ?? []).map((p) => [p.attr, p.state]));
    assert.deepEqual(states, { app: 'published', oci: 'published', broken: 'failed', plain: 'not-an-image' });
    for (const p of run.images ?? []) {
      if (p.state !== 'published') continue;
      const inspected = JSON.parse(skopeo(['inspect', '--tls-verify=false', `docker://${p.references[0]}`])) as Inspected;
      assert.equal(inspected.Digest, p.digest);
    }
  });

  it('retries a registry that is unreachable, then names it in the result', async () => {
    const salt = freshSalt();
    const down = `127.0.0.1:${await freePort()}`;
    const result = await farm.build([file, '-A', 'app', '--argstr', 'salt', salt, '--json', '--publish-images', `${down}/app`, '--registry-insecure'], {
      timeoutMs: 180_000,
    });
    assert.equal(result.exitCode, 1, `${result.stderr}\n${farm.diagnostics()}`);
    const run = JSON.parse(result.stdout) as RunView;
    assert.equal(run.status, 'succeeded');
    const [publication] = run.images ?? [];
    assert.equal(publication?.state, 'failed', JSON.stringify(run.images));
    assert.equal(publication?.attempts, 3, 'tried as often as the coordinator says');
    assert.match(publication?.error ?? '', new RegExp(`registry ${down} is unreachable .*check that it runs.*\\(after 3 tries\\)`));
    assert.match(result.stderr, new RegExp(`IMAGE NOT PUBLISHED: app: registry ${down} is unreachable`));
  });

  it('fails at once, naming the registry and the fix, when the registry refuses the credentials; pushes with the right ones', async () => {
    const guarded = await startRegistry({ user: { name: 'pusher', password: 'right-password' } });
    try {
      const authFile = (password: string): string => {
        const path = join(dir, `auth-${password}.json`);
        writeFileSync(path, JSON.stringify({ auths: { [guarded.host]: { auth: Buffer.from(`pusher:${password}`).toString('base64') } } }), { mode: 0o600 });
        return path;
      };
      const salt = freshSalt();
      const publish = (password: string) =>
        farm.build(
          [file, '-A', 'app', '--argstr', 'salt', salt, '--json', '--publish-images', `${guarded.host}/guarded/app`, '--registry-insecure'].concat([
            '--registry-auth',
            authFile(password),
          ]),
          { timeoutMs: 180_000 },
        );
      const wrong = await publish('wrong-password');
      assert.equal(wrong.exitCode, 1, `${wrong.stderr}\n${farm.diagnostics()}`);
      const [refused] = (JSON.parse(wrong.stdout) as RunView).images ?? [];
      assert.equal(refused?.state, 'failed', JSON.stringify(refused));
      assert.equal(refused?.attempts, 1, 'a refusal is not retried: trying again would be refused again');
      assert.match(refused?.error ?? '', new RegExp(`registry ${guarded.host} refused the push .*check the credentials given with --registry-auth`));
      assert.doesNotMatch(`${wrong.stderr}${farm.tail('coordinator', 1_000_000)}`, /wrong-password|right-password/, 'no password in the output or the logs');

      const right = await publish('right-password');
      assert.equal(right.exitCode, 0, `${right.stderr}\n${farm.diagnostics()}`);
      const [published] = (JSON.parse(right.stdout) as RunView).images ?? [];
      assert.equal(published?.state, 'published', JSON.stringify(published));
      const inspected = JSON.parse(
        skopeo(['inspect', '--tls-verify=false', '--creds', 'pusher:right-password', `docker://${published!.references[0]}`]),
      ) as Inspected;
      assert.equal(inspected.Digest, published?.digest);
    } finally {
      await guarded.stop();
    }
  });

  it('refuses bad publishing input at submission with one message naming the thing', async () => {
    const args = [file, '-A', 'plain', '--argstr', 'salt', freshSalt(), '--publish-images', `${registry.host}/app`];
    const refused = async (extra: readonly string[], message: RegExp) => {
      const result = await farm.build([...args, ...extra]);
      assert.equal(result.exitCode, 2, `${extra.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
    };
    const missing = join(dir, 'missing.json');
    await refused(['--registry-auth', missing], new RegExp(`registry credentials file ${missing} does not exist on the coordinator machine: create it`));
    const notJson = join(dir, 'not-json.json');
    writeFileSync(notJson, 'user:password\n');
    await refused(['--registry-auth', notJson], /registry credentials file .*not-json\.json is not JSON: write it in the containers-auth\.json form/);
    const other = join(dir, 'other.json');
    writeFileSync(other, JSON.stringify({ auths: { 'registry.example.com': { auth: 'eDp5' } } }));
    await refused(
      ['--registry-auth', other],
      new RegExp(`has no credentials for ${registry.host} \\(it has registry\\.example\\.com\\): add an "auths" entry`),
    );
    const noRegistry = await farm.build([file, '-A', 'plain', '--publish-images', 'app']);
    assert.equal(noRegistry.exitCode, 2);
    assert.match(noRegistry.stderr, /--publish-images: "app" names no registry: give REGISTRY\/REPO/);
    const tagged = await farm.build([file, '-A', 'plain', '--publish-images', `${registry.host}/app:v1`]);
    assert.match(tagged.stderr, /has a tag or digest: give the repository only/);
    const insecure = await farm.build([file, '-A', 'plain', '--publish-images', 'registry.example.com/app', '--registry-insecure']);
    assert.equal(insecure.exitCode, 2);
    assert.match(insecure.stderr, /--registry-insecure turns TLS verification off and is allowed only for a registry on loopback/);
    const orphan = await farm.build([file, '-A', 'plain', '--tag-latest']);
    assert.match(orphan.stderr, /--tag-latest applies only with --publish-images/);
    // The API checks the same at its edge.
    await assert.rejects(
      farm.api('/api/runs', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ file, attrs: ['plain'], publishImages: 'Reg/App' }),
      }),
      /HTTP 400: .*invalid-request.*publishImages: .*Reg.* is not a registry host/,
    );
  });
});
