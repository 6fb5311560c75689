//! real-tier: the proving ground's real components, built from their Go modules by
//! `make real-parts` (`tools/real/build.sh`, versions in `tools/real/versions.env`) into
//! `target/real/bin/`, run as processes on loopback: etcd, kube-apiserver and
//! kube-controller-manager ([`ControlPlane`]).
//!
//! Tests on this tier fail, never skip, when a binary is missing: the error names the
//! command that builds it.

mod apply;
mod control_plane;
mod openshift;
mod pki;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use apply::{apply_dir, apply_object, apply_yaml, documents, read_manifests};
pub use control_plane::{ADMIN_USER, ControlPlane, ControlPlaneOptions};
pub use openshift::{OperatorOptions, Operators};
pub use process::Proc;

/// Errors of the real tier.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary of the real tier has not been built.
    #[error("{} is missing: build the real tier with `make real-parts` (tools/real/build.sh)", .0.display())]
    MissingBinary(PathBuf),
    /// A file or process operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being read, written or started.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("PKI: {0}")]
    Pki(String),
    /// A component exited before it was ready.
    #[error("{component} exited ({status}):\n{log}")]
    Exited {
        /// Which one.
        component: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// A component did not become ready in time.
    #[error("{what} not ready after {after:?}: {last}")]
    NotReady {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
        /// The last answer seen.
        last: String,
    },
    /// A manifest could not be parsed.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A Kubernetes API call failed.
    #[error("kube: {0}")]
    Kube(String),
}

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// `VCFM_REAL_KEEP=1` keeps every component's data and logs after the test (their
/// directories are named in the failure messages).
pub(crate) fn keep_logs() -> bool {
    std::env::var_os("VCFM_REAL_KEEP").is_some_and(|v| v == "1")
}

/// Where the binaries are: `$VCFM_REAL_BIN`, else `<workspace>/target/real/bin`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("VCFM_REAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/real/bin"))
}

/// CRDs the real operators need beyond OpenShift's API set (`target/real/crds`, copied
/// by `make real-parts` from the operators' modules).
pub fn crd_dir() -> PathBuf {
    bin_dir().join("../crds")
}

/// The release's FeatureGate as openshift/api ships it (`target/real/featuregates`), for
/// seeding a cluster whose operators read every gate.
pub fn feature_gate_payload() -> PathBuf {
    bin_dir().join("../featuregates/featureGate-SelfManagedHA-Default.yaml")
}

/// The path of one real binary, or [`Error::MissingBinary`].
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingBinary(p))
    }
}
