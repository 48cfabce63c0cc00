// A Sluice worker in TypeScript (here as plain ESM): runs "hello" jobs until SIGTERM.
import { Worker } from "sluice-client";

const worker = new Worker({ queues: ["default"], concurrency: 4 });

worker.handle("hello", async (job) => {
  console.log(`hello, ${job.payload.toString()}`);
});

process.exitCode = await worker.run();
