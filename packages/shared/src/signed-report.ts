import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { z } from 'zod';
import { workerNameSchema } from './schemas/common.js';
import { sshKeyFingerprint } from './ssh-public-key.js';

/**
 * The envelope of a signed worker report: every entry a worker adds to a
 * Redis stream the coordinator trusts (a worker event, a build-log batch)
 * carries, beside its payload, one field `sig` holding this JSON. The
 * signature covers the canonical bytes (reportSigningBytes): a version tag,
 * the stream the entry was posted to (so an entry cannot be moved to another
 * stream), the worker it speaks for, the signing key's fingerprint, the
 * publisher's session and sequence number and the signing time, then the
 * payload's exact bytes as posted. One owner for the format: workers sign
 * here, the coordinator verifies here.
 */
export const REPORT_SIGNATURE_FIELD = 'sig';
const VERSION_TAG = 'nixfarm-report-v1';

/** How far a report's signing time may be from the time Redis stored it (the stream entry id): clocks differ, and a copy posted later is a replay. */
export const REPORT_TIME_WINDOW_MS = 60 * 60 * 1000;

export const reportSignatureSchema = z.object({
  v: z.literal(1),
  /** the worker the report speaks for (the payload must name the same) */
  worker: workerNameSchema,
  /** OpenSSH fingerprint of the signing key (SHA256:...) */
  key: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/),
  /** one publisher's life: its sequence numbers only grow */
  session: z.string().regex(/^[A-Za-z0-9_-]{16,64}$/),
  seq: z.number().int().positive(),
  /** signing time, ms since the epoch */
  at: z.number().int().nonnegative(),
  /** the signature, base64 */
  sig: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/),
});
export type ReportSignature = z.infer<typeof reportSignatureSchema>;

/** The bytes a signature covers. Every field before the payload is newline-free by its schema, so the layout is unambiguous. */
function reportSigningBytes(stream: string, payload: string, fields: Omit<ReportSignature, 'sig' | 'v'>): Buffer {
  return Buffer.from(`${VERSION_TAG}\n${stream}\n${fields.worker}\n${fields.key}\n${fields.session}\n${fields.seq}\n${fields.at}\n${payload}`, 'utf8');
}

/** Node's digest for each SSH key type's signature (ed25519 takes none). */
function digestOf(type: string): string | null {
  switch (type) {
    case 'ssh-ed25519':
      return null;
    case 'ecdsa-sha2-nistp384':
      return 'sha384';
    case 'ecdsa-sha2-nistp521':
      return 'sha512';
    default:
      return 'sha256';
  }
}

function parsedKey(text: string): ParsedKey {
  const parsed = ssh2.utils.parseKey(text);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key === undefined || key instanceof Error) throw new Error(`not an SSH key (${key instanceof Error ? key.message : 'empty'})`);
  return key;
}

/** A public key ready to verify reports: its KeyObject made once (ssh2's own verify re-parses a PEM on every call, ~4x slower). */
export interface ReportKey {
  fingerprint: string;
  verify(data: Buffer, signature: Buffer): boolean;
}

export function reportKeyOf(key: ParsedKey): ReportKey {
  const object = createPublicKey(key.getPublicPEM());
  const digest = digestOf(key.type);
  return {
    fingerprint: sshKeyFingerprint(key.getPublicSSH()),
    verify: (data, signature) => {
      try {
        return verify(digest, data, object, signature);
      } catch {
        return false;
      }
    },
  };
}

/**
 * Signs one publisher's reports with an SSH private key. Each signer is one
 * session: a fresh random id and a sequence that grows by one per report. A
 * publisher that posts from one connection signs and posts in the same tick,
 * so its stream order is its sequence order, which is what the coordinator
 * needs to tell a replay from a late report.
 */
export class ReportSigner {
  readonly session: string;
  private seq = 0;

  private constructor(
    private readonly key: KeyObject,
    private readonly digest: string | null,
    /** the public half: what verifies this signer's reports */
    readonly reportKey: ReportKey,
  ) {
    this.session = randomBytes(12).toString('base64url');
  }

  /** From an OpenSSH (or PEM) private key's text. */
  static fromPrivateKey(text: string): ReportSigner {
    const parsed = parsedKey(text);
    const pem = parsed.getPrivatePEM();
    if (!parsed.isPrivateKey() || pem === null) throw new Error('a report signer needs a private key');
    return new ReportSigner(createPrivateKey(pem), digestOf(parsed.type), reportKeyOf(parsed));
  }

  get fingerprint(): string {
    return this.reportKey.fingerprint;
  }

  /** Another session with the same key: for a publisher on another connection, whose order this one's cannot vouch for. */
  newSession(): ReportSigner {
    return new ReportSigner(this.key, this.digest, this.reportKey);
  }

  /** The `sig` field for a payload posted to `stream` on behalf of `worker`. */
  sign(stream: string, worker: string, payload: string, at: number = Date.now()): string {
    this.seq += 1;
    const fields = { worker, key: this.fingerprint, session: this.session, seq: this.seq, at };
    const signature = sign(this.digest, reportSigningBytes(stream, payload, fields), this.key).toString('base64');
    return JSON.stringify({ v: 1, ...fields, sig: signature } satisfies ReportSignature);
  }
}

/** Why a report is dropped; the label of nixfarm_reports_rejected_total. */
export const REPORT_REJECTIONS = [
  'unsigned',
  'malformed-signature',
  'unknown-key',
  'bad-signature',
  'worker-mismatch',
  'outside-time-window',
  'replayed',
  'worker-bound-to-another-key',
] as const;
export type ReportRejection = (typeof REPORT_REJECTIONS)[number];

export type SignatureCheck = { ok: true; signature: ReportSignature } | { ok: false; reason: ReportRejection; signature?: ReportSignature; detail?: string };

/**
 * Checks what a single entry can show by itself: the envelope is well-formed,
 * its key is one `keyFor` knows, the signature holds over stream + payload, and
 * it was signed near the time Redis stored it (`storedAt`, from the entry id).
 * Replays within the window and which key speaks for which worker need the
 * coordinator's memory: its report gate checks those.
 */
export function checkReportSignature(
  stream: string,
  payload: string,
  field: string | undefined,
  storedAt: number,
  keyFor: (fingerprint: string) => ReportKey | undefined,
): SignatureCheck {
  if (field === undefined) return { ok: false, reason: 'unsigned' };
  let parsed;
  try {
    parsed = reportSignatureSchema.safeParse(JSON.parse(field));
  } catch {
    parsed = undefined;
  }
  if (parsed?.success !== true) return { ok: false, reason: 'malformed-signature' };
  const signature = parsed.data;
  const key = keyFor(signature.key);
  if (key === undefined) return { ok: false, reason: 'unknown-key', signature };
  const { sig, v: _v, ...fields } = signature;
  if (!key.verify(reportSigningBytes(stream, payload, fields), Buffer.from(sig, 'base64'))) return { ok: false, reason: 'bad-signature', signature };
  if (Math.abs(storedAt - signature.at) > REPORT_TIME_WINDOW_MS) {
    return { ok: false, reason: 'outside-time-window', signature, detail: `signed ${Math.round((storedAt - signature.at) / 1000)} s before Redis stored it` };
  }
  return { ok: true, signature };
}

/** The time Redis stored a stream entry, from its id ("<ms>-<n>"). */
export function streamEntryTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}
