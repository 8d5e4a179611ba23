import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { detectImage } from '@nixfarm/coordinator';
import { imageRepositoryProblem, imageTag, isLoopbackRegistry, submitRunRequestSchema } from '@nixfarm/shared';
import { removeTreeSync } from '../harness/process-cleanup.js';

const HASH = '0c6kzph7l0dcbfmjap64f0czdafn3b7x';

describe('image repositories and tags', () => {
  it('takes REGISTRY/REPO and names what is wrong with anything else', () => {
    for (const ok of ['registry.example.com/team/app', '127.0.0.1:5000/app', 'localhost/a/b-c_d.e', '[::1]:5000/x'])
      assert.equal(imageRepositoryProblem(ok), undefined, ok);
    assert.match(imageRepositoryProblem('app') ?? '', /"app" names no registry: give REGISTRY\/REPO/);
    assert.match(imageRepositoryProblem('team/app') ?? '', /"team" is not a registry host \(a name with a dot, host:port or localhost\)/);
    assert.match(imageRepositoryProblem('127.0.0.1:5000/app:v1') ?? '', /has a tag or digest: give the repository only/);
    assert.match(imageRepositoryProblem('127.0.0.1:5000/app@sha256:00') ?? '', /has a tag or digest/);
    assert.match(imageRepositoryProblem('127.0.0.1:5000/App') ?? '', /"App" in .* is not a repository path component/);
    assert.match(imageRepositoryProblem('127.0.0.1:5000/a//b') ?? '', /"" in .* is not a repository path component/);
  });

  it('allows TLS verification off only on loopback', () => {
    for (const host of ['127.0.0.1:5000', '127.1.2.3', 'localhost:80', '[::1]:5000']) assert.ok(isLoopbackRegistry(host), host);
    for (const host of ['registry.example.com', '10.0.0.1:5000', '127.0.0.1.example.com', 'localhost.example.com']) assert.ok(!isLoopbackRegistry(host), host);
    const request = { file: '/x.nix', publishImages: 'registry.example.com/app', registryInsecure: true };
    const parsed = submitRunRequestSchema.safeParse(request);
    assert.ok(!parsed.success);
    assert.match(JSON.stringify(parsed.error.issues), /allowed only for a registry on loopback/);
    assert.ok(!submitRunRequestSchema.safeParse({ file: '/x.nix', tagLatest: true }).success, 'tagLatest only with publishImages');
  });

  it('tags ATTR-HASHPART, made tag-safe and at most 128 long', () => {
    assert.equal(imageTag('app', `/nix/store/${HASH}-app-image`), `app-${HASH}`);
    assert.equal(imageTag('images."my app"', `/nix/store/${HASH}-x`), `images.-my-app--${HASH}`);
    assert.equal(imageTag('', `/nix/store/${HASH}-hello-2.12`), `hello-2.12-${HASH}`);
    const long = imageTag('a'.repeat(300), `/nix/store/${HASH}-x`);
    assert.equal(long.length, 128);
    assert.ok(long.endsWith(`-${HASH}`));
  });
});

describe('detecting images among outputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-image-detect-'));
  after(() => removeTreeSync(dir));

  /** A docker-archive as dockerTools writes one; `drop` leaves a listed file out. */
  function dockerArchive(name: string, options: { gzip?: boolean; drop?: string; longLayerDir?: boolean } = {}): string {
    const src = join(dir, `${name}-src`);
    const layerDir = options.longLayerDir === true ? 'l'.repeat(120) : 'abc';
    mkdirSync(join(src, layerDir), { recursive: true });
    writeFileSync(join(src, layerDir, 'layer.tar'), randomBytes(2000));
    writeFileSync(join(src, 'config.json'), '{}');
    writeFileSync(join(src, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: null, Layers: [`${layerDir}/layer.tar`] }]));
    const out = join(dir, name);
    const files = ['manifest.json', 'config.json', `${layerDir}/layer.tar`].filter((f) => f !== options.drop);
    execFileSync('tar', [options.gzip === true ? '-czf' : '-cf', out, '-C', src, ...files]);
    return out;
  }

  it('finds docker-archives, plain, gzip-compressed and with long names', async () => {
    for (const [name, options] of [
      ['plain.tar', {}],
      ['gzip.tar.gz', { gzip: true }],
      ['long.tar', { longLayerDir: true }],
    ] as const) {
      const file = dockerArchive(name, options);
      assert.deepEqual(await detectImage(file), { kind: 'image', image: { format: 'docker-archive', source: `docker-archive:${file}` } }, name);
    }
  });

  it('finds an OCI layout and says what is missing from a broken one', async () => {
    const layout = join(dir, 'oci');
    mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
    writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ digest: `sha256:${'a'.repeat(64)}` }] }));
    assert.deepEqual(await detectImage(layout), { kind: 'malformed', problem: `${layout}: the manifest blob sha256:${'a'.repeat(64)} is not under blobs/` });
    writeFileSync(join(layout, 'blobs', 'sha256', 'a'.repeat(64)), '{}');
    assert.deepEqual(await detectImage(layout), { kind: 'image', image: { format: 'oci', source: `oci:${layout}` } });
  });

  it('calls a docker-archive that lacks a layer malformed, and anything else not an image', async () => {
    const broken = dockerArchive('broken.tar', { drop: 'abc/layer.tar' });
    assert.deepEqual(await detectImage(broken), { kind: 'malformed', problem: `${broken}: manifest.json names files the archive lacks: abc/layer.tar` });
    const text = join(dir, 'text');
    writeFileSync(text, 'hello\n'.repeat(200));
    const noise = join(dir, 'noise');
    writeFileSync(noise, randomBytes(4096));
    const tarWithout = join(dir, 'other.tar');
    execFileSync('tar', ['-cf', tarWithout, '-C', dir, 'text']);
    const emptyDir = join(dir, 'plain-dir');
    mkdirSync(emptyDir);
    for (const path of [text, noise, tarWithout, emptyDir]) assert.deepEqual(await detectImage(path), { kind: 'not-an-image' }, path);
  });
});
