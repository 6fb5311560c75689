//! etcd + kube-apiserver (+ kube-controller-manager) on loopback, the way envtest runs them
//! (controller-runtime `pkg/internal/testing/controlplane/{etcd,apiserver}.go`), with what
//! vcfm relies on switched on: TLS, RBAC, service-account token issuing (TokenRequest),
//! admission webhooks and ValidatingAdmissionPolicy (on by default since 1.30), an audit
//! log, and the controller-manager's garbage collector, namespace and service-account
//! controllers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::Error;
use crate::pki::Pki;
use crate::process::{Proc, free_port, write};

/// What to run.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Also run kube-controller-manager (garbage collection, namespace deletion,
    /// service accounts).
    pub controller_manager: bool,
    /// How long the apiserver may take to report `/readyz` (2 cores, ~60 CRDs).
    pub start_timeout: Duration,
    /// The apiserver's `WatchList` feature gate (streaming lists); `false` refuses
    /// them, as Kubernetes 1.29-1.31 and 1.33 (OpenShift 4.16-4.18, 4.20) do by default.
    pub watch_list: bool,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            controller_manager: true,
            start_timeout: Duration::from_secs(90),
            watch_list: true,
        }
    }
}

/// A running control plane; dropping it stops every process and removes its data.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    pki: Pki,
    url: String,
    procs: Vec<Proc>,
    admin_kubeconfig: PathBuf,
    audit_log: PathBuf,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// The admin identity: envtest's, `system:masters`.
pub const ADMIN_USER: &str = "admin";
const ADMIN_GROUP: &str = "system:masters";

/// Every request at `Metadata` level: who did what to which resource, and the RBAC
/// authorizer's decision and reason (`authorization.k8s.io/reason`).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

