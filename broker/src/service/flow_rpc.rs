//! The flow-control calls of `sluice.v1.Admin` (SetQueueLimits,
//! GetQueueLimits, ListKeys) and the flow figures of Stats: validation of
//! a queue's limits, and their way back to the contract. Setting limits
//! needs an admin credential covering the queue; a viewer reads them.

use std::collections::BTreeMap;

use sluice_limits::{
    DEFAULT_LIST_KEYS, MAX_KEY_OVERRIDES, MAX_KEY_WEIGHT, MAX_LIST_KEYS, MAX_RATE_BURST,
    MAX_RATE_PER_SECOND,
};
use sluice_proto::v1 as pb;
use sluice_queue::{FlowStats, HoldReason, KeyOverride, KeyStats, QueueLimits, RateLimit};

use super::convert;
use super::error::RequestError;
use super::outbound::timestamp_to_pb;
use crate::auth::Grant;
use crate::backend::SharedBackend;

type Result<T> = std::result::Result<T, RequestError>;

/// SetQueueLimits: the queue's limits replaced by the request's.
pub async fn set(
    shared: &SharedBackend,
    grant: &Grant,
    req: pb::SetQueueLimitsRequest,
) -> Result<pb::QueueLimits> {
    let queue = convert::queue_name(req.queue, "queue")?;
    grant.check_queue(&queue)?;
    let limits = limits_in(req.limits.unwrap_or_default())?;
    shared.set_limits(queue.clone(), limits.clone()).await?;
    tracing::info!(%queue, limits = %crate::limits_record::encode(&limits), "queue limits set");
    Ok(limits_to_pb(queue, &limits))
}

/// GetQueueLimits.
pub async fn get(
    shared: &SharedBackend,
    grant: &Grant,
    req: pb::GetQueueLimitsRequest,
) -> Result<pb::QueueLimits> {
    let queue = convert::queue_name(req.queue, "queue")?;
    grant.check_queue(&queue)?;
    let limits = shared.limits(queue.clone()).await?;
    Ok(limits_to_pb(queue, &limits))
}

/// ListKeys.
pub async fn list_keys(
    shared: &SharedBackend,
    grant: &Grant,
    req: pb::ListKeysRequest,
) -> Result<pb::ListKeysResponse> {
    let queue = convert::queue_name(req.queue, "queue")?;
    grant.check_queue(&queue)?;
    let limit = match req.limit {
        0 => DEFAULT_LIST_KEYS,
        n if n <= MAX_LIST_KEYS => n,
        n => {
            return Err(RequestError::invalid(
                "limit",
                format!("{n} is over {MAX_LIST_KEYS}"),
            ));
        }
    };
    let keys = shared.keys(queue, limit as usize).await?;
    Ok(pb::ListKeysResponse {
        keys: keys.into_iter().map(key_to_pb).collect(),
    })
}

/// A queue's limits as a request gives them, checked.
fn limits_in(req: pb::QueueLimits) -> Result<QueueLimits> {
    if req.overrides.len() > MAX_KEY_OVERRIDES {
        return Err(RequestError::invalid(
            "limits.overrides",
            format!(
                "{} overrides is over the limit of {MAX_KEY_OVERRIDES}",
                req.overrides.len()
            ),
        ));
    }
    let mut overrides = BTreeMap::new();
    for o in req.overrides {
        sluice_limits::check_job_key(&o.key)
            .map_err(|r| RequestError::invalid("limits.overrides", format!("key {r}")))?;
        if o.weight > MAX_KEY_WEIGHT {
            return Err(RequestError::invalid(
                "limits.overrides",
                format!(
                    "the weight of {:?}, {}, is over {MAX_KEY_WEIGHT}",
                    o.key, o.weight
                ),
            ));
        }
        let kept = KeyOverride {
            max_in_flight: o.max_in_flight,
            rate: rate_in(o.rate, "limits.overrides")?,
            weight: (o.weight > 1).then_some(o.weight),
        };
        if overrides.insert(o.key.clone(), kept).is_some() {
            return Err(RequestError::invalid(
                "limits.overrides",
                format!("key {:?} is named twice", o.key),
            ));
        }
    }
    Ok(QueueLimits {
        max_in_flight: (req.max_in_flight > 0).then_some(req.max_in_flight),
        rate: rate_in(req.rate, "limits.rate")?,
        key_max_in_flight: (req.key_max_in_flight > 0).then_some(req.key_max_in_flight),
        key_rate: rate_in(req.key_rate, "limits.key_rate")?,
        overrides,
    })
}

