//! Errors of the controller, classified by what the reconciler should do.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// Whether a Kubernetes API error is worth retrying. A 409 is a passing
/// write conflict (stale resourceVersion) unless its reason is
/// AlreadyExists: that one does not pass by retrying, and each create site
/// decides whether to adopt the existing object or fail.
pub fn kube_is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) if s.code == 409 => !s.is_already_exists(),
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether a Kubernetes API error says a created object exists already.
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

/// SOAP faults vCenter raises for a passing condition on its side:
/// `SystemError` (an internal vpxd error, e.g. while a service restarts) and
/// `HostCommunication` (a host briefly out of reach). Retrying helps; the
/// phase deadline still bounds how long.
const TRANSIENT_FAULTS: [&str; 2] = ["SystemError", "HostCommunication"];

/// Whether a vSphere error is worth retrying: timeouts and transport errors,
/// the transient faults above, HTTP 5xx from the REST endpoint, and a lost
/// session whose re-login also failed (vCenter restarting). A rejected
/// password is not: it fails at once.
pub fn vsphere_is_transient(e: &vcfm_vsphere::Error) -> bool {
    use vcfm_vsphere::Error as V;
    if e.is_transient() || matches!(e, V::NotAuthenticated { .. }) {
        return true;
    }
    match e {
        V::Fault { fault, .. } => TRANSIENT_FAULTS.contains(&fault.as_str()),
        V::Rest { status, kind, .. } => {
            *status >= 500 || *kind == vcfm_vsphere::RestErrorKind::Unauthenticated
        }
        V::TaskFailed { fault, .. } => vsphere_is_transient(fault),
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
        if vsphere_is_transient(&e) {
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
    /// The `error_class` label of `vcfm_reconciles_total`.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Kube(e) if is_already_exists(e) => "kube_already_exists",
            Error::Kube(e) if kube_is_transient(e) => "kube_transient",
            Error::Kube(_) => "kube",
            Error::StatusConflict { .. } => "status_conflict",
            Error::Phase(PhaseError::Transient(_)) => "transient",
            Error::Phase(PhaseError::Fatal(_)) => "fatal",
        }
    }
}

/// Per-migration retry delays after failed reconciles: exponential from
/// [`Backoff::BASE`] to [`Backoff::MAX`], with jitter over the upper half of
/// each step so that migrations (or one migration after a controller
/// restart) do not retry in lockstep. The first successful reconcile resets it.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(60);

    /// Records one more failure of `key` and returns the wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut m = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let a = m.entry(key.to_string()).or_insert(0);
            *a = a.saturating_add(1);
            *a
        };
        let frac = getrandom::u32().map_or(0.5, |r| f64::from(r) / f64::from(u32::MAX));
        backoff_delay(n, frac)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Consecutive failures recorded for `key`.
    pub fn attempts(&self, key: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// The wait after the `n`-th consecutive failure (1-based); `frac` in [0, 1]
/// places it between half and all of the exponential step.
pub fn backoff_delay(n: u32, frac: f64) -> Duration {
    let step = Backoff::BASE
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(Backoff::MAX);
    step.mul_f64(0.5 + 0.5 * frac.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("m", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn already_exists_is_not_a_transient_conflict() {
        assert!(kube_is_transient(&api(409, "Conflict")));
        assert!(!kube_is_transient(&api(409, "AlreadyExists")));
        assert!(matches!(
            PhaseError::from(api(409, "AlreadyExists")),
            PhaseError::Fatal(_)
        ));
        assert!(matches!(
            PhaseError::from(api(409, "Conflict")),
            PhaseError::Transient(_)
        ));
        assert!(kube_is_transient(&api(503, "ServiceUnavailable")));
        assert!(kube_is_transient(&api(429, "TooManyRequests")));
        assert!(!kube_is_transient(&api(403, "Forbidden")));
        assert_eq!(
            Error::Kube(api(409, "AlreadyExists")).class(),
            "kube_already_exists"
        );
        assert_eq!(
            Error::Kube(api(500, "InternalError")).class(),
            "kube_transient"
        );
    }

    fn fault(name: &str) -> vcfm_vsphere::Error {
        vcfm_vsphere::Error::Fault {
            server: "vc".into(),
            method: "CreateFolder".into(),
            fault: name.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn vcenter_system_errors_5xx_and_session_loss_are_retried() {
        use vcfm_vsphere::{Error as V, RestErrorKind};
        let rest = |status, kind| V::Rest {
            server: "vc".into(),
            endpoint: "/api/cis/tagging/tag".into(),
            kind,
            status,
            message: String::new(),
        };
        for e in [
            fault("SystemError"),
            fault("HostCommunication"),
            rest(503, RestErrorKind::Other("HTTP 503".into())),
            rest(500, RestErrorKind::Other("internal_server_error".into())),
            rest(401, RestErrorKind::Unauthenticated),
            V::NotAuthenticated {
                server: "vc".into(),
                method: "RetrieveProperties".into(),
            },
            V::TaskFailed {
                server: "vc".into(),
                operation: "CreateFolder".into(),
                task: "task-1".into(),
                fault: Box::new(fault("SystemError")),
            },
        ] {
            assert!(
                matches!(PhaseError::from(e), PhaseError::Transient(_)),
                "must be retried"
            );
        }
        for e in [
            fault("InvalidState"),
            rest(403, RestErrorKind::Unauthorized),
            rest(400, RestErrorKind::InvalidArgument),
            V::InvalidLogin {
                server: "vc".into(),
                user: "u".into(),
            },
            V::TaskFailed {
                server: "vc".into(),
                operation: "CreateFolder".into(),
                task: "task-1".into(),
                fault: Box::new(fault("DuplicateName")),
            },
        ] {
            assert!(
                matches!(PhaseError::from(e), PhaseError::Fatal(_)),
                "must fail at once"
            );
        }
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_a_cap_with_bounded_jitter() {
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(backoff_delay(2, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(5, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(8, 1.0), Backoff::MAX);
        assert_eq!(backoff_delay(u32::MAX, 1.0), Backoff::MAX);
        assert_eq!(backoff_delay(u32::MAX, 0.0), Backoff::MAX / 2);
        let b = Backoff::default();
        let mut last = Duration::ZERO;
        for n in 1..=10 {
            let d = b.failed("ns/a");
            let step = backoff_delay(n, 1.0);
            assert!(d >= step / 2 && d <= step, "attempt {n}: {d:?}");
            // The lower edge of each step is the upper edge of the one before.
            assert!(d >= last / 2, "attempt {n}: {d:?} after {last:?}");
            last = d;
        }
        assert_eq!(b.attempts("ns/a"), 10);
        assert_eq!(b.attempts("ns/b"), 0, "per migration");
        b.succeeded("ns/a");
        assert_eq!(b.attempts("ns/a"), 0);
        assert!(b.failed("ns/a") <= Backoff::BASE);
    }
}
