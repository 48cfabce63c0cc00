// Producers: enqueue one job, or many in one call (each job with its own
// result, refusals included), or many on one EnqueueStream (stream(): a
// result per job once the broker made it durable). A refused call rejects
// with BrokerError.
import * as grpc from "@grpc/grpc-js";
import { BrokerClient, duration, type EnqueueRequest } from "./proto.js";
import { CHANNEL_OPTIONS, Settings, type SettingsInit } from "./settings.js";
import { Waiters } from "./waiters.js";

/** The broker refused a call: its gRPC status code and message. */
export class BrokerError extends Error {
  override name = "BrokerError";
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${grpc.status[code]}: ${details}`);
  }

  static of(e: unknown): BrokerError {
    const err = e as Partial<grpc.ServiceError>;
    return new BrokerError(err.code ?? grpc.status.UNKNOWN, err.details ?? String(e));
  }
}

/** A job to enqueue; `timeout` in seconds, `runAt` a Date to start at. */
export interface JobSpec {
  jobType: string;
  payload?: Buffer | string;
  queue?: string;
  headers?: Record<string, string>;
  priority?: number;
  maxAttempts?: number;
  timeout?: number;
  runAt?: Date;
  idempotencyKey?: string;
}

export interface EnqueueResult {
  jobId: string;
  duplicate: boolean;
  /** In a batch: why this job was refused. */
  error?: BrokerError;
}

function request(spec: JobSpec): EnqueueRequest {
  const req: EnqueueRequest = {
    job_type: spec.jobType,
    queue: spec.queue ?? "",
    payload: typeof spec.payload === "string" ? Buffer.from(spec.payload) : (spec.payload ?? Buffer.alloc(0)),
    headers: spec.headers ?? {},
    priority: spec.priority ?? 0,
    max_attempts: spec.maxAttempts ?? 0,
    idempotency_key: spec.idempotencyKey ?? "",
  };
  if (spec.timeout !== undefined) req.timeout = duration(spec.timeout);
  if (spec.runAt !== undefined) {
    const ms = spec.runAt.getTime();
    req.run_at = { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
  }
  return req;
}

type Unary = (req: unknown, metadata: grpc.Metadata, callback: (err: grpc.ServiceError | null, res: any) => void) => void;

/** Jobs on one Broker.EnqueueStream: each enqueue() resolves once the
 * broker made that job durable; many may be pending at once (the broker
 * reads up to 1,024 ahead). A refused job rejects alone, the stream goes on.
 * If the stream breaks, the jobs still pending reject with UNAVAILABLE:
 * send them again with their idempotency keys and each is enqueued once. */
export class EnqueueStream {
  private readonly waiters = new Waiters<EnqueueResult>();
  private ended?: BrokerError;
  private readonly done: Promise<void>;

  constructor(private readonly call: grpc.ClientDuplexStream<unknown, { results: StreamResult[] }>) {
    call.on("data", (response: { results: StreamResult[] }) => {
      for (const r of response.results) {
        if (r.code === 0) this.waiters.resolve(String(r.seq), { jobId: r.job_id, duplicate: r.duplicate });
        else this.waiters.reject(String(r.seq), new BrokerError(r.code, r.message));
      }
    });
    this.done = new Promise((resolve) => {
      const end = (error: BrokerError) => {
        if (this.ended) return;
        this.ended = error;
        this.waiters.failAll(error);
        resolve();
      };
      call.on("error", (e: grpc.ServiceError) => end(BrokerError.of(e)));
      call.on("end", () => end(new BrokerError(grpc.status.UNAVAILABLE, "the stream ended")));
    });
  }

  /** Enqueues one job on the stream. */
  enqueue(spec: JobSpec): Promise<EnqueueResult> {
    if (this.ended) return Promise.reject(this.ended);
    const [seq, answered] = this.waiters.add();
    this.call.write({ seq, job: request(spec) });
    return answered;
  }

  /** Ends the stream once every job sent has its result. */
  async close(): Promise<void> {
    this.call.end();
    await this.done;
  }
}

interface StreamResult {
  seq: string;
  job_id: string;
  duplicate: boolean;
  code: number;
  message: string;
}

export class Producer {
  readonly settings: Settings;
  private readonly client: grpc.Client;

  constructor(init: SettingsInit = {}) {
    this.settings = Settings.fromEnv(init);
    this.client = new BrokerClient(this.settings.target, this.settings.credentials(), CHANNEL_OPTIONS);
  }

  private call<T>(method: string, req: unknown): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method].bind(this.client);
    return new Promise((resolve, reject) => {
      fn(req, this.settings.metadata(), (err, res) => (err ? reject(BrokerError.of(err)) : resolve(res as T)));
    });
  }

  /** Enqueues one job. */
  async enqueue(spec: JobSpec): Promise<EnqueueResult> {
    const r = await this.call<{ job_id: string; duplicate: boolean }>("Enqueue", request(spec));
    return { jobId: r.job_id, duplicate: r.duplicate };
  }

  /** Enqueues many jobs in one call: a result per job, in order. */
  async enqueueBatch(specs: JobSpec[]): Promise<EnqueueResult[]> {
    const r = await this.call<{ results: { job_id: string; duplicate: boolean; code: number; message: string }[] }>(
      "EnqueueBatch",
      { jobs: specs.map(request) },
    );
    return r.results.map((x) =>
      x.code === 0
        ? { jobId: x.job_id, duplicate: x.duplicate }
        : { jobId: "", duplicate: false, error: new BrokerError(x.code, x.message) },
    );
  }

  /** A stream for many jobs, each with its own result. */
  stream(): EnqueueStream {
    type Duplex = (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, { results: StreamResult[] }>;
    const open = (this.client as unknown as Record<string, Duplex>).EnqueueStream.bind(this.client);
    return new EnqueueStream(open(this.settings.metadata()));
  }

  close(): void {
    this.client.close();
  }
}
