//! The queue state machine alone: enqueue + lease + ack cycles per second
//! with 1k, 100k and 1M jobs queued, to show that each operation stays
//! O(log n). One core, no I/O, no clock.
//!
//!     cargo bench -p sluice-queue --bench queue

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_queue::Timestamp;
use sluice_queue::{ConsumerSpec, NewJob, Queue, QueueConfig};

const CYCLES: u64 = 1_000_000;

fn main() {
    let payload = Bytes::from(vec![7u8; 64]);
    let new_job = || NewJob {
        queue: "bench".into(),
        job_type: "noop".into(),
        payload: payload.clone(),
        ..NewJob::default()
    };
    println!("{:>10}  {:>12}  {:>10}", "queued", "cycles/s", "ns/cycle");
    for depth in [1_000u64, 100_000, 1_000_000] {
        // Keep no finished jobs: the queue then holds `depth` jobs throughout.
        let config = QueueConfig {
            max_retained: 1,
            ..QueueConfig::default()
        };
        let mut queue = Queue::new(config, 1);
        let mut micros = 1_000_000u64;
        let mut now = || {
            micros += 1;
            Timestamp::from_micros(micros)
        };
        for _ in 0..depth {
            queue.enqueue(new_job(), now()).expect("enqueue");
        }
        let spec = ConsumerSpec {
            worker_id: "bench".into(),
            queues: vec!["bench".into()],
            job_types: vec![],
            max_in_flight: 1,
            lease_duration: Some(Duration::from_secs(30)),
            held_leases: vec![],
        };
        queue.open_consumer(spec, now());
        let mut deliveries = Vec::with_capacity(4);
        queue.drain_deliveries(&mut deliveries);
        let mut current = deliveries.pop().expect("one job leased");
        let started = Instant::now();
        for _ in 0..CYCLES {
            let t = now();
            queue.enqueue(new_job(), t).expect("enqueue");
            let (job_id, lease_id) = {
                let job = queue.delivered_job(current);
                (job.id, job.lease.expect("leased").id)
            };
            // Acking frees the slot, which leases the oldest queued job.
            queue.ack(job_id, lease_id, t).expect("ack");
            queue.drain_deliveries(&mut deliveries);
            current = deliveries.pop().expect("the next job leased");
        }
        let elapsed = started.elapsed();
        black_box(&queue);
        let per_sec = CYCLES as f64 / elapsed.as_secs_f64();
        println!("{depth:>10}  {per_sec:>12.0}  {:>10.0}", 1e9 / per_sec);
    }
}
