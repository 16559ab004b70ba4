//! DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018): version 1, a
//! timestamp, and SipHash-2-4 keyed by a server secret over the client cookie, version,
//! reserved bytes, timestamp and client address. Every node of a cluster derives the
//! same secret for the same period from the cluster secret, so a cookie one node hands
//! out is good at every node (anycast, or a resolver moving between nameservers), and the
//! secret rotates every [`PERIOD`] with the previous one still accepted.
//!
//! Nothing here allocates: the fast path checks and writes cookies per query.

use std::net::IpAddr;

/// How long one server secret is used for new cookies by default (`dns.cookie_rotation`);
/// the one before is still accepted.
pub const PERIOD: u64 = 24 * 3600;
/// A server cookie older than this is not valid (RFC 9018 §4.3).
const MAX_AGE: u32 = 3600;
/// ... nor one this far in the future (clock skew between nodes).
const MAX_AHEAD: u32 = 300;
/// EDNS option code of COOKIE.
pub const OPTION_COOKIE: u16 = 10;
/// Client cookie + interoperable server cookie.
pub const RESPONSE_LEN: usize = 24;

/// Where server secrets come from.
#[derive(Clone)]
pub struct CookieKeys {
    master: ring::hmac::Key,
    /// Seconds one secret makes new cookies.
    period: u64,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKeys(..)")
    }
}

impl CookieKeys {
    /// Secrets derived from `shared` (the cluster secret: the same on every node).
    pub fn derived_from(shared: &str) -> CookieKeys {
        CookieKeys {
            master: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, shared.as_bytes()),
            period: PERIOD,
        }
    }

    /// Each secret makes new cookies for `rotation` (at least a second).
    pub fn rotating_every(mut self, rotation: std::time::Duration) -> CookieKeys {
        self.period = rotation.as_secs().max(1);
        self
    }

    /// Secrets from random bytes: a node alone, whose cookies no other node must read.
    pub fn random() -> Result<CookieKeys, String> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| "no randomness for the DNS cookie secret".to_owned())?;
        Ok(CookieKeys {
            master: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed),
            period: PERIOD,
        })
    }

    /// The secrets for the period `now` (Unix seconds) falls in.
    pub fn at(&self, now: u32) -> Secrets {
        let period = u64::from(now) / self.period;
        Secrets {
            period,
            current: self.secret(period),
            previous: self.secret(period.saturating_sub(1)),
        }
    }

    /// The secrets for `now`, kept in `cached` and derived again only when the period
    /// turned (two HMACs), so callers can ask per query.
    pub fn cached(&self, cached: &mut Option<Secrets>, now: u32) -> Secrets {
        match *cached {
            Some(s) if s.period == u64::from(now) / self.period => s,
            _ => *cached.insert(self.at(now)),
        }
    }

    fn secret(&self, period: u64) -> [u8; 16] {
        let mut message = *b"opengslb dns cookie secret \0\0\0\0\0\0\0\0";
        message[27..].copy_from_slice(&period.to_be_bytes());
        let tag = ring::hmac::sign(&self.master, &message);
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&tag.as_ref()[..16]);
        secret
    }
}

/// The server secrets of one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secrets {
    /// Which period (Unix seconds / [`PERIOD`]).
    pub period: u64,
    current: [u8; 16],
    previous: [u8; 16],
}

impl Secrets {
    /// Fixed secrets, for tests.
    pub fn fixed(current: [u8; 16], previous: [u8; 16]) -> Secrets {
        Secrets {
            period: 0,
            current,
            previous,
        }
    }
}

/// What a query's COOKIE option says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A client cookie alone: answer, and hand out a server cookie.
    ClientOnly,
    /// A server cookie this cluster made, recently, for this client and address.
    Valid,
    /// A server cookie that is not (another server's, expired, or forged): BADCOOKIE.
    Invalid,
    /// Not 8 or 16–40 bytes (RFC 7873 §5.2.2): FORMERR.
    Malformed,
}

/// SipHash-2-4 of `data` under the 16-byte `key`, as RFC 9018 §4.4 uses it.
fn siphash24(key: &[u8; 16], data: &[u8]) -> [u8; 8] {
    #[allow(deprecated)]
    // std's SipHasher is SipHash-2-4; it is deprecated only as a HashMap hasher
    let mut h = std::hash::SipHasher::new_with_keys(
        u64::from_le_bytes(key[..8].try_into().unwrap_or([0; 8])),
        u64::from_le_bytes(key[8..].try_into().unwrap_or([0; 8])),
    );
    std::hash::Hasher::write(&mut h, data);
    std::hash::Hasher::finish(&h).to_le_bytes()
}

