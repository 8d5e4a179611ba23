import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { REPO_ROOT } from './test-farm.js';

/** Debian's chromium (scripts/ensure-machine.mjs installs it); playwright-core never downloads a browser of its own here. */
const CHROMIUM = process.env.NIXFARM_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Flags for a closed network: without the networking ones Chromium keeps
 * reaching for Google's services and floods the sandbox with refused
 * connections. Playwright gives each launch a fresh user-data-dir.
 */
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: run \`node scripts/ensure-machine.mjs\` (it installs Debian's chromium) or set NIXFARM_CHROMIUM`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
}

/** Where tests leave screenshots: NIXFARM_TEST_ARTIFACTS, or test-artifacts/ in the repository (ignored by git). */
export function artifactDir(name: string): string {
  const dir = join(process.env.NIXFARM_TEST_ARTIFACTS ?? join(REPO_ROOT, 'test-artifacts'), name);
  mkdirSync(dir, { recursive: true });
  return dir;
}
