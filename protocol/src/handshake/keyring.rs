//! Many keys, one stock client: which configured key made a client's answer.
//!
//! A stock `multiprocessing.connection.Client` sends no user name: all the listener learns is
//! an HMAC of its own challenge. With named users (each with a key of its own) the listener
//! therefore tries the answer against every key; the one that verifies names the user.
//!
//! Cost. HMAC with a key is two hashes: one over `key ^ ipad` followed by the message, one over
//! `key ^ opad` followed by the first hash. Both keyed prefixes are the same for every message,
//! so the ring hashes them once, when it is built, and each trial clones that keyed state,
//! absorbs the 48-byte challenge and finishes: two compression-function (or Keccak) calls
//! per key, whatever the digest (`Hmac<D>` keeps both keyed states; with hmac 0.13 and sha3 0.11
//! this holds for the sha3 digests too). The states of one digest sit in one array, so a scan
//! walks memory in order. `cargo bench -p mphub-protocol --bench handshake` measures it.
//!
//! Timing. Each comparison is constant-time (`verify_slice`), and the scan stops at the first
//! key that verifies. A wrong answer (everything an attacker without a key can send) always
//! costs the full scan, so its timing says nothing about any key; a right answer is faster the
//! earlier its key sits in the ring, which tells a key holder only where its own key sits in
//! the configuration. Scanning on after a match would double the average cost of every
//! successful handshake to hide that.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};

use super::{answer_parts, Digest};
use crate::error::{DuplicateKey, HandshakeError};

/// What every duplicate check MACs: any fixed message tells equal HMAC keys apart.
const PROBE: &[u8] = b"mphub key-ring duplicate probe";

