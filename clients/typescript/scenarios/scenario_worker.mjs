// The worker the suite drives (tests/tests/clients.rs): one
// handler per scenario, each recording what it saw in the directory OUT.
//
//     node scenarios/scenario_worker.mjs OUT [LEASE_SECONDS]
import { appendFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Dead, Retry, Worker } from "sluice-client";

const [out, lease = "30"] = process.argv.slice(2);
const worker = new Worker({ concurrency: 4, leaseDuration: Number(lease), drainTimeout: 20 });
const record = (name, job) => appendFileSync(join(out, name), `${job.id} ${job.attempt}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

worker
  .handle("ok", async (job) => record("ok", job))
  .handle("sync", (job) => record("sync", job))
  .handle("flaky", async (job) => {
    record("flaky", job);
    if (job.attempt === 1) throw new Retry("not yet", 0);
  })
  .handle("boom", () => {
    throw new TypeError("boom");
  })
  .handle("dead", async () => {
    throw new Dead("no retry can help");
  })
  .handle("slow", async (job, signal) => {
    await new Promise((resolve) => signal.addEventListener("abort", resolve));
    record("slow-stopped", job);
  })
  .handle("hold", async (job, signal) => {
    // Runs until the test creates OUT/go, or the attempt is stopped.
    record("started", job);
    while (!existsSync(join(out, "go"))) {
      if (signal.aborted) {
        record("hold-stopped", job);
        return;
      }
      await sleep(50);
    }
    record("held", job);
  })
  .handle("size", async (job) => appendFileSync(join(out, "size"), `${job.id} ${job.payload.length}\n`))
  .handle("report", async (job) => {
    // Progress, then a wait for OUT/go-report, then the result.
    job.progress(50, `half of ${job.payload}`);
    record("report-started", job);
    while (!existsSync(join(out, "go-report"))) await sleep(50);
    return `done: ${job.payload}`;
  });

process.exitCode = await worker.run();
