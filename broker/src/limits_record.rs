//! The stored form of a queue's flow-control limits
//! ([`sluice_queue::QueueLimits`]), one for every store: a JSON object
//! (the data directory's `limits` table, PostgreSQL's `sluice_limits`
//! rows, Redis's `limits` hash), so that an operator reading the store
//! can read it too. Fields left out are no limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_queue::{KeyOverride, QueueLimits, RateLimit};

#[derive(Serialize, Deserialize)]
struct Rate {
    per_second: f64,
    burst: u32,
}

#[derive(Serialize, Deserialize)]
struct Override {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    overrides: BTreeMap<String, Override>,
}

fn rate_out(rate: Option<RateLimit>) -> Option<Rate> {
    rate.map(|r| Rate {
        per_second: r.per_second,
        burst: r.burst,
    })
}

fn rate_in(rate: Option<Rate>) -> Option<RateLimit> {
    rate.map(|r| RateLimit {
        per_second: r.per_second,
        burst: r.burst,
    })
}

/// `limits` as stored.
pub fn encode(limits: &QueueLimits) -> String {
    let stored = Limits {
        max_in_flight: limits.max_in_flight,
        rate: rate_out(limits.rate),
        key_max_in_flight: limits.key_max_in_flight,
        key_rate: rate_out(limits.key_rate),
        overrides: limits
            .overrides
            .iter()
            .map(|(key, o)| {
                (
                    key.clone(),
                    Override {
                        max_in_flight: o.max_in_flight,
                        rate: rate_out(o.rate),
                        weight: o.weight,
                    },
                )
            })
            .collect(),
    };
    // A map of plain numbers and strings always serializes.
    serde_json::to_string(&stored).unwrap_or_default()
}

/// The limits a store holds.
///
/// # Errors
/// Why the record is not one this module writes.
pub fn decode(record: &str) -> Result<QueueLimits, String> {
    let stored: Limits = serde_json::from_str(record).map_err(|e| e.to_string())?;
    Ok(QueueLimits {
        max_in_flight: stored.max_in_flight,
        rate: rate_in(stored.rate),
        key_max_in_flight: stored.key_max_in_flight,
        key_rate: rate_in(stored.key_rate),
        overrides: stored
            .overrides
            .into_iter()
            .map(|(key, o)| {
                (
                    key,
                    KeyOverride {
                        max_in_flight: o.max_in_flight,
                        rate: rate_in(o.rate),
                        weight: o.weight,
                    },
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_back_as_they_were_stored() {
        let mut limits = QueueLimits {
            max_in_flight: Some(50),
            rate: Some(RateLimit {
                per_second: 0.5,
                burst: 3,
            }),
            key_max_in_flight: Some(2),
            key_rate: None,
            overrides: BTreeMap::new(),
        };
        limits.overrides.insert(
            "acme".into(),
            KeyOverride {
                max_in_flight: Some(0),
                rate: None,
                weight: Some(4),
            },
        );
        let record = encode(&limits);
        assert_eq!(
            record,
            r#"{"max_in_flight":50,"rate":{"per_second":0.5,"burst":3},"key_max_in_flight":2,"overrides":{"acme":{"max_in_flight":0,"weight":4}}}"#
        );
        assert_eq!(decode(&record).unwrap(), limits);
        assert_eq!(decode("{}").unwrap(), QueueLimits::default());
        assert!(decode("\"text\"").is_err());
        assert!(decode(r#"{"max_in_flight": -1}"#).is_err());
    }
}
