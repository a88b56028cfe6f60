//! The mutual HMAC challenge of `multiprocessing.connection`, in both roles, without sockets.
//!
//! [`Handshake`] is a sans-I/O state machine: take the frame bodies it wants sent with
//! [`Handshake::transmit`], hand it each frame body the peer sends with [`Handshake::receive`],
//! until [`Handshake::is_done`]. The `io` module (feature `tokio`) drives it over a stream.
//!
//! What CPython does, and so what this does:
//! - The side that *delivers* sends `#CHALLENGE#` + message. 3.12+ send `{sha256}` + 40 random
//!   bytes; 3.11 and older send 20 random bytes with no prefix.
//! - The side that *answers* replies with a raw 16-byte HMAC-MD5 of the message when the message
//!   is 20 bytes long (a legacy peer), else `{digest}` + HMAC(digest) of the whole message, prefix
//!   included, with the digest the message names. A 3.11 client answers every challenge with raw
//!   HMAC-MD5, which the deliverer accepts.
//! - The deliverer verifies in constant time and replies `#WELCOME#` or `#FAILURE#`.
//! - A listener delivers then answers; a client answers then delivers.
//!
//! A listener holds one key ([`Handshake::listener`]) or a [`KeyRing`] of many
//! ([`Handshake::listener_ring`]): then the client's answer is tried against every key, the one
//! that verifies names the peer ([`Handshake::key_index`]), and the listener answers the client's
//! own challenge with that key.

mod keyring;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use hmac::{Mac, SimpleHmac};

use crate::error::HandshakeError;

pub use keyring::KeyRing;

/// What a challenge starts with.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The deliverer's reply to a correct answer.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// The deliverer's reply to a wrong answer, before it closes.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// Largest handshake frame body CPython reads (`recv_bytes(256)`).
pub const MAX_FRAME: u64 = 256;
/// Random bytes in a modern challenge.
pub const NONCE_LEN: usize = 40;
/// Random bytes in a legacy (CPython <= 3.11) challenge.
pub const LEGACY_NONCE_LEN: usize = 20;
/// Length of a legacy raw HMAC-MD5 answer.
const MD5_LEN: usize = 16;
/// Longest digest name (`sha3_256`).
const MAX_DIGEST_NAME: usize = 8;

/// The digests CPython's `_ALLOWED_DIGESTS` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// HMAC-MD5, what CPython <= 3.11 uses (without a prefix).
    Md5,
    /// HMAC-SHA256, what CPython 3.12+ challenges with.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256.
    Sha3_256,
    /// HMAC-SHA3-384.
    Sha3_384,
}

impl Digest {
    /// Every allowed digest.
    pub const ALL: [Digest; 5] = [
        Digest::Md5,
        Digest::Sha256,
        Digest::Sha384,
        Digest::Sha3_256,
        Digest::Sha3_384,
    ];

    /// The name written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    /// The digest called `name`, if CPython allows it.
    pub fn from_name(name: &[u8]) -> Option<Digest> {
        Digest::ALL
            .into_iter()
            .find(|d| d.name().as_bytes() == name)
    }

    /// Length of the MAC in bytes (16 for md5, 32, 48, 32, 48).
    pub fn mac_len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 | Digest::Sha3_256 => 32,
            Digest::Sha384 | Digest::Sha3_384 => 48,
        }
    }

    /// HMAC of `message` under `key`.
    pub fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length, so this cannot fail.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<SimpleHmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<SimpleHmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<SimpleHmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message),
        }
    }

    /// Whether `tag` is the HMAC of `message`, compared in constant time.
    pub fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            mac.update(message);
            mac.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<SimpleHmac<md5::Md5>>(key, message, tag),
            Digest::Sha256 => run::<SimpleHmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => run::<SimpleHmac<sha2::Sha384>>(key, message, tag),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message, tag),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message, tag),
        }
    }
}

/// Splits a challenge message or a response into its digest (`None`: legacy, raw MD5) and the
/// rest, as CPython's `_get_digest_name_and_payload`.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8]), String> {
    if message.len() == LEGACY_NONCE_LEN || message.len() == MD5_LEN {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        let end = message.len().min(MAX_DIGEST_NAME + 2);
        if let Some(close) = message[1..end].iter().position(|&b| b == b'}') {
            let name = &message[1..close + 1];
            return match Digest::from_name(name) {
                Some(digest) => Ok((Some(digest), &message[close + 2..])),
                None => Err(format!(
                    "unsupported digest {:?}",
                    String::from_utf8_lossy(name)
                )),
            };
        }
    }
    Err(format!("{} bytes with no {{digest}} prefix", message.len()))
}

