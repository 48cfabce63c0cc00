// Enqueues one job and prints its id (the suite's producer in TypeScript):
//
//     node scenarios/produce.mjs URL JOB_TYPE PAYLOAD
import { Producer } from "sluice-client";

const [url, jobType, payload] = process.argv.slice(2);
const producer = new Producer({ broker: url });
console.log((await producer.enqueue({ jobType, payload })).jobId);
producer.close();
