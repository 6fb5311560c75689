//! The shipped manifests (`deploy/`, a kustomize base), proven:
//! - `kubectl kustomize deploy/` renders, the Deployment is restricted, its
//!   probes target the port `--listen` serves, leader election is on;
//! - least privilege: whole migrations (one completed, one failed and rolled
//!   back) run with kube-sim enforcing RBAC, the controller being the real
//!   `vcfm controller` binary authenticated as `vcfm-system/vcfm-controller`
//!   and bound only by the rendered manifests; then every rule of every
//!   ClusterRole and Role must have been used, or carry a `justified:` comment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod metrics_tls;

use kube::api::{Api, PostParams};
use openshift_sim::{Scenario, SimCluster};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed::free_port;
use vcfm_api::{MigrationPhase, VmwareCloudFoundationMigration};

const NS: &str = "vcfm-system";
const SA: &str = "vcfm-controller";
const FD: &str = "wld01";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `kubectl kustomize deploy/`: what `kubectl apply -k deploy/` would apply.
fn render() -> (String, Vec<Value>) {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
        .expect("kubectl (with its built-in kustomize) must be installed");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    (text, docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Runs kubectl against a kubeconfig; panics with its output when it fails.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {}: {text}", args.join(" "));
    text
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn controller_container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", "vcfm-controller")["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kustomize_renders_a_restricted_deployment_whose_probes_hit_the_listen_port() {
    let (_, docs) = render();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "Secret",
        "VmwareCloudFoundationMigration",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/: {kinds:?}");
    }
    // The CRD is the generated one, byte for byte in content.
    let generated: Value = serde_saphyr::from_multiple::<Value>(&vcfm_api::crd_yaml().unwrap())
        .unwrap()
        .into_iter()
        .find(|d| !d.is_null())
        .unwrap();
    let crd = find(
        &docs,
        "CustomResourceDefinition",
        "vmwarecloudfoundationmigrations.migration.openshift.io",
    );
    assert_eq!(numbers_as_f64(crd.clone()), numbers_as_f64(generated));

    let ns = find(&docs, "Namespace", NS);
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let dep = find(&docs, "Deployment", "vcfm-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SA);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = controller_container(&docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["privileged"].is_null() || sc["privileged"] == false);
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());

    // Probes: on the port `--listen` binds, by name or number.
    let args = args_of(c);
    assert_eq!(args.first().map(String::as_str), Some("controller"));
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    let listen: std::net::SocketAddr = args
        .iter()
        .find_map(|a| a.strip_prefix("--listen="))
        .expect("--listen=ADDR in the Deployment")
        .parse()
        .unwrap();
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = match &get["port"] {
            Value::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("{probe} port {name} not declared")),
            Value::Number(n) => n.as_u64().unwrap(),
            other => panic!("{probe} port {other}"),
        };
        assert_eq!(port, u64::from(listen.port()), "{probe} must hit --listen");
    }
    // Metrics: the Service targets the port --metrics-bind-address serves over
    // TLS, with the certificate the service CA writes into the Secret the pod mounts
    // at --metrics-cert-path; the ServiceMonitor scrapes that port by name, verifying
    // the Service's DNS name.
    let metrics_addr: std::net::SocketAddr = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-bind-address="))
        .expect("--metrics-bind-address=ADDR in the Deployment")
        .parse()
        .unwrap();
    assert_ne!(
        metrics_addr.port(),
        listen.port(),
        "metrics share the probe port"
    );
    let svc = find(&docs, "Service", "vcfm-controller-metrics");
    let svc_port = &svc["spec"]["ports"][0];
    let target = svc_port["targetPort"].clone();
    let target_port = match &target {
        Value::String(name) => ports.get(name).copied(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    assert_eq!(
        target_port,
        Some(u64::from(metrics_addr.port())),
        "{target}"
    );
    let secret =
        svc["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
            .as_str()
            .expect("the metrics Service asks the service CA for a certificate");
    let cert_path = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-cert-path="))
        .expect("--metrics-cert-path=DIR in the Deployment");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == cert_path)
        .expect("the certificate directory is mounted");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], secret);
    let monitor: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(deploy_dir().join("monitoring/servicemonitor.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(monitor["kind"], "ServiceMonitor");
    let ep = &monitor["spec"]["endpoints"][0];
    assert_eq!(ep["port"], svc_port["name"]);
    assert_eq!(ep["scheme"], "https");
    assert_eq!(
        ep["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(
        ep["tlsConfig"]["serverName"].as_str(),
        Some(format!("vcfm-controller-metrics.{NS}.svc").as_str())
    );
    assert_eq!(
        metrics_tls::SERVER_NAME,
        format!("vcfm-controller-metrics.{NS}.svc")
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        svc["metadata"]["labels"]
    );
    // The reader role Prometheus is bound to.
    let reader = find(&docs, "ClusterRole", "vcfm-metrics-reader");
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    let binding = find(&docs, "ClusterRoleBinding", "vcfm-metrics-reader");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "openshift-monitoring"})
    );
    // Requests and limits are set (their values: see the footprint test below).
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}");
        }
    }
    // Survives the drain of its own node: a standby on another node.
    assert!(dep["spec"]["replicas"].as_u64().unwrap() >= 2);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert!(
        !docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
        "a PDB would block draining the leader's node (the standby is never Ready)"
    );
}

