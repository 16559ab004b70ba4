//! The process's one crypto backend: ring, installed as rustls' provider (design.md).

use std::sync::Once;

/// Makes ring the process's rustls provider; later calls do nothing.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only if another provider was installed first; ring is then not needed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
