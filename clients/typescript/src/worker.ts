// The worker: handlers registered by job type, run on one Work session
// with the slots its credit grants (docs/worker-protocol.md).
//
// - A handler gets the job and an AbortSignal, aborted when the attempt must
//   stop: the job's timeout, an operator's cancel (an Extend answered
//   cancel_requested: the job is Nacked dead and ends CANCELLED), a lost
//   lease (no report), the end of a drain (the job is Released).
// - Each running job's lease is extended from a timer of its own every third
//   of the lease duration, during a drain too.
// - Resolving Acks, carrying what the handler resolved to as the job's
//   result (a Buffer or Uint8Array as it is, a string as UTF-8, anything
//   else but undefined and null as JSON; at most 64 KiB, and JSON-able, or
//   the job is Nacked dead saying so); throwing Retry Nacks with its delay, Dead Nacks
//   dead, anything else Nacks with `Name: message`.
// - `job.progress(percent, message)` reports how far the job has come
//   without waiting: the job's own sender sends the latest report, one at
//   a time, and the Ack waits for it. After a timeout the job
//   is Nacked `timed out after ...` once the handler settled, or after a 3 s
//   grace if it does not.
// - SIGTERM or SIGINT drains: credit 0, running jobs finish within
//   drainTimeout, the rest are aborted and released; run() resolves 0. A
//   second signal exits 130 at once.
// - The session reconnects with backoff (100 ms doubling to 5 s, +-25%)
//   naming the leases it holds; reports go on the session, or by the unary
//   calls between sessions, retried until the lease would expire. Acks go
//   in batches by AckBatch.
import { hostname } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { BrokerClient, duration, secondsOf, type LeasedJob, type WorkResponse, type WorkResult } from "./proto.js";
import { BrokerError } from "./producer.js";
import { CHANNEL_OPTIONS, Settings, type SettingsInit } from "./settings.js";
import { Waiters } from "./waiters.js";

const STOP_GRACE = 3_000;
const RESULT_TIMEOUT = 5_000;
/** How long a Release of a job that never started is retried. */
const RELEASE_RETRY = 2_000;
/** Monotonic milliseconds: lease expiry never follows the wall clock. */
const now = () => performance.now();
const LEASE_LOST = new Set([grpc.status.FAILED_PRECONDITION, grpc.status.NOT_FOUND]);
const UNAVAILABLE = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.UNKNOWN,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.CANCELLED,
  grpc.status.ABORTED,
  grpc.status.RESOURCE_EXHAUSTED,
]);

/** Throw to have the job retried after `after` seconds (not the broker's backoff). */
export class Retry extends Error {
  override name = "Retry";
  constructor(
    message: string,
    readonly after?: number,
  ) {
    super(message);
  }
}

/** Throw when no retry can help: the job is DEAD at once. */
export class Dead extends Error {
  override name = "Dead";
}

export interface Job {
  id: string;
  queue: string;
  type: string;
  payload: Buffer;
  headers: Record<string, string>;
  attempt: number;
  maxAttempts: number;
  /** Seconds. */
  timeout: number;
  /** Reports how far the job has come: `percent` (0 to 100) and a short
   * text, or anything else as JSON (at most 1 KiB). Returns at once; the
   * broker shows the latest report (`sluice jobs get`, the dashboard). */
  progress(percent: number, message?: unknown): void;
}

/** A handler resolves to the job's result (or to nothing). */
export type Handler = (job: Job, signal: AbortSignal) => unknown;

/** The broker's bounds (its limits crate). */
export const MAX_RESULT_BYTES = 64 * 1024;
export const MAX_PROGRESS_MESSAGE_BYTES = 1024;

/** What a handler resolved to, as the bytes of its result: a Buffer or
 * Uint8Array as it is, a string as UTF-8, undefined and null as none,
 * anything else as JSON (a TypeError when it has none). */