/// kustomize writes `1.0` as `1`: compare numbers by value.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}

/// Memory in MiB from a Kubernetes quantity (`64Mi`, `1Gi`).
fn mebibytes(q: &str) -> f64 {
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<f64>().unwrap() * 1024.0
    } else {
        panic!("unexpected memory quantity {q}")
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Peak RSS (MiB) and CPU seconds of a live process.
fn footprint(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit(')').next().unwrap();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    (hwm_kb / 1024.0, ticks / 100.0)
}

struct Run {
    stats: Vec<(String, String)>,
    peak_mib: f64,
    cpu_s: f64,
    wall_s: f64,
}

/// One `vcfm controller` process, as one replica of the Deployment would run it.
struct Replica {
    name: String,
    port: u16,
    metrics_port: u16,
    log: PathBuf,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// The Deployment's arguments, with `--listen` and `--metrics-bind-address` moved
    /// to free loopback ports and the certificate directory to `dir/metrics-tls`.
    fn spawn(args: &[String], name: &str, kubeconfig: &Path, ca_file: &Path, dir: &Path) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("--listen=") {
                    format!("--listen=127.0.0.1:{port}")
                } else if a.starts_with("--metrics-bind-address=") {
                    format!("--metrics-bind-address=127.0.0.1:{metrics_port}")
                } else if a.starts_with("--metrics-cert-path=") {
                    format!("--metrics-cert-path={}", dir.join("metrics-tls").display())
                } else {
                    a.clone()
                }
            })
            .collect();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vcfm"))
            .args(&args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--vcenter-ca-file")
            .arg(ca_file)
            .env("POD_NAMESPACE", NS)
            .env("POD_NAME", name)
            // The simulated operators notice a change at once; the product's default
            // settle window is sized for real ones.
            .env("VCFM_HEALTH_SETTLE", "3")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Replica {
            name: name.to_string(),
            port,
            metrics_port,
            log,
            child,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ready(&self) -> bool {
        http_get(self.port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.0 200"))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then a clean exit within 20 s.
    async fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(exit.success(), "{} exit after SIGTERM: {exit:?}", self.name);
    }
}

/// One migration on a fresh simulated cluster with RBAC enforced, the
/// controller bound only by the rendered manifests.
async fn migrate(docs_text: &str, docs: &[Value], fail_workers: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario {
        workers: 1,
        rbac: true,
        // The migration that completes runs where the API server streams the
        // watches' initial state, the one rolled back where its WatchList gate
        // is off (OpenShift 4.16-4.18, 4.20) and every watch lists first: each
        // verb of the rules is then used by one of them.
        watch_list: !fail_workers,
        ..Scenario::default()
    };
    if fail_workers {
        scenario.faults.fail_provision_matching = Some(format!("-worker-{FD}-"));
        // The provisioning failure is the simulated machine controller's: on the real
        // tier the real apiserver (and its RBAC) stays, the machine API is simulated.
        scenario.real_operators = false;
    }
    let sim = SimCluster::start(scenario).await.unwrap();
    // The README's install: `kubectl apply -k deploy/`, examples included (the
    // example migration is Pending, so the controller leaves it alone).
    let admin = sim.kubeconfig_path().to_path_buf();
    kubectl(&admin, &["apply", "-k", deploy_dir().to_str().unwrap()]);
    let examples = deploy_dir().join("examples");
    kubectl(
        &admin,
        &[
            "apply",
            "-f",
            examples.join("target-credentials.yaml").to_str().unwrap(),
            "-f",
            examples.join("migration.yaml").to_str().unwrap(),
        ],
    );
    for d in docs {
        let (kind, name) = (
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap(),
        );
        let mut args = vec!["get", kind, name];
        let ns = d["metadata"]["namespace"].as_str();
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        kubectl(&admin, &args);
    }
    let _ = docs_text;
    let client = sim.client();
    let t = sim.target().clone();
    testbed::seed_migration_namespace(&client, NS, "target-creds", &t, None)
        .await
        .unwrap();
    let m = testbed::migration_object(
        NS,
        "move",
        json!({
            "state": "Running", "approvalMode": "Automatic", "rollbackOnFailure": true,
            "targetVCenterCredentialsSecret": {"name": "target-creds"},
            "failureDomains": [testbed::failure_domain_spec(FD, "region-b", "az1", &t)],
            "machineSetConfig": {"replicas": 1}
        }),
    )
    .unwrap();
    let api = Api::<VmwareCloudFoundationMigration>::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &m).await.unwrap();

    // The controller process, started with the Deployment's own arguments.
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        sim.service_account_kubeconfig(NS, SA).await.unwrap(),
    )
    .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, testbed::vcenter_ca_bundle(&sim).unwrap()).unwrap();
    let args = args_of(controller_container(docs));
    let metrics_ca = metrics_tls::issue_serving_cert(&dir.path().join("metrics-tls"));
    let spawn = |replica: &str| Replica::spawn(&args, replica, &kubeconfig, &ca_file, dir.path());
    let mut leader = spawn("replica-a");
    let start = Instant::now();
    // The probes' paths answer on the port the Deployment names (`--listen`).
    while !leader.ready() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "/readyz never answered 200 on the --listen port:\n{}",
            leader.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        http_get(leader.port, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.0 200")
    );
    // A standby on "another node" for the completed run: the leader is
    // drained (SIGTERM) mid-migration and the standby must finish the job.
    let mut standby = (!fail_workers).then(|| spawn("replica-b"));
    let mut retired: Vec<Replica> = vec![];
    let (mut peak_mib, mut cpu_s) = (0f64, 0f64);

    let want = if fail_workers {
        MigrationPhase::RollbackCompleted
    } else {
        MigrationPhase::Completed
    };
    let fin = loop {
        let m = api.get("move").await.unwrap();
        let phase = m.status.as_ref().and_then(|s| s.phase);
        if phase == Some(want) {
            break m;
        }
        if phase == Some(MigrationPhase::CreateWorkers)
            && let Some(next) = standby.take()
        {
            assert!(
                !next.ready(),
                "the standby must not be Ready while not leading"
            );
            let (p, c) = footprint(leader.pid());
            (peak_mib, cpu_s) = (peak_mib.max(p), cpu_s + c);
            leader.terminate().await;
            retired.push(std::mem::replace(&mut leader, next));
        }
        assert!(
            start.elapsed() < Duration::from_secs(180)
                && phase != Some(MigrationPhase::RollbackCompleted),
            "migration did not reach {want:?}: {}\ncontroller log tail:\n{}",
            serde_json::to_string_pretty(&m.status).unwrap(),
            leader
                .logs()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(standby.is_none(), "the migration finished before the drain");
    // Prometheus scrapes the leader as the ServiceMonitor says: TLS verified for the
    // Service's name, its own token; the controller asks TokenReview and
    // SubjectAccessReview (with the rules rbac.yaml gives it), and only the bound
    // reader gets the migration's metrics.
    let scrape = |token: Option<String>| {
        let (port, ca) = (leader.metrics_port, metrics_ca.clone());
        async move {
            metrics_tls::get_when_up(
                port,
                "/metrics",
                token.as_deref(),
                &ca,
                metrics_tls::SERVER_NAME,
            )
            .await
        }
    };
    let (code, _) = scrape(None).await;
    assert_eq!(code, 401, "an anonymous scrape was not refused");
    // The cluster monitoring stack's namespace, as an OpenShift cluster has it (the
    // real tier's bare control plane does not).
    let monitoring = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("openshift-monitoring".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &monitoring)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating openshift-monitoring: {e}"),
    }
    let prometheus = sim
        .service_account_token("openshift-monitoring", "prometheus-k8s")
        .await
        .unwrap();
    let (code, body) = scrape(Some(prometheus)).await;
    assert_eq!(code, 200, "{body}\n{}", leader.logs());
    assert!(body.contains("vcfm_reconciles_total{"), "{body}");
    let stranger = sim.service_account_token(NS, "someone-else").await.unwrap();
    let (code, _) = scrape(Some(stranger)).await;
    assert_eq!(code, 403, "an unbound service account read the metrics");
    let wall_s = start.elapsed().as_secs_f64();
    assert!(leader.ready(), "the last leader is not Ready");
    let lease = |client: kube::Client| async move {
        let l: k8s_openapi::api::coordination::v1::Lease = Api::namespaced(client, NS)
            .get("vcfm-controller")
            .await
            .unwrap();
        l.spec.and_then(|s| s.holder_identity).unwrap_or_default()
    };
    assert_eq!(lease(client.clone()).await, leader.name);
    let (p, c) = footprint(leader.pid());
    (peak_mib, cpu_s) = (peak_mib.max(p), cpu_s + c);
    // What a node drain does to the pod: SIGTERM. The controller releases
    // its Lease for the standby and exits cleanly.
    leader.terminate().await;
    assert_eq!(
        lease(client.clone()).await,
        "",
        "the Lease was not released on SIGTERM"
    );
    retired.push(leader);
    let logs: String = retired
        .iter()
        .map(Replica::logs)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the controller was refused something:\n{}",
        logs.lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let user = format!("system:serviceaccount:{NS}:{SA}");
    let stats = match sim.real() {
        // kube-sim counts requests per user, verb and `group/resource[/subresource]`.
        None => sim
            .kube()
            .stats()
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.user == user)
            .map(|(k, _)| (k.verb, k.resource))
            .collect(),
        // The real apiserver's audit log says the same per request (audit.k8s.io/v1
        // Event: user.username, verb, objectRef.apiGroup/resource/subresource).
        Some(cp) => cp
            .audit_events()
            .into_iter()
            .filter(|e| e["user"]["username"] == user.as_str())
            .map(|e| {
                let o = &e["objectRef"];
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let resource = if o.is_null() {
                    s(&e["requestURI"])
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                } else {
                    let mut r = s(&o["resource"]);
                    if !s(&o["apiGroup"]).is_empty() {
                        r = format!("{}/{r}", s(&o["apiGroup"]));
                    }
                    if !s(&o["subresource"]).is_empty() {
                        r = format!("{r}/{}", s(&o["subresource"]));
                    }
                    r
                };
                (s(&e["verb"]), resource)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    if !fail_workers {
        // The README's uninstall.
        let out = kubectl(
            &admin,
            &[
                "delete",
                "-k",
                deploy_dir().to_str().unwrap(),
                "--ignore-not-found",
            ],
        );
        assert!(out.contains("deleted"), "{out}");
        let crds = Command::new("kubectl")
            .args([
                "get",
                "crd",
                "vmwarecloudfoundationmigrations.migration.openshift.io",
                "--kubeconfig",
            ])
            .arg(&admin)
            .output()
            .unwrap();
        assert!(
            !crds.status.success(),
            "the CRD is still there after kubectl delete -k"
        );
    }
    eprintln!(
        "{}: {:?} in {wall_s:.1}s; controller peak RSS {peak_mib:.1} MiB, CPU {cpu_s:.2}s",
        if fail_workers {
            "rollback"
        } else {
            "completed"
        },
        fin.status.and_then(|s| s.phase)
    );
    sim.shutdown().await;
    Run {
        stats,
        peak_mib,
        cpu_s,
        wall_s,
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The comment lines right above each rule (`- apiGroups:` at column 0) of
/// each Role/ClusterRole in `deploy/rbac.yaml`, by `kind/namespace/name`.
fn rule_comments(rbac: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in rbac.split("\n---") {
        let parsed: Value = match serde_saphyr::from_str(doc) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let kind = parsed["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let id = format!(
            "{kind}/{}/{}",
            parsed["metadata"]["namespace"].as_str().unwrap_or(""),
            parsed["metadata"]["name"].as_str().unwrap_or("")
        );
        let mut comments: Vec<&str> = vec![];
        for line in doc.lines() {
            if line.starts_with('#') {
                comments.push(line);
            } else if line.starts_with("- apiGroups:") || line.starts_with("- nonResourceURLs:") {
                out.entry(id.clone()).or_default().push(comments.join("\n"));
                comments.clear();
            } else {
                comments.clear();
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_pass_with_rbac_enforced_and_every_rule_is_used_or_justified() {
    let (text, docs) = render();
    let completed = migrate(&text, &docs, false).await;
    let rolled_back = migrate(&text, &docs, true).await;
    let used: BTreeSet<(String, String)> = completed
        .stats
        .iter()
        .chain(&rolled_back.stats)
        .cloned()
        .collect();

    let rbac_src = std::fs::read_to_string(deploy_dir().join("rbac.yaml")).unwrap();
    let comments = rule_comments(&rbac_src);
    let mut unused = vec![];
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let id = format!(
            "{}/{}/{}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["namespace"].as_str().unwrap_or(""),
            d["metadata"]["name"].as_str().unwrap()
        );
        let rules = d["rules"].as_array().unwrap();
        let notes = comments.get(&id).cloned().unwrap_or_default();
        assert_eq!(
            notes.len(),
            rules.len(),
            "{id}: rbac.yaml and the rendered manifests disagree"
        );
        for (rule, comment) in rules.iter().zip(notes) {
            // Exercised when some request of the controller had one of the
            // rule's verbs on one of its group/resources. (Counters carry no
            // namespace or name, so a namespaced rule counts as used when the
            // verb and resource were used anywhere.)
            let mut unexercised = vec![];
            for g in strs(&rule["apiGroups"]) {
                for r in strs(&rule["resources"]) {
                    let res = if g.is_empty() {
                        r.clone()
                    } else {
                        format!("{g}/{r}")
                    };
                    for v in strs(&rule["verbs"]) {
                        if !used.contains(&(v.clone(), res.clone())) {
                            unexercised.push(format!("{v} {res}"));
                        }
                    }
                }
            }
            if !unexercised.is_empty() && !comment.contains("justified:") {
                unused.push(format!("{id}: {} never used", unexercised.join(", ")));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "rules the migrations never used (remove them, or justify them in a `# justified:` comment above the rule):\n{}",
        unused.join("\n")
    );

    // Requests and limits against the measured footprint (both runs).
    let peak = completed.peak_mib.max(rolled_back.peak_mib);
    let c = controller_container(&docs);
    let limit = mebibytes(c["resources"]["limits"]["memory"].as_str().unwrap());
    let request = mebibytes(c["resources"]["requests"]["memory"].as_str().unwrap());
    eprintln!(
        "footprint: peak RSS {peak:.1} MiB; CPU {:.2}s over {:.1}s and {:.2}s over {:.1}s; memory request {request} Mi, limit {limit} Mi",
        completed.cpu_s, completed.wall_s, rolled_back.cpu_s, rolled_back.wall_s
    );
    assert!(
        limit >= 2.0 * peak,
        "memory limit {limit} Mi leaves no headroom over the measured {peak:.1} MiB"
    );
    assert!(
        request >= peak * 0.75,
        "memory request {request} Mi is far below the measured {peak:.1} MiB"
    );
}
