//! Service tokens are proven, never sent: an HMAC-SHA256 keyed by the token over what is
//! being vouched for. Anyone holding the cluster key sees every packet, so a token that
//! travelled in clear (wire version 1) was every holder's token; a proof is good only for
//! the bytes it covers.
//!
//! Two things are proven this way: an agent's report (the agent holds the token of its
//! services) and an overwatch member's identity (overwatch holds every service's token,
//! `overwatch.agent_tokens`, so proving one to an agent of that service shows it is an
//! overwatch node and not a host that merely says so).
//!
//! A proof is as strong as its token: a holder of the cluster key can guess tokens
//! offline against any proof it sees, which is why tokens are at least 16 characters.

use ring::hmac;

/// Domain tag of a report's token proof.
pub(crate) const REPORT: &[u8] = b"opengslb-report-token-v2\0";
/// Domain tag of an overwatch member's proof of identity.
pub(crate) const OVERWATCH: &[u8] = b"opengslb-overwatch-proof-v2\0";

/// HMAC-SHA256 keyed by `token` over `domain` then each of `parts`.
pub(crate) fn prove(token: &str, domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    hmac::sign(&key(token), &message(domain, parts))
        .as_ref()
        .to_vec()
}

/// Whether `proof` is [`prove`]'s output for `token` (ring compares in constant time).
pub(crate) fn check(token: &str, domain: &[u8], parts: &[&[u8]], proof: &[u8]) -> bool {
    hmac::verify(&key(token), &message(domain, parts), proof).is_ok()
}

fn key(token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes())
}

/// The domain, then each part length-prefixed so parts cannot shift into one another.
fn message(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let size = domain.len() + parts.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut message = Vec::with_capacity(size);
    message.extend_from_slice(domain);
    for part in parts {
        message.extend_from_slice(&(part.len() as u64).to_be_bytes());
        message.extend_from_slice(part);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_token_domain_and_bytes() {
        let proof = prove("token-0123456789ab", REPORT, &[b"report"]);
        assert_eq!(proof.len(), 32);
        assert!(check("token-0123456789ab", REPORT, &[b"report"], &proof));
        assert!(!check("token-0123456789ac", REPORT, &[b"report"], &proof));
        assert!(!check(
            "token-0123456789ab",
            OVERWATCH,
            &[b"report"],
            &proof
        ));
        assert!(!check("token-0123456789ab", REPORT, &[b"reporT"], &proof));
        assert!(!check(
            "token-0123456789ab",
            REPORT,
            &[b"rep", b"ort"],
            &proof
        ));
        assert!(!check(
            "token-0123456789ab",
            REPORT,
            &[b"report"],
            &proof[..31]
        ));
    }
}