export function resultBytes(value: unknown): Buffer {
  if (value === undefined || value === null) return Buffer.alloc(0);
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (typeof value === "string") return Buffer.from(value, "utf8");
  // Throws on a cycle or a BigInt; a function or a symbol has no JSON.
  const json: unknown = JSON.stringify(value);
  if (typeof json !== "string") throw new TypeError(`a ${typeof value} has no JSON form`);
  return Buffer.from(json, "utf8");
}

/** A progress report checked as the broker checks it. */
function progressReport(percent: number, message: unknown): { percent: number; message: string } {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new RangeError(`percent must be an integer from 0 to 100, not ${percent}`);
  }
  const text = typeof message === "string" ? message : JSON.stringify(message);
  if (Buffer.byteLength(text) > MAX_PROGRESS_MESSAGE_BYTES) {
    throw new RangeError(`a progress message is at most ${MAX_PROGRESS_MESSAGE_BYTES} bytes`);
  }
  return { percent, message: text };
}

/** Sends a job's latest progress, one report at a time. */
class ProgressSender {
  private latest?: { percent: number; message: string };
  private sending?: Promise<void>;

  constructor(private readonly send: (report: { percent: number; message: string }) => Promise<void>) {}

  handOver(report: { percent: number; message: string }): void {
    this.latest = report;
    this.sending ??= this.loop();
  }

  private async loop(): Promise<void> {
    while (this.latest) {
      const report = this.latest;
      this.latest = undefined;
      await this.send(report).catch(() => undefined);
    }
    this.sending = undefined;
  }

  /** Waits (bounded) until the latest report was answered. */
  async flush(): Promise<void> {
    if (this.sending) await Promise.race([this.sending, bound(RESULT_TIMEOUT)]);
  }
}

export interface WorkerOptions extends SettingsInit {
  queues?: string[];
  concurrency?: number;
  /** Seconds (30). */
  leaseDuration?: number;
  /** Seconds (25). */
  drainTimeout?: number;
  workerId?: string;
  /** Where the worker logs (default: console.error); never a payload or token. */
  log?: (message: string, fields?: Record<string, unknown>) => void;
}

export function backoff(failures: number): number {
  return Math.min(100 * 2 ** failures, 5_000) * (0.75 + Math.random() * 0.5);
}

