/** @module The root logger. Components take a child with `{ component }`. */
import { pino, type Logger } from 'pino';

export type { Logger };

export const rootLogger: Logger = pino(
  { level: process.env.CRAB_LOG_LEVEL ?? 'warn', base: undefined },
  pino.destination(2),
);
