/** @module The host-wide checkpoint engine: job scheduler, scheduling policies, metrics. */
export * from './scheduler.js';
export * from './policy.js';
export * from './metrics.js';
