import { STORE_DIR, hashPart, type ServePathInfo } from '@nixfarm/shared';

/** The compression the cache's NARs come in: Nix 2.8 reads zstd (checked here with a file:// cache), and zstd -3 keeps pace with a disk. */
const NAR_COMPRESSION = 'zstd';

/** Where a path's compressed NAR is, relative to the cache's root (the narinfo's URL). */
function narUrl(storePath: string): string {
  return `nar/${hashPart(storePath)}.nar.zst`;
}

/** `/nix/store/abc-x` -> `abc-x`: narinfo names other paths by their base name. */
function baseName(storePath: string): string {
  return storePath.slice(STORE_DIR.length + 1);
}

/**
 * A narinfo as Nix's binary cache substituter reads it, from the store's own
 * path info: the fields Nix signs (StorePath, NarHash, NarSize, References)
 * and each signature the store holds. FileHash and FileSize are left out:
 * the NAR is compressed as it is sent, so they are not known when the
 * narinfo is asked for; Nix checks the NarHash of what it unpacks, and that
 * hash is what the signature covers.
 */
export function renderNarinfo(info: ServePathInfo & { narHash: string }): string {
  const lines = [
    `StorePath: ${info.path}`,
    `URL: ${narUrl(info.path)}`,
    `Compression: ${NAR_COMPRESSION}`,
    `NarHash: ${info.narHash}`,
    `NarSize: ${info.narSize}`,
    `References: ${info.references.map(baseName).join(' ')}`,
  ];
  if (info.deriver !== undefined) lines.push(`Deriver: ${baseName(info.deriver)}`);
  for (const sig of info.sigs) lines.push(`Sig: ${sig}`);
  if (info.ca !== undefined) lines.push(`CA: ${info.ca}`);
  return `${lines.join('\n')}\n`;
}
