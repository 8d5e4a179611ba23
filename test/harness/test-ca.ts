import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { onProcessExit, removeTreeSync } from './process-cleanup.js';

const execFileAsync = promisify(execFile);

/** A certificate and its key, as files. */
export interface CertFiles {
  cert: string;
  key: string;
}

/** Everything a TLS test needs, made by the test with openssl: nothing from the system's trust store. */
export interface TestCa {
  dir: string;
  /** the test CA's certificate: what --redis-ca and redis's tls-ca-cert-file take */
  caCert: string;
  /** a server certificate for 127.0.0.1 and localhost, signed by the CA, valid now */
  server: CertFiles;
  /** the same names, signed by the CA, but it expired on 2020-01-02 */
  expired: CertFiles;
  /** signed by the CA, valid, for wrong.example only: a host name mismatch at 127.0.0.1 */
  wrongHost: CertFiles;
  /** a client certificate signed by the CA (CN nixfarm-client) */
  client: CertFiles;
  /** another CA that signed none of the above: trusting only it is an unknown CA */
  otherCaCert: string;
  /** a client certificate signed by the other CA: a server trusting only the test CA refuses it */
  strangerClient: CertFiles;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** `openssl ca` needs a database and a policy; copy_extensions keeps each request's subjectAltName and usages. */
function caConfig(dir: string): string {
  return [
    '[ca]',
    'default_ca = test_ca',
    '[test_ca]',
    `database = ${join(dir, 'index.txt')}`,
    `new_certs_dir = ${join(dir, 'issued')}`,
    `serial = ${join(dir, 'serial')}`,
    'default_md = sha256',
    'policy = policy_any',
    'copy_extensions = copy',
    'unique_subject = no',
    '[policy_any]',
    'commonName = supplied',
    '',
  ].join('\n');
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await execFileAsync('openssl', args);
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`openssl ${args[0]} failed: ${(error as Error).message}\n${stderr}`);
  }
}

async function makeCa(dir: string, name: string, subject: string): Promise<CertFiles> {
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  await openssl([
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    files.key,
    '-out',
    files.cert,
    '-days',
    '3650',
    '-subj',
    `/CN=${subject}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return files;
}

interface LeafSpec {
  name: string;
  cn: string;
  /** subjectAltName value, like IP:127.0.0.1,DNS:localhost */
  altNames?: string;
  usage: 'serverAuth' | 'clientAuth';
  /** openssl ca's -startdate/-enddate (YYYYMMDDHHMMSSZ); default: from now for a year */
  dates?: { start: string; end: string };
}

async function makeLeaf(dir: string, ca: CertFiles, spec: LeafSpec): Promise<CertFiles> {
  const files = { cert: join(dir, `${spec.name}.crt`), key: join(dir, `${spec.name}.key`) };
  const csr = join(dir, `${spec.name}.csr`);
  const extensions = ['-addext', `extendedKeyUsage=${spec.usage}`];
  if (spec.altNames !== undefined) extensions.push('-addext', `subjectAltName=${spec.altNames}`);
  await openssl(['req', ...EC_KEY, '-keyout', files.key, '-out', csr, '-subj', `/CN=${spec.cn}`, ...extensions]);
  const dates = spec.dates === undefined ? ['-days', '365'] : ['-startdate', spec.dates.start, '-enddate', spec.dates.end];
  await openssl(['ca', '-batch', '-notext', '-config', join(dir, 'ca.cnf'), '-cert', ca.cert, '-keyfile', ca.key, '-in', csr, '-out', files.cert, ...dates]);
  return files;
}

/**
 * Makes a test CA and the certificates the TLS tests use, in a fresh temp
 * dir removed at exit. EC keys: each takes milliseconds, not the seconds of RSA.
 */
export async function makeTestCa(): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'nixfarm-ca-'));
  onProcessExit(() => removeTreeSync(dir));
  mkdirSync(join(dir, 'issued'));
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(join(dir, 'ca.cnf'), caConfig(dir));
  const ca = await makeCa(dir, 'ca', 'nixfarm test CA');
  const other = await makeCa(dir, 'other-ca', 'some other CA');
  const local = 'IP:127.0.0.1,DNS:localhost';
  return {
    dir,
    caCert: ca.cert,
    server: await makeLeaf(dir, ca, { name: 'server', cn: 'localhost', altNames: local, usage: 'serverAuth' }),
    expired: await makeLeaf(dir, ca, {
      name: 'expired',
      cn: 'localhost',
      altNames: local,
      usage: 'serverAuth',
      dates: { start: '20200101000000Z', end: '20200102000000Z' },
    }),
    wrongHost: await makeLeaf(dir, ca, { name: 'wrong-host', cn: 'wrong.example', altNames: 'DNS:wrong.example', usage: 'serverAuth' }),
    client: await makeLeaf(dir, ca, { name: 'client', cn: 'nixfarm-client', usage: 'clientAuth' }),
    otherCaCert: other.cert,
    strangerClient: await makeLeaf(dir, other, { name: 'stranger-client', cn: 'stranger', usage: 'clientAuth' }),
  };
}