/** A duration as the Rust worker writes it: `1s`, `1m 30s`, `1500ms`. */
export function humantime(seconds: number): string {
  if (!Number.isInteger(seconds)) return `${Math.round(seconds * 1000)}ms`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return [h ? `${h}h` : "", m ? `${m}m` : "", s ? `${s}s` : ""].filter(Boolean).join(" ") || "0s";
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A wait that does not keep the process alive: for the bound of a race
 * whose other side does. */
const bound = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** `ms`, or less once `signal` aborts (the timer is cleared then). */
function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

type Reason = "timeout" | "cancel" | "lost" | "drain";

interface Running {
  job: Job;
  leaseId: string;
  /** now() when the lease runs out unless extended. */
  expiry: number;
  done: Promise<void>;
  progress: ProgressSender;
  /** Stops the attempt, saying why (set once it runs). */
  halt: (why: Reason) => void;
  /** The attempt is over (reported, or given up). */
  ended: boolean;
}

/** Acks in batches (docs/worker-protocol.md, S7): those made in one turn
 * of the event loop go in one AckBatch call, each answered as its own Ack
 * would be. A message per Ack on the session costs each its own
 * serialization and frame; batched, the jobs set the pace. */
/** Most Acks in one AckBatch (the broker's limit). */
const MAX_ACKS = 10_000;
/** Most bytes of results in one AckBatch: the broker takes a message of at
 * most its --max-payload + 512 KiB, and a result may be 64 KiB. */
const MAX_BATCH_BYTES = 512 * 1024;
/** What an Ack costs in a batch besides its result (two ids, framing). */
const ACK_OVERHEAD = 100;

/** `items` in order, cut into batches the broker takes: at most MAX_ACKS
 * items and MAX_BATCH_BYTES of `size` each. */
export function ackBatches<T>(items: T[], size: (item: T) => number): T[][] {
  const out: T[][] = [];
  let bytes = 0;
  for (const item of items) {
    const cost = size(item) + ACK_OVERHEAD;
    const last = out[out.length - 1];
    if (!last || last.length >= MAX_ACKS || bytes + cost > MAX_BATCH_BYTES) {
      out.push([item]);
      bytes = cost;
    } else {
      last.push(item);
      bytes += cost;
    }
  }
  return out;
}

interface PendingAck {
  req: Record<string, unknown>;
  resolve: () => void;
  reject: (e: Error) => void;
}

class AckBatches {
  private pending: PendingAck[] = [];

  constructor(
    private readonly client: () => grpc.Client | undefined,
    private readonly metadata: () => grpc.Metadata,
  ) {}

  ack(req: Record<string, unknown>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ req, resolve, reject });
      if (this.pending.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const pending = this.pending;
    this.pending = [];
    const size = (a: PendingAck) => (a.req.result instanceof Uint8Array ? a.req.result.length : 0);
    for (const batch of ackBatches(pending, size)) this.send(batch);
  }

  private send(batch: PendingAck[]): void {
    const client = this.client();
    const failAll = (e: BrokerError) => batch.forEach((a) => a.reject(e));
    if (!client) return failAll(new BrokerError(grpc.status.UNAVAILABLE, "no channel to the broker"));
    type AckBatch = (
      r: unknown,
      m: grpc.Metadata,
      o: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null, res: { results: { code: number; message: string }[] }) => void,
    ) => void;
    const call = (client as unknown as { AckBatch: AckBatch }).AckBatch.bind(client);
    call({ acks: batch.map((a) => a.req) }, this.metadata(), { deadline: Date.now() + RESULT_TIMEOUT }, (e, res) => {
      if (e) return failAll(BrokerError.of(e));
      batch.forEach((a, i) => {
        const r = res.results[i];
        if (r && r.code === 0) a.resolve();
        else a.reject(new BrokerError(r ? r.code : grpc.status.INTERNAL, r ? r.message : "no result for this ack"));
      });
    });
  }
}

/** One Work session: writes with a seq, results handed back by seq. */
class Session {
  private readonly waiters = new Waiters<WorkResult>();
  ended = false;
  readonly closed: Promise<void>;

  constructor(
    private readonly call: grpc.ClientDuplexStream<unknown, WorkResponse>,
    onJobs: (jobs: LeasedJob[]) => void,
    onDraining: () => void,
    log: (message: string) => void,
  ) {
    call.on("data", (response: WorkResponse) => {
      for (const result of response.results) this.waiters.resolve(String(result.seq), result);
      if (response.jobs.length) onJobs(response.jobs);
      if (response.draining) {
        log("the broker drains: the session takes no more jobs");
        onDraining();
      }
    });
    this.closed = new Promise((resolve) => {
      const end = () => {
        if (this.ended) return;
        this.ended = true;
        this.waiters.failAll(new BrokerError(grpc.status.UNAVAILABLE, "the session ended"));
        resolve();
      };
      call.on("error", (e: grpc.ServiceError) => {
        if (e.code !== grpc.status.CANCELLED) log(`the session broke: ${grpc.status[e.code]}: ${e.details}`);
        end();
      });
      call.on("end", end);
      call.on("close", end);
    });
  }

