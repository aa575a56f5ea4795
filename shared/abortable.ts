/**
 * Waits for `promise` unless `signal` aborts first; then rejects with the
 * signal's reason, or with what `onAbort` makes of it (e.g. an error naming
 * the dependency that did not answer). For calls that take no signal of their
 * own (msal's token request): the call itself may finish later, but no poll waits on it.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, onAbort?: (reason: unknown) => Error): Promise<T> {
  if (!signal) return promise;
  const why = () => (onAbort ? onAbort(signal.reason) : (signal.reason as Error));
  if (signal.aborted) return Promise.reject(why());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(why());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
