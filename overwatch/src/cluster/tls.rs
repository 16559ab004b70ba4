//! Mutual TLS on the Raft RPC.
//!
//! Every node holds a certificate from the cluster CA whose only name is
//! `node-{id}.opengslb.invalid` (`.invalid` is reserved: it never resolves, so the name
//! cannot collide with a real host). A node checks the certificate of the peer it calls
//! against the node id it means to reach, not against the address it dialled, so a
//! peer list that points at the wrong host is found by name, and a proxy or NAT in the
//! path changes nothing. A node that receives a call checks the caller's certificate
//! against the CA, and against the node id the call claims to come from: a Raft message
//! that speaks for another node is refused.
//!
//! `opengslb-cli cluster certs` makes the CA and the node certificates ([`issue`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::store::NodeId;

/// The domain of every node name.
pub const NAME_DOMAIN: &str = "opengslb.invalid";

/// The one name node `id`'s certificate carries.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.{NAME_DOMAIN}")
}

/// `cluster.tls`: where the CA and this node's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The cluster CA certificate(s), PEM.
    pub ca: PathBuf,
    /// This node's certificate (and any intermediates), PEM.
    pub cert: PathBuf,
    /// This node's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// Which `cluster.tls` key a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKey {
    /// `cluster.tls.ca`
    Ca,
    /// `cluster.tls.cert`
    Cert,
    /// `cluster.tls.key`
    Key,
}

impl TlsKey {
    /// The config key.
    pub fn name(self) -> &'static str {
        match self {
            TlsKey::Ca => "cluster.tls.ca",
            TlsKey::Cert => "cluster.tls.cert",
            TlsKey::Key => "cluster.tls.key",
        }
    }
}

/// A node's TLS material, checked: the CA, and a certificate for this node's id, signed
/// by the CA, that matches the key.
pub struct ClusterTls {
    /// Checks a peer's certificate against the CA and a node name.
    verifier: Arc<WebPkiServerVerifier>,
    server: Arc<ServerConfig>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

fn read(path: &Path, key: TlsKey) -> Result<Vec<u8>, (TlsKey, String)> {
    std::fs::read(path).map_err(|e| (key, format!("cannot read {}: {e}", path.display())))
}

fn certificates(
    path: &Path,
    key: TlsKey,
) -> Result<Vec<CertificateDer<'static>>, (TlsKey, String)> {
    let pem = read(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                key,
                format!("{}: not a PEM certificate: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            key,
            format!(
                "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

impl ClusterTls {
    /// Loads and checks the files for node `id`. An error names the key and the reason.
    pub fn load(paths: &TlsPaths, id: NodeId) -> Result<ClusterTls, (TlsKey, String)> {
        crate::crypto::install_provider();
        let mut roots = RootCertStore::empty();
        for cert in certificates(&paths.ca, TlsKey::Ca)? {
            roots.add(cert).map_err(|e| {
                (
                    TlsKey::Ca,
                    format!("{}: not a usable CA certificate: {e}", paths.ca.display()),
                )
            })?;
        }
        let roots = Arc::new(roots);
        let chain = certificates(&paths.cert, TlsKey::Cert)?;
        let key_pem = read(&paths.key, TlsKey::Key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            (
                TlsKey::Key,
                format!("{}: not a PEM private key: {e}", paths.key.display()),
            )
        })?;
        let verifier = WebPkiServerVerifier::builder(roots.clone())
            .build()
            .map_err(|e| (TlsKey::Ca, format!("{}: {e}", paths.ca.display())))?;
        // This node's own certificate must be one its peers accept for its id.
        let name =
            ServerName::try_from(node_name(id)).map_err(|e| (TlsKey::Cert, e.to_string()))?;
        let (end_entity, intermediates) = chain.split_first().ok_or((
            TlsKey::Cert,
            format!("{}: holds no certificate", paths.cert.display()),
        ))?;
        verifier
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .map_err(|e| {
                (
                    TlsKey::Cert,
                    format!(
                        "{} is not a certificate for node {id} ({}) from the CA in {}: {e}",
                        paths.cert.display(),
                        node_name(id),
                        paths.ca.display()
                    ),
                )
            })?;
        let client_verifier = WebPkiClientVerifier::builder(roots)
            .build()
            .map_err(|e| (TlsKey::Ca, format!("{}: {e}", paths.ca.display())))?;
        let server = ServerConfig::builder()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                (
                    TlsKey::Key,
                    format!(
                        "{} does not go with the certificate in {}: {e}",
                        paths.key.display(),
                        paths.cert.display()
                    ),
                )
            })?;
        Ok(ClusterTls {
            verifier,
            server: Arc::new(server),
            chain,
            key,
        })
    }

    /// The server side: asks every caller for a certificate from the CA.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// The client side towards node `target`: presents this node's certificate and
    /// accepts only a certificate from the CA naming `target`, whatever address it has.
    pub fn client_config(&self, target: NodeId) -> Result<ClientConfig, String> {
        let name = ServerName::try_from(node_name(target)).map_err(|e| e.to_string())?;
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeVerifier {
                inner: self.verifier.clone(),
                name,
            }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())
    }

    /// Whether `cert` (a caller's, already checked against the CA by the handshake) is
    /// node `id`'s.
    pub fn speaks_for(&self, cert: &CertificateDer<'_>, id: NodeId) -> bool {
        ServerName::try_from(node_name(id)).is_ok_and(|name| {
            self.verifier
                .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
                .is_ok()
        })
    }
}

/// Checks a server's certificate against the CA and the name of the node meant, ignoring
/// the host in the URL.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The CA's file names in an output directory of [`issue`].
pub const CA_CERT: &str = "ca.crt";
/// The CA key: keep it off the nodes once their certificates are made.
pub const CA_KEY: &str = "ca.key";

