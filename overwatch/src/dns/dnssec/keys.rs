//! DNSSEC keys: generated here (ring), held by the cluster (Raft), read into signing keys
//! with their DNSKEY data, key tag and DS digests.

use std::collections::BTreeMap;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};

use crate::model::machine::{DnssecKey, KeyRole, KeyState};

/// ECDSA Curve P-256 with SHA-256 (RFC 6605): the default, as in OpenGSLB's config.
pub const ECDSAP256SHA256: u8 = 13;
/// Ed25519 (RFC 8080).
pub const ED25519: u8 = 15;

/// DNSKEY flags: ZONE (bit 7) and, for a KSK, SEP (bit 15).
const FLAG_ZONE: u16 = 0x0100;
const FLAG_SEP: u16 = 0x0001;

/// The algorithm number for a configured name (`ECDSAP256SHA256`, `ED25519`, or the
/// number), as OpenGSLB writes it.
pub fn algorithm_number(name: &str) -> Option<u8> {
    match name.trim().to_ascii_uppercase().as_str() {
        "ECDSAP256SHA256" | "13" => Some(ECDSAP256SHA256),
        "ED25519" | "15" => Some(ED25519),
        _ => None,
    }
}

/// The mnemonic of an algorithm number.
pub fn algorithm_name(algorithm: u8) -> &'static str {
    match algorithm {
        ECDSAP256SHA256 => "ECDSAP256SHA256",
        ED25519 => "ED25519",
        _ => "unknown",
    }
}

/// A new private key for `algorithm`, PKCS#8.
pub fn generate(algorithm: u8) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    let document = match algorithm {
        ECDSAP256SHA256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        ED25519 => Ed25519KeyPair::generate_pkcs8(&rng),
        other => return Err(format!("DNSSEC algorithm {other} is not supported")),
    }
    .map_err(|_| "no randomness for a DNSSEC key".to_owned())?;
    Ok(document.as_ref().to_vec())
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A key ready to sign.
pub struct ZoneKey {
    /// Cluster-wide id.
    pub id: u32,
    /// KSK or ZSK.
    pub role: KeyRole,
    /// Rollover state.
    pub state: KeyState,
    /// Since when (ms since the epoch).
    pub since_ms: u64,
    /// Algorithm number.
    pub algorithm: u8,
    /// Key tag (RFC 4034 appendix B).
    pub tag: u16,
    /// DNSKEY RDATA.
    pub dnskey: Vec<u8>,
    pair: Pair,
}

impl std::fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneKey")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("state", &self.state)
            .field("tag", &self.tag)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl ZoneKey {
    /// Reads a replicated key.
    pub fn read(key: &DnssecKey) -> Result<ZoneKey, String> {
        let rng = SystemRandom::new();
        let (pair, public) = match key.algorithm {
            ECDSAP256SHA256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.pkcs8, &rng)
                        .map_err(|e| format!("DNSSEC key {}: unreadable: {e}", key.id))?;
                // Uncompressed point 0x04 || X || Y; DNSKEY holds X || Y (RFC 6605 §4).
                let public = pair.public_key().as_ref()[1..].to_vec();
                (Pair::Ecdsa(pair), public)
            }
            ED25519 => {
                let pair = Ed25519KeyPair::from_pkcs8(&key.pkcs8)
                    .map_err(|e| format!("DNSSEC key {}: unreadable: {e}", key.id))?;
                let public = pair.public_key().as_ref().to_vec();
                (Pair::Ed25519(pair), public)
            }
            other => return Err(format!("DNSSEC key {}: algorithm {other}", key.id)),
        };
        let flags = match key.role {
            KeyRole::Ksk => FLAG_ZONE | FLAG_SEP,
            KeyRole::Zsk => FLAG_ZONE,
        };
        let mut dnskey = Vec::with_capacity(4 + public.len());
        dnskey.extend_from_slice(&flags.to_be_bytes());
        dnskey.push(3); // protocol (RFC 4034 §2.1.2)
        dnskey.push(key.algorithm);
        dnskey.extend_from_slice(&public);
        Ok(ZoneKey {
            id: key.id,
            role: key.role,
            state: key.state,
            since_ms: key.since_ms,
            algorithm: key.algorithm,
            tag: key_tag(&dnskey),
            dnskey,
            pair,
        })
    }

    /// Signs `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.pair {
            Pair::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| format!("DNSSEC key {}: signing failed", self.id)),
            Pair::Ed25519(pair) => Ok(pair.sign(data).as_ref().to_vec()),
        }
    }

    /// The DS RDATA (SHA-256, digest type 2) for this key at `owner` (RFC 4509).
    pub fn ds(&self, owner: &Name) -> Vec<u8> {
        let mut data = canonical_name(owner);
        data.extend_from_slice(&self.dnskey);
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        let mut ds = Vec::with_capacity(4 + 32);
        ds.extend_from_slice(&self.tag.to_be_bytes());
        ds.push(self.algorithm);
        ds.push(2);
        ds.extend_from_slice(digest.as_ref());
        ds
    }

    /// The DS record in presentation form, as a parent zone takes it.
    pub fn ds_text(&self, owner: &Name) -> String {
        let ds = self.ds(owner);
        let digest: String = ds[4..].iter().map(|b| format!("{b:02X}")).collect();
        format!("{owner} IN DS {} {} 2 {digest}", self.tag, self.algorithm)
    }

    /// The DNSKEY record in presentation form (a resolver's trust anchor).
    pub fn dnskey_text(&self, owner: &Name) -> String {
        use base64::Engine as _;
        let flags = u16::from_be_bytes([self.dnskey[0], self.dnskey[1]]);
        format!(
            "{owner} IN DNSKEY {flags} 3 {} {}",
            self.algorithm,
            base64::engine::general_purpose::STANDARD.encode(&self.dnskey[4..])
        )
    }
}

