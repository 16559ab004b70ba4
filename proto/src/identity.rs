//! Agent identity: a P-256 key and a self-signed certificate.
//!
//! `agent_id = {region}-{first 12 hex of SHA-256(certificate DER)}`: the id names the
//! certificate, so overwatch can pin one to the other. Reports are signed with the key
//! (ECDSA P-256, SHA-256) and verified against the public key inside the certificate.
//!
//! This module parses, signs and verifies. Keeping the key on disk is the agent's
//! business; creating one (`generate`) is behind the `keygen` feature, which overwatch
//! does not enable.

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of
/// 66 bytes); the uncompressed point (0x04 ‖ X ‖ Y) follows it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a key and certificate do not make an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The key is not a PKCS#8 P-256 private key.
    #[error("not a PKCS#8 P-256 key: {0}")]
    Key(String),
    /// The certificate holds no P-256 public key.
    #[error("not a P-256 certificate")]
    Certificate,
    /// The certificate's public key is not the key's.
    #[error("the certificate does not belong to the key")]
    Mismatch,
    /// A new key or certificate could not be made.
    #[error("cannot create an identity: {0}")]
    Create(String),
}

/// Signing failed: only when the system's random number generator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing failed: the system random number generator is unavailable")]
pub struct SignError;

/// The agent's key pair, certificate and id.
pub struct AgentIdentity {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    agent_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// An identity from a PKCS#8 key and the certificate of its public key (both DER).
    pub fn from_der(
        key_pkcs8: &[u8],
        cert_der: Vec<u8>,
        region: &str,
    ) -> Result<AgentIdentity, IdentityError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key_pkcs8, &rng)
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let cert_key = public_key(&cert_der).ok_or(IdentityError::Certificate)?;
        if cert_key != key.public_key().as_ref() {
            return Err(IdentityError::Mismatch);
        }
        Ok(AgentIdentity {
            agent_id: agent_id(region, &cert_der),
            key,
            cert_der,
            rng,
        })
    }

    /// A new identity held in memory only (tests and simulations).
    #[cfg(any(test, feature = "keygen"))]
    pub fn generate(region: &str) -> Result<AgentIdentity, IdentityError> {
        let new = generate()?;
        AgentIdentity::from_der(&new.key_pkcs8, new.cert_der, region)
    }

    /// `{region}-{12 hex}`.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs `message` (64-byte fixed-size ECDSA signature).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError)
    }
}

/// A freshly made key and self-signed certificate, DER and PEM.
#[cfg(any(test, feature = "keygen"))]
#[derive(Clone)]
pub struct NewIdentity {
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The private key, PEM (`PRIVATE KEY`).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificate, PEM.
    pub cert_pem: String,
}

/// Makes a new P-256 key and a self-signed certificate for it.
#[cfg(any(test, feature = "keygen"))]
pub fn generate() -> Result<NewIdentity, IdentityError> {
    let create = |e: rcgen::Error| IdentityError::Create(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(create)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["opengslb-agent".to_owned()]).map_err(create)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "opengslb-agent");
    let cert = params.self_signed(&key).map_err(create)?;
    Ok(NewIdentity {
        key_pkcs8: key.serialize_der(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
    })
}

/// SHA-256 of a certificate, hex.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

/// The agent id a certificate implies in `region`.
pub fn agent_id(region: &str, cert_der: &[u8]) -> String {
    format!("{region}-{}", &fingerprint(cert_der)[..12])
}

/// Verifies a signature made by the key of `cert_der`.
pub fn verify(cert_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key(cert_der).is_some_and(|key| {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(message, signature)
            .is_ok()
    })
}

