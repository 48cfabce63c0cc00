// A worker with a no-op handler, for `sluice-bench clients`:
//
//     node examples/bench_worker.mjs QUEUE CONCURRENCY
//
// Logs nothing per job: a line per job would cost more than the job.
import { Worker } from "sluice-client";

const [queue, concurrency] = process.argv.slice(2);
const worker = new Worker({
  queues: [queue],
  concurrency: Number(concurrency),
  workerId: "bench-typescript",
  log: (message) => {
    if (!message.startsWith("job ")) console.error(message);
  },
});
worker.handle("noop", async () => undefined);
process.exitCode = await worker.run();
