//! `sluice-bench cross-ack`: what a worker behind a balancer that spreads
//! calls pays. Two brokers on one shared store; one consumer leases
//! through the first and acks each job through the first ("own") or
//! through the second ("elsewhere"), alternating which goes first each
//! round; the median end-to-end jobs/s of each and their ratio. Before
//! the stream's broker heard of acks made elsewhere, a stream of K slots
//! ran at about K jobs a second (its poll).

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use crate::Target;
use crate::load::{self, Api, Load};

/// Options of `cross-ack`.
#[derive(Debug, Args)]
pub struct CrossAckArgs {
    #[command(flatten)]
    target: Target,
    /// Rounds; each runs "own" and "elsewhere" once.
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// Jobs per run.
    #[arg(short = 'n', long, default_value_t = 5_000)]
    jobs: u64,
    /// max_in_flight of the consumer's stream.
    #[arg(short = 'k', long, default_value_t = 16)]
    in_flight: u32,
    #[arg(long, value_enum, default_value_t = Api::Unary)]
    api: Api,
}

/// Runs the comparison and prints its table (or JSON).
///
/// # Errors
/// A run that fails, or a store that is not shared.
pub async fn run(mut args: CrossAckArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds > 0 && args.jobs > 0,
        "rounds and jobs must be above 0"
    );
    anyhow::ensure!(
        args.target.store != "embedded",
        "cross-ack needs a shared --store"
    );
    args.target.brokers = 2;
    let started = args.target.start(&[])?;
    let labels = ["own", "elsewhere"];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for side in order {
            let load = Load {
                jobs: args.jobs,
                producers: 1,
                consumers: 1,
                in_flight: args.in_flight,
                window: 64,
                batch: 256,
                payload: 64,
                rate: None,
                api: args.api,
                worker_handler: None,
                queue: format!("cross-ack-{round}-{side}"),
                security: load::ClientSecurity::default(),
                report_every: None,
                max_backlog: None,
                ack_elsewhere: side == 1,
                keys: 0,
            };
            let busy_before = crate::proc_stats::machine_busy_seconds()?;
            let measured = load::run(&started.addrs, &load)
                .await
                .with_context(|| format!("round {round}, {}", labels[side]))?;
            let busy = crate::proc_stats::machine_busy_seconds()? - busy_before;
            let rate = args.jobs as f64 / measured.end_to_end.as_secs_f64();
            eprintln!(
                "round {round} {}: {rate:.0} jobs/s, {:.0} µs of machine CPU per job",
                labels[side],
                busy * 1e6 / args.jobs as f64
            );
            rates[side].push(rate);
        }
    }
    let (own, elsewhere) = (
        crate::cost::median(&rates[0]),
        crate::cost::median(&rates[1]),
    );
    let ratio = if own > 0.0 { elsewhere / own } else { 0.0 };
    if args.target.json {
        println!(
            "{}",
            json!({ "store": args.target.store, "api": format!("{:?}", args.api).to_lowercase(),
                    "jobs": args.jobs, "in_flight": args.in_flight, "rounds": args.rounds,
                    "own": rates[0], "elsewhere": rates[1], "own_median": own,
                    "elsewhere_median": elsewhere, "elsewhere_over_own": ratio })
        );
    } else {
        println!(
            "one consumer (k={}, {:?}) leasing through broker 1 of 2, median of {} rounds of {} jobs",
            args.in_flight, args.api, args.rounds, args.jobs
        );
        println!("| acks through | jobs/s |\n|---|---|");
        println!("| its own broker | {own:.0} |\n| the other broker | {elsewhere:.0} |");
        println!("elsewhere / own: {ratio:.2}");
    }
    Ok(())
}