  /** Opens a session; rejects with BrokerError when the broker refuses it. */
  static open(
    client: grpc.Client,
    metadata: grpc.Metadata,
    open: unknown,
    onJobs: (jobs: LeasedJob[]) => void,
    onDraining: () => void,
    log: (message: string) => void,
  ): Promise<Session> {
    const call = (client as unknown as { Work: (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, WorkResponse> }).Work(metadata);
    return new Promise((resolve, reject) => {
      const refused = (e: grpc.ServiceError) => reject(BrokerError.of(e));
      call.once("error", refused);
      call.once("metadata", () => {
        call.removeListener("error", refused);
        resolve(new Session(call, onJobs, onDraining, log));
      });
      call.write({ seq: 0, open });
    });
  }

  /** One report (`{ack}`, `{nack}`, `{extend}`, `{release}`, `{progress}`, `{credit}`) and its result. */
  report(kind: Record<string, unknown>): Promise<WorkResult> {
    if (this.ended) return Promise.reject(new BrokerError(grpc.status.UNAVAILABLE, "the session ended"));
    const [seq, answered] = this.waiters.add();
    const timer = setTimeout(
      () => this.waiters.reject(seq, new BrokerError(grpc.status.UNAVAILABLE, "no result from the broker in time")),
      RESULT_TIMEOUT,
    );
    this.call.write({ seq, ...kind });
    return answered.then(
      (r) => {
        clearTimeout(timer);
        if (r.code !== 0) throw new BrokerError(r.code, r.message);
        return r;
      },
      (e: unknown) => {
        clearTimeout(timer);
        throw e;
      },
    );
  }

  /** Closes the worker's side and waits (bounded) for the call to end. */
  async close(): Promise<void> {
    if (!this.ended) {
      this.call.end();
      await Promise.race([this.closed, bound(RESULT_TIMEOUT)]);
    }
    this.cancel();
  }

  cancel(): void {
    this.call.cancel();
  }
}

export class Worker {
  readonly settings: Settings;
  readonly queues: string[];
  readonly concurrency: number;
  readonly leaseDuration: number;
  readonly drainTimeout: number;
  readonly workerId: string;
  processed = 0;
  failed = 0;
  released = 0;
  private readonly handlers = new Map<string, Handler>();
  private readonly running = new Map<string, Running>();
  private readonly log: (message: string, fields?: Record<string, unknown>) => void;
  private client?: grpc.Client;
  private session?: Session;
  private draining = false;
  private refusal?: BrokerError;
  /** Releases of jobs that never started, awaited by the drain. */
  private readonly releases = new Set<Promise<void>>();
  private readonly acks = new AckBatches(
    () => this.client,
    () => this.settings.metadata(),
  );

  constructor(options: WorkerOptions = {}) {
    this.settings = Settings.fromEnv(options);
    this.queues = options.queues ?? ["default"];
    this.concurrency = options.concurrency ?? 1;
    this.leaseDuration = options.leaseDuration ?? 30;
    this.drainTimeout = options.drainTimeout ?? 25;
    this.workerId = options.workerId ?? `${hostname()}-${process.pid}`;
    this.log =
      options.log ??
      ((message, fields) => console.error(fields ? `${message} ${JSON.stringify(fields)}` : message));
    if (!(this.concurrency >= 1 && this.concurrency <= 65_536)) throw new RangeError("concurrency must be 1 to 65536");
    if (!(this.leaseDuration >= 1 && this.leaseDuration <= 86_400)) throw new RangeError("leaseDuration must be 1s to 24h");
  }

  /** Registers `handler` for `jobType`. */
  handle(jobType: string, handler: Handler): this {
    this.handlers.set(jobType, handler);
    return this;
  }

  /** Runs until SIGTERM or SIGINT and the drain: 0, or 1 when the broker
   * refused the session for good. A second signal exits 130 at once. */
  async run(): Promise<number> {
    const stop = new AbortController();
    const onSignal = (name: string) => {
      if (stop.signal.aborted) {
        this.log(`second ${name}: exiting at once`);
        process.exit(130);
      }
      this.log(`${name}: draining`);
      stop.abort();
    };
    const term = () => onSignal("SIGTERM");
    const int = () => onSignal("SIGINT");
    process.on("SIGTERM", term);
    process.on("SIGINT", int);
    try {
      await this.serve(stop.signal);
      return 0;
    } catch (e) {
      if (e instanceof BrokerError) return 1;
      throw e;
    } finally {
      process.removeListener("SIGTERM", term);
      process.removeListener("SIGINT", int);
    }
  }