/// A rate as a request gives it, checked: above 0 and finite, a burst of
/// 0 meaning 1.
fn rate_in(rate: Option<pb::RateLimit>, field: &'static str) -> Result<Option<RateLimit>> {
    let Some(rate) = rate else {
        return Ok(None);
    };
    if !(rate.per_second.is_finite()
        && rate.per_second > 0.0
        && rate.per_second <= MAX_RATE_PER_SECOND)
    {
        return Err(RequestError::invalid(
            field,
            format!(
                "per_second {} is not above 0 and at most {MAX_RATE_PER_SECOND}",
                rate.per_second
            ),
        ));
    }
    if rate.burst > MAX_RATE_BURST {
        return Err(RequestError::invalid(
            field,
            format!("burst {} is over {MAX_RATE_BURST}", rate.burst),
        ));
    }
    Ok(Some(RateLimit {
        per_second: rate.per_second,
        burst: rate.burst.max(1),
    }))
}

fn rate_to_pb(rate: Option<RateLimit>) -> Option<pb::RateLimit> {
    rate.map(|r| pb::RateLimit {
        per_second: r.per_second,
        burst: r.burst,
    })
}

/// `queue`'s limits on the wire.
pub fn limits_to_pb(queue: String, limits: &QueueLimits) -> pb::QueueLimits {
    pb::QueueLimits {
        queue,
        max_in_flight: limits.max_in_flight.unwrap_or(0),
        rate: rate_to_pb(limits.rate),
        key_max_in_flight: limits.key_max_in_flight.unwrap_or(0),
        key_rate: rate_to_pb(limits.key_rate),
        overrides: limits
            .overrides
            .iter()
            .map(|(key, o)| pb::KeyOverride {
                key: key.clone(),
                max_in_flight: o.max_in_flight,
                rate: rate_to_pb(o.rate),
                weight: o.weight.unwrap_or(0),
            })
            .collect(),
    }
}

/// One key on the wire.
pub fn key_to_pb(key: KeyStats) -> pb::KeyInfo {
    pb::KeyInfo {
        key: key.key,
        in_flight: key.in_flight,
        ready: key.ready,
        held_by: key.held_by.map(HoldReason::name).unwrap_or_default().into(),
        held_until: key.held_until.map(timestamp_to_pb),
    }
}

/// A queue's flow figures, as Stats fields: its limits (none when it has
/// none), what they hold back, and its top keys.
pub fn stats_to_pb(
    queue: &str,
    flow: FlowStats,
) -> (
    Option<pb::QueueLimits>,
    Option<pb::HeldJobs>,
    Vec<pb::KeyInfo>,
) {
    let limits = (!flow.limits.is_empty()).then(|| limits_to_pb(queue.to_owned(), &flow.limits));
    let held = pb::HeldJobs {
        key_limit: flow.waiting(HoldReason::KeyLimit),
        queue_limit: flow.waiting(HoldReason::QueueLimit),
        rate: flow.waiting(HoldReason::Rate),
        key_delay: flow.waiting(HoldReason::KeyDelay),
    };
    (
        limits,
        Some(held),
        flow.top_keys.into_iter().map(key_to_pb).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_are_refused_naming_the_field() {
        let refused = |limits: pb::QueueLimits| match limits_in(limits) {
            Err(RequestError::InvalidArgument { field, reason }) => format!("{field}: {reason}"),
            other => panic!("accepted: {other:?}"),
        };
        let rate = |per_second, burst| Some(pb::RateLimit { per_second, burst });
        assert!(
            refused(pb::QueueLimits {
                rate: rate(0.0, 1),
                ..Default::default()
            })
            .starts_with("limits.rate: per_second 0 is not above 0")
        );
        assert!(
            refused(pb::QueueLimits {
                key_rate: rate(f64::NAN, 1),
                ..Default::default()
            })
            .starts_with("limits.key_rate:")
        );
        let twice = pb::KeyOverride {
            key: "acme".into(),
            ..Default::default()
        };
        assert_eq!(
            refused(pb::QueueLimits {
                overrides: vec![twice.clone(), twice],
                ..Default::default()
            }),
            "limits.overrides: key \"acme\" is named twice"
        );
    }

    #[test]
    fn limits_go_round_the_wire_unchanged() {
        let wire = pb::QueueLimits {
            queue: "mail".into(),
            max_in_flight: 10,
            rate: Some(pb::RateLimit {
                per_second: 2.5,
                burst: 5,
            }),
            key_max_in_flight: 1,
            key_rate: None,
            overrides: vec![pb::KeyOverride {
                key: "big".into(),
                max_in_flight: Some(4),
                rate: None,
                weight: 3,
            }],
        };
        let limits = limits_in(wire.clone()).unwrap();
        assert_eq!(limits_to_pb("mail".into(), &limits), wire);
    }
}
