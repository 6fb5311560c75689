//! The real OpenShift operators a migration drives, out of cluster against a
//! [`ControlPlane`](crate::ControlPlane): machine-api-operator's vSphere machine controller,
//! MachineSet controller (which also serves the Machine/MachineSet admission webhooks) and
//! nodelink controller, and the ControlPlaneMachineSet operator with its webhook and
//! generator. Each runs as the binary `make real-parts` built, with the flags its own
//! Deployment manifest passes, less leader election, metrics and probes.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::process::{Proc, free_port, write};
use crate::{ControlPlane, Error};

const MAPI_NS: &str = "openshift-machine-api";

/// What the operators need to know about the cluster they run in.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// The OpenShift release they believe they run (`RELEASE_VERSION`; the CPMS operator
    /// waits for a FeatureGate status entry of exactly this version).
    pub release_version: String,
    /// PEM bundle the machine controller trusts for the vCenters (`SSL_CERT_FILE`: its
    /// govmomi client has no CA option, and `insecure-flag` stays off).
    pub vcenter_ca_bundle: PathBuf,
    /// Also run the CPMS operator (it needs Nodes for its Machines to count as ready).
    pub cpms: bool,
    /// The gates machine-api-operator passes its controllers as `--feature-gates`, each
    /// as the cluster's FeatureGate has it (`pkg/operator/operator.go` picks the handful
    /// its controllers take, `pkg/operator/sync.go` `buildFeatureGatesString` renders
    /// them); empty: no flag, the binaries' defaults.
    pub machine_api_feature_gates: std::collections::BTreeMap<String, bool>,
}

/// The running operators; dropping them stops them.
pub struct Operators {
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operators")
            .field("procs", &self.procs)
            .finish()
    }
}

/// A webhook entry served on loopback instead of through the in-cluster Service the
/// upstream configuration names.
fn hook(
    name: &str,
    url: String,
    ca: &str,
    resource: &str,
    ops: &[&str],
    group_version: (&str, &str),
    policy: &str,
) -> Value {
    json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "failurePolicy": policy,
        "sideEffects": "None",
        "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)},
        "rules": [{"apiGroups": [group_version.0], "apiVersions": [group_version.1],
            "resources": [resource], "operations": ops}],
    })
}

