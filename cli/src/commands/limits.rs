//! `sluice queue limits QUEUE` (a queue's flow-control limits: printed, or
//! changed by flags) and `sluice keys QUEUE` (its busiest keys).
//!
//! Changing limits reads the queue's limits, applies the flags to them
//! (`--clear` first, then each flag; 0 turns a limit off) and sets the
//! result with SetQueueLimits, which replaces what the queue had.

use clap::Args;
use sluice_proto::json::{key_json, limits_json};
use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{
    Format, Table, escape_controls, print, print_json, print_table, timestamp_text,
};

/// Flags of `sluice queue limits`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// The queue.
    pub queue: String,
    /// The queue's jobs in flight across every worker and broker; 0: no limit.
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    /// The queue's jobs started per second (a token bucket); 0: no limit.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Jobs the queue's rate lets start at once after a quiet spell
    /// (default: a tenth of a second's, at least 1).
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
    /// Each key's jobs in flight; 1 runs a key's jobs one at a time; 0: no limit.
    #[arg(long, value_name = "N")]
    key_max_in_flight: Option<u32>,
    /// Each key's jobs started per second; 0: no limit.
    #[arg(long, value_name = "PER_SECOND")]
    key_rate: Option<f64>,
    /// Jobs each key's rate lets start at once (default: a tenth of a
    /// second's, at least 1).
    #[arg(long, value_name = "N")]
    key_burst: Option<u32>,
    /// One key's own limits: `KEY=N` (its jobs in flight), or
    /// `KEY=max-in-flight=N,rate=R,burst=B,weight=W` (any of them);
    /// `KEY=` removes the override. Repeatable.
    #[arg(long = "override", value_name = "KEY=...", value_parser = parse_override)]
    overrides: Vec<(String, Option<pb::KeyOverride>)>,
    /// Removes every limit first (the other flags then apply).
    #[arg(long)]
    clear: bool,
}

impl LimitsArgs {
    fn changes_anything(&self) -> bool {
        self.clear
            || self.max_in_flight.is_some()
            || self.rate.is_some()
            || self.burst.is_some()
            || self.key_max_in_flight.is_some()
            || self.key_rate.is_some()
            || self.key_burst.is_some()
            || !self.overrides.is_empty()
    }

    /// `limits` with the flags applied.
    fn apply(&self, mut limits: pb::QueueLimits) -> Result<pb::QueueLimits, CliError> {
        if self.clear {
            limits = pb::QueueLimits::default();
        }
        if let Some(n) = self.max_in_flight {
            limits.max_in_flight = n;
        }
        if let Some(n) = self.key_max_in_flight {
            limits.key_max_in_flight = n;
        }
        limits.rate = rate(limits.rate, self.rate, self.burst, "--burst", "--rate")?;
        limits.key_rate = rate(
            limits.key_rate,
            self.key_rate,
            self.key_burst,
            "--key-burst",
            "--key-rate",
        )?;
        for (key, change) in &self.overrides {
            limits.overrides.retain(|o| &o.key != key);
            if let Some(o) = change {
                limits.overrides.push(o.clone());
            }
        }
        limits.overrides.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(limits)
    }
}

/// A rate after its flags: `per_second` 0 turns it off; a burst alone
/// changes the rate there is.
fn rate(
    had: Option<pb::RateLimit>,
    per_second: Option<f64>,
    burst: Option<u32>,
    burst_flag: &str,
    rate_flag: &str,
) -> Result<Option<pb::RateLimit>, CliError> {
    match (per_second, burst) {
        (Some(0.0), _) => Ok(None),
        (Some(per_second), burst) => Ok(Some(pb::RateLimit {
            per_second,
            burst: burst
                .or(had.map(|h| h.burst))
                .unwrap_or_else(|| default_burst(per_second)),
        })),
        (None, Some(burst)) => match had {
            Some(h) => Ok(Some(pb::RateLimit { burst, ..h })),
            None => Err(CliError::Usage(format!(
                "{burst_flag} needs a rate: give {rate_flag} too"
            ))),
        },
        (None, None) => Ok(had),
    }
}

