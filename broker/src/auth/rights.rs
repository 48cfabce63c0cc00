//! Which role may make which call, and which queues a credential covers.
//! Pure functions of the role and the call; a credential's queues are a
//! [`sluice_queue::QueueScope`].

use std::fmt;

/// What a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Enqueue, EnqueueBatch, EnqueueStream and the source calls (ClaimPartitions,
    /// CommitPartition, LeaveSourceGroup).
    Producer,
    /// Lease, LeaseBatches, Work and resolving leased jobs.
    Worker,
    /// Everything, including the Admin service and (with
    /// `--reflection admin`) reflection.
    Admin,
    /// Only `GET /metrics` on `--http-addr`: for Prometheus.
    Metrics,
    /// The Admin service's read calls ([`ADMIN_READS`]), and so a
    /// dashboard without action buttons.
    Viewer,
}

/// The Admin calls that change nothing, which a [`Role::Viewer`] may make.
pub const ADMIN_READS: [&str; 9] = [
    "GetJob",
    "ListJobs",
    "Stats",
    "ListWorkers",
    "GetQueueLimits",
    "ListKeys",
    "GetSchedule",
    "ListSchedules",
    "ListSourcePartitions",
];

impl Role {
    /// The role named `name` in the token file.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "producer" => Some(Self::Producer),
            "worker" => Some(Self::Worker),
            "admin" => Some(Self::Admin),
            "metrics" => Some(Self::Metrics),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// Whether this role may make `call` at all (queues aside).
    pub fn may(self, call: Call) -> bool {
        match self {
            Self::Admin => true,
            Self::Producer => matches!(
                call,
                Call::Enqueue
                    | Call::EnqueueBatch
                    | Call::EnqueueStream
                    | Call::ClaimPartitions
                    | Call::CommitPartition
                    | Call::LeaveSourceGroup
            ),
            Self::Metrics => call == Call::Metrics,
            Self::Viewer => matches!(call, Call::Admin(method) if ADMIN_READS.contains(&method)),
            Self::Worker => matches!(
                call,
                Call::Lease
                    | Call::LeaseBatches
                    | Call::Work
                    | Call::Ack
                    | Call::AckBatch
                    | Call::Nack
                    | Call::Extend
                    | Call::Release
                    | Call::Progress
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Producer => "producer",
            Self::Worker => "worker",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
            Self::Viewer => "viewer",
        })
    }
}

/// A call that needs a right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `Broker/Enqueue`.
    Enqueue,
    /// `Broker/EnqueueBatch`.
    EnqueueBatch,
    /// `Broker/EnqueueStream`.
    EnqueueStream,
    /// `Broker/Lease`.
    Lease,
    /// `Broker/LeaseBatches`.
    LeaseBatches,
    /// `Broker/Work`.
    Work,
    /// `Broker/Ack`.
    Ack,
    /// `Broker/AckBatch`.
    AckBatch,
    /// `Broker/Nack`.
    Nack,
    /// `Broker/Extend`.
    Extend,
    /// `Broker/Release`.
    Release,
    /// `Broker/Progress`.
    Progress,
    /// `Broker/ClaimPartitions`.
    ClaimPartitions,
    /// `Broker/CommitPartition`.
    CommitPartition,
    /// `Broker/LeaveSourceGroup`.
    LeaveSourceGroup,
    /// Any `Admin` call, by method name.
    Admin(&'static str),
    /// gRPC reflection, when `--reflection admin`.
    Reflection,
    /// `GET /metrics` on a listener that needs a credential.
    Metrics,
}

/// The Admin service's methods, as their paths name them.
pub const ADMIN_METHODS: [&str; 21] = [
    "GetJob",
    "ListJobs",
    "Stats",
    "ListWorkers",
    "RetryJob",
    "CancelJob",
    "PurgeQueue",
    "PauseQueue",
    "ResumeQueue",
    "SetQueueLimits",
    "GetQueueLimits",
    "ListKeys",
    "CreateSchedule",
    "GetSchedule",
    "ListSchedules",
    "DeleteSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
    "ListSourcePartitions",
    "SetSourcePositions",
];