  /** Runs jobs until `stop` aborts, then drains; rejects with BrokerError
   * when the broker refused the session for good. */
  async serve(stop: AbortSignal): Promise<void> {
    if (this.handlers.size === 0) throw new Error("no handler is registered");
    this.client = new BrokerClient(this.settings.target, this.settings.credentials(), CHANNEL_OPTIONS);
    // Aborted by `stop`, or by a refusal of the session.
    const halt = new AbortController();
    if (stop.aborted) halt.abort();
    stop.addEventListener("abort", () => halt.abort());
    const stopped = new Promise<void>((r) => (halt.signal.aborted ? r() : halt.signal.addEventListener("abort", () => r())));
    const sessions = this.sessions(halt, stopped);
    await stopped;
    await this.drain();
    await this.session?.close();
    await sessions;
    this.client.close();
    this.log(`worker stopped processed=${this.processed} failed=${this.failed} released=${this.released}`);
    if (this.refusal) throw this.refusal;
  }

  private async sessions(halt: AbortController, stopped: Promise<void>): Promise<void> {
    let failures = 0;
    while (!halt.signal.aborted) {
      const open = {
        worker_id: this.workerId,
        queues: this.queues,
        job_types: [...this.handlers.keys()].sort(),
        max_in_flight: this.concurrency,
        lease_duration: duration(this.leaseDuration),
        held_leases: [...this.running.values()].map((r) => ({ job_id: r.job.id, lease_id: r.leaseId })),
      };
      let draining!: () => void;
      const drained = new Promise<void>((r) => (draining = r));
      try {
        const session = await Session.open(this.client!, this.settings.metadata(), open, (jobs) => this.onJobs(jobs), () => draining(), this.log);
        this.log("session open");
        failures = 0;
        if (this.draining) {
          // Opened while the drain began: it takes no job either.
          await session.report({ credit: { window: 0 } }).catch(() => undefined);
        }
        // A draining broker's old session answers what it read.
        if (this.session) this.track(this.session.close());
        this.session = session;
        await Promise.race([session.closed, drained, stopped]);
        if (halt.signal.aborted) return;
        // A draining broker's session keeps taking reports until a new one opens.
        if (session.ended) this.session = undefined;
      } catch (e) {
        const err = BrokerError.of(e);
        if (!UNAVAILABLE.has(err.code)) {
          this.log(`the broker refuses the session: ${err.message}`);
          this.refusal = err;
          halt.abort();
          return;
        }
        this.log(`could not open the session (attempt ${failures + 1}): ${err.message}`);
      }
      const delay = backoff(failures);
      failures += 1;
      this.log(`reconnecting to the broker attempt=${failures} delay=${Math.round(delay)}ms`);
      await sleepUnless(delay, halt.signal);
    }
  }

  private onJobs(jobs: LeasedJob[]): void {
    for (const leased of jobs) {
      const m = leased.job;
      const progress = new ProgressSender(async (report) => {
        await this.report({ progress: { job_id: m.id, lease_id: leased.lease_id, ...report } });
      });
      const job: Job = {
        id: m.id,
        queue: m.queue,
        type: m.job_type,
        payload: m.payload,
        headers: m.headers,
        attempt: m.attempt,
        maxAttempts: m.max_attempts,
        timeout: secondsOf(m.timeout),
        progress: (percent, message = "") => {
          const report = progressReport(percent, message);
          // From a callback that outlived its attempt: nothing to report.
          if (!running.ended) progress.handOver(report);
        },
      };
      const running: Running = {
        job,
        leaseId: leased.lease_id,
        expiry: now() + this.leaseDuration * 1000,
        done: Promise.resolve(),
        progress,
        halt: () => undefined,
        ended: false,
      };
      if (this.draining || !this.handlers.has(job.type)) {
        this.track(this.release(running, RELEASE_RETRY));
        continue;
      }
      this.running.set(job.id, running);
      running.done = this.runJob(running)
        .catch((e: unknown) => this.log(`the job's attempt failed: ${String(e)}`, this.fields(job)))
        .finally(() => {
          running.ended = true;
          // The same job may run again here under a new lease.
          if (this.running.get(job.id) === running) this.running.delete(job.id);
        });
    }
  }

