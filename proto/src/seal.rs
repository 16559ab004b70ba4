//! Every gossip packet, sealed: `version (1) | nonce (24) | XChaCha20-Poly1305(timestamp ‖ payload) | tag (16)`.
//!
//! The version byte is authenticated (it is the AEAD's associated data), the timestamp
//! inside the ciphertext bounds how old a packet may be, and a cache of recent nonces
//! rejects a packet replayed within that window. Nothing that fails to open is trusted.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};

/// The wire format version this build speaks.
pub const WIRE_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const TIMESTAMP_LEN: usize = 8;
/// Bytes a sealed packet adds to its payload.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TIMESTAMP_LEN + TAG_LEN;
/// Most nonces remembered for replay detection: bounds memory under a flood.
const MAX_REMEMBERED: usize = 200_000;

/// The cluster key, `gossip.encryption_key`: base64 of exactly 32 bytes.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)") // never print key material
    }
}

/// Why a key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key configured.
    #[error(
        "gossip.encryption_key is missing: gossip is always encrypted; generate one with `head -c 32 /dev/urandom | base64`"
    )]
    Missing,
    /// Not base64.
    #[error("gossip.encryption_key is not valid base64: {0}")]
    Base64(String),
    /// Wrong length.
    #[error(
        "gossip.encryption_key must decode to 32 bytes, got {0}; generate one with `head -c 32 /dev/urandom | base64`"
    )]
    Length(usize),
    /// One entry of a key list is unusable.
    #[error("{source} (entry {number} of the list)")]
    Entry {
        /// 1-based position in the list.
        number: usize,
        /// What is wrong with it.
        source: Box<KeyError>,
    },
}

/// `gossip.encryption_key` as configured: one key, or a list during a rotation (the first
/// seals, every one opens; README, "Rotating the gossip key").
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum KeyText {
    /// One key.
    One(String),
    /// Several keys, the sealing one first.
    Many(Vec<String>),
}

impl KeyText {
    /// Parses every key; an empty list or value is [`KeyError::Missing`].
    pub fn keys(&self) -> Result<Vec<ClusterKey>, KeyError> {
        match self {
            KeyText::One(text) => Ok(vec![ClusterKey::from_base64(Some(text))?]),
            KeyText::Many(texts) if texts.is_empty() => Err(KeyError::Missing),
            KeyText::Many(texts) => texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    ClusterKey::from_base64(Some(text)).map_err(|e| KeyError::Entry {
                        number: i + 1,
                        source: Box::new(e),
                    })
                })
                .collect(),
        }
    }
}

impl ClusterKey {
    /// Parses the configured value.
    pub fn from_base64(text: Option<&str>) -> Result<ClusterKey, KeyError> {
        let text = text
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(KeyError::Missing)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(ClusterKey(key))
    }

    /// From raw bytes (tests, benchmarks).
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than the envelope.
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    /// A wire version this build does not speak.
    #[error("unknown wire version {0}")]
    Version(u8),
    /// Wrong key, or modified in transit.
    #[error("authentication failed (wrong key or tampered packet)")]
    Auth,
    /// Sealed too long ago.
    #[error("packet is {0:?} old, outside the replay window")]
    Stale(Duration),
    /// Sealed in the future beyond the allowed clock skew.
    #[error("packet is {0:?} in the future, outside the replay window")]
    Future(Duration),
    /// Seen before.
    #[error("replayed packet")]
    Replay,
}

/// Seals packets under the first cluster key and opens them under any of the keys: during
/// a key rotation members that seal with the old key and with the new one understand
/// each other (README, "Rotating the gossip key").
pub struct Envelope {
    ciphers: Vec<XChaCha20Poly1305>,
    rng: SystemRandom,
    window: Duration,
    seen: HashSet<[u8; NONCE_LEN]>,
    order: VecDeque<(u64, [u8; NONCE_LEN])>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("window", &self.window)
            .field("remembered", &self.seen.len())
            .finish()
    }
}

impl Envelope {
    /// An envelope that accepts packets sealed within `window` of now (either way: clocks
    /// of cluster members may differ by that much).
    pub fn new(key: &ClusterKey, window: Duration) -> Envelope {
        Envelope::with_keys(std::slice::from_ref(key), window)
    }

