//! What a phase step gets to work with, and what it may ask to record.

use crate::error::PhaseError;
use crate::openshift::creds;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vcfm_api::{
    BackupManifest, ClusterFacts, CreatedVSphereObject, LogEntry, LogLevel, SourceVCenter,
    VmwareCloudFoundationMigration,
};
use vcfm_vsphere::{CallObserver, CallRecord, ClientConfig, SessionCache, TlsOptions};

/// Process-wide settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// PEM bundle trusted for vCenter TLS in addition to nothing else; system
    /// roots are used when unset.
    pub vcenter_ca_pem: Option<Vec<u8>>,
    /// Explicit opt-out of vCenter certificate verification.
    pub vcenter_insecure: bool,
    /// Per-call timeout towards vCenter.
    pub vcenter_timeout: Duration,
    /// Safety-net requeue interval while a phase waits (watches usually wake it sooner).
    pub poll_interval: Duration,
    /// Name used as the Event reporter and field manager.
    pub manager: String,
    /// How long MonitorHealth watches operators and nodes before it trusts that they are
    /// stable: operators notice a configuration change through their informers and resyncs
    /// and only then go Progressing (the static-pod operators roll a new revision, the CCM
    /// operator re-renders its config), which takes tens of seconds on a real cluster.
    pub health_settle: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            vcenter_ca_pem: None,
            vcenter_insecure: false,
            vcenter_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(15),
            manager: "vcfm-controller".into(),
            health_settle: Duration::from_secs(60),
        }
    }
}

/// Shared, long-lived state: one per controller process.
pub struct Shared {
    pub client: Client,
    pub config: ControllerConfig,
    pub sessions: SessionCache,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Things a phase asks the reconciler to persist in status together with its outcome.
#[derive(Debug, Default, Clone)]
pub struct StatusUpdates {
    pub source_vcenter: Option<SourceVCenter>,
    pub cluster: Option<ClusterFacts>,
    pub backups: Vec<BackupManifest>,
    pub created: Vec<CreatedVSphereObject>,
    pub warnings: Option<Vec<String>>,
}

/// The context of one phase step.
pub struct PhaseCtx {
    pub shared: Arc<Shared>,
    /// The migration as last read, status included.
    pub migration: Arc<VmwareCloudFoundationMigration>,
    pub now: Timestamp,
    logs: Mutex<Vec<LogEntry>>,
    updates: Mutex<StatusUpdates>,
    calls: Arc<CallCollector>,
    caches: Option<crate::cache::Caches>,
}

/// Keeps a bounded summary of the vSphere calls a phase step made, and counts them.
struct CallCollector {
    records: Mutex<Vec<CallRecord>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl CallObserver for CallCollector {
    fn on_call(&self, record: &CallRecord) {
        crate::metrics::CallCounter(self.metrics.clone()).on_call(record);
        if let Ok(mut r) = self.records.lock()
            && r.len() < 200
        {
            r.push(record.clone());
        }
    }
}

impl PhaseCtx {
    pub fn new(
        shared: Arc<Shared>,
        migration: Arc<VmwareCloudFoundationMigration>,
        now: Timestamp,
    ) -> Self {
        Self {
            migration,
            now,
            logs: Mutex::new(vec![]),
            updates: Mutex::new(StatusUpdates::default()),
            calls: Arc::new(CallCollector {
                records: Mutex::new(vec![]),
                metrics: shared.metrics.clone(),
            }),
            caches: None,
            shared,
        }
    }

    /// Reads of watched kinds come from these stores (without them, from the API).
    pub fn with_caches(mut self, caches: crate::cache::Caches) -> Self {
        self.caches = Some(caches);
        self
    }