/// A SEC1 `EC PRIVATE KEY` (RFC 5915, what OpenGSLB's agent writes) as the PKCS#8 document
/// ring reads, with the public point taken from the agent's certificate: an agent that
/// moves from OpenGSLB keeps its key, so its id and its pin.
pub fn sec1_to_pkcs8(sec1: &[u8], cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let bad = |why: &str| IdentityError::Key(format!("not a SEC1 P-256 key: {why}"));
    // ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING (32), [0] params
    // OPTIONAL, [1] publicKey OPTIONAL }; P-256 keys are short enough for one-byte lengths,
    // or 0x81 and one byte.
    let body = match sec1 {
        [0x30, 0x81, len, rest @ ..] | [0x30, len, rest @ ..]
            if usize::from(*len) == rest.len() =>
        {
            rest
        }
        _ => return Err(bad("not one DER sequence")),
    };
    let scalar = match body {
        [0x02, 0x01, 0x01, 0x04, 0x20, rest @ ..] if rest.len() >= 32 => &rest[..32],
        _ => return Err(bad("no version 1 and 32-byte private key")),
    };
    if let Some(oid) = body.windows(10).find(|w| w[0] == 0x06 && w[1] == 0x08)
        && oid[2..] != [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    {
        return Err(bad("the curve is not P-256 (prime256v1)"));
    }
    let point = public_key(cert_der).ok_or(IdentityError::Certificate)?;
    // ECPrivateKey without parameters, with the public key: 3 + 34 + 2 + 2 + 1 + 65 = 107.
    let mut key = vec![0x30, 107, 0x02, 0x01, 0x01, 0x04, 0x20];
    key.extend_from_slice(scalar);
    key.extend_from_slice(&[0xa1, 68, 0x03, 66, 0x00]);
    key.extend_from_slice(point);
    // PrivateKeyInfo { version 0, id-ecPublicKey prime256v1, OCTET STRING key }.
    let algorithm = [
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let inner_len = 3 + algorithm.len() + 2 + key.len();
    let mut pkcs8 = vec![0x30, 0x81, inner_len as u8, 0x02, 0x01, 0x00];
    pkcs8.extend_from_slice(&algorithm);
    pkcs8.extend_from_slice(&[0x04, key.len() as u8]);
    pkcs8.extend_from_slice(&key);
    Ok(pkcs8)
}

/// The uncompressed P-256 point of a certificate's SubjectPublicKeyInfo. A DER
/// certificate contains exactly one such structure for a P-256 subject key.
fn public_key(cert_der: &[u8]) -> Option<&[u8]> {
    let at = cert_der
        .windows(P256_SPKI_PREFIX.len())
        .position(|w| w == P256_SPKI_PREFIX)?;
    let point = cert_der.get(at + P256_SPKI_PREFIX.len()..at + P256_SPKI_PREFIX.len() + 65)?;
    (point[0] == 0x04).then_some(point)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_names_the_certificate() {
        let new = generate().expect("generate");
        let id = AgentIdentity::from_der(&new.key_pkcs8, new.cert_der.clone(), "eu-west")
            .expect("identity");
        let id = id.agent_id().to_owned();
        assert!(
            id.starts_with("eu-west-") && id.len() == "eu-west-".len() + 12,
            "{id}"
        );
        assert!(
            id["eu-west-".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        assert_eq!(agent_id("eu-west", &new.cert_der), id);
    }

    #[test]
    fn signatures_verify_only_for_the_signing_certificate_and_message() {
        let a = AgentIdentity::generate("r").expect("a");
        let b = AgentIdentity::generate("r").expect("b");
        assert_ne!(a.agent_id(), b.agent_id());
        let sig = a.sign(b"report v1").expect("sign");
        assert_eq!(sig.len(), 64);
        assert!(verify(a.certificate(), b"report v1", &sig));
        assert!(
            !verify(a.certificate(), b"report v2", &sig),
            "another message"
        );
        assert!(
            !verify(b.certificate(), b"report v1", &sig),
            "another agent's certificate"
        );
        assert!(!verify(b"not a certificate", b"report v1", &sig));
    }

    #[test]
    fn a_certificate_of_another_key_or_no_key_is_refused() {
        let a = generate().expect("a");
        let b = generate().expect("b");
        assert_eq!(
            AgentIdentity::from_der(&a.key_pkcs8, b.cert_der, "r").expect_err("foreign"),
            IdentityError::Mismatch
        );
        assert_eq!(
            AgentIdentity::from_der(&a.key_pkcs8, b"garbage".to_vec(), "r").expect_err("cert"),
            IdentityError::Certificate
        );
        assert!(matches!(
            AgentIdentity::from_der(b"garbage", a.cert_der, "r").expect_err("key"),
            IdentityError::Key(_)
        ));
    }
}