/// A rate's burst when none is given: a tenth of a second's jobs, at
/// least 1, so that a timer that wakes a little late loses no token.
fn default_burst(per_second: f64) -> u32 {
    (per_second / 10.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// `KEY=N`, `KEY=name=value,...` or `KEY=`.
fn parse_override(text: &str) -> Result<(String, Option<pb::KeyOverride>), String> {
    let (key, spec) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=... (e.g. acme=5)"))?;
    if key.is_empty() {
        return Err(format!("{text:?} names no key"));
    }
    if spec.is_empty() {
        return Ok((key.to_owned(), None));
    }
    let mut o = pb::KeyOverride {
        key: key.to_owned(),
        ..Default::default()
    };
    if let Ok(n) = spec.parse::<u32>() {
        o.max_in_flight = Some(n);
        return Ok((key.to_owned(), Some(o)));
    }
    let mut burst = None;
    for part in spec.split(',') {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=value"))?;
        let number = |what: &str| -> Result<u32, String> {
            value
                .parse()
                .map_err(|_| format!("{what} {value:?} is not a whole number"))
        };
        match name {
            "max-in-flight" => o.max_in_flight = Some(number(name)?),
            "weight" => o.weight = number(name)?,
            "burst" => burst = Some(number(name)?),
            "rate" => {
                let per_second: f64 = value
                    .parse()
                    .map_err(|_| format!("rate {value:?} is not a number"))?;
                o.rate = Some(pb::RateLimit {
                    per_second,
                    burst: default_burst(per_second),
                });
            }
            other => {
                return Err(format!(
                    "unknown {other:?} (known: max-in-flight, rate, burst, weight)"
                ));
            }
        }
    }
    match (&mut o.rate, burst) {
        (Some(rate), Some(burst)) => rate.burst = burst,
        (None, Some(_)) => return Err("burst needs a rate".into()),
        _ => {}
    }
    Ok((key.to_owned(), Some(o)))
}

/// Runs `sluice queue limits`.
///
/// # Errors
/// The broker's refusal, or a flag that cannot apply.
pub async fn run(conn: &mut Connection, args: LimitsArgs, format: Format) -> Result<(), CliError> {
    let current = conn
        .admin
        .get_queue_limits(pb::GetQueueLimitsRequest {
            queue: args.queue.clone(),
        })
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    let limits = if args.changes_anything() {
        let wanted = args.apply(current)?;
        conn.admin
            .set_queue_limits(pb::SetQueueLimitsRequest {
                queue: args.queue.clone(),
                limits: Some(wanted),
            })
            .await
            .map_err(|s| CliError::from_status(&s))?
            .into_inner()
    } else {
        current
    };
    match format {
        Format::Json => print_json(&limits_json(&limits)),
        Format::Table => print(&limits_text(&limits)),
    }
}

fn rate_text(rate: Option<&pb::RateLimit>) -> String {
    rate.map_or_else(
        || "none".to_owned(),
        |r| format!("{}/s (burst {})", r.per_second, r.burst.max(1)),
    )
}

fn count_text(n: u32) -> String {
    if n == 0 {
        "none".to_owned()
    } else {
        n.to_string()
    }
}

/// A queue's limits as `sluice queue limits` prints them.
pub fn limits_text(l: &pb::QueueLimits) -> String {
    let mut text = format!(
        "queue {}\n  max in flight      {}\n  rate               {}\n  key max in flight  {}\n  key rate           {}\n",
        l.queue,
        count_text(l.max_in_flight),
        rate_text(l.rate.as_ref()),
        count_text(l.key_max_in_flight),
        rate_text(l.key_rate.as_ref()),
    );
    if l.overrides.is_empty() {
        text.push_str("  overrides          none\n");
    } else {
        text.push_str("  overrides\n");
        for o in &l.overrides {
            let mut parts = Vec::new();
            if let Some(n) = o.max_in_flight {
                parts.push(format!("max in flight {n}"));
            }
            if o.rate.is_some() {
                parts.push(format!("rate {}", rate_text(o.rate.as_ref())));
            }
            if o.weight > 1 {
                parts.push(format!("weight {}", o.weight));
            }
            text.push_str(&format!(
                "    {}  {}\n",
                escape_controls(&o.key, false),
                parts.join(", ")
            ));
        }
    }
    text
}

/// Flags of `sluice keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The queue.
    queue: String,
    /// Most keys to show, 1 to 1000.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

/// Runs `sluice keys`: the queue's busiest keys.
///
/// # Errors
/// The broker's refusal.
pub async fn keys(conn: &mut Connection, args: KeysArgs, format: Format) -> Result<(), CliError> {
    let keys = conn
        .admin
        .list_keys(pb::ListKeysRequest {
            queue: args.queue.clone(),
            limit: args.limit,
        })
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner()
        .keys;
    match format {
        Format::Json => print_json(&serde_json::json!({
            "queue": args.queue,
            "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        })),
        Format::Table => print_table(&keys_table(&keys), "no key has jobs in flight or ready"),
    }
}

/// Keys as a table: KEY, IN FLIGHT, READY, HELD BY, HELD UNTIL.
pub fn keys_table(keys: &[pb::KeyInfo]) -> Table {
    let mut table = Table::new(&["KEY", "IN FLIGHT", "READY", "HELD BY", "HELD UNTIL"]);
    for k in keys {
        table.row(vec![
            escape_controls(&k.key, false),
            k.in_flight.to_string(),
            k.ready.to_string(),
            if k.held_by.is_empty() {
                "-".to_owned()
            } else {
                k.held_by.clone()
            },
            if k.held_until.is_some() {
                timestamp_text(k.held_until.as_ref())
            } else {
                "-".to_owned()
            },
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_in_both_forms() {
        let (key, o) = parse_override("acme=5").unwrap();
        assert_eq!((key.as_str(), o.unwrap().max_in_flight), ("acme", Some(5)));
        let (_, o) = parse_override("big=max-in-flight=2,rate=10,burst=20,weight=3").unwrap();
        let o = o.unwrap();
        assert_eq!(o.max_in_flight, Some(2));
        assert_eq!(o.weight, 3);
        assert_eq!(
            o.rate,
            Some(pb::RateLimit {
                per_second: 10.0,
                burst: 20
            })
        );
        assert_eq!(parse_override("gone=").unwrap(), ("gone".into(), None));
        assert!(parse_override("x=speed=3").unwrap_err().contains("unknown"));
        assert!(parse_override("nokey").is_err());
        assert!(parse_override("x=burst=3").is_err());
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let had = pb::QueueLimits {
            queue: "q".into(),
            max_in_flight: 10,
            rate: Some(pb::RateLimit {
                per_second: 5.0,
                burst: 7,
            }),
            ..Default::default()
        };
        let args = LimitsArgs {
            queue: "q".into(),
            max_in_flight: None,
            rate: Some(8.0),
            burst: None,
            key_max_in_flight: Some(1),
            key_rate: None,
            key_burst: None,
            overrides: vec![],
            clear: false,
        };
        let limits = args.apply(had.clone()).unwrap();
        assert_eq!(limits.max_in_flight, 10);
        assert_eq!(limits.rate.unwrap().burst, 7, "the burst is kept");
        assert_eq!(limits.rate.unwrap().per_second, 8.0);
        assert_eq!(limits.key_max_in_flight, 1);
        let clear = LimitsArgs {
            clear: true,
            rate: Some(0.0),
            key_max_in_flight: None,
            ..args
        };
        assert_eq!(clear.apply(had).unwrap(), pb::QueueLimits::default());
    }
}
