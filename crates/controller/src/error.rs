//! Errors of the controller, classified by what the reconciler should do.

use std::time::Duration;

/// Why a phase step did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    /// A passing condition (API unavailable, conflict, vCenter timeout): retried
    /// with backoff; the phase deadline still applies.
    #[error("{0}")]
    Transient(String),
    /// Cannot succeed without the administrator: the phase fails with this message.
    #[error("{0}")]
    Fatal(String),
}

impl PhaseError {
    pub fn fatal(msg: impl Into<String>) -> Self {
        PhaseError::Fatal(msg.into())
    }

    pub fn transient(msg: impl Into<String>) -> Self {
        PhaseError::Transient(msg.into())
    }

    /// Adds what was being done to the message.
    pub fn context(self, what: &str) -> Self {
        match self {
            PhaseError::Transient(m) => PhaseError::Transient(format!("{what}: {m}")),
            PhaseError::Fatal(m) => PhaseError::Fatal(format!("{what}: {m}")),
        }
    }
}

/// Whether a Kubernetes API error is worth retrying.
pub fn kube_is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 409,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether a Kubernetes API error says the object does not exist.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl From<kube::Error> for PhaseError {
    fn from(e: kube::Error) -> Self {
        let msg = match &e {
            kube::Error::Api(s) => format!("Kubernetes API: {} ({})", s.message, s.reason),
            other => format!("Kubernetes API: {other}"),
        };
        if kube_is_transient(&e) {
            PhaseError::Transient(msg)
        } else {
            PhaseError::Fatal(msg)
        }
    }
}

impl From<vcfm_vsphere::Error> for PhaseError {
    fn from(e: vcfm_vsphere::Error) -> Self {
        if e.is_transient() {
            PhaseError::Transient(e.to_string())
        } else {
            PhaseError::Fatal(e.to_string())
        }
    }
}

/// Errors that end a reconcile; the error policy requeues with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("status update of {name} kept conflicting after {attempts} attempts")]
    StatusConflict { name: String, attempts: u32 },
    #[error("{0}")]
    Phase(#[from] PhaseError),
}

impl Error {
    /// How long to wait before the next attempt.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        base.saturating_mul(1u32 << attempt.min(5)).min(max)
    }
}