/// The answer to a challenge `message` (what follows `#CHALLENGE#`), as CPython's
/// `_create_response`: raw HMAC-MD5 for a 20-byte legacy message, else `{digest}` + HMAC.
pub fn respond(key: &[u8], message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let (digest, _) = digest_and_payload(message).map_err(|reason| {
        if reason.starts_with("unsupported digest") {
            HandshakeError::UnknownDigest(reason)
        } else {
            HandshakeError::MalformedChallenge("no {digest} prefix and not 20 bytes long")
        }
    })?;
    Ok(match digest {
        None => Digest::Md5.mac(key, message),
        Some(d) => {
            let mut out = format!("{{{}}}", d.name()).into_bytes();
            out.extend_from_slice(&d.mac(key, message));
            out
        }
    })
}

/// Splits a peer's answer into its digest (`None`: legacy raw MD5) and MAC.
fn answer_parts(response: &[u8]) -> Result<(Option<Digest>, &[u8]), HandshakeError> {
    digest_and_payload(response).map_err(|reason| {
        if reason.starts_with("unsupported digest") {
            HandshakeError::UnknownDigest(reason)
        } else {
            HandshakeError::MalformedResponse(reason)
        }
    })
}

/// Checks a peer's answer to our challenge `message`, as CPython's `_verify_challenge`: the
/// answer may pick any allowed digest; the MAC covers the whole message, prefix included.
pub fn verify(key: &[u8], message: &[u8], response: &[u8]) -> Result<(), HandshakeError> {
    let (digest, tag) = answer_parts(response)?;
    if digest.unwrap_or(Digest::Md5).verify(key, message, tag) {
        Ok(())
    } else {
        Err(HandshakeError::WrongKey)
    }
}

/// The challenge one side delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// CPython <= 3.11: 20 random bytes, no prefix.
    Legacy([u8; LEGACY_NONCE_LEN]),
    /// CPython 3.12+: `{digest}` + 40 random bytes.
    Modern(Digest, [u8; NONCE_LEN]),
}

impl Challenge {
    /// What follows `#CHALLENGE#`, and what the MAC covers.
    pub fn message(&self) -> Vec<u8> {
        match self {
            Challenge::Legacy(nonce) => nonce.to_vec(),
            Challenge::Modern(digest, nonce) => {
                let mut out = format!("{{{}}}", digest.name()).into_bytes();
                out.extend_from_slice(nonce);
                out
            }
        }
    }
}

/// Which side of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `Listener.accept`: deliver a challenge, then answer the client's.
    Listener,
    /// `Client`: answer the listener's challenge, then deliver one.
    Client,
}

#[derive(Debug)]
enum State {
    /// We delivered `message` and wait for the answer.
    AwaitAnswer {
        message: Vec<u8>,
    },
    /// We wait for the peer's challenge.
    AwaitChallenge,
    /// We answered and wait for `#WELCOME#`.
    AwaitWelcome,
    Done,
    Failed,
}

/// The key or keys one side may use.
enum Keys {
    One(Vec<u8>),
    Ring(Arc<KeyRing>),
}

/// One handshake in progress. See the module docs. `Debug` never shows a key.
pub struct Handshake {
    keys: Keys,
    /// Which key the peer proved it holds (always 0 with one key), once it has.
    matched: Option<usize>,
    role: Role,
    challenge: Challenge,
    state: State,
    out: VecDeque<Vec<u8>>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Handshake");
        if let Keys::Ring(ring) = &self.keys {
            d.field("ring", ring);
        }
        d.field("matched", &self.matched)
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    fn new(keys: Keys, role: Role, challenge: Challenge) -> Self {
        let mut hs = Handshake {
            keys,
            matched: None,
            role,
            challenge,
            state: State::AwaitChallenge,
            out: VecDeque::new(),
        };
        if role == Role::Listener {
            hs.deliver();
        }
        hs
    }

    /// A listener's (the broker's) side with one key, delivering `challenge` first.
    pub fn listener(key: &[u8], challenge: Challenge) -> Self {
        Handshake::new(Keys::One(key.to_vec()), Role::Listener, challenge)
    }

    /// A listener's side that accepts any key of `ring`, delivering `challenge` first. Once the
    /// client's answer verifies, [`Handshake::key_index`] says whose key it was, and the
    /// client's own challenge is answered with that key. Checking the answer costs one HMAC
    /// per key up to the match ([`KeyRing::identify`]); a wrong answer costs one per key.
    pub fn listener_ring(ring: Arc<KeyRing>, challenge: Challenge) -> Self {
        Handshake::new(Keys::Ring(ring), Role::Listener, challenge)
    }

    /// A client's side, answering the listener first, then delivering `challenge`.
    pub fn client(key: &[u8], challenge: Challenge) -> Self {
        Handshake::new(Keys::One(key.to_vec()), Role::Client, challenge)
    }

