//! Planned maintenance through files: the operator touches a drain or maint file.

use std::io;
use std::path::PathBuf;

use crate::status::Admin;

/// The drain and maint files the operator may create. Either may be unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminFiles {
    /// Present → `drain` (unless maint is present too).
    pub drain: Option<PathBuf>,
    /// Present → `maint`; wins over drain.
    pub maint: Option<PathBuf>,
}

/// What one look at the files found.
#[derive(Debug)]
pub struct AdminReading {
    /// The state the files say.
    pub admin: Admin,
    /// Files whose presence could not be determined (e.g. a directory without search
    /// permission); they count as absent, as in haproxy_agent, and the caller logs them.
    pub errors: Vec<(PathBuf, io::Error)>,
}

impl AdminFiles {
    /// Looks at the files now: maint wins over drain; neither → ready.
    ///
    /// A file is present when `stat` succeeds (any type; symlinks are followed).
    pub fn read(&self) -> AdminReading {
        let mut errors = Vec::new();
        let mut present = |path: &Option<PathBuf>| -> bool {
            let Some(path) = path else { return false };
            match std::fs::metadata(path) {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                // ENOTDIR: a path component is a regular file → the file cannot exist.
                Err(e) if e.raw_os_error() == Some(20) => false,
                Err(e) => {
                    errors.push((path.clone(), e));
                    false
                }
            }
        };
        let admin = if present(&self.maint) {
            Admin::Maint
        } else if present(&self.drain) {
            Admin::Drain
        } else {
            Admin::Ready
        };
        AdminReading { admin, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("opengslb-admin-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn maint_wins_over_drain_wins_over_ready() {
        let dir = TempDir::new("precedence");
        let files = AdminFiles {
            drain: Some(dir.0.join("drain")),
            maint: Some(dir.0.join("maint")),
        };
        assert_eq!(files.read().admin, Admin::Ready);
        std::fs::write(dir.0.join("drain"), "").expect("touch");
        assert_eq!(files.read().admin, Admin::Drain);
        std::fs::write(dir.0.join("maint"), "").expect("touch");
        assert_eq!(files.read().admin, Admin::Maint);
        std::fs::remove_file(dir.0.join("drain")).expect("rm");
        assert_eq!(files.read().admin, Admin::Maint);
        std::fs::remove_file(dir.0.join("maint")).expect("rm");
        assert_eq!(files.read().admin, Admin::Ready);
    }

    #[test]
    fn unset_files_mean_ready() {
        let reading = AdminFiles::default().read();
        assert_eq!(reading.admin, Admin::Ready);
        assert!(reading.errors.is_empty());
    }

    #[test]
    fn a_path_through_a_regular_file_is_simply_absent() {
        let dir = TempDir::new("enotdir");
        std::fs::write(dir.0.join("file"), "").expect("touch");
        let files = AdminFiles {
            drain: Some(dir.0.join("file/drain")),
            maint: None,
        };
        let reading = files.read();
        assert_eq!(reading.admin, Admin::Ready);
        assert!(reading.errors.is_empty(), "{:?}", reading.errors);
    }
}
