//! vSphere client for vcfm: the calls the migration phases make on the source and target
//! vCenters (vim25 SOAP hand-written with quick-xml, vAPI REST tagging), with verified TLS,
//! shared sessions, transparent re-login, typed errors and redacted call logging.
//!
//! ```no_run
//! # async fn f() -> Result<(), vcfm_vsphere::Error> {
//! use vcfm_vsphere::{ClientConfig, Credentials, SessionCache, TlsOptions};
//! let cache = SessionCache::default();
//! let vc = cache.client(
//!     ClientConfig::new("vcenter.example.com", Credentials::new("administrator@vsphere.local", "pw"))
//!         .with_tls(TlsOptions::with_ca_pem(std::fs::read("ca.pem").unwrap())),
//! )?;
//! let dc = vc.find_datacenter("/DC0").await?;
//! let folder = vc.ensure_folder("/DC0/vm/infra-id").await?;
//! # let _ = (dc, folder); Ok(()) }
//! ```

mod cache;
mod client;
mod drs;
mod error;
mod inventory;
mod observe;
mod privileges;
mod tagging;
mod tasks;
mod tls;
pub mod xml;

#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "sim")]
mod test_calls;

pub use cache::SessionCache;
pub use client::{Client, ClientConfig, ClientStats, Credentials, RetryPolicy};
pub use drs::{DrsGroups, VmHostRule};
pub use error::{Error, RestErrorKind, Result};
pub use inventory::{About, ObjectContent, VmSummary};
pub use observe::{Api, CallLog, CallObserver, CallRecord};
pub use privileges::PrivilegeReport;
pub use tagging::{Cardinality, Category, CategorySpec, Tag, normalise_associable_type};
pub use tls::{TlsOptions, thumbprint_sha256};

#[cfg(feature = "sim")]
pub use test_calls::CloneSpec;

/// A managed object reference (`Folder:group-d1`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct MoRef {
    /// Managed object type, e.g. `Datacenter`, `ClusterComputeResource`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Server-side id, e.g. `datacenter-2`.
    #[serde(rename = "id")]
    pub value: String,
}

impl MoRef {
    /// A reference from its type and id.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The parts of vim25 `ServiceContent` this crate uses.
#[derive(Debug, Clone)]
pub struct ServiceContent {
    /// Inventory root folder.
    pub root_folder: MoRef,
    /// PropertyCollector.
    pub property_collector: MoRef,
    /// ViewManager.
    pub view_manager: MoRef,
    /// SearchIndex.
    pub search_index: MoRef,
    /// SessionManager.
    pub session_manager: MoRef,
    /// AuthorizationManager.
    pub authorization_manager: MoRef,
    /// `about` at the time the client first connected.
    pub about: About,
}

impl ServiceContent {
    fn from_node(n: &xml::Node) -> Option<Self> {
        let m = |name: &str| n.child(name).and_then(xml::Node::as_moref);
        Some(Self {
            root_folder: m("rootFolder")?,
            property_collector: m("propertyCollector")?,
            view_manager: m("viewManager")?,
            search_index: m("searchIndex")?,
            session_manager: m("sessionManager")?,
            authorization_manager: m("authorizationManager")?,
            about: About::from_node(n.child("about")?),
        })
    }
}
