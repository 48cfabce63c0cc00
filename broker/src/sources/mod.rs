//! Source groups, as the broker keeps them: what the rows of a group
//! ([`crate::backend::SourceStore`]) mean, and who should hold which
//! partition. A group has a row per live member (`m/<member>`, its
//! membership's end) and a row per partition (`p/<stream>/<partition>`,
//! its holder and the hold's end, with the store's epoch and position).
//!
//! Sharing: the live members, sorted by id, deal the partitions (sorted
//! by stream and number) round-robin, so every member computes the same
//! split. A member takes a partition dealt to it once it is free (never
//! held, released, or its hold ran out), with a new epoch, and releases
//! the ones no longer dealt to it. Safety never rests on these rules or
//! on clocks: a commit names its epoch, and a partition that changed
//! hands has another.

use bytes::Bytes;

use crate::backend::Millis;

/// The key of a member's row.
pub fn member_key(member: &str) -> String {
    format!("m/{member}")
}

/// The key of a partition's row.
pub fn partition_key(stream: &str, partition: i32) -> String {
    format!("p/{stream}/{partition}")
}

/// What a row's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKind<'a> {
    /// A member, by id.
    Member(&'a str),
    /// A partition: stream and number.
    Partition(&'a str, i32),
}

/// What `key` names; `None` for a key this broker does not write.
pub fn kind(key: &str) -> Option<RowKind<'_>> {
    if let Some(member) = key.strip_prefix("m/") {
        return Some(RowKind::Member(member));
    }
    let (stream, number) = key.strip_prefix("p/")?.rsplit_once('/')?;
    Some(RowKind::Partition(stream, number.parse().ok()?))
}

/// A row's body: the end of a membership or hold, and a partition's
/// holder (empty for a member, or a free partition).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hold {
    /// Milliseconds since the epoch.
    pub until: Millis,
    /// The member holding the partition.
    pub holder: String,
}

impl Hold {
    /// Whether someone holds it at `now`.
    pub fn held_at(&self, now: Millis) -> bool {
        !self.holder.is_empty() && self.until > now
    }

    /// The body: `until` (8 bytes, big-endian), then the holder.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(8 + self.holder.len());
        out.extend_from_slice(&self.until.to_be_bytes());
        out.extend_from_slice(self.holder.as_bytes());
        Bytes::from(out)
    }

    /// The hold a body says; a body this broker did not write reads as
    /// free and ended.
    pub fn decode(body: &[u8]) -> Self {
        let Some((until, holder)) = body.split_first_chunk::<8>() else {
            return Self::default();
        };
        Self {
            until: i64::from_be_bytes(*until),
            holder: String::from_utf8_lossy(holder).into_owned(),
        }
    }
}

/// The partitions of `partitions` dealt to `me` among the `members`
/// (every member sorted by id deals the same way).
pub fn share<'a>(
    partitions: &'a [(String, i32)],
    members: &[String],
    me: &str,
) -> Vec<&'a (String, i32)> {
    let mut members: Vec<&str> = members.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let Some(mine) = members.iter().position(|m| *m == me) else {
        return Vec::new();
    };
    let mut sorted: Vec<&(String, i32)> = partitions.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % members.len() == mine)
        .map(|(_, p)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_what_they_are() {
        assert_eq!(
            kind(&member_key("host-1:9")),
            Some(RowKind::Member("host-1:9"))
        );
        assert_eq!(
            kind(&partition_key("orders.v1", 7)),
            Some(RowKind::Partition("orders.v1", 7))
        );
        assert_eq!(kind("p/orders/x"), None);
        assert_eq!(kind("z/1"), None);
    }

    #[test]
    fn a_hold_decodes_to_what_was_encoded() {
        let hold = Hold {
            until: 1_765_000_000_000,
            holder: "member-a".into(),
        };
        assert_eq!(Hold::decode(&hold.encode()), hold);
        assert_eq!(Hold::decode(b"short"), Hold::default());
        assert!(hold.held_at(hold.until - 1));
        assert!(!hold.held_at(hold.until));
        assert!(!Hold::default().held_at(0));
    }

    #[test]
    fn members_deal_every_partition_once_whatever_order_they_see() {
        let partitions: Vec<(String, i32)> = (0..8)
            .map(|p| ("b".to_owned(), p))
            .chain((0..3).map(|p| ("a".to_owned(), p)))
            .collect();
        let members = vec!["m2".to_owned(), "m1".to_owned(), "m3".to_owned()];
        let mut reversed = partitions.clone();
        reversed.reverse();
        let mut all = Vec::new();
        for me in &members {
            let mine = share(&partitions, &members, me);
            assert_eq!(mine, share(&reversed, &members, me), "same split");
            assert!(mine.len() == 3 || mine.len() == 4, "{me}: {mine:?}");
            all.extend(mine);
        }
        all.sort();
        let mut expected: Vec<_> = partitions.iter().collect();
        expected.sort();
        assert_eq!(all, expected);
        assert!(share(&partitions, &members, "stranger").is_empty());
        let alone = share(&partitions, &["m1".to_owned()], "m1");
        assert_eq!(alone.len(), partitions.len());
    }
}
