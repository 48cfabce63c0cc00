//! Which queues a caller may see: exact names and prefixes, as a token
//! file's QUEUES list gives them. It lives here, below the broker, because
//! reads filter by it (ListJobs, Stats) and every backend applies it where
//! it finds the jobs. Pure: a scope is data, and `allows` a function of a
//! name.

/// The queues a credential covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum QueueScope {
    /// No list: every queue.
    #[default]
    Every,
    /// Exact names and prefixes (a name that ended in `*`).
    Only(Vec<QueuePattern>),
}

/// One entry of a queue list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuePattern {
    /// This queue.
    Exact(String),
    /// Every queue whose name starts with this.
    Prefix(String),
}

impl QueueScope {
    /// Whether `queue` is covered.
    pub fn allows(&self, queue: &str) -> bool {
        match self {
            Self::Every => true,
            Self::Only(patterns) => patterns.iter().any(|p| match p {
                QueuePattern::Exact(name) => name == queue,
                QueuePattern::Prefix(prefix) => queue.starts_with(prefix.as_str()),
            }),
        }
    }

    /// Whether every queue is covered, so nothing need be filtered.
    pub fn is_every(&self) -> bool {
        matches!(self, Self::Every)
    }

    /// The exact names and the prefixes, apart (for a backend that filters
    /// in its query language).
    pub fn split(&self) -> (Vec<&str>, Vec<&str>) {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        if let Self::Only(patterns) = self {
            for pattern in patterns {
                match pattern {
                    QueuePattern::Exact(name) => exact.push(name.as_str()),
                    QueuePattern::Prefix(prefix) => prefixes.push(prefix.as_str()),
                }
            }
        }
        (exact, prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_covers_the_queues_that_start_with_it() {
        let scope = QueueScope::Only(vec![
            QueuePattern::Exact("mail".into()),
            QueuePattern::Prefix("billing.".into()),
        ]);
        assert!(scope.allows("mail"));
        assert!(!scope.allows("mail2"));
        assert!(scope.allows("billing.eu"));
        assert!(!scope.allows("billing"));
        assert!(QueueScope::Every.allows("anything"));
        assert_eq!(scope.split(), (vec!["mail"], vec!["billing."]));
    }
}
