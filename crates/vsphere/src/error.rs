//! Typed errors. Messages name the server and say what an administrator can fix; they never
//! contain passwords or session tokens (fault texts are passed through the redactor).

use std::time::Duration;

/// Kind of a vAPI REST error (`com.vmware.vapi.std.errors.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestErrorKind {
    /// `already_exists`: a category or tag with that name exists.
    AlreadyExists,
    /// `not_found` (or HTTP 404).
    NotFound,
    /// `unauthenticated` (or HTTP 401): no valid session.
    Unauthenticated,
    /// `unauthorized` (or HTTP 403): the user lacks a privilege.
    Unauthorized,
    /// `invalid_argument`.
    InvalidArgument,
    /// Any other vAPI error type, as sent.
    Other(String),
}

impl RestErrorKind {
    /// Maps a vAPI error `type` (full or short) and HTTP status to a kind.
    pub fn from_type(kind: Option<&str>, status: u16) -> Self {
        let short = kind.map(|k| k.rsplit('.').next().unwrap_or(k));
        match (short, status) {
            (Some("already_exists"), _) => Self::AlreadyExists,
            (Some("not_found"), _) | (None, 404) => Self::NotFound,
            (Some("unauthenticated"), _) | (None, 401) => Self::Unauthenticated,
            (Some("unauthorized"), _) | (None, 403) => Self::Unauthorized,
            (Some("invalid_argument"), _) => Self::InvalidArgument,
            (Some(other), _) => Self::Other(other.to_string()),
            (None, s) => Self::Other(format!("HTTP {s}")),
        }
    }
}

impl std::fmt::Display for RestErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyExists => f.write_str("already_exists"),
            Self::NotFound => f.write_str("not_found"),
            Self::Unauthenticated => f.write_str("unauthenticated"),
            Self::Unauthorized => f.write_str("unauthorized"),
            Self::InvalidArgument => f.write_str("invalid_argument"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// Errors of the vSphere client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration cannot work (bad CA bundle, bad thumbprint, ...).
    #[error("invalid vSphere client configuration: {0}")]
    Config(String),

    /// Login rejected: wrong user name or password.
    #[error(
        "{server}: login as {user} failed: incorrect user name or password; check the vCenter credentials Secret"
    )]
    InvalidLogin { server: String, user: String },

    /// The session is not (or no longer) valid and re-login did not help.
    #[error(
        "{server}: {method}: session is not authenticated (expired or terminated) and re-login failed"
    )]
    NotAuthenticated { server: String, method: String },

    /// The user lacks a privilege for the call.
    #[error(
        "{server}: {method} on {object} denied: user lacks privilege {privilege}; grant it to the vCenter user's role"
    )]
    NoPermission {
        server: String,
        method: String,
        object: String,
        privilege: String,
    },

    /// An object with that name already exists in the parent.
    #[error("{server}: {method}: an object named {name:?} already exists in {parent}")]
    DuplicateName {
        server: String,
        method: String,
        name: String,
        parent: String,
    },

    /// A managed object reference is stale (the object was deleted).
    #[error("{server}: {method}: object {object} no longer exists (deleted concurrently?)")]
    ManagedObjectNotFound {
        server: String,
        method: String,
        object: String,
    },

    /// vCenter rejected an argument.
    #[error("{server}: {method}: invalid argument {property}: {message}")]
    InvalidArgument {
        server: String,
        method: String,
        property: String,
        message: String,
    },

    /// Any other SOAP fault.
    #[error("{server}: {method} failed with {fault}: {message}")]
    Fault {
        server: String,
        method: String,
        fault: String,
        message: String,
    },

    /// A vAPI REST call failed.
    #[error("{server}: {endpoint} failed ({kind}, HTTP {status}){}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Rest {
        server: String,
        endpoint: String,
        kind: RestErrorKind,
        status: u16,
        message: String,
    },

    /// An inventory path does not resolve to an object of the expected kind.
    #[error("{server}: {kind} {path:?} not found; check the inventory path in the failure domain")]
    NotFound {
        server: String,
        kind: String,
        path: String,
    },

    /// A task ended in error; `fault` is the task's fault mapped like a call fault.
    #[error("{server}: task {operation} ({task}) failed: {fault}")]
    TaskFailed {
        server: String,
        operation: String,
        task: String,
        fault: Box<Error>,
    },

    /// A task did not finish before the deadline (it may still be running in vCenter).
    #[error(
        "{server}: task {operation} ({task}) still {state} after {waited:?}; check vCenter's recent tasks"
    )]
    TaskTimeout {
        server: String,
        operation: String,
        task: String,
        state: String,
        waited: Duration,
    },

    /// A folder that should be empty still has children.
    #[error("{server}: folder {folder} is not empty ({children} children); refusing to delete it")]
    FolderNotEmpty {
        server: String,
        folder: String,
        children: usize,
    },

    /// A pre-existing tag category cannot serve the required purpose.
    #[error(
        "{server}: tag category {name:?} exists but is incompatible: {reason}; fix or delete it in vCenter"
    )]
    IncompatibleCategory {
        server: String,
        name: String,
        reason: String,
    },

    /// The server's TLS certificate was not trusted.
    #[error(
        "{server}: TLS verification failed: {message}; provide the vCenter CA bundle or its SHA-256 thumbprint"
    )]
    Tls { server: String, message: String },

    /// No answer within the call's timeout.
    #[error(
        "{server}: {endpoint} timed out after {after:?}; check that vCenter is reachable and responsive"
    )]
    Timeout {
        server: String,
        endpoint: String,
        after: Duration,
    },

    /// Connection-level failure (refused, reset, DNS).
    #[error(
        "{server}: cannot reach vCenter for {endpoint}: {message}; check the server name and network"
    )]
    Transport {
        server: String,
        endpoint: String,
        message: String,
    },

    /// The server answered something the client cannot understand.
    #[error("{server}: unexpected response to {endpoint}: {message}")]
    Protocol {
        server: String,
        endpoint: String,
        message: String,
    },
}

impl Error {
    /// True for failures where retrying an idempotent call may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Transport { .. })
    }

    /// True when the session is invalid (SOAP `NotAuthenticated` or REST 401).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Error::NotAuthenticated { .. }
                | Error::Rest {
                    kind: RestErrorKind::Unauthenticated,
                    ..
                }
        )
    }

    /// True for "object already exists" (SOAP `DuplicateName` or REST `already_exists`).
    pub fn is_already_exists(&self) -> bool {
        matches!(
            self,
            Error::DuplicateName { .. }
                | Error::Rest {
                    kind: RestErrorKind::AlreadyExists,
                    ..
                }
        )
    }

    /// True for "not found" (inventory path, stale reference, REST 404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::ManagedObjectNotFound { .. }
                | Error::Rest {
                    kind: RestErrorKind::NotFound,
                    ..
                }
        )
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