/// The interoperable server cookie for `client` at `ip` and time `now`.
pub fn server_cookie(secret: &[u8; 16], client: &[u8; 8], ip: IpAddr, now: u32) -> [u8; 16] {
    let mut data = [0u8; 8 + 8 + 16];
    data[..8].copy_from_slice(client);
    data[8] = 1; // version
    data[12..16].copy_from_slice(&now.to_be_bytes());
    let len = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            data[16..20].copy_from_slice(&v4.octets());
            20
        }
        IpAddr::V6(v6) => {
            data[16..32].copy_from_slice(&v6.octets());
            32
        }
    };
    let mut cookie = [0u8; 16];
    cookie[..8].copy_from_slice(&data[8..16]);
    cookie[8..].copy_from_slice(&siphash24(secret, &data[..len]));
    cookie
}

/// Judges a COOKIE option's data from `ip` at `now`.
pub fn judge(secrets: &Secrets, option: &[u8], ip: IpAddr, now: u32) -> Verdict {
    let Ok(client) = <[u8; 8]>::try_from(option.get(..8).unwrap_or(&[])) else {
        return Verdict::Malformed;
    };
    match option.len() {
        8 => return Verdict::ClientOnly,
        16..=40 => {}
        _ => return Verdict::Malformed,
    }
    let server = &option[8..];
    if server.len() != 16 || server[0] != 1 || server[1..4] != [0, 0, 0] {
        return Verdict::Invalid; // not ours (another construction, or another version)
    }
    let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    if stamp.wrapping_sub(now) as i32 > MAX_AHEAD as i32
        || now.wrapping_sub(stamp) as i32 > MAX_AGE as i32
    {
        return Verdict::Invalid;
    }
    let ours = |secret: &[u8; 16]| server_cookie(secret, &client, ip, stamp) == server[..];
    if ours(&secrets.current) || ours(&secrets.previous) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

/// The COOKIE option data of a response to a query whose option was `option` (judged not
/// malformed): the client cookie and a fresh server cookie.
pub fn response(secrets: &Secrets, option: &[u8], ip: IpAddr, now: u32) -> [u8; RESPONSE_LEN] {
    let mut client = [0u8; 8];
    client.copy_from_slice(&option[..8]);
    let mut out = [0u8; RESPONSE_LEN];
    out[..8].copy_from_slice(&client);
    out[8..].copy_from_slice(&server_cookie(&secrets.current, &client, ip, now));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

    fn key(s: &str) -> [u8; 16] {
        hex(s).try_into().expect("16 bytes")
    }

    /// RFC 9018 Appendix A.1 and A.2.
    #[test]
    fn the_rfc_9018_test_vectors() {
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let client: [u8; 8] = hex("2464c4abcf10c957").try_into().expect("8");
        assert_eq!(
            server_cookie(&key(SECRET), &client, ip, 1_559_731_985).to_vec(),
            hex("010000005cf79f111f8130c3eee29480")
        );
        assert_eq!(
            server_cookie(&key(SECRET), &client, ip, 1_559_734_385).to_vec(),
            hex("010000005cf7a871d4a564a1442aca77")
        );
    }

    #[test]
    fn cookies_are_judged_by_secret_age_address_and_shape() {
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let now = 1_559_731_985;
        let secrets = Secrets::fixed(key(SECRET), [7; 16]);
        let query = hex("2464c4abcf10c957");
        assert_eq!(judge(&secrets, &query, ip, now), Verdict::ClientOnly);
        let answer = response(&secrets, &query, ip, now);
        assert_eq!(judge(&secrets, &answer, ip, now + 600), Verdict::Valid);
        // After a rotation, the previous secret still holds.
        let rotated = Secrets::fixed([9; 16], key(SECRET));
        assert_eq!(judge(&rotated, &answer, ip, now + 600), Verdict::Valid);
        // Too old, from another address, altered, or unknown secrets.
        assert_eq!(judge(&secrets, &answer, ip, now + 3601), Verdict::Invalid);
        let other: IpAddr = "198.51.100.101".parse().expect("ip");
        assert_eq!(judge(&secrets, &answer, other, now), Verdict::Invalid);
        let mut altered = answer;
        altered[23] ^= 1;
        assert_eq!(judge(&secrets, &altered, ip, now), Verdict::Invalid);
        assert_eq!(
            judge(&Secrets::fixed([1; 16], [2; 16]), &answer, ip, now),
            Verdict::Invalid
        );
        for len in [0, 7, 9, 15, 41] {
            assert_eq!(
                judge(&secrets, &vec![1; len], ip, now),
                Verdict::Malformed,
                "{len}"
            );
        }
        // Derived secrets agree between nodes and change with the period.
        let a = CookieKeys::derived_from("cluster-secret-0123456789");
        let b = CookieKeys::derived_from("cluster-secret-0123456789");
        assert_eq!(a.at(now), b.at(now));
        assert_eq!(a.at(now + PERIOD as u32).previous, a.at(now).current);
        assert_ne!(
            a.at(now),
            CookieKeys::derived_from("another-secret-012345").at(now)
        );
    }
}
