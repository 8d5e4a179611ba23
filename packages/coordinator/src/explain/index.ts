export * from './explanation.js';
export * from './derivation-locator.js';
export { WhyService, DerivationNotFoundError, AmbiguousQueryError, type WhyAnswer, type WhyServiceDeps } from './why-service.js';
