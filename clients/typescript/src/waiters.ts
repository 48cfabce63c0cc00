// Results by seq, for the streams that tag each request with one (a Work
// session's reports, an EnqueueStream's jobs): a request gets the next seq
// and a promise; the reader settles the promise of each result's seq; when
// the stream ends, every request still waiting rejects with its error.

interface Waiter<T> {
  resolve: (result: T) => void;
  reject: (error: Error) => void;
}

export class Waiters<T> {
  private seq = 0;
  private readonly pending = new Map<string, Waiter<T>>();

  /** The next seq, and the promise its result settles. */
  add(): [string, Promise<T>] {
    const seq = String(++this.seq);
    const answered = new Promise<T>((resolve, reject) => this.pending.set(seq, { resolve, reject }));
    return [seq, answered];
  }

  /** The result of request `seq` came (an unknown seq is ignored). */
  resolve(seq: string, result: T): void {
    const waiter = this.pending.get(seq);
    this.pending.delete(seq);
    waiter?.resolve(result);
  }

  /** Request `seq` failed on its own (it gave up waiting). */
  reject(seq: string, error: Error): void {
    const waiter = this.pending.get(seq);
    this.pending.delete(seq);
    waiter?.reject(error);
  }

  /** The stream ended: every request still waiting rejects with `error`. */
  failAll(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}