/// RFC 4034 appendix B.
pub fn key_tag(dnskey: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for (i, b) in dnskey.iter().enumerate() {
        acc += if i & 1 == 0 {
            u32::from(*b) << 8
        } else {
            u32::from(*b)
        };
    }
    acc += (acc >> 16) & 0xFFFF;
    (acc & 0xFFFF) as u16
}

/// A name in canonical wire form: lower case, uncompressed (RFC 4034 §6.2).
pub fn canonical_name(name: &Name) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(name.len() + 2);
    {
        let mut encoder = BinEncoder::new(&mut bytes);
        let mut encoder = encoder.with_name_encoding(NameEncoding::UncompressedLowercase);
        // A validated name always encodes.
        let _ = name.emit(&mut encoder);
    }
    bytes
}

/// The cluster's keys, read: which sign what.
#[derive(Debug, Default)]
pub struct Keyring {
    /// Every readable key, by id.
    pub keys: Vec<ZoneKey>,
}

impl Keyring {
    /// Reads the replicated keys. A key that cannot be read is reported, not used.
    pub fn read(keys: &BTreeMap<u32, DnssecKey>) -> (Keyring, Vec<String>) {
        let mut problems = Vec::new();
        let keys = keys
            .values()
            .filter_map(|k| ZoneKey::read(k).map_err(|e| problems.push(e)).ok())
            .collect();
        (Keyring { keys }, problems)
    }

    /// Whether answers can be signed: an active KSK and an active ZSK.
    pub fn usable(&self) -> bool {
        self.active(KeyRole::Ksk).is_some() && self.active(KeyRole::Zsk).is_some()
    }

    /// The active key of a role.
    pub fn active(&self, role: KeyRole) -> Option<&ZoneKey> {
        self.keys
            .iter()
            .find(|k| k.role == role && k.state == KeyState::Active)
    }

    /// The keys in the DNSKEY RRset: active KSKs, and every ZSK but none pending.
    pub fn published(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys.iter().filter(|k| k.state != KeyState::Pending)
    }

    /// The KSKs the parent's DS RRset should name (CDS, CDNSKEY, `dnssec ds`): the active
    /// one and a pending one.
    pub fn for_parent(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys.iter().filter(|k| {
            k.role == KeyRole::Ksk && matches!(k.state, KeyState::Active | KeyState::Pending)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32, role: KeyRole, algorithm: u8) -> DnssecKey {
        DnssecKey {
            id,
            role,
            algorithm,
            pkcs8: generate(algorithm).expect("generate"),
            state: KeyState::Active,
            since_ms: 0,
        }
    }

    #[test]
    fn key_tag_matches_rfc_4034_example() {
        // RFC 4034 §5.4: the DNSKEY of dskey.example.com has key tag 60485. Its RDATA:
        // flags 256, protocol 3, algorithm 5, and the base64 key below.
        use base64::Engine as _;
        let public = base64::engine::general_purpose::STANDARD
            .decode(
                "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
            )
            .expect("base64");
        let mut rdata = vec![1, 0, 3, 5];
        rdata.extend_from_slice(&public);
        assert_eq!(key_tag(&rdata), 60485);
    }

    #[test]
    fn both_algorithms_read_sign_and_give_dnskey_data() {
        for (algorithm, public_len, sig_len) in [(ECDSAP256SHA256, 64, 64), (ED25519, 32, 64)] {
            let ksk = ZoneKey::read(&key(1, KeyRole::Ksk, algorithm)).expect("read");
            assert_eq!(&ksk.dnskey[..4], &[1, 1, 3, algorithm]);
            assert_eq!(ksk.dnskey.len(), 4 + public_len);
            assert_eq!(ksk.sign(b"data").expect("sign").len(), sig_len);
            let owner = Name::from_ascii("Example.COM.").expect("name");
            let ds = ksk.ds(&owner);
            assert_eq!(ds.len(), 36);
            assert!(
                ksk.ds_text(&owner)
                    .contains(&format!(" DS {} {algorithm} 2 ", ksk.tag))
            );
            let zsk = ZoneKey::read(&key(2, KeyRole::Zsk, algorithm)).expect("read");
            assert_eq!(&zsk.dnskey[..2], &[1, 0]);
        }
        let mut bad = key(3, KeyRole::Zsk, ECDSAP256SHA256);
        bad.pkcs8.truncate(10);
        let err = ZoneKey::read(&bad).expect_err("truncated");
        assert!(err.contains("DNSSEC key 3: unreadable"), "{err}");
        assert!(!format!("{bad:?}").contains(&format!("{:?}", &bad.pkcs8[..4])));
    }

    #[test]
    fn the_ds_digest_covers_the_lowercase_owner() {
        let k = ZoneKey::read(&key(1, KeyRole::Ksk, ECDSAP256SHA256)).expect("read");
        let upper = Name::from_ascii("GSLB.Example.").expect("name");
        let lower = Name::from_ascii("gslb.example.").expect("name");
        assert_eq!(k.ds(&upper), k.ds(&lower));
        let mut data = canonical_name(&lower);
        assert_eq!(data[..5], [4, b'g', b's', b'l', b'b']);
        data.extend_from_slice(&k.dnskey);
        assert_eq!(
            k.ds(&lower)[4..],
            *ring::digest::digest(&ring::digest::SHA256, &data).as_ref()
        );
    }
}