impl Operators {
    /// Starts the operators and registers their webhooks with the apiserver.
    pub async fn start(cp: &ControlPlane, opts: OperatorOptions) -> Result<Self, Error> {
        let bins = crate::bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("vcfm-real-ops-")
            .disable_cleanup(crate::keep_logs())
            .tempdir()
            .map_err(|e| Error::io("tempdir", e))?;
        let d = dir.path();
        // The operators run with the admin identity: their own RBAC (the manifests'
        // ClusterRoles) is not what this proving ground tests.
        let kubeconfig = d.join("operators.kubeconfig");
        write(
            &kubeconfig,
            &cp.kubeconfig_for("system:admin", Some("system:masters"))?,
        )?;
        let serving = cp.pki().serving_cert(&["127.0.0.1", "localhost"])?;
        let certs = d.join("k8s-webhook-server/serving-certs");
        std::fs::create_dir_all(&certs).map_err(|e| Error::io(&certs, e))?;
        write(&certs.join("tls.crt"), &serving.cert_pem)?;
        write(&certs.join("tls.key"), &serving.key_pem)?;
        let kc = kubeconfig.display().to_string();
        let env = |extra: &[(&'static str, String)]| {
            let mut v = vec![
                ("KUBECONFIG", kc.clone()),
                ("RELEASE_VERSION", opts.release_version.clone()),
                // controller-runtime's default webhook cert dir is under os.TempDir().
                ("TMPDIR", d.display().to_string()),
                (
                    "SSL_CERT_FILE",
                    opts.vcenter_ca_bundle.display().to_string(),
                ),
            ];
            v.extend(extra.iter().cloned());
            v
        };
        let common = |extra: &[String]| {
            let mut v = vec![
                format!("--namespace={MAPI_NS}"),
                "--leader-elect=false".to_string(),
                "--metrics-bind-address=0".to_string(),
            ];
            v.extend(extra.iter().cloned());
            v
        };
        let mut procs = Vec::new();
        let gates: Vec<String> = if opts.machine_api_feature_gates.is_empty() {
            vec![]
        } else {
            let parts: Vec<String> = opts
                .machine_api_feature_gates
                .iter()
                .map(|(name, on)| format!("{name}={on}"))
                .collect();
            vec![format!("--feature-gates={}", parts.join(","))]
        };

        // machine-api-operator cmd/machineset: the MachineSet controller and the
        // Machine/MachineSet defaulting and validating webhooks (pkg/webhooks).
        let mset_port = free_port()?;
        procs.push(Proc::spawn(
            "machineset-controller",
            &bins.join("machineset-controller"),
            &common(
                &[
                    "--webhook-enabled=true".into(),
                    format!("--webhook-port={mset_port}"),
                    format!("--webhook-cert-dir={}", certs.display()),
                    "--health-addr=0".into(),
                ]
                .into_iter()
                .chain(gates.iter().cloned())
                .collect::<Vec<_>>(),
            ),
            &env(&[]),
            d,
        )?);
        // machine-api-operator cmd/vsphere: the vSphere machine controller.
        procs.push(Proc::spawn(
            "machine-controller",
            &bins.join("machine-controller-manager"),
            &common(
                &std::iter::once("--health-addr=0".to_string())
                    .chain(gates.iter().cloned())
                    .collect::<Vec<_>>(),
            ),
            &env(&[]),
            d,
        )?);
        // machine-api-operator cmd/nodelink-controller: Machine ↔ Node by providerID/IP.
        procs.push(Proc::spawn(
            "nodelink-controller",
            &bins.join("nodelink-controller"),
            &[
                format!("--namespace={MAPI_NS}"),
                "--leader-elect=false".into(),
            ],
            &env(&[]),
            d,
        )?);
        let cpms_port = free_port()?;
        if opts.cpms {
            procs.push(Proc::spawn(
                "control-plane-machine-set-operator",
                &bins.join("control-plane-machine-set-operator"),
                &[
                    format!("--namespace={MAPI_NS}"),
                    "--leader-elect=false".into(),
                    "--metrics-bind-address=0".into(),
                    "--health-probe-bind-address=0".into(),
                    format!("--webhook-port={cpms_port}"),
                ],
                &env(&[]),
                d,
            )?);
        }

        // The webhook configurations machine-api-operator installs
        // (pkg/webhooks/config.go: failurePolicy Ignore, machines and machinesets,
        // CREATE for defaulting, CREATE+UPDATE for validation) and the CPMS operator's
        // (manifests/0000_30_control-plane-machine-set-operator_05_webhook.yaml:
        // failurePolicy Fail), pointed at loopback.
        let ca = cp.ca_pem().to_string();
        let base = format!("https://127.0.0.1:{mset_port}");
        let mb = ("machine.openshift.io", "v1beta1");
        let mut docs = vec![
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "machine-api"},
            "webhooks": [
                hook("default.machine.machine.openshift.io", format!("{base}/mutate-machine-openshift-io-v1beta1-machine"), &ca, "machines", &["CREATE"], mb, "Ignore"),
                hook("default.machineset.machine.openshift.io", format!("{base}/mutate-machine-openshift-io-v1beta1-machineset"), &ca, "machinesets", &["CREATE"], mb, "Ignore"),
            ]}),
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "machine-api"},
            "webhooks": [
                hook("validation.machine.machine.openshift.io", format!("{base}/validate-machine-openshift-io-v1beta1-machine"), &ca, "machines", &["CREATE", "UPDATE"], mb, "Ignore"),
                hook("validation.machineset.machine.openshift.io", format!("{base}/validate-machine-openshift-io-v1beta1-machineset"), &ca, "machinesets", &["CREATE", "UPDATE"], mb, "Ignore"),
            ]}),
        ];
        if opts.cpms {
            docs.push(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "controlplanemachineset.machine.openshift.io"},
                "webhooks": [hook("controlplanemachineset.machine.openshift.io",
                    format!("https://127.0.0.1:{cpms_port}/validate-machine-openshift-io-v1-controlplanemachineset"),
                    &ca, "controlplanemachinesets", &["CREATE", "UPDATE"], ("machine.openshift.io", "v1"), "Fail")]}));
        }
        let client = cp.client().await?;
        for doc in &docs {
            crate::apply_object(&client, doc).await?;
        }
        let mut ops = Self { procs, _dir: dir };
        ops.wait_listening(mset_port, "machineset-controller")
            .await?;
        if opts.cpms {
            ops.wait_listening(cpms_port, "control-plane-machine-set-operator")
                .await?;
        }
        Ok(ops)
    }

    async fn wait_listening(&mut self, port: u16, name: &str) -> Result<(), Error> {
        let timeout = Duration::from_secs(90);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(p) = self.procs.iter_mut().find(|p| p.name() == name)
                && let Some(status) = p.exited()
            {
                return Err(Error::Exited {
                    component: name.into(),
                    status: status.to_string(),
                    log: p.log_tail(30),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("{name} webhook on 127.0.0.1:{port}"),
                    after: timeout,
                    last: self.logs(15),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Components that exited, with the end of their logs.
    pub fn exited(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| {
                p.exited()
                    .map(|s| format!("{} exited ({s}):\n{}", p.name(), p.log_tail(20)))
            })
            .collect()
    }

    /// The operators' logs, last `n` lines each.
    pub fn logs(&self, n: usize) -> String {
        crate::process::logs_of(&self.procs, n)
    }

    /// Kills every operator (what they hold goes with the test).
    pub async fn shutdown(mut self) {
        crate::process::stop_all(&mut self.procs).await;
    }
}
