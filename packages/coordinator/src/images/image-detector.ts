import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { readTarIndex } from './tar-index.js';

/** An output that is an image, with the skopeo source that reads it. */
export interface DetectedImage {
  format: 'docker-archive' | 'oci';
  /** skopeo's transport:path, e.g. `docker-archive:/nix/store/…-image.tar.gz` */
  source: string;
}

/** What an output is: an image, something else (not published, not an error), or an image that is broken (the attribute's publish error). */
export type ImageDetection = { kind: 'image'; image: DetectedImage } | { kind: 'not-an-image' } | { kind: 'malformed'; problem: string };

const dockerManifestSchema = z
  .array(z.object({ Config: z.string().min(1), Layers: z.array(z.string().min(1)), RepoTags: z.array(z.string()).nullish() }).loose())
  .min(1);
const ociIndexSchema = z.object({ manifests: z.array(z.object({ digest: z.string().regex(/^[a-z0-9]+:[a-f0-9]+$/) }).loose()).min(1) }).loose();

function parsed<T>(schema: z.ZodType<T>, raw: Buffer | string): T | undefined {
  try {
    const result = schema.safeParse(JSON.parse(raw.toString()));
    return result.success ? result.data : undefined;
  } catch {
    return undefined;
  }
}

/** A docker-archive (as `docker save` or dockerTools.buildImage write it): manifest.json naming a config and layers that the tar holds. */
async function detectDockerArchive(file: string): Promise<ImageDetection> {
  const index = await readTarIndex(file, (name) => name === 'manifest.json');
  if (index === undefined || !index.names.has('manifest.json')) return { kind: 'not-an-image' };
  const raw = index.files.get('manifest.json');
  const manifest = raw === undefined ? undefined : parsed(dockerManifestSchema, raw);
  if (manifest === undefined) return { kind: 'malformed', problem: `${file}: manifest.json is not a docker-archive manifest (a list of {Config, Layers})` };
  const missing = manifest.flatMap((m) => [m.Config, ...m.Layers]).filter((name) => !index.names.has(name.replace(/^(\.\/)+/, '')));
  if (missing.length > 0) return { kind: 'malformed', problem: `${file}: manifest.json names files the archive lacks: ${missing.join(', ')}` };
  if (manifest.length > 1) return { kind: 'malformed', problem: `${file}: the archive holds ${manifest.length} images; publish one image per output` };
  return { kind: 'image', image: { format: 'docker-archive', source: `docker-archive:${file}` } };
}

/** An OCI image layout: oci-layout, index.json and the blobs it names. */
async function detectOciLayout(dir: string): Promise<ImageDetection> {
  const layout = await readFile(path.join(dir, 'oci-layout'), 'utf8').catch(() => undefined);
  if (layout === undefined) return { kind: 'not-an-image' };
  if (parsed(z.object({ imageLayoutVersion: z.string() }).loose(), layout) === undefined)
    return { kind: 'malformed', problem: `${dir}: oci-layout has no imageLayoutVersion` };
  const rawIndex = await readFile(path.join(dir, 'index.json')).catch(() => undefined);
  const index = rawIndex === undefined ? undefined : parsed(ociIndexSchema, rawIndex);
  if (index === undefined) return { kind: 'malformed', problem: `${dir}: index.json is missing or lists no manifests` };
  if (index.manifests.length > 1)
    return { kind: 'malformed', problem: `${dir}: index.json lists ${index.manifests.length} manifests; publish one image per output` };
  const [algorithm, hex] = index.manifests[0]!.digest.split(':') as [string, string];
  const blob = await stat(path.join(dir, 'blobs', algorithm, hex)).catch(() => undefined);
  if (blob === undefined || !blob.isFile()) return { kind: 'malformed', problem: `${dir}: the manifest blob ${algorithm}:${hex} is not under blobs/` };
  return { kind: 'image', image: { format: 'oci', source: `oci:${dir}` } };
}

/** Looks at an output in the coordinator's store: a file may be a docker-archive, a directory an OCI layout; anything else is not an image. */
export async function detectImage(outputPath: string): Promise<ImageDetection> {
  const info = await stat(outputPath);
  if (info.isDirectory()) return detectOciLayout(outputPath);
  if (info.isFile()) return detectDockerArchive(outputPath);
  return { kind: 'not-an-image' };
}