/// The CA's subject; a CA made earlier is reused by rebuilding these parameters with its
/// key (the issuer of a certificate is its subject name and key identifier).
fn ca_params(days: u32) -> Result<rcgen::CertificateParams, String> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "OpenGSLB cluster CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    validity(&mut params, days);
    Ok(params)
}

/// Valid from yesterday (clocks drift) for `days`.
fn validity(params: &mut rcgen::CertificateParams, days: u32) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let date = |day: u64| {
        let (y, m, d) = civil_from_days(i64::try_from(day).unwrap_or(i64::MAX));
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = date(today.saturating_sub(1));
    params.not_after = date(today + u64::from(days));
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

/// Writes `contents` to a new file (never over an existing one), readable only by its
/// owner when `secret`.
fn create(path: &Path, contents: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} already exists: remove it first to make a new one",
                path.display()
            ),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes `node-{id}.crt` and `node-{id}.key` in `dir` for each of `ids`, signed by the CA
/// in `dir` (`ca.crt`, `ca.key`), which is made first if `dir` has none. Existing files
/// are never overwritten. Returns the files written.
pub fn issue(dir: &Path, ids: &[NodeId], days: u32) -> Result<Vec<PathBuf>, String> {
    if ids.contains(&0) {
        return Err("node ids start at 1".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let mut written = Vec::new();
    for id in ids {
        for file in [format!("node-{id}.crt"), format!("node-{id}.key")] {
            if dir.join(&file).exists() {
                return Err(format!(
                    "{} already exists: remove it first to make a new one",
                    dir.join(file).display()
                ));
            }
        }
    }
    let key = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&ca_key)
                .map_err(|e| format!("cannot read {}: {e}", ca_key.display()))?;
            rcgen::KeyPair::from_pem(&pem)
                .map_err(|e| format!("{}: not a CA key: {e}", ca_key.display()))?
        }
        (false, false) => {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let cert = ca_params(CA_DAYS)?
                .self_signed(&key)
                .map_err(|e| e.to_string())?;
            create(&ca_key, &key.serialize_pem(), true)?;
            create(&ca_cert, &cert.pem(), false)?;
            written.extend([ca_cert.clone(), ca_key.clone()]);
            key
        }
        (true, false) => {
            return Err(format!(
                "{} exists without {}: the CA key is needed to sign node certificates",
                ca_cert.display(),
                ca_key.display()
            ));
        }
        (false, true) => {
            return Err(format!(
                "{} exists without {}",
                ca_key.display(),
                ca_cert.display()
            ));
        }
    };
    let issuer = rcgen::Issuer::new(ca_params(CA_DAYS)?, key);
    for id in ids {
        let mut params =
            rcgen::CertificateParams::new(vec![node_name(*id)]).map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("OpenGSLB node {id}"));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        let (crt, pem) = (
            dir.join(format!("node-{id}.crt")),
            dir.join(format!("node-{id}.key")),
        );
        create(&pem, &key.serialize_pem(), true)?;
        create(&crt, &cert.pem(), false)?;
        written.extend([crt, pem]);
    }
    // What was issued must load the way a node will load it.
    for id in ids {
        ClusterTls::load(
            &TlsPaths {
                ca: ca_cert.clone(),
                cert: dir.join(format!("node-{id}.crt")),
                key: dir.join(format!("node-{id}.key")),
            },
            *id,
        )
        .map_err(|(key, why)| format!("{}: {why}", key.name()))?;
    }
    Ok(written)
}

/// How long a CA made by [`issue`] is valid.
pub const CA_DAYS: u32 = 3650;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_map_to_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
    }

    fn dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("opengslb-tls-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn paths(dir: &Path, id: NodeId) -> TlsPaths {
        TlsPaths {
            ca: dir.join(CA_CERT),
            cert: dir.join(format!("node-{id}.crt")),
            key: dir.join(format!("node-{id}.key")),
        }
    }

    #[test]
    fn issued_certificates_name_their_node_and_nothing_else() {
        let dir = dir("issue");
        issue(&dir, &[1, 2], 30).expect("issue");
        // A later node is signed by the same CA.
        issue(&dir, &[3], 30).expect("issue a later node");
        let one = ClusterTls::load(&paths(&dir, 1), 1).expect("node 1 loads");
        let three_pem = std::fs::read(dir.join("node-3.crt")).expect("read");
        let three = CertificateDer::pem_slice_iter(&three_pem)
            .next()
            .expect("one")
            .expect("pem");
        assert!(
            one.speaks_for(&three, 3),
            "node 3's certificate is node 3's"
        );
        assert!(!one.speaks_for(&three, 2), "and not node 2's");
        // Node 2's files are not node 1's.
        let (key, why) = ClusterTls::load(&paths(&dir, 2), 1).expect_err("wrong id");
        assert_eq!(key, TlsKey::Cert);
        assert!(why.contains("not a certificate for node 1"), "{why}");
        // Nothing is overwritten.
        let err = issue(&dir, &[2], 30).expect_err("exists");
        assert!(err.contains("already exists"), "{err}");
        // A key that is not the certificate's.
        let mut mixed = paths(&dir, 1);
        mixed.key = dir.join("node-2.key");
        let (key, why) = ClusterTls::load(&mixed, 1).expect_err("mismatched key");
        assert_eq!(key, TlsKey::Key, "{why}");
        // A certificate from another CA.
        let other = self::dir("issue-other");
        issue(&other, &[1], 30).expect("other CA");
        let mut foreign = paths(&other, 1);
        foreign.ca = dir.join(CA_CERT);
        let (key, why) = ClusterTls::load(&foreign, 1).expect_err("foreign CA");
        assert_eq!(key, TlsKey::Cert, "{why}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
