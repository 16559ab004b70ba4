//! Agent identity: a P-256 key and a self-signed certificate, created once and kept.
//!
//! `agent_id = {region}-{first 12 hex of SHA-256(certificate DER)}`: the id names the
//! certificate, so overwatch can pin one to the other. Reports are signed with the key
//! (ECDSA P-256, SHA-256) and verified against the public key inside the certificate.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
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

/// Why the identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// File system trouble, with the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Exactly one of the two files exists: regenerating would change the agent's id.
    #[error(
        "{present} exists but {missing} does not; restore it, or remove both to create a new identity (overwatch must then forget the old agent id)"
    )]
    HalfMissing {
        /// The one that exists.
        present: PathBuf,
        /// The one that does not.
        missing: PathBuf,
    },
    /// The key file can be read by others.
    #[error(
        "{path}: permissions {mode:o} are too open; the key must be readable by its owner only (chmod 600)"
    )]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a usable key or certificate.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

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
    /// Loads the key and certificate, or creates both on first start.
    pub fn load_or_create(
        cert_path: &Path,
        key_path: &Path,
        region: &str,
    ) -> Result<AgentIdentity, IdentityError> {
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {}
            (false, false) => create(cert_path, key_path)?,
            (true, false) => {
                return Err(IdentityError::HalfMissing {
                    present: cert_path.into(),
                    missing: key_path.into(),
                });
            }
            (false, true) => {
                return Err(IdentityError::HalfMissing {
                    present: key_path.into(),
                    missing: cert_path.into(),
                });
            }
        }
        let mode = std::fs::metadata(key_path)
            .map_err(|source| IdentityError::Io {
                path: key_path.into(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyMode {
                path: key_path.into(),
                mode,
            });
        }
        let key_der = read_pem(key_path, "PRIVATE KEY")?;
        let cert_der = read_pem(cert_path, "CERTIFICATE")?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_der, &rng)
            .map_err(|e| IdentityError::Invalid {
                path: key_path.into(),
                reason: format!("not a PKCS#8 P-256 key: {e}"),
            })?;
        let cert_key = public_key(&cert_der).ok_or_else(|| IdentityError::Invalid {
            path: cert_path.into(),
            reason: "not a P-256 certificate".into(),
        })?;
        if cert_key != key.public_key().as_ref() {
            return Err(IdentityError::Invalid {
                path: cert_path.into(),
                reason: format!(
                    "the certificate does not belong to the key in {}",
                    key_path.display()
                ),
            });
        }
        Ok(AgentIdentity {
            agent_id: agent_id(region, &cert_der),
            key,
            cert_der,
            rng,
        })
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
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Signing fails only if the system RNG does; a report we cannot sign is not sent.
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }
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

fn create(cert_path: &Path, key_path: &Path) -> Result<(), IdentityError> {
    let invalid = |reason: String| IdentityError::Invalid {
        path: key_path.into(),
        reason,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| invalid(format!("cannot generate a key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(vec!["opengslb-agent".to_owned()])
        .map_err(|e| invalid(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "opengslb-agent");
    let cert = params
        .self_signed(&key)
        .map_err(|e| invalid(format!("cannot sign the certificate: {e}")))?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
                path: dir.into(),
                source,
            })?;
        }
    }
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), "created a new agent identity");
    Ok(())
}

/// Creates a file that must not exist yet, with `mode` from the start (never briefly wider).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.into(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.into(),
        source,
    })?;
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body.split_whitespace().collect::<String>())
        .ok_or_else(|| IdentityError::Invalid {
            path: path.into(),
            reason: format!("no {begin} block"),
        })?;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| IdentityError::Invalid {
            path: path.into(),
            reason: format!("bad base64 in the PEM block: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("opengslb-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn created_once_then_loaded_with_the_same_id() {
        let d = dir("create");
        let (cert, key) = (d.join("sub/agent.crt"), d.join("sub/agent.key"));
        let first = AgentIdentity::load_or_create(&cert, &key, "eu-west").expect("create");
        assert_eq!(
            std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
            0o600
        );
        let id = first.agent_id().to_owned();
        assert!(
            id.starts_with("eu-west-") && id.len() == "eu-west-".len() + 12,
            "{id}"
        );
        assert!(
            id["eu-west-".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        let again = AgentIdentity::load_or_create(&cert, &key, "eu-west").expect("load");
        assert_eq!(again.agent_id(), id, "the same files give the same id");
        assert_eq!(again.certificate(), first.certificate());
        assert_eq!(agent_id("eu-west", first.certificate()), id);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn signatures_verify_only_for_the_signing_certificate_and_message() {
        let d = dir("sign");
        let a = AgentIdentity::load_or_create(&d.join("a.crt"), &d.join("a.key"), "r").expect("a");
        let b = AgentIdentity::load_or_create(&d.join("b.crt"), &d.join("b.key"), "r").expect("b");
        assert_ne!(a.agent_id(), b.agent_id());
        let sig = a.sign(b"report v1");
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
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unsafe_or_inconsistent_files_are_refused_with_reasons() {
        let d = dir("refuse");
        let (cert, key) = (d.join("agent.crt"), d.join("agent.key"));
        AgentIdentity::load_or_create(&cert, &key, "r").expect("create");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = AgentIdentity::load_or_create(&cert, &key, "r").expect_err("0644 key");
        assert!(
            err.to_string().contains("permissions 644 are too open"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let other = d.join("other");
        AgentIdentity::load_or_create(&other.join("x.crt"), &other.join("x.key"), "r")
            .expect("other");
        std::fs::copy(other.join("x.crt"), &cert).expect("swap cert");
        let err = AgentIdentity::load_or_create(&cert, &key, "r").expect_err("foreign cert");
        assert!(
            err.to_string().contains("does not belong to the key"),
            "{err}"
        );

        std::fs::remove_file(&cert).expect("rm");
        let err = AgentIdentity::load_or_create(&cert, &key, "r").expect_err("half");
        assert!(matches!(err, IdentityError::HalfMissing { .. }), "{err}");

        std::fs::write(&cert, "garbage").expect("write");
        let err = AgentIdentity::load_or_create(&cert, &key, "r").expect_err("garbage");
        assert!(
            err.to_string()
                .contains("no -----BEGIN CERTIFICATE----- block"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
