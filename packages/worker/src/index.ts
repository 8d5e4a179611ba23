export * from './farm-worker.js';
export * from './worker-nix.js';
export * from './store-copier.js';
export * from './job-runner.js';
export * from './job-fetcher.js';
export * from './ssh-identity.js';
export * from './coordinator-probe.js';
export * from './placement-gate.js';
