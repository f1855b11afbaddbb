/**
 * @module `pool()`: runs an async function over items with a bound on how many run at once.
 * Rejects with the first failure (as `Promise.all` does); from then on no new item is started.
 */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  await Promise.all(
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
}
