//! What travels inside a sealed gossip packet: one kind byte, then the payload.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::seal::Envelope;
use crate::wire::{Message, MessageV2, SignedLatency};

/// Largest packet we send: below a 1500-byte Ethernet MTU with IP/UDP headers to spare.
pub const MAX_PACKET: usize = 1400;

/// The kind of an opened packet (the first byte inside the seal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// foca's own SWIM traffic.
    Foca,
    /// An encoded `Message` sent straight to a member, not through foca.
    Direct,
    /// A signed latency part, sent straight to overwatch members (never gossiped on).
    Latency,
    /// A challenge to a member claiming overwatch, or its proof (`member::trust`).
    Trust,
    /// An overwatch node's verdict on a report, sent to the agent.
    Ack,
}

/// What an overwatch node sends, unsealed, to a source whose packet did not open: the
/// only plaintext on the gossip port. It carries nothing but "your key is not mine", is
/// shorter than any sealed packet (no amplification), is rate-limited per source, and an
/// agent believes it only from a configured overwatch address.
pub const KEY_MISMATCH_NOTICE: &[u8] = b"\xffopengslb: cannot open";

impl Kind {
    const fn byte(self) -> u8 {
        match self {
            Kind::Foca => 0,
            Kind::Direct => 1,
            Kind::Latency => 2,
            Kind::Trust => 3,
            Kind::Ack => 4,
        }
    }

    /// Splits an opened payload into its kind and data; `None` for an unknown kind.
    pub(crate) fn split(payload: &[u8]) -> Option<(Kind, &[u8])> {
        let (&first, data) = payload.split_first()?;
        let kind = [
            Kind::Foca,
            Kind::Direct,
            Kind::Latency,
            Kind::Trust,
            Kind::Ack,
        ]
        .into_iter()
        .find(|k| k.byte() == first)?;
        Some((kind, data))
    }
}

/// Seals `data` as a packet of `kind`.
pub(crate) fn seal(envelope: &Envelope, kind: Kind, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(kind.byte());
    payload.extend_from_slice(data);
    envelope.seal(&payload, now_ms())
}

/// Seals one latency part as sent straight to an overwatch node.
pub fn seal_latency(envelope: &Envelope, signed: SignedLatency) -> Vec<u8> {
    let message = Message::V2(MessageV2::Latency(signed)).encode();
    seal(envelope, Kind::Latency, &message)
}

/// A sealed packet carrying one encoded `Message` straight to a member (not through
/// foca): how reports reach overwatch at once.
pub fn seal_direct(envelope: &Envelope, message: &[u8]) -> Vec<u8> {
    seal(envelope, Kind::Direct, message)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch (report versions).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_an_unknown_one_is_refused() {
        for kind in [
            Kind::Foca,
            Kind::Direct,
            Kind::Latency,
            Kind::Trust,
            Kind::Ack,
        ] {
            let payload = [kind.byte(), 9, 8];
            assert_eq!(Kind::split(&payload), Some((kind, &[9u8, 8][..])));
        }
        assert_eq!(Kind::split(&[5, 1]), None);
        assert_eq!(Kind::split(&[]), None);
    }
}
