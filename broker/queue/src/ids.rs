//! What ids are made of. A job's public id is its seq (the position in
//! the job table) encrypted with Speck64/128, a 64-bit block cipher, under
//! a key of the store's, so that an id maps back to its job without an
//! index, yet knowing any number of ids tells nothing about another: the
//! 64 bits that differ between jobs are a keyed permutation only the
//! broker can compute. The other 58 bits are the store's instance, the
//! same for all its ids, which keeps stores' ids apart; 6 bits are the
//! UUID's version (8) and variant.
//!
//! Lease ids are 128 bits from the queue's generator (ChaCha12, seeded by
//! the owner from the operating system's generator): unguessable too.
//!
//! The queue is pure: the owner draws the secrets ([`Secrets`]) and keeps
//! the store's ([`IdSecret`]) with the store.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use speck_cipher::Speck64_128;
use speck_cipher::cipher::{Array, BlockCipherDecrypt as _, BlockCipherEncrypt as _, KeyInit as _};
use uuid::Uuid;

use super::job::Seq;

/// The secret of a store's job ids, kept with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSecret {
    /// The store's instance: 58 of its bits are in every id.
    pub instance: [u8; 8],
    /// The Speck64/128 key that permutes seqs.
    pub key: [u8; 16],
}

/// What a queue draws its randomness from: the seed of its generator
/// (lease ids, backoff jitter) and the secret of its job ids.
#[derive(Debug, Clone, Copy)]
pub struct Secrets {
    /// Seeds the generator.
    pub seed: [u8; 32],
    /// The job ids' secret, unless the store keeps one already.
    pub ids: IdSecret,
}

impl From<u64> for Secrets {
    /// Secrets derived from `seed`, for tests that must be reproducible.
    fn from(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            seed: rng.random(),
            ids: IdSecret {
                instance: rng.random(),
                key: rng.random(),
            },
        }
    }
}

/// Turns seqs into job ids and back.
#[derive(Clone)]
pub(super) struct JobIds {
    secret: IdSecret,
    cipher: Speck64_128,
}

impl std::fmt::Debug for JobIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobIds")
    }
}

impl JobIds {
    pub(super) fn new(secret: IdSecret) -> Self {
        Self {
            secret,
            cipher: Speck64_128::new(&Array::from(secret.key)),
        }
    }

    pub(super) fn secret(&self) -> IdSecret {
        self.secret
    }

    /// The id of job `seq`. Layout: bytes 0-5, 7 and 9 hold the encrypted
    /// seq; the low nibble of byte 6, the low 6 bits of byte 8 and bytes
    /// 10-15 the instance; the rest is the UUID's version and variant.
    pub(super) fn id(&self, seq: Seq) -> Uuid {
        let mut block = Array::from(seq.to_be_bytes());
        self.cipher.encrypt_block(&mut block);
        let (c, i) = (block.0, self.secret.instance);
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&c[..6]);
        bytes[6] = i[0] & 0x0f;
        bytes[7] = c[6];
        bytes[8] = i[1] & 0x3f;
        bytes[9] = c[7];
        bytes[10..].copy_from_slice(&i[2..]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// The seq of `id`, if it is an id of this store (whether that job
    /// exists is the caller's to check).
    pub(super) fn seq(&self, id: Uuid) -> Option<Seq> {
        let (b, i) = (id.as_bytes(), self.secret.instance);
        let ours = b[6] & 0x0f == i[0] & 0x0f && b[8] & 0x3f == i[1] & 0x3f && b[10..] == i[2..];
        if !ours {
            return None;
        }
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&b[..6]);
        c[6] = b[7];
        c[7] = b[9];
        let mut block = Array::from(c);
        self.cipher.decrypt_block(&mut block);
        let seq = Seq::from_be_bytes(block.0);
        (self.id(seq) == id).then_some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speck64_128_matches_its_published_test_vector() {
        // The Speck paper's test vector, as RustCrypto's tests give it.
        let key: [u8; 16] = [
            0x1b, 0x1a, 0x19, 0x18, 0x13, 0x12, 0x11, 0x10, 0x0b, 0x0a, 0x09, 0x08, 0x03, 0x02,
            0x01, 0x00,
        ];
        let cipher = Speck64_128::new(&Array::from(key));
        let mut block = Array::from(*b";rettuC-");
        cipher.encrypt_block(&mut block);
        assert_eq!(block.0, [0x8c, 0x6f, 0xa5, 0x48, 0x45, 0x4e, 0x02, 0x8b]);
    }

    #[test]
    fn an_id_maps_back_to_its_seq_and_only_this_stores_ids_do() {
        let ids = JobIds::new(Secrets::from(1).ids);
        for seq in [0, 1, 2, 1 << 40, (1 << 54) - 1] {
            let id = ids.id(seq);
            assert_eq!(id.get_version_num(), 8);
            assert_eq!(ids.seq(id), Some(seq));
        }
        let other = JobIds::new(Secrets::from(2).ids);
        assert_eq!(other.seq(ids.id(5)), None);
        // A flipped bit of the encrypted part is another seq, never an error.
        let mut bytes = *ids.id(5).as_bytes();
        bytes[0] ^= 1;
        assert_ne!(ids.seq(Uuid::from_bytes(bytes)), Some(5));
    }

    #[test]
    fn consecutive_ids_share_nothing_but_the_instance() {
        let ids = JobIds::new(Secrets::from(3).ids);
        let (a, b) = (
            ids.id(1000).as_bytes().to_owned(),
            ids.id(1001).as_bytes().to_owned(),
        );
        let encrypted = |x: &[u8]| [x[0], x[1], x[2], x[3], x[4], x[5], x[7], x[9]];
        let differing = encrypted(&a)
            .iter()
            .zip(encrypted(&b))
            .map(|(x, y)| (x ^ y).count_ones())
            .sum::<u32>();
        // Of 64 bits, about half differ for a permutation; a counter's
        // neighbours would differ in one or two.
        assert!((16..=48).contains(&differing), "{differing} bits differ");
        assert_eq!(a[10..], b[10..]);
    }
}
