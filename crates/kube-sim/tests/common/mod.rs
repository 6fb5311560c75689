//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kube_sim::KubeSim;

/// A namespaced test CRD with status and scale subresources, printer columns,
/// defaults, enum/pattern/length/range constraints and CEL rules (one a transition rule).
pub const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: "self.replicas <= 10"
              message: "too many replicas"
            properties:
              size: {type: string, enum: [small, large]}
              replicas: {type: integer, default: 1, minimum: 0}
              label: {type: string, pattern: '^[a-z]+$', maxLength: 8}
              owner:
                type: string
                x-kubernetes-validations:
                - rule: "self == oldSelf"
                  message: "owner is immutable"
              tags:
                type: array
                maxItems: 3
                x-kubernetes-list-type: set
                items: {type: string}
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas: {type: integer}
              phase: {type: string}
              conditions:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [type]
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type: {type: string}
                    status: {type: string}
"#;

pub async fn sim() -> KubeSim {
    KubeSim::builder().start().await.expect("start kube-sim")
}

pub async fn sim_with_widgets() -> KubeSim {
    let s = sim().await;
    s.apply_yaml(WIDGET_CRD).expect("widget CRD");
    s
}

/// `<workspace root>/../shared`, or `$VCFM_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    if let Ok(d) = std::env::var("VCFM_SHARED_DIR") {
        return PathBuf::from(d);
    }
    let manifest = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).expect("manifest dir");
    let dir = manifest.join("../../../shared");
    assert!(
        dir.join("openshift-crds").is_dir(),
        "shared/ directory not found at {} (set VCFM_SHARED_DIR)",
        dir.display()
    );
    std::fs::canonicalize(dir).expect("canonical shared dir")
}

/// Run kubectl against `kubeconfig` with a hard timeout (off the async runtime).
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl_stdin(kubeconfig, args, None).await
}

pub async fn kubectl_stdin(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let kc = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(String::from);
    tokio::task::spawn_blocking(move || run_kubectl(&kc, &args, stdin.as_deref()))
        .await
        .expect("kubectl task")
}

fn run_kubectl(kubeconfig: &Path, args: &[String], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("30").arg("kubectl").args(args);
    // A private HOME keeps kubectl's discovery cache per test.
    let home = tempfile::tempdir().expect("home");
    cmd.env("KUBECONFIG", kubeconfig).env("HOME", home.path());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().expect("run kubectl");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "kubectl unexpectedly succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `Status` of a failed kube call.
pub fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