  /** A task the drain waits for. */
  private track(task: Promise<void>): void {
    const tracked = task.finally(() => this.releases.delete(tracked));
    this.releases.add(tracked);
  }

  private fields(job: Job): Record<string, unknown> {
    return { job_id: job.id, job_type: job.type, queue: job.queue, attempt: job.attempt, worker_id: this.workerId };
  }

  private async runJob(running: Running): Promise<void> {
    const { job } = running;
    const abort = new AbortController();
    let reason: Reason | undefined;
    const halt = (why: Reason) => {
      reason ??= why;
      abort.abort(new Error(why));
    };
    let heartbeat: NodeJS.Timeout | undefined;
    let finished = false;
    const beat = async () => {
      const sent = now();
      try {
        const result = await this.report({
          extend: { job_id: job.id, lease_id: running.leaseId, extend_by: duration(this.leaseDuration) },
        });
        running.expiry = sent + this.leaseDuration * 1000;
        if (result.extend?.cancel_requested) {
          this.log("the job was cancelled", this.fields(job));
          return halt("cancel");
        }
      } catch (e) {
        const err = BrokerError.of(e);
        if (LEASE_LOST.has(err.code)) return halt("lost");
        this.log(`heartbeat failed; the job keeps running: ${err.message}`, this.fields(job));
      }
      if (finished) return;
      if (now() >= running.expiry) return halt("lost");
      // Beats go on while a stopped handler has its grace.
      heartbeat = setTimeout(beat, (this.leaseDuration * 1000) / 3);
    };
    heartbeat = setTimeout(beat, (this.leaseDuration * 1000) / 3);
    running.halt = halt;
    const timeout = setTimeout(() => halt("timeout"), job.timeout * 1000);
    this.log("job started", this.fields(job));
    let error: unknown;
    let value: unknown;
    let settled = false;
    const work = (async () => this.handlers.get(job.type)!(job, abort.signal))().then(
      (resolved) => {
        settled = true;
        value = resolved;
      },
      (e: unknown) => {
        settled = true;
        error = e;
      },
    );
    try {
      const aborted = new Promise<void>((r) => abort.signal.addEventListener("abort", () => r()));
      await Promise.race([work, aborted]);
      if (!settled) await Promise.race([work, bound(STOP_GRACE)]);
      await running.progress.flush();
      if (reason === "lost") {
        this.log("lease lost: the job was stopped and is not reported", this.fields(job));
      } else if (reason === "drain") {
        await this.release(running);
      } else if (reason === "cancel") {
        await this.resolve(running, "nack", { error: "cancelled", dead: true });
      } else if (reason === "timeout") {
        await this.resolve(running, "nack", { error: `timed out after ${humantime(job.timeout)}` });
      } else if (error === undefined) {
        let result: Buffer;
        try {
          result = resultBytes(value);
        } catch (e) {
          const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
          await this.resolve(running, "nack", { error: `the handler's value cannot be a result: ${why}`, dead: true });
          return;
        }
        if (result.length > MAX_RESULT_BYTES) {
          const error = `the result is ${result.length} bytes, over the limit of ${MAX_RESULT_BYTES} bytes`;
          await this.resolve(running, "nack", { error, dead: true });
        } else {
          await this.resolve(running, "ack", { result });
        }
      } else if (error instanceof Retry) {
        const nack: Record<string, unknown> = { error: error.message };
        if (error.after !== undefined) nack.retry_after = duration(error.after);
        await this.resolve(running, "nack", nack);
      } else if (error instanceof Dead) {
        await this.resolve(running, "nack", { error: error.message, dead: true });
      } else {
        const e = error instanceof Error ? error : new Error(String(error));
        await this.resolve(running, "nack", { error: `${e.name}: ${e.message}` });
      }
    } finally {
      finished = true;
      clearTimeout(heartbeat);
      clearTimeout(timeout);
    }
  }

