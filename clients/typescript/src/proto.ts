// The sluice.v1 contract, loaded at run time from the .proto files this
// package carries (proto/, copied from the repository's at build time),
// with field names as in the .proto files, 64-bit integers as strings,
// enums as their names, and defaults filled in. The interfaces below type
// the messages this client uses.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";

const protoDir = fileURLToPath(new URL("../proto/", import.meta.url));

const definition = loader.loadSync(["sluice/v1/broker.proto"], {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

interface Package {
  sluice: { v1: { Broker: grpc.ServiceClientConstructor } };
}

export const BrokerClient = (grpc.loadPackageDefinition(definition) as unknown as Package).sluice.v1.Broker;

export interface Duration {
  seconds: string | number;
  nanos: number;
}

export function duration(seconds: number): Duration {
  const whole = Math.floor(seconds);
  return { seconds: whole, nanos: Math.round((seconds - whole) * 1e9) };
}

export function secondsOf(d: Duration | null | undefined): number {
  return d ? Number(d.seconds) + d.nanos / 1e9 : 0;
}

export interface JobMessage {
  id: string;
  queue: string;
  job_type: string;
  payload: Buffer;
  headers: Record<string, string>;
  attempt: number;
  max_attempts: number;
  timeout: Duration | null;
}

export interface LeasedJob {
  job: JobMessage;
  lease_id: string;
}

export interface WorkResult {
  seq: string;
  code: number;
  message: string;
  extend?: { cancel_requested: boolean } | null;
  answer?: string;
}

export interface WorkResponse {
  jobs: LeasedJob[];
  results: WorkResult[];
  draining: boolean;
}

export interface EnqueueRequest {
  queue?: string;
  job_type: string;
  payload?: Buffer;
  headers?: Record<string, string>;
  priority?: number;
  max_attempts?: number;
  timeout?: Duration;
  run_at?: { seconds: number; nanos: number };
  idempotency_key?: string;
}
