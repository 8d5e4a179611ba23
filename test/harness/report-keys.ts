import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuthorizedKeys } from '@nixfarm/coordinator';
import { ReportSigner, ValidationError, loadOrCreateSshKey } from '@nixfarm/shared';

export interface ReportKeyPair {
  signer: ReportSigner;
  publicKeyLine: string;
  fingerprint: string;
}

/** A fresh ed25519 key (in a private temp dir) that signs reports as a worker's would. */
export async function reportKeyPair(name = 'test-worker'): Promise<ReportKeyPair> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nixfarm-report-key-'));
  const key = await loadOrCreateSshKey(path.join(dir, 'id_ed25519'), name, (file, reason) => new ValidationError(`${file}: ${reason}`));
  return { signer: ReportSigner.fromPrivateKey(key.privateKey), publicKeyLine: key.publicKeyLine, fingerprint: key.fingerprint };
}

/** authorized_keys in a fresh state dir, holding these keys. */
export async function authorizedKeysWith(...keys: readonly ReportKeyPair[]): Promise<AuthorizedKeys> {
  const authorized = new AuthorizedKeys(mkdtempSync(path.join(os.tmpdir(), 'nixfarm-authorized-')));
  for (const key of keys) await authorized.add(key.publicKeyLine);
  return authorized;
}
