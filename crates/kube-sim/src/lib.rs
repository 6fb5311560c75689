//! kube-sim: an in-memory Kubernetes API server for proving controllers over real
//! HTTP(S) with real clients (kubectl, kube-rs), without a kube-apiserver binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_sim::SimError> {
//! let sim = kube_sim::KubeSim::builder().rbac(true).start().await?;
//! let client = sim.client().await?;
//! # drop(client); sim.shutdown().await; Ok(()) }
//! ```
//!
//! What it does like the real server: discovery (legacy, not aggregated), a minimal
//! OpenAPI v3 so kubectl uses server-side field validation, CRUD with resourceVersion
//! preconditions and no-op detection, list paging/selectors, watches with bookmarks,
//! resumption and `410 Expired`, CRDs (structural validation, defaulting, pruning, CEL
//! via kube-cel, status/scale subresources, printer columns), merge/JSON/strategic/apply
//! patches with field managers, finalizers, owner-reference GC and namespace
//! termination, `dryRun=All`, bearer-token users with RBAC, impersonation and access
//! reviews, ValidatingAdmissionPolicies with their bindings (see `vap`), fault injection and
//! per-user request accounting.
//!
//! Known simplifications: one storage version per resource without conversion (objects
//! are served at any served version as stored), no admission plugin besides policies, no
//! kubelet (pods are deleted at once and keep the status they are given),
//! PodDisruptionBudgets honoured by evictions but their status left to a client (no
//! disruption controller),
//! GC runs synchronously, protobuf is accepted only for the kinds kubectl's typed
//! clients send (responses are always JSON), and managedFields ownership is tracked at
//! leaf-field granularity with simplified list semantics.

mod cel_compat;
mod core;
mod discovery;
mod error;
mod events;
mod eviction;
mod faults;
mod http;
mod kubeconfig;
mod patch;
mod proto;
mod rbac;
mod registry;
mod schema;
mod store;
mod tls;
mod util;
mod vap;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

pub use crate::error::{ApiError, Cause, SimError};
pub use crate::faults::{FaultAction, FaultRule, Faults, StatKey, Stats};
pub use crate::rbac::UserInfo;

use crate::core::Core;
use crate::http::Shared;
use crate::store::Store;

/// Configures and starts a [`KubeSim`].
#[derive(Debug, Clone)]
pub struct KubeSimBuilder {
    rbac: bool,
    tls: bool,
    listen: SocketAddr,
    history: usize,
    bookmark_interval: Duration,
    watch_list: bool,
    kubeconfig_path: Option<PathBuf>,
    admin_token: Option<String>,
}

impl Default for KubeSimBuilder {
    fn default() -> Self {
        KubeSimBuilder {
            rbac: false,
            tls: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            watch_list: true,
            kubeconfig_path: None,
            admin_token: None,
        }
    }
}