/// A set of authkeys, prepared so that finding which one made a handshake answer is cheap.
///
/// Built once (at startup or config reload) from the keys in configuration order; the index of
/// a key is the index [`KeyRing::identify`] returns and
/// [`Handshake::key_index`](super::Handshake::key_index) reports. Share it between connections
/// behind an `Arc`. Holds each key's keyed state for all five digests: about 1.6 KB per key
/// (8 MB for 5,000 keys). `Debug` shows how many keys it holds, never the keys.
pub struct KeyRing {
    /// The keys as configured, to answer the client's own challenge with the matched one.
    keys: Vec<Vec<u8>>,
    md5: Vec<Hmac<md5::Md5>>,
    sha256: Vec<Hmac<sha2::Sha256>>,
    sha384: Vec<Hmac<sha2::Sha384>>,
    sha3_256: Vec<Hmac<sha3::Sha3_256>>,
    sha3_384: Vec<Hmac<sha3::Sha3_384>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Keyed HMAC state for `key`. HMAC takes keys of any length, so this cannot fail.
fn keyed<M: KeyInit>(key: &[u8]) -> M {
    M::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// Index of the first state whose HMAC of `message` is `tag`; every comparison constant-time.
fn first_match<M: Mac + Clone>(states: &[M], message: &[u8], tag: &[u8]) -> Option<usize> {
    states.iter().position(|state| {
        let mut mac = state.clone();
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    })
}

/// The first pair of states that give the same MAC for [`PROBE`], as indexes.
fn first_collision<M: Mac + Clone>(states: &[M]) -> Option<(usize, usize)> {
    let mut seen = HashMap::with_capacity(states.len());
    for (i, state) in states.iter().enumerate() {
        let mut mac = state.clone();
        mac.update(PROBE);
        match seen.entry(mac.finalize().into_bytes().to_vec()) {
            Entry::Occupied(first) => return Some((*first.get(), i)),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    None
}

impl KeyRing {
    /// Prepares `keys` (in configuration order; a key is any bytes, as CPython's `authkey`).
    ///
    /// Errors with [`DuplicateKey`] when two keys cannot be told apart by some digest's HMAC —
    /// equal bytes, but also `b"k"` and `b"k\0"` (HMAC pads short keys with zeros) or a key
    /// longer than a digest's block and that key's hash — because an answer would then name
    /// either user. The check MACs a fixed probe under each key; distinct effective keys
    /// colliding there would be an HMAC forgery.
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Result<Self, DuplicateKey> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        let ring = KeyRing {
            md5: keys.iter().map(|k| keyed(k)).collect(),
            sha256: keys.iter().map(|k| keyed(k)).collect(),
            sha384: keys.iter().map(|k| keyed(k)).collect(),
            sha3_256: keys.iter().map(|k| keyed(k)).collect(),
            sha3_384: keys.iter().map(|k| keyed(k)).collect(),
            keys,
        };
        let collision = first_collision(&ring.md5)
            .or_else(|| first_collision(&ring.sha256))
            .or_else(|| first_collision(&ring.sha384))
            .or_else(|| first_collision(&ring.sha3_256))
            .or_else(|| first_collision(&ring.sha3_384));
        match collision {
            Some((first, second)) => Err(DuplicateKey { first, second }),
            None => Ok(ring),
        }
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the ring holds no key (every answer is then refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key at `index`, as it was given to [`KeyRing::new`].
    pub fn key(&self, index: usize) -> Option<&[u8]> {
        self.keys.get(index).map(Vec::as_slice)
    }

    /// Which key made `response`, the client's answer to our challenge `message` (what
    /// followed `#CHALLENGE#`, `{sha256}` prefix included), as CPython's `_verify_challenge`
    /// would accept it for that key: a raw 16-byte HMAC-MD5 (CPython <= 3.11) or `{digest}` +
    /// HMAC with any allowed digest. Returns the key's index.
    ///
    /// Errors: [`HandshakeError::WrongKey`] when no key verifies (or the MAC has the wrong
    /// length for its digest), [`HandshakeError::UnknownDigest`] or
    /// [`HandshakeError::MalformedResponse`] when `response` is not an answer at all.
    /// Cost: one HMAC per key up to the match (see the module docs).
    pub fn identify(&self, message: &[u8], response: &[u8]) -> Result<usize, HandshakeError> {
        let (digest, tag) = answer_parts(response)?;
        let digest = digest.unwrap_or(Digest::Md5);
        if tag.len() != digest.mac_len() {
            return Err(HandshakeError::WrongKey);
        }
        match digest {
            Digest::Md5 => first_match(&self.md5, message, tag),
            Digest::Sha256 => first_match(&self.sha256, message, tag),
            Digest::Sha384 => first_match(&self.sha384, message, tag),
            Digest::Sha3_256 => first_match(&self.sha3_256, message, tag),
            Digest::Sha3_384 => first_match(&self.sha3_384, message, tag),
        }
        .ok_or(HandshakeError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::respond;

    fn ring(n: usize) -> KeyRing {
        KeyRing::new((0..n).map(|i| format!("key number {i}"))).unwrap()
    }

    const MESSAGE: &[u8] = b"{sha256}0123456789012345678901234567890123456789";

    #[test]
    fn every_digest_and_legacy_md5_names_the_key_that_made_the_answer() {
        let ring = ring(7);
        for i in 0..7 {
            let key = format!("key number {i}");
            let legacy = Digest::Md5.mac(key.as_bytes(), MESSAGE);
            assert_eq!(ring.identify(MESSAGE, &legacy).unwrap(), i);
            for d in Digest::ALL {
                let mut answer = format!("{{{}}}", d.name()).into_bytes();
                answer.extend(d.mac(key.as_bytes(), MESSAGE));
                assert_eq!(ring.identify(MESSAGE, &answer).unwrap(), i, "{d:?}");
            }
        }
        assert_eq!(
            ring.identify(MESSAGE, &respond(b"key number 3", MESSAGE).unwrap())
                .unwrap(),
            3
        );
    }

    #[test]
    fn an_answer_from_a_key_outside_the_ring_is_a_wrong_key() {
        let ring = ring(5);
        let answer = respond(b"not in the ring", MESSAGE).unwrap();
        assert!(matches!(
            ring.identify(MESSAGE, &answer),
            Err(HandshakeError::WrongKey)
        ));
        let legacy = Digest::Md5.mac(b"not in the ring", MESSAGE);
        assert!(matches!(
            ring.identify(MESSAGE, &legacy),
            Err(HandshakeError::WrongKey)
        ));
        // A MAC of the wrong length for its digest, and an empty ring.
        assert!(matches!(
            ring.identify(MESSAGE, b"{sha256}short"),
            Err(HandshakeError::WrongKey)
        ));
        let empty = KeyRing::new(Vec::<Vec<u8>>::new()).unwrap();
        assert!(empty.is_empty());
        assert!(matches!(
            empty.identify(MESSAGE, &answer),
            Err(HandshakeError::WrongKey)
        ));
    }

    #[test]
    fn answers_that_are_not_answers_are_named_as_such() {
        let ring = ring(2);
        assert!(matches!(
            ring.identify(MESSAGE, b"{sha1}0123456789abcdef0123"),
            Err(HandshakeError::UnknownDigest(_))
        ));
        assert!(matches!(
            ring.identify(MESSAGE, b"\x80\x04\x95 a pickle, not an answer"),
            Err(HandshakeError::MalformedResponse(_))
        ));
    }

    #[test]
    fn equal_keys_and_keys_hmac_cannot_tell_apart_are_duplicates() {
        let err = KeyRing::new(["a", "b", "c", "b"]).unwrap_err();
        assert_eq!((err.first, err.second), (1, 3));
        // HMAC pads a short key with zeros: these two make the same MAC for every digest.
        let err = KeyRing::new([&b"k"[..], b"x", b"k\0"]).unwrap_err();
        assert_eq!((err.first, err.second), (0, 2));
        // A key longer than sha256's 64-byte block is replaced by its hash.
        let long = [7u8; 100];
        let hashed = <sha2::Sha256 as hmac::digest::Digest>::digest(long).to_vec();
        let err = KeyRing::new([long.to_vec(), hashed]).unwrap_err();
        assert_eq!((err.first, err.second), (0, 1));
        assert!(KeyRing::new(["a", "b", "c"]).is_ok());
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let shown = format!("{:?}", KeyRing::new(["secret-key-bytes"]).unwrap());
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains('1'), "{shown}");
    }
}
