/**
 * @module `pool()`: runs an async function over items with a bound on how many run at once.
 * Rejects with the first failure; from then on no new item is started, and it rejects only once
 * the items already started have finished (so a caller's `finally` never frees what they use).
 */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const workers = await Promise.allSettled(
    Array.from({ length: Math.min(Math.max(1, concurrency), items.length) }, async () => {
      while (!failed && next < items.length) {
        const i = next++;
        try {
          await fn(items[i]!, i);
        } catch (err) {
          failed = true;
          throw err;
        }
      }
    }),
  );
  const failure = workers.find((w): w is PromiseRejectedResult => w.status === 'rejected');
  if (failure) throw failure.reason;
}
