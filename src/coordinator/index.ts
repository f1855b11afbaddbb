/** @module The coordinator: LLM API proxy, turn boundaries, response gates. */
export * from './proxy.js';
export * from './turn-hooks.js';
export * from './turn-rules.js';
export * from './sandbox-resolver.js';
export * from './http-headers.js';
export * from './scheduler-hooks.js';