    /// The controller's watch caches, when it runs with them.
    pub fn caches(&self) -> Option<&crate::cache::Caches> {
        self.caches.as_ref()
    }

    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    pub fn namespace(&self) -> &str {
        self.migration
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    pub fn name(&self) -> &str {
        self.migration.metadata.name.as_deref().unwrap_or("")
    }

    /// Adds a line to the phase's log in status (bounded there).
    pub fn log(&self, level: LogLevel, component: &str, message: impl Into<String>) {
        self.log_fields(level, component, message, BTreeMap::new());
    }

    pub fn log_fields(
        &self,
        level: LogLevel,
        component: &str,
        message: impl Into<String>,
        fields: BTreeMap<String, String>,
    ) {
        let message = message.into();
        match level {
            LogLevel::Error | LogLevel::Warning => tracing::warn!(component, %message),
            _ => tracing::info!(component, %message),
        }
        if let Ok(mut l) = self.logs.lock() {
            l.push(LogEntry {
                timestamp: Time(self.now),
                level,
                message,
                component: component.to_string(),
                fields,
            });
        }
    }

    pub fn record(&self, f: impl FnOnce(&mut StatusUpdates)) {
        if let Ok(mut u) = self.updates.lock() {
            f(&mut u);
        }
    }

    /// Takes the log lines and status updates collected so far, plus one
    /// summary line for the vSphere calls made.
    pub fn take(&self) -> (Vec<LogEntry>, StatusUpdates) {
        let mut logs = self
            .logs
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let calls = self
            .calls
            .records
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if !calls.is_empty() {
            let failed = calls.iter().filter(|c| !c.ok).count();
            let mut by_method: BTreeMap<String, usize> = BTreeMap::new();
            for c in &calls {
                *by_method
                    .entry(format!("{}:{}", c.server, c.method))
                    .or_default() += 1;
            }
            let summary: Vec<String> = by_method.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            let mut fields = BTreeMap::new();
            fields.insert("calls".into(), calls.len().to_string());
            fields.insert("failed".into(), failed.to_string());
            logs.push(LogEntry {
                timestamp: Time(self.now),
                level: if failed > 0 {
                    LogLevel::Warning
                } else {
                    LogLevel::Debug
                },
                message: format!("vSphere calls: {}", summary.join(", ")),
                component: "vsphere".into(),
                fields,
            });
        }
        let updates = self
            .updates
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        (logs, updates)
    }

    fn tls(&self) -> Result<TlsOptions, PhaseError> {
        let cfg = &self.shared.config;
        Ok(if cfg.vcenter_insecure {
            TlsOptions::insecure()
        } else if let Some(pem) = &cfg.vcenter_ca_pem {
            TlsOptions::with_ca_pem(pem.clone())
        } else {
            TlsOptions::default()
        })
    }

    fn vcenter(
        &self,
        server: &str,
        creds: vcfm_vsphere::Credentials,
    ) -> Result<vcfm_vsphere::Client, PhaseError> {
        let config = ClientConfig::new(server, creds)
            .with_tls(self.tls()?)
            .with_timeout(self.shared.config.vcenter_timeout);
        let client = self.shared.sessions.client(config)?;
        Ok(client.with_observer(self.calls.clone()))
    }

    /// A client for a target vCenter, with the credentials from the migration's target Secret.
    pub async fn target_vcenter(&self, server: &str) -> Result<vcfm_vsphere::Client, PhaseError> {
        let secret = self.target_secret().await?;
        let creds = creds::credentials_for(&secret, server).map_err(PhaseError::Fatal)?;
        self.vcenter(server, creds)
    }

    /// A client for the source vCenter recorded by Preflight, with the cluster's own credentials.
    pub async fn source_vcenter(&self, server: &str) -> Result<vcfm_vsphere::Client, PhaseError> {
        let secret = self
            .secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME)
            .await
            .map_err(|e| e.context("reading kube-system/vsphere-creds"))?
            .ok_or_else(|| {
                PhaseError::fatal("reading kube-system/vsphere-creds: it does not exist")
            })?;
        let creds = creds::credentials_for(&secret, server).map_err(PhaseError::Fatal)?;
        self.vcenter(server, creds)
    }

    /// The Secret named by `spec.targetVCenterCredentialsSecret`.
    pub async fn target_secret(&self) -> Result<Secret, PhaseError> {
        let r = &self.migration.spec.target_vcenter_credentials_secret;
        let ns = self
            .migration
            .target_secret_namespace()
            .unwrap_or("default")
            .to_string();
        self.secret(&ns, &r.name)
            .await
            .map_err(|e| e.context("reading the target credentials Secret"))?
            .ok_or_else(|| {
                PhaseError::Fatal(format!(
                    "target credentials Secret {ns}/{} not found: create it with keys <server>.username and <server>.password for every target vCenter",
                    r.name
                ))
            })
    }

    /// The source vCenter recorded by Preflight; later phases must never guess it.
    pub fn recorded_source(&self) -> Result<&SourceVCenter, PhaseError> {
        self.migration
            .status
            .as_ref()
            .and_then(|s| s.source_vcenter.as_ref())
            .ok_or_else(|| PhaseError::fatal("status.sourceVCenter is not set: Preflight has not recorded the source vCenter"))
    }

    /// Cluster facts recorded by Preflight.
    pub fn recorded_cluster(&self) -> Result<&ClusterFacts, PhaseError> {
        self.migration
            .status
            .as_ref()
            .and_then(|s| s.cluster.as_ref())
            .ok_or_else(|| {
                PhaseError::fatal(
                    "status.cluster is not set: Preflight has not recorded the cluster facts",
                )
            })
    }

    /// The backup manifests recorded so far.
    pub fn backups(&self) -> &[BackupManifest] {
        self.migration
            .status
            .as_ref()
            .map(|s| s.backup_manifests.as_slice())
            .unwrap_or(&[])
    }
}
