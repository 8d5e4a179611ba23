export * from './build-executor.js';
export * from './byte-tally.js';
export * from './derivation-builder.js';
export * from './serve-builder.js';
export * from './output-hashes.js';
export * from './worker-event-publisher.js';
export * from './aborted-attempt.js';
export * from './log-tail.js';