impl KubeSimBuilder {
    /// Enforce RBAC for every non-admin request (default off: every token is allowed).
    pub fn rbac(mut self, on: bool) -> Self {
        self.rbac = on;
        self
    }
    /// Serve HTTPS with a generated CA (default on) or plain HTTP.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
    /// Listen address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// How many change events are kept for watch resumption (older rv ⇒ 410).
    pub fn event_history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }
    /// Interval of BOOKMARK events on watches that allow them.
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }
    /// The `WatchList` feature gate (default on, as from Kubernetes 1.34): off,
    /// a watch asking for its initial state (`sendInitialEvents`) is refused
    /// with 422, as Kubernetes 1.27-1.31 and 1.33 refuse it by default
    /// (k8s.io/apiserver `pkg/features/kube_features.go`).
    pub fn watch_list(mut self, on: bool) -> Self {
        self.watch_list = on;
        self
    }
    /// Where to write the admin kubeconfig (default: a temp file owned by the server).
    pub fn kubeconfig_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.kubeconfig_path = Some(p.into());
        self
    }
    /// Use a fixed admin token instead of a random one.
    pub fn admin_token(mut self, t: impl Into<String>) -> Self {
        self.admin_token = Some(t.into());
        self
    }

    /// Bind, generate TLS material, write the kubeconfig and start serving.
    pub async fn start(self) -> Result<KubeSim, SimError> {
        let listener = TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let tls = if self.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let (tx, _) = broadcast::channel(65_536);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let admin_token = self
            .admin_token
            .unwrap_or_else(|| format!("admin-{}", uuid::Uuid::new_v4().simple()));
        let mut tokens = rbac::Tokens::default();
        let admin = UserInfo {
            name: "kube-sim-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        tokens.insert(admin_token.clone(), admin.clone());
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(Store::new(self.history, tx))),
            tokens: RwLock::new(tokens),
            rbac: self.rbac,
            plain_http_admin: if self.tls { None } else { Some(admin) },
            pod_logs: RwLock::default(),
            faults: Faults::default(),
            stats: Stats::default(),
            bookmark_interval: self.bookmark_interval,
            watch_list: self.watch_list,
            server_address: addr.to_string(),
            shutdown: shutdown_rx.clone(),
            epoch: std::sync::atomic::AtomicU64::new(1),
        });
        {
            let mut core = shared.core();
            let ns_def = core
                .registry
                .get("", "namespaces")
                .ok_or_else(|| SimError::Parse("no namespaces".into()))?;
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                core.create(
                    &ns_def,
                    "v1",
                    "",
                    json!({"metadata": {"name": ns}}),
                    "kube-apiserver",
                )?;
            }
            // The bootstrap `cluster-admin` role and its binding, as every cluster has.
            let rbac_group = "rbac.authorization.k8s.io";
            let cr = core
                .registry
                .get(rbac_group, "clusterroles")
                .ok_or_else(|| SimError::Parse("no clusterroles".into()))?;
            core.create(
                &cr,
                "v1",
                "",
                json!({
                    "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                    "rules": [
                        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                        {"nonResourceURLs": ["*"], "verbs": ["*"]},
                    ],
                }),
                "kube-apiserver",
            )?;
            let crb = core
                .registry
                .get(rbac_group, "clusterrolebindings")
                .ok_or_else(|| SimError::Parse("no clusterrolebindings".into()))?;
            core.create(
                &crb,
                "v1",
                "",
                json!({
                    "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                    "roleRef": {"apiGroup": rbac_group, "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"apiGroup": rbac_group, "kind": "Group", "name": "system:masters"}],
                }),
                "kube-apiserver",
            )?;
        }
        let (tmp, kubeconfig_path) = match self.kubeconfig_path {
            Some(p) => (None, p),
            None => {
                let dir = tempfile::tempdir()?;
                let p = dir.path().join("kubeconfig");
                (Some(dir), p)
            }
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        std::fs::write(
            &kubeconfig_path,
            kubeconfig::render(&url, ca_pem.as_deref(), &admin_token, "admin"),
        )?;
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
        let server = tokio::spawn(serve(listener, shared.clone(), acceptor, shutdown_rx));
        Ok(KubeSim {
            shared,
            addr,
            url,
            ca_pem,
            admin_token,
            kubeconfig_path,
            _tmp: tmp,
            shutdown_tx,
            server: Some(server),
        })
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| http::handle(shared.clone(), req));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acc) => {
                            if let Ok(s) = acc.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Give in-flight responses (and watch streams that saw the signal) a moment to finish.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// A running simulated API server. Dropping it stops serving (use [`KubeSim::shutdown`] to wait).
pub struct KubeSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    ca_pem: Option<String>,
    admin_token: String,
    kubeconfig_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown_tx: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KubeSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSim").field("url", &self.url).finish()
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

impl KubeSim {
    /// A builder with defaults: TLS on, RBAC off, `127.0.0.1:0`.
    pub fn builder() -> KubeSimBuilder {
        KubeSimBuilder::default()
    }

    /// Base URL, e.g. `https://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin bearer token (group `system:masters`, bypasses RBAC).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// PEM of the CA that signed the serving certificate (`None` for plain HTTP).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Kubeconfig text for any bearer token.
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        kubeconfig::render(&self.url, self.ca_pem.as_deref(), token, "user")
    }

    /// Write a kubeconfig for `token` (admin if `None`) to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: Option<&str>) -> Result<(), SimError> {
        std::fs::write(
            path,
            self.kubeconfig_for_token(token.unwrap_or(&self.admin_token)),
        )?;
        Ok(())
    }

    /// A kube client authenticated as admin.
    pub async fn client(&self) -> Result<kube::Client, SimError> {
        self.client_for_token(&self.admin_token).await
    }

    /// The kube client configuration for `token` (e.g. to turn off kube's default retries).
    pub async fn config_for_token(&self, token: &str) -> Result<kube::Config, SimError> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_for_token(token))
            .map_err(|e| SimError::Kube(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| SimError::Kube(e.to_string()))
    }

    /// The admin kube client configuration.
    pub async fn config(&self) -> Result<kube::Config, SimError> {
        self.config_for_token(&self.admin_token).await
    }

    /// A kube client authenticated with `token`.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client, SimError> {
        let cfg = self.config_for_token(token).await?;
        kube::Client::try_from(cfg).map_err(|e| SimError::Kube(e.to_string()))
    }

    /// Register `token` as `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.shared
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), user);
    }

    /// Serves `path` as the log of `container` in pod `ns/name` (the `previous`
    /// instance when set), read at each request as the kubelet reads the container's
    /// log file.
    pub fn set_pod_log_file(
        &self,
        ns: &str,
        name: &str,
        container: &str,
        previous: bool,
        path: impl Into<PathBuf>,
    ) {
        self.shared
            .pod_logs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (ns.into(), name.into(), container.into(), previous),
                path.into(),
            );
    }

    /// Mint a bearer token for service account `ns/name` (the account object need not exist).
    pub fn mint_service_account_token(&self, ns: &str, name: &str) -> String {
        let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
        self.add_token(&token, UserInfo::service_account(ns, name));
        token
    }

    /// A kube client for service account `ns/name`.
    pub async fn service_account_client(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<kube::Client, SimError> {
        let t = self.mint_service_account_token(ns, name);
        self.client_for_token(&t).await
    }

    /// Fault injection handle.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Request counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.clone()
    }

    /// Create or replace every object of a multi-document YAML (CRDs first, then
    /// namespaces, then the rest), through the same admission path as HTTP requests.
    /// Returns the number of objects written.
    pub fn apply_yaml(&self, yaml: &str) -> Result<usize, SimError> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(yaml).map_err(|e| SimError::Parse(e.to_string()))?;
        let mut objs: Vec<Value> = Vec::new();
        for d in docs {
            if d.is_null() {
                continue;
            }
            if d.get("kind").and_then(Value::as_str) == Some("List") {
                objs.extend(
                    d.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            } else {
                objs.push(d);
            }
        }
        let rank = |o: &Value| match o.get("kind").and_then(Value::as_str) {
            Some("CustomResourceDefinition") => 0,
            Some("Namespace") => 1,
            _ => 2,
        };
        objs.sort_by_key(rank);
        let n = objs.len();
        for o in objs {
            self.apply_object(o)?;
        }
        Ok(n)
    }

    /// [`KubeSim::apply_yaml`] for every `*.yaml`/`*.yml`/`*.json` file in `dir`, in name order.
    pub fn apply_yaml_dir(&self, dir: &Path) -> Result<usize, SimError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        let mut all = String::new();
        for f in files {
            all.push_str(&std::fs::read_to_string(&f)?);
            all.push_str("\n---\n");
        }
        self.apply_yaml(&all)
    }

    fn apply_object(&self, obj: Value) -> Result<(), SimError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let mut core = self.shared.core();
        let def = core
            .registry
            .by_kind(&group, &kind)
            .ok_or_else(|| SimError::Parse(format!("no resource for {api_version} {kind}")))?;
        let ns = if def.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let status = obj.get("status").cloned();
        let exists = !name.is_empty() && core.store.get(&def.storage_key(), &ns, &name).is_some();
        if exists {
            let mut body = obj.clone();
            if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            core.update(&def, &version, &ns, &name, "", body, Some("kube-sim"))?;
        } else {
            core.create(&def, &version, &ns, obj, "kube-sim")?;
        }
        if let Some(st) = status
            && def.custom
            && def.has_status(&version)
        {
            core.update(
                &def,
                &version,
                &ns,
                &name,
                "status",
                json!({ "status": st }),
                Some("kube-sim"),
            )?;
        }
        if def.plural == "customresourcedefinitions" {
            self.shared
                .epoch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stop accepting requests, end watches, and wait for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }
}