  /** One report on the session, or by its unary call between sessions
   * (an Ack in this turn's AckBatch, always). */
  private async report(kind: Record<string, Record<string, unknown>>): Promise<WorkResult> {
    if (kind.ack) {
      await this.acks.ack(kind.ack);
      return { seq: "0", code: 0, message: "" };
    }
    const session = this.session;
    if (session && !session.ended) {
      try {
        return await session.report(kind);
      } catch (e) {
        const err = BrokerError.of(e);
        // Only a session that ended sends the report by its unary call.
        if (err.code !== grpc.status.UNAVAILABLE || !session.ended) throw err;
      }
    }
    const [name, req] = Object.entries(kind)[0];
    const method = { nack: "Nack", extend: "Extend", release: "Release", progress: "Progress", credit: "" }[name];
    if (!method) throw new BrokerError(grpc.status.UNAVAILABLE, "no session");
    type Unary = (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: any) => void) => void;
    const fn = (this.client as unknown as Record<string, Unary>)[method].bind(this.client);
    const answer = await new Promise<unknown>((resolve, reject) =>
      fn(req, this.settings.metadata(), { deadline: Date.now() + RESULT_TIMEOUT }, (e, res) => (e ? reject(BrokerError.of(e)) : resolve(res))),
    );
    return { seq: "0", code: 0, message: "", [name]: answer } as WorkResult;
  }

  /** Acks or Nacks, retrying unavailability until the lease would expire. */
  private async resolve(running: Running, name: "ack" | "nack", fields: Record<string, unknown>): Promise<void> {
    const { job } = running;
    const req = { job_id: job.id, lease_id: running.leaseId, ...fields };
    for (let failures = 0; ; failures++) {
      try {
        await this.report({ [name]: req });
        break;
      } catch (e) {
        const err = BrokerError.of(e);
        if (UNAVAILABLE.has(err.code) && now() < running.expiry) {
          await sleep(backoff(failures));
          continue;
        }
        this.log(`could not report the job's outcome; its lease will expire: ${err.message}`, this.fields(job));
        return;
      }
    }
    if (name === "ack") {
      this.processed++;
      this.log("job succeeded", this.fields(job));
    } else {
      this.failed++;
      this.log(`job failed: ${String(fields.error)}`, this.fields(job));
    }
  }

  private async release(running: Running, retryFor = 0): Promise<void> {
    const until = now() + retryFor;
    for (let failures = 0; ; failures++) {
      try {
        await this.report({ release: { job_id: running.job.id, lease_id: running.leaseId } });
        this.released++;
        return;
      } catch (e) {
        const err = BrokerError.of(e);
        if (UNAVAILABLE.has(err.code) && now() < until) {
          await sleep(backoff(failures));
          continue;
        }
        this.log(`could not release the job: ${err.message}`, this.fields(running.job));
        return;
      }
    }
  }

  private async drain(): Promise<void> {
    this.draining = true;
    if (this.session && !this.session.ended) {
      await this.session.report({ credit: { window: 0 } }).catch(() => undefined);
    }
    const jobs = [...this.running.values()].map((r) => r.done);
    if (jobs.length) {
      this.log(`draining: stopped leasing, waiting for ${jobs.length} running jobs`);
      const all = Promise.all(jobs);
      const timedOut = await Promise.race([all.then(() => false), bound(this.drainTimeout * 1000).then(() => true)]);
      if (timedOut) {
        for (const running of this.running.values()) running.halt("drain");
        // Their stop, then their Release: bounded, never forever.
        await Promise.race([all, bound(STOP_GRACE + 2 * RESULT_TIMEOUT)]);
      }
    }
    if (this.releases.size) await Promise.race([Promise.all(this.releases), bound(RELEASE_RETRY + RESULT_TIMEOUT)]);
  }
}
