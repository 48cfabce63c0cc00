// Sluice's TypeScript client for Node: producers and a worker that follows
// docs/worker-protocol.md. Connection settings come from the same
// environment variables as the Rust worker.
export { BrokerError, EnqueueStream, Producer, type EnqueueResult, type JobSpec } from "./producer.js";
export { Settings, SettingsError, type SettingsInit } from "./settings.js";
export {
  Dead,
  MAX_PROGRESS_MESSAGE_BYTES,
  MAX_RESULT_BYTES,
  Retry,
  Worker,
  ackBatches,
  backoff,
  humantime,
  resultBytes,
  type Handler,
  type Job,
  type WorkerOptions,
} from "./worker.js";
