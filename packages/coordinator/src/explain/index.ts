export * from './explanation.js';
export * from './derivation-locator.js';
export { WhyService, DerivationNotFoundError, AmbiguousQueryError, type WhyAnswer, type WhyServiceDeps, type QueueLookup } from './why-service.js';