    /// The index of the key the peer proved it holds: its index in the [`KeyRing`] for
    /// [`Handshake::listener_ring`], `0` with one key; `None` until the peer's answer to our
    /// challenge has verified (both roles deliver a challenge, so both learn it).
    pub fn key_index(&self) -> Option<usize> {
        self.matched
    }

    /// How many HMACs the next [`Handshake::receive`] may compute: the ring's size while a
    /// ring listener waits for the client's answer, else 1. A driver can use it to move that
    /// call off an async executor (as [`crate::io::accept`] does for large rings).
    pub fn next_receive_cost(&self) -> usize {
        match (&self.state, &self.keys) {
            (State::AwaitAnswer { .. }, Keys::Ring(ring)) => ring.len().max(1),
            _ => 1,
        }
    }

    /// The key to answer the peer's challenge with: the one it proved, with a ring.
    fn answering_key(&self) -> &[u8] {
        match &self.keys {
            Keys::One(key) => key,
            Keys::Ring(ring) => self.matched.and_then(|i| ring.key(i)).unwrap_or_default(),
        }
    }

    /// The side this handshake plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The next frame body to send, if any. Send all of them before waiting for the peer, and
    /// also after an error: a failed check queues `#FAILURE#` for the peer.
    pub fn transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// True once both challenges have been met.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn deliver(&mut self) {
        let message = self.challenge.message();
        let mut frame = CHALLENGE.to_vec();
        frame.extend_from_slice(&message);
        self.out.push_back(frame);
        self.state = State::AwaitAnswer { message };
    }

    /// Takes the next frame body from the peer.
    pub fn receive(&mut self, body: &[u8]) -> Result<(), HandshakeError> {
        if body.len() as u64 > MAX_FRAME {
            self.state = State::Failed;
            return Err(HandshakeError::TooLarge(body.len() as u64));
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        match state {
            State::AwaitAnswer { message } => {
                let checked = match &self.keys {
                    Keys::One(key) => verify(key, &message, body).map(|()| 0),
                    Keys::Ring(ring) => ring.identify(&message, body),
                };
                match checked {
                    Ok(index) => self.matched = Some(index),
                    Err(e) => {
                        self.out.push_back(FAILURE.to_vec());
                        return Err(e);
                    }
                }
                self.out.push_back(WELCOME.to_vec());
                self.state = match self.role {
                    Role::Listener => State::AwaitChallenge,
                    Role::Client => State::Done,
                };
            }
            State::AwaitChallenge => {
                let message = body
                    .strip_prefix(CHALLENGE)
                    .ok_or(HandshakeError::MalformedChallenge("no #CHALLENGE# prefix"))?;
                if message.len() < LEGACY_NONCE_LEN {
                    return Err(HandshakeError::MalformedChallenge("shorter than 20 bytes"));
                }
                self.out.push_back(respond(self.answering_key(), message)?);
                self.state = State::AwaitWelcome;
            }
            State::AwaitWelcome => {
                if body != WELCOME {
                    return Err(HandshakeError::Rejected);
                }
                match self.role {
                    Role::Listener => self.state = State::Done,
                    Role::Client => self.deliver(),
                }
            }
            State::Done | State::Failed => return Err(HandshakeError::Over),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        mut listener: Handshake,
        mut client: Handshake,
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        for _ in 0..8 {
            while let Some(frame) = listener.transmit() {
                if let Err(e) = client.receive(&frame) {
                    let _ = listener.receive(&client.transmit().unwrap_or_default());
                    return (Ok(()), Err(e));
                }
            }
            while let Some(frame) = client.transmit() {
                if let Err(e) = listener.receive(&frame) {
                    let failure = listener.transmit();
                    return (Err(e), failure.map_or(Ok(()), |f| client.receive(&f)));
                }
            }
        }
        assert!(listener.is_done() && client.is_done());
        (Ok(()), Ok(()))
    }

    #[test]
    fn both_roles_agree_with_every_digest_and_legacy() {
        let mut challenges = vec![Challenge::Legacy([7; 20])];
        challenges.extend(Digest::ALL.map(|d| Challenge::Modern(d, [9; 40])));
        for client_challenge in challenges {
            let listener = Handshake::listener(b"key", Challenge::Modern(Digest::Sha256, [1; 40]));
            let client = Handshake::client(b"key", client_challenge.clone());
            let (l, c) = run(listener, client);
            assert!(l.is_ok() && c.is_ok(), "{client_challenge:?}: {l:?} {c:?}");
        }
    }

    #[test]
    fn a_ring_listener_names_the_clients_key_and_answers_with_it() {
        let keys = ["alice", "bob", "carol"];
        let ring = Arc::new(KeyRing::new(keys).unwrap());
        for (i, key) in keys.iter().enumerate() {
            for client_challenge in [
                Challenge::Legacy([7; 20]),
                Challenge::Modern(Digest::Sha3_256, [9; 40]),
            ] {
                let mut listener = Handshake::listener_ring(
                    ring.clone(),
                    Challenge::Modern(Digest::Sha256, [1; 40]),
                );
                assert_eq!(listener.next_receive_cost(), 3);
                assert_eq!(listener.key_index(), None);
                let mut client = Handshake::client(key.as_bytes(), client_challenge);
                let mut frames = 0;
                while !(listener.is_done() && client.is_done()) && frames < 16 {
                    while let Some(f) = listener.transmit() {
                        client.receive(&f).unwrap();
                        frames += 1;
                    }
                    while let Some(f) = client.transmit() {
                        listener.receive(&f).unwrap();
                        frames += 1;
                    }
                }
                assert!(listener.is_done() && client.is_done());
                assert_eq!(listener.key_index(), Some(i), "{key}");
                assert_eq!(listener.next_receive_cost(), 1);
            }
        }
    }

    #[test]
    fn a_ring_listener_refuses_a_key_outside_the_ring_with_failure() {
        let ring = Arc::new(KeyRing::new(["alice", "bob"]).unwrap());
        let mut listener =
            Handshake::listener_ring(ring, Challenge::Modern(Digest::Sha256, [1; 40]));
        let mut client = Handshake::client(b"mallory", Challenge::Legacy([2; 20]));
        client.receive(&listener.transmit().unwrap()).unwrap();
        let err = listener.receive(&client.transmit().unwrap()).unwrap_err();
        assert!(matches!(err, HandshakeError::WrongKey));
        assert_eq!(listener.transmit().unwrap(), FAILURE);
        assert_eq!(listener.key_index(), None);
        assert!(!format!("{listener:?}").contains("alice"));
    }

    #[test]
    fn a_wrong_key_is_refused_with_failure() {
        let mut listener =
            Handshake::listener(b"right", Challenge::Modern(Digest::Sha256, [1; 40]));
        let mut client = Handshake::client(b"wrong", Challenge::Modern(Digest::Sha256, [2; 40]));
        client.receive(&listener.transmit().unwrap()).unwrap();
        let err = listener.receive(&client.transmit().unwrap()).unwrap_err();
        assert!(matches!(err, HandshakeError::WrongKey));
        assert_eq!(listener.transmit().unwrap(), FAILURE);
        assert!(matches!(
            client.receive(FAILURE),
            Err(HandshakeError::Rejected)
        ));
    }

    #[test]
    fn a_legacy_raw_md5_answer_to_a_modern_challenge_is_accepted() {
        let mut listener = Handshake::listener(b"k", Challenge::Modern(Digest::Sha256, [3; 40]));
        let challenge = listener.transmit().unwrap();
        let raw_md5 = Digest::Md5.mac(b"k", &challenge[CHALLENGE.len()..]);
        listener.receive(&raw_md5).unwrap();
        assert_eq!(listener.transmit().unwrap(), WELCOME);
    }

    #[test]
    fn a_pickle_instead_of_a_digest_is_malformed() {
        let mut listener = Handshake::listener(b"k", Challenge::Modern(Digest::Sha256, [3; 40]));
        let _ = listener.transmit();
        let pickle = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x03a.b\x94K\x01\x86\x94.";
        let err = listener.receive(pickle).unwrap_err();
        assert!(matches!(err, HandshakeError::MalformedResponse(_)), "{err}");
        assert_eq!(listener.transmit().unwrap(), FAILURE);
    }

    #[test]
    fn an_unknown_digest_is_named() {
        let err = verify(b"k", b"{sha256}xxxx", b"{sha1}0123456789abcdef0123").unwrap_err();
        assert!(
            matches!(err, HandshakeError::UnknownDigest(ref d) if d.contains("sha1")),
            "{err}"
        );
    }

    #[test]
    fn oversized_and_prefixless_challenges_are_refused() {
        let mut client = Handshake::client(b"k", Challenge::Legacy([0; 20]));
        assert!(matches!(
            client.receive(&[0; 300]),
            Err(HandshakeError::TooLarge(300))
        ));
        let mut client = Handshake::client(b"k", Challenge::Legacy([0; 20]));
        assert!(matches!(
            client.receive(b"#WELCOME#"),
            Err(HandshakeError::MalformedChallenge(_))
        ));
        let mut client = Handshake::client(b"k", Challenge::Legacy([0; 20]));
        assert!(matches!(
            client.receive(b"#CHALLENGE#short"),
            Err(HandshakeError::MalformedChallenge(_))
        ));
    }
}