    /// An envelope that seals with `keys[0]` and opens with any of `keys`.
    ///
    /// # Panics
    /// If `keys` is empty (configuration validation requires at least one).
    pub fn with_keys(keys: &[ClusterKey], window: Duration) -> Envelope {
        assert!(
            !keys.is_empty(),
            "an envelope needs at least one cluster key"
        );
        Envelope {
            ciphers: keys
                .iter()
                .map(|key| XChaCha20Poly1305::new(&key.0.into()))
                .collect(),
            rng: SystemRandom::new(),
            window,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Replaces the keys (a reload during a rotation); packets already seen stay seen.
    ///
    /// # Panics
    /// If `keys` is empty.
    pub fn set_keys(&mut self, keys: &[ClusterKey]) {
        let window = self.window;
        self.ciphers = Envelope::with_keys(keys, window).ciphers;
    }

    /// Seals `payload`, stamped with `now_ms` (milliseconds since the Unix epoch).
    pub fn seal(&self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // SystemRandom fails only if the OS has no randomness at all; a zero nonce would
        // then still be unique per packet only by luck, so refuse loudly instead.
        self.rng
            .fill(&mut nonce)
            .expect("the operating system's random number generator failed");
        let mut plaintext = Vec::with_capacity(TIMESTAMP_LEN + payload.len());
        plaintext.extend_from_slice(&now_ms.to_be_bytes());
        plaintext.extend_from_slice(payload);
        let aad = [WIRE_VERSION];
        let ciphertext = self.ciphers[0]
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length a UDP packet can have");
        let mut packet = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        packet.push(WIRE_VERSION);
        packet.extend_from_slice(&nonce);
        packet.extend_from_slice(&ciphertext);
        packet
    }

    /// Opens a packet received at `now_ms`; returns the payload.
    pub fn open(&mut self, packet: &[u8], now_ms: u64) -> Result<Vec<u8>, OpenError> {
        if packet.len() < OVERHEAD {
            return Err(OpenError::TooShort(packet.len()));
        }
        if packet[0] != WIRE_VERSION {
            return Err(OpenError::Version(packet[0]));
        }
        let nonce: [u8; NONCE_LEN] = packet[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| OpenError::TooShort(packet.len()))?;
        let plaintext = self
            .ciphers
            .iter()
            .find_map(|cipher| {
                cipher
                    .decrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: &packet[1 + NONCE_LEN..],
                            aad: &packet[..1],
                        },
                    )
                    .ok()
            })
            .ok_or(OpenError::Auth)?;
        let (stamp, payload) = plaintext.split_at(TIMESTAMP_LEN);
        let sealed_ms = u64::from_be_bytes(
            stamp
                .try_into()
                .map_err(|_| OpenError::TooShort(packet.len()))?,
        );
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if now_ms > sealed_ms.saturating_add(window_ms) {
            return Err(OpenError::Stale(Duration::from_millis(now_ms - sealed_ms)));
        }
        if sealed_ms > now_ms.saturating_add(window_ms) {
            return Err(OpenError::Future(Duration::from_millis(sealed_ms - now_ms)));
        }
        self.forget_before(now_ms.saturating_sub(window_ms));
        if !self.seen.insert(nonce) {
            return Err(OpenError::Replay);
        }
        self.order.push_back((sealed_ms, nonce));
        while self.order.len() > MAX_REMEMBERED {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        Ok(payload.to_vec())
    }

    /// Nonces of packets sealed before `cutoff_ms` cannot be replayed any more (the
    /// timestamp check rejects them), so they need not be remembered.
    fn forget_before(&mut self, cutoff_ms: u64) {
        while let Some((sealed, nonce)) = self.order.front().copied() {
            if sealed >= cutoff_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);
    const NOW: u64 = 1_795_219_200_000;

    fn envelope(byte: u8) -> Envelope {
        Envelope::new(&ClusterKey::from_bytes([byte; 32]), WINDOW)
    }

    #[test]
    fn seal_then_open_round_trips() {
        let (tx, mut rx) = (envelope(7), envelope(7));
        let packet = tx.seal(b"status report", NOW);
        assert_eq!(packet.len(), b"status report".len() + OVERHEAD);
        assert_eq!(packet[0], WIRE_VERSION);
        assert!(
            !packet.windows(6).any(|w| w == b"status"),
            "the payload is not readable on the wire"
        );
        assert_eq!(rx.open(&packet, NOW + 5).expect("open"), b"status report");
        assert_eq!(
            rx.open(&tx.seal(b"", NOW), NOW).expect("empty payload"),
            b""
        );
    }

    #[test]
    fn a_key_list_names_the_entry_that_is_wrong() {
        let good = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_owned();
        assert_eq!(KeyText::One(good.clone()).keys().map(|k| k.len()), Ok(1));
        assert_eq!(
            KeyText::Many(vec![good.clone(), good.clone()])
                .keys()
                .map(|k| k.len()),
            Ok(2)
        );
        assert_eq!(
            KeyText::Many(vec![]).keys().map(|k| k.len()),
            Err(KeyError::Missing)
        );
        let err = KeyText::Many(vec![good, "c2hvcnQ=".into()])
            .keys()
            .expect_err("short second key");
        assert_eq!(
            err.to_string(),
            "gossip.encryption_key must decode to 32 bytes, got 5; generate one with `head -c 32 /dev/urandom | base64` (entry 2 of the list)"
        );
    }

    #[test]
    fn during_a_rotation_the_first_key_seals_and_every_key_opens() {
        let (old, new) = (
            ClusterKey::from_bytes([1; 32]),
            ClusterKey::from_bytes([2; 32]),
        );
        let not_yet = Envelope::new(&old, WINDOW);
        let mut both_old_first = Envelope::with_keys(&[old.clone(), new.clone()], WINDOW);
        let mut both_new_first = Envelope::with_keys(&[new.clone(), old.clone()], WINDOW);
        let mut done = Envelope::new(&new, WINDOW);
        // Step 1 (new key added second): nodes not yet reloaded are still understood.
        let from_old = not_yet.seal(b"a", NOW);
        assert_eq!(both_old_first.open(&from_old, NOW).expect("old"), b"a");
        assert_eq!(both_new_first.open(&from_old, NOW).expect("old"), b"a");
        // Step 2 (new key first): those still on step 1 open it.
        let from_new = both_new_first.seal(b"b", NOW);
        assert_eq!(both_old_first.open(&from_new, NOW).expect("new"), b"b");
        assert_eq!(done.open(&from_new, NOW).expect("new"), b"b");
        // Step 3 (old key removed): the old key no longer opens anything.
        assert_eq!(
            done.open(&not_yet.seal(b"c", NOW), NOW),
            Err(OpenError::Auth)
        );
        both_old_first.set_keys(std::slice::from_ref(&new));
        assert_eq!(
            both_old_first.open(&not_yet.seal(b"d", NOW), NOW),
            Err(OpenError::Auth)
        );
        assert_eq!(
            both_old_first
                .open(&done.seal(b"e", NOW), NOW)
                .expect("new"),
            b"e"
        );
    }

    #[test]
    fn a_wrong_key_or_any_flipped_bit_is_rejected() {
        let tx = envelope(7);
        let packet = tx.seal(b"status report", NOW);
        assert_eq!(envelope(8).open(&packet, NOW), Err(OpenError::Auth));
        for i in 1..packet.len() {
            let mut tampered = packet.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                envelope(7).open(&tampered, NOW),
                Err(OpenError::Auth),
                "bit flip at byte {i}"
            );
        }
        let mut other_version = packet.clone();
        other_version[0] = 2;
        assert_eq!(
            envelope(7).open(&other_version, NOW),
            Err(OpenError::Version(2))
        );
        assert_eq!(
            envelope(7).open(&packet[..OVERHEAD - 1], NOW),
            Err(OpenError::TooShort(OVERHEAD - 1))
        );
        assert_eq!(
            envelope(7).open(&packet[..packet.len() - 1], NOW),
            Err(OpenError::Auth),
            "truncated tag"
        );
    }

    #[test]
    fn old_future_and_replayed_packets_are_rejected() {
        let tx = envelope(7);
        let mut rx = envelope(7);
        let old = tx.seal(b"x", NOW - 31_000);
        assert_eq!(
            rx.open(&old, NOW),
            Err(OpenError::Stale(Duration::from_secs(31)))
        );
        let future = tx.seal(b"x", NOW + 31_000);
        assert_eq!(
            rx.open(&future, NOW),
            Err(OpenError::Future(Duration::from_secs(31)))
        );
        let fresh = tx.seal(b"x", NOW);
        assert!(rx.open(&fresh, NOW).is_ok());
        assert_eq!(
            rx.open(&fresh, NOW + 1_000),
            Err(OpenError::Replay),
            "same packet again"
        );
        // Once outside the window the timestamp rejects it; the nonce is forgotten.
        assert_eq!(
            rx.open(&fresh, NOW + 31_000),
            Err(OpenError::Stale(Duration::from_secs(31)))
        );
        rx.open(&tx.seal(b"y", NOW + 31_000), NOW + 31_000)
            .expect("a new packet");
        assert_eq!(rx.seen.len(), 1, "nonces outside the window are forgotten");
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let tx = envelope(1);
        let a = tx.seal(b"same", NOW);
        let b = tx.seal(b"same", NOW);
        assert_ne!(a[1..25], b[1..25]);
        assert_ne!(a, b);
    }

    #[test]
    fn keys_are_checked_with_messages_naming_the_key() {
        assert_eq!(
            ClusterKey::from_base64(None).unwrap_err(),
            KeyError::Missing
        );
        assert_eq!(
            ClusterKey::from_base64(Some("  ")).unwrap_err(),
            KeyError::Missing
        );
        assert!(matches!(
            ClusterKey::from_base64(Some("not base64!")),
            Err(KeyError::Base64(_))
        ));
        assert_eq!(
            ClusterKey::from_base64(Some("c2hvcnQ=")).unwrap_err(),
            KeyError::Length(5)
        );
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(ClusterKey::from_base64(Some(&key)).is_ok());
        for err in [
            KeyError::Missing,
            KeyError::Base64("x".into()),
            KeyError::Length(5),
        ] {
            assert!(err.to_string().contains("gossip.encryption_key"), "{err}");
        }
        assert_eq!(
            format!("{:?}", ClusterKey::from_bytes([1; 32])),
            "ClusterKey(..)"
        );
    }
}