impl Call {
    /// The Broker call of `method` (as its gRPC path names it), if any.
    pub fn broker(method: &str) -> Option<Self> {
        Some(match method {
            "Enqueue" => Self::Enqueue,
            "EnqueueBatch" => Self::EnqueueBatch,
            "EnqueueStream" => Self::EnqueueStream,
            "Lease" => Self::Lease,
            "Work" => Self::Work,
            "LeaseBatches" => Self::LeaseBatches,
            "Ack" => Self::Ack,
            "AckBatch" => Self::AckBatch,
            "Nack" => Self::Nack,
            "Extend" => Self::Extend,
            "Release" => Self::Release,
            "Progress" => Self::Progress,
            "ClaimPartitions" => Self::ClaimPartitions,
            "CommitPartition" => Self::CommitPartition,
            "LeaveSourceGroup" => Self::LeaveSourceGroup,
            _ => return None,
        })
    }

    /// The Admin call of `method`, if any.
    pub fn admin(method: &str) -> Option<Self> {
        ADMIN_METHODS
            .iter()
            .find(|m| **m == method)
            .map(|m| Self::Admin(m))
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Self::Admin(method) = self {
            return write!(f, "call Admin/{method}");
        }
        f.write_str(match self {
            Self::Enqueue => "Enqueue",
            Self::EnqueueBatch => "EnqueueBatch",
            Self::EnqueueStream => "EnqueueStream",
            Self::Lease => "Lease",
            Self::Work => "Work",
            Self::LeaseBatches => "LeaseBatches",
            Self::Ack => "Ack",
            Self::AckBatch => "AckBatch",
            Self::Nack => "Nack",
            Self::Extend => "Extend",
            Self::Release => "Release",
            Self::Progress => "Progress",
            Self::ClaimPartitions => "ClaimPartitions",
            Self::CommitPartition => "CommitPartition",
            Self::LeaveSourceGroup => "LeaveSourceGroup",
            Self::Admin(_) => "call Admin",
            Self::Reflection => "use reflection",
            Self::Metrics => "read metrics",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_its_call() {
        assert_eq!(Call::broker("AckBatch"), Some(Call::AckBatch));
        assert_eq!(Call::broker("Stats"), None);
        assert_eq!(Call::admin("PurgeQueue"), Some(Call::Admin("PurgeQueue")));
        assert_eq!(Call::admin("Enqueue"), None);
        for read in ADMIN_READS {
            assert!(ADMIN_METHODS.contains(&read));
        }
    }

    #[test]
    fn each_role_may_make_only_its_calls() {
        assert!(Role::Producer.may(Call::EnqueueBatch));
        assert!(!Role::Producer.may(Call::Lease));
        assert!(Role::Producer.may(Call::EnqueueStream));
        assert!(!Role::Producer.may(Call::Work));
        assert!(Role::Worker.may(Call::Work));
        assert!(!Role::Worker.may(Call::EnqueueStream));
        assert!(Role::Producer.may(Call::CommitPartition));
        assert!(!Role::Worker.may(Call::ClaimPartitions));
        assert!(!Role::Producer.may(Call::Admin("SetSourcePositions")));
        assert!(Role::Viewer.may(Call::Admin("ListSourcePartitions")));
        assert!(!Role::Viewer.may(Call::Admin("SetSourcePositions")));
        assert!(!Role::Producer.may(Call::Admin("Stats")));
        assert!(Role::Worker.may(Call::Release));
        assert!(Role::Worker.may(Call::Progress));
        assert!(!Role::Producer.may(Call::Progress));
        assert!(!Role::Viewer.may(Call::Progress));
        assert!(!Role::Worker.may(Call::Enqueue));
        assert!(!Role::Worker.may(Call::Reflection));
        assert!(Role::Admin.may(Call::Reflection));
        assert!(Role::Admin.may(Call::Lease));
        assert!(Role::Admin.may(Call::Metrics));
        assert!(Role::Metrics.may(Call::Metrics));
        assert!(!Role::Metrics.may(Call::Admin("Stats")));
        assert!(!Role::Metrics.may(Call::Enqueue));
        assert!(!Role::Producer.may(Call::Metrics));
        assert!(Role::Viewer.may(Call::Admin("Stats")));
        assert!(Role::Viewer.may(Call::Admin("GetJob")));
        assert!(!Role::Viewer.may(Call::Admin("RetryJob")));
        assert!(!Role::Viewer.may(Call::Admin("PurgeQueue")));
        assert!(!Role::Viewer.may(Call::Enqueue));
        assert!(!Role::Viewer.may(Call::Metrics));
        assert!(!Role::Viewer.may(Call::Reflection));
    }
}
