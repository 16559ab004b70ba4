//! The agent's identity on disk: `agent.key` (PKCS#8 PEM, mode 0600) and `agent.crt`,
//! created together on first start and then only ever read.
//!
//! Losing one of the two must not silently make a new agent: overwatch pinned the old id
//! to the old certificate, so a half-missing pair is an error that says what to do.

use std::fs::OpenOptions;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use opengslb_proto::identity::{self, AgentIdentity};

/// Why the identity files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
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

/// Loads the key and certificate, or creates both on first start.
pub fn load_or_create(
    cert_path: &Path,
    key_path: &Path,
    region: &str,
) -> Result<AgentIdentity, IdentityFileError> {
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {}
        (false, false) => create(cert_path, key_path)?,
        (true, false) => {
            return Err(IdentityFileError::HalfMissing {
                present: cert_path.into(),
                missing: key_path.into(),
            });
        }
        (false, true) => {
            return Err(IdentityFileError::HalfMissing {
                present: key_path.into(),
                missing: cert_path.into(),
            });
        }
    }
    check_key_mode(key_path)?;
    let cert_der = read_pem(cert_path, "CERTIFICATE")?;
    // PKCS#8 (ours), or SEC1 (`EC PRIVATE KEY`, OpenGSLB's): the same key, the same id.
    let key_der = match read_pem(key_path, "PRIVATE KEY") {
        Ok(der) => der,
        Err(pkcs8) => match read_pem(key_path, "EC PRIVATE KEY") {
            Ok(sec1) => identity::sec1_to_pkcs8(&sec1, &cert_der).map_err(|e| {
                IdentityFileError::Invalid {
                    path: key_path.into(),
                    reason: e.to_string(),
                }
            })?,
            Err(_) => return Err(pkcs8),
        },
    };
    AgentIdentity::from_der(&key_der, cert_der, region).map_err(|err| {
        let (path, reason) = match err {
            identity::IdentityError::Key(_) => (key_path, err.to_string()),
            identity::IdentityError::Mismatch => (
                cert_path,
                format!(
                    "the certificate does not belong to the key in {}",
                    key_path.display()
                ),
            ),
            _ => (cert_path, err.to_string()),
        };
        IdentityFileError::Invalid {
            path: path.into(),
            reason,
        }
    })
}

fn create(cert_path: &Path, key_path: &Path) -> Result<(), IdentityFileError> {
    let new = identity::generate().map_err(|e| IdentityFileError::Invalid {
        path: key_path.into(),
        reason: e.to_string(),
    })?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IdentityFileError::Io {
                path: dir.into(),
                source,
            })?;
        }
    }
    write_new(key_path, new.key_pem.as_bytes(), 0o600)?;
    write_new(cert_path, new.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), "created a new agent identity");
    Ok(())
}

/// The key must be readable by its owner only (mode 0600 or narrower).
#[cfg(unix)]
fn check_key_mode(key_path: &Path) -> Result<(), IdentityFileError> {
    let mode = std::fs::metadata(key_path)
        .map_err(|source| IdentityFileError::Io {
            path: key_path.into(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityFileError::KeyMode {
            path: key_path.into(),
            mode,
        });
    }
    Ok(())
}

/// On Windows a file's protection is its ACL, inherited from its folder: the key is as
/// private as the folder it is in (the README says to keep it under a folder only
/// Administrators and SYSTEM can read). Nothing here can check that a mode is narrow.
#[cfg(windows)]
fn check_key_mode(_key_path: &Path) -> Result<(), IdentityFileError> {
    Ok(())
}

/// Creates a file that must not exist yet, with `mode` from the start (never briefly wider)
/// where files have modes.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityFileError> {
    let io = |source| IdentityFileError::Io {
        path: path.into(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, IdentityFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityFileError::Io {
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
        .ok_or_else(|| IdentityFileError::Invalid {
            path: path.into(),
            reason: format!("no {begin} block"),
        })?;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| IdentityFileError::Invalid {
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
    fn an_opengslb_sec1_key_loads_and_keeps_its_id() {
        // Made with `openssl ecparam -name prime256v1 -genkey -noout` (SEC1, parameters
        // and public key inside) and a self-signed certificate, as OpenGSLB's agent has.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/opengslb");
        let d = dir("sec1");
        std::fs::create_dir_all(&d).expect("dir");
        let (cert, key) = (d.join("agent.crt"), d.join("agent.key"));
        std::fs::copy(fixtures.join("agent-sec1.crt"), &cert).expect("cert");
        std::fs::copy(fixtures.join("agent-sec1.key"), &key).expect("key");
        #[cfg(unix)]
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("mode");
        let id = load_or_create(&cert, &key, "eu").expect("a SEC1 key loads");
        assert_eq!(
            id.agent_id(),
            "eu-ee314cd419df",
            "the certificate's id, unchanged"
        );
        assert!(id.sign(b"report").is_ok());
        // The key of another certificate is still refused.
        let other = identity::generate().expect("generate");
        std::fs::remove_file(&cert).expect("rm");
        std::fs::write(&cert, other.cert_pem).expect("write");
        let err = load_or_create(&cert, &key, "eu").expect_err("mismatch");
        assert!(
            err.to_string().contains(&key.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn created_once_then_loaded_with_the_same_id() {
        let d = dir("create");
        let (cert, key) = (d.join("sub/agent.crt"), d.join("sub/agent.key"));
        let first = load_or_create(&cert, &key, "eu-west").expect("create");
        #[cfg(unix)]
        assert_eq!(
            std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
            0o600
        );
        let id = first.agent_id().to_owned();
        assert!(id.starts_with("eu-west-"), "{id}");
        let again = load_or_create(&cert, &key, "eu-west").expect("load");
        assert_eq!(again.agent_id(), id, "the same files give the same id");
        assert_eq!(again.certificate(), first.certificate());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unsafe_or_inconsistent_files_are_refused_with_reasons() {
        let d = dir("refuse");
        let (cert, key) = (d.join("agent.crt"), d.join("agent.key"));
        load_or_create(&cert, &key, "r").expect("create");
        #[cfg(unix)]
        {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let err = load_or_create(&cert, &key, "r").expect_err("0644 key");
            assert!(
                err.to_string().contains("permissions 644 are too open"),
                "{err}"
            );
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }

        let other = d.join("other");
        load_or_create(&other.join("x.crt"), &other.join("x.key"), "r").expect("other");
        std::fs::copy(other.join("x.crt"), &cert).expect("swap cert");
        let err = load_or_create(&cert, &key, "r").expect_err("foreign cert");
        assert!(
            err.to_string().contains("does not belong to the key"),
            "{err}"
        );

        std::fs::remove_file(&cert).expect("rm");
        let err = load_or_create(&cert, &key, "r").expect_err("half");
        assert!(
            matches!(err, IdentityFileError::HalfMissing { .. }),
            "{err}"
        );

        std::fs::write(&cert, "garbage").expect("write");
        let err = load_or_create(&cert, &key, "r").expect_err("garbage");
        assert!(
            err.to_string()
                .contains("no -----BEGIN CERTIFICATE----- block"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