impl ControlPlane {
    /// Starts etcd, then the apiserver, waits for `/readyz`, then the controller-manager.
    pub async fn start(opts: ControlPlaneOptions) -> Result<Self, Error> {
        let bins = crate::bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("vcfm-real-")
            .disable_cleanup(crate::keep_logs())
            .tempdir()
            .map_err(|e| Error::io("tempdir", e))?;
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let pki = Pki::generate()?;
        let p = |n: &str| d.join(n);
        write(&p("ca.pem"), &pki.ca_pem)?;
        write(&p("apiserver.pem"), &pki.serving_cert_pem)?;
        write(&p("apiserver-key.pem"), &pki.serving_key_pem)?;
        write(&p("sa.key"), &pki.sa_key_pem)?;
        write(&p("sa.pub"), &pki.sa_pub_pem)?;
        write(&p("audit-policy.yaml"), AUDIT_POLICY)?;
        let s = |x: &Path| x.display().to_string();

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let mut procs = Vec::new();
        let etcd_args = vec![
            format!("--data-dir={}", s(&p("etcd"))),
            "--name=default".into(),
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        procs.push(Proc::spawn("etcd", &bins.join("etcd"), &etcd_args, &[], d)?);

        let url = format!("https://127.0.0.1:{api_port}");
        let audit_log = p("audit.log");
        let mut api_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // No `kubernetes` Service endpoints: a loopback address is invalid there, and
            // nothing here reaches the apiserver through the Service.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", s(&p("apiserver.pem"))),
            format!("--tls-private-key-file={}", s(&p("apiserver-key.pem"))),
            format!("--client-ca-file={}", s(&p("ca.pem"))),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            // Pods are created by openshift-sim right after their namespace; the
            // ServiceAccount admission would race the controller-manager's default SA.
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--service-account-issuer={url}"),
            format!("--service-account-key-file={}", s(&p("sa.pub"))),
            format!("--service-account-signing-key-file={}", s(&p("sa.key"))),
            format!("--audit-policy-file={}", s(&p("audit-policy.yaml"))),
            format!("--audit-log-path={}", s(&audit_log)),
            "--audit-log-maxsize=0".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        if !opts.watch_list {
            api_args.push("--feature-gates=WatchList=false".into());
        }
        procs.push(Proc::spawn(
            "kube-apiserver",
            &bins.join("kube-apiserver"),
            &api_args,
            &[],
            d,
        )?);

        let admin_kubeconfig = p("admin.kubeconfig");
        let mut cp = Self {
            dir,
            pki,
            url,
            procs,
            admin_kubeconfig,
            audit_log,
        };
        let admin = cp.kubeconfig_for(ADMIN_USER, Some(ADMIN_GROUP))?;
        write(&cp.admin_kubeconfig, &admin)?;
        cp.wait_ready(opts.start_timeout).await?;

        if opts.controller_manager {
            let kcm_args = vec![
                format!("--kubeconfig={}", s(&cp.admin_kubeconfig)),
                "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token"
                    .into(),
                format!("--service-account-private-key-file={}", s(&p("sa.key"))),
                format!("--root-ca-file={}", s(&p("ca.pem"))),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--concurrent-gc-syncs=5".into(),
                "--v=1".into(),
            ];
            let kcm = Proc::spawn(
                "kube-controller-manager",
                &bins.join("kube-controller-manager"),
                &kcm_args,
                &[],
                cp.dir.path(),
            )?;
            cp.procs.push(kcm);
        }
        Ok(cp)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let client = self.client().await?;
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            for proc in &mut self.procs {
                if let Some(status) = proc.exited() {
                    return Err(Error::Exited {
                        component: proc.name().to_string(),
                        status: status.to_string(),
                        log: proc.log_tail(30),
                    });
                }
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Kube(e.to_string()))?;
            match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                Ok(Ok(body)) => last = body,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer in 5 s".into(),
            }
            if Instant::now() > deadline {
                let log = self.logs(15);
                return Err(Error::NotReady {
                    what: "kube-apiserver /readyz".into(),
                    after: timeout,
                    last: format!("{last}\n{log}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the serving certificate (and every client certificate).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    pub(crate) fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The admin kubeconfig file (`system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The audit log (one JSON event per line).
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// The directory holding every component's log and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig authenticating as `user` (in `group`) with a client certificate.
    pub fn kubeconfig_for(&self, user: &str, group: Option<&str>) -> Result<String, Error> {
        let cert = self.pki.client_cert(user, group)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "real", "cluster": {
                "server": self.url, "certificate-authority-data": b64(&self.pki.ca_pem)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(&cert.cert_pem),
                "client-key-data": b64(&cert.key_pem)}}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": user, "namespace": "default"}}],
            "current-context": "real",
        });
        serde_json::to_string_pretty(&doc).map_err(|e| Error::Kube(e.to_string()))
    }

    /// A kubeconfig for a bearer token (e.g. one issued by TokenRequest).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pki.ca_pem);
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "real", "cluster": {"server": self.url, "certificate-authority-data": b64}}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "token", "namespace": "default"}}],
            "current-context": "real",
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    /// A client for any kubeconfig text.
    pub async fn client_from_kubeconfig(text: &str) -> Result<kube::Client, Error> {
        let kc =
            kube::config::Kubeconfig::from_yaml(text).map_err(|e| Error::Kube(e.to_string()))?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(e.to_string()))?;
        kube::Client::try_from(cfg).map_err(|e| Error::Kube(e.to_string()))
    }

    /// The admin client.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        Self::client_for_text(self.kubeconfig_for(ADMIN_USER, Some(ADMIN_GROUP))?).await
    }

    async fn client_for_text(text: String) -> Result<kube::Client, Error> {
        Self::client_from_kubeconfig(&text).await
    }

    /// A client authenticating as `user` in `group`.
    pub async fn client_for(&self, user: &str, group: Option<&str>) -> Result<kube::Client, Error> {
        Self::client_for_text(self.kubeconfig_for(user, group)?).await
    }

    /// A bound token for service account `ns/name` (created if missing), as a pod gets
    /// it: TokenRequest, one hour.
    pub async fn service_account_token(&self, ns: &str, name: &str) -> Result<String, Error> {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        use kube::api::{Api, PostParams};
        let client = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, ns);
        let sa: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns}}))
        .map_err(|e| Error::Kube(e.to_string()))?;
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::Kube(e.to_string())),
        }
        let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [self.url], "expirationSeconds": 3600}});
        let tr: TokenRequest =
            serde_json::from_value(req).map_err(|e| Error::Kube(e.to_string()))?;
        let tr: TokenRequest = sas
            .create_subresource("token", name, &PostParams::default(), &tr)
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        tr.status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Kube("TokenRequest returned no token".into()))
    }

    /// Audit events as JSON values (requests by user, verb, resource, RBAC reason).
    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The components' logs, last `n` lines each (for failure messages).
    pub fn logs(&self, n: usize) -> String {
        crate::process::logs_of(&self.procs, n)
    }

    /// Kills the controller-manager, the apiserver and etcd (their data goes with the test).
    pub async fn shutdown(mut self) {
        crate::process::stop_all(&mut self.procs).await;
    }
}
