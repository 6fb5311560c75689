//! Conformance tests driven by the real kubectl (v1.32) against kube-sim over HTTPS.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on purpose.

mod common;

use std::time::Duration;

use common::*;
use kube_sim::KubeSim;

const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: small, replicas: 2}\n";

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: app}
stringData: {vc1.example.com.username: admin}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx:1}
      - {name: side, image: busybox:1}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_crd_lifecycle_printer_columns_wait_and_scale() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    let version = ok(&kubectl(kc, &["version", "-o", "json"]).await);
    assert!(version.contains("\"serverVersion\""), "{version}");

    let out = ok(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(WIDGET_CRD)).await);
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"),
        "{out}"
    );
    let out = ok(&kubectl(
        kc,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/widgets.example.com",
            "--timeout=10s",
        ],
    )
    .await);
    assert!(out.contains("condition met"), "{out}");
    // Aggregated discovery: kubectl needs only /api and /apis, not one call per group.
    let verbose = kubectl(kc, &["api-resources", "-v=6"]).await;
    let log = String::from_utf8_lossy(&verbose.stderr);
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" GET https://"))
        .collect();
    assert_eq!(gets.len(), 2, "{log}");
    let res = ok(&kubectl(kc, &["api-resources", "--api-group=example.com"]).await);
    assert!(
        res.contains("widgets") && res.contains("wd") && res.contains("Widget"),
        "{res}"
    );

    // Apply works with kubectl's default (strict) validation; no --validate=false.
    let out = ok(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(WIDGET)).await);
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    let table = ok(&kubectl(kc, &["get", "wd"]).await);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "REPLICAS", "READY"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["w1", "small", "2"]);

    // Re-applying an unchanged manifest is a no-op.
    let out = ok(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(WIDGET)).await);
    assert!(out.contains("widget.example.com/w1 unchanged"), "{out}");

    ok(&kubectl(kc, &["scale", "widget", "w1", "--replicas=4"]).await);
    assert_eq!(
        ok(&kubectl(kc, &["get", "wd", "w1", "-o", "jsonpath={.spec.replicas}"]).await),
        "4"
    );
    ok(&kubectl(
        kc,
        &[
            "patch",
            "wd",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
    )
    .await);
    let out = ok(&kubectl(
        kc,
        &[
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "--timeout=10s",
        ],
    )
    .await);
    assert!(out.contains("condition met"), "{out}");
    let row = ok(&kubectl(kc, &["get", "wd", "w1", "--no-headers"]).await);
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["w1", "small", "4", "True"]
    );

    let err = fails(
        &kubectl(
            kc,
            &[
                "patch",
                "wd",
                "w1",
                "--type=merge",
                "-p",
                r#"{"spec":{"size":"huge"}}"#,
            ],
        )
        .await,
    );
    assert!(
        err.contains(r#"The Widget "w1" is invalid: spec.size: Unsupported value: "huge": supported values: "small", "large""#),
        "{err}"
    );
    let err = fails(
        &kubectl(
            kc,
            &[
                "patch",
                "wd",
                "w1",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":11}}"#,
            ],
        )
        .await,
    );
    assert!(
        err.contains(r#"spec: Invalid value: "object": too many replicas"#),
        "{err}"
    );
    // Unknown fields are refused under kubectl's strict field validation.
    let bad = WIDGET.replace("replicas: 2", "replicas: 2, colour: red");
    let err = fails(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(&bad)).await);
    assert!(err.contains("unknown field \"spec.colour\""), "{err}");

    let out = ok(&kubectl(kc, &["delete", "wd", "w1"]).await);
    assert!(out.contains("widget.example.com \"w1\" deleted"), "{out}");
    let err = fails(&kubectl(kc, &["get", "wd", "w1"]).await);
    assert!(
        err.contains(r#"Error from server (NotFound): widgets.example.com "w1" not found"#),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtins_apply_patch_scale_delete() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    let out = ok(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(APP)).await);
    assert!(
        out.contains("namespace/app created") && out.contains("deployment.apps/web created"),
        "{out}"
    );
    let data = ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.vc1\\.example\\.com\\.username}",
        ],
    )
    .await);
    assert_eq!(data, "YWRtaW4=");
    assert_eq!(
        ok(&kubectl(
            kc,
            &[
                "-n",
                "app",
                "get",
                "secret",
                "creds",
                "-o",
                "jsonpath={.type}"
            ]
        )
        .await),
        "Opaque"
    );

    // Built-in printer columns, as the real server renders them.
    let table = ok(&kubectl(kc, &["-n", "app", "get", "deploy,secret"]).await);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert_eq!(
        rows[1][..4],
        ["deployment.apps/web", "0/1", "0", "0"],
        "{table}"
    );
    assert_eq!(rows[3], ["NAME", "TYPE", "DATA", "AGE"], "{table}");
    assert_eq!(rows[4][..3], ["secret/creds", "Opaque", "1"], "{table}");
    ok(&kubectl(kc, &["-n", "app", "scale", "deploy", "web", "--replicas=3"]).await);
    assert_eq!(
        ok(&kubectl(
            kc,
            &[
                "-n",
                "app",
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.replicas}"
            ]
        )
        .await),
        "3"
    );

    // Strategic merge patch: the container list is merged by name.
    ok(&kubectl(kc, &["-n", "app", "patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:2"}]}}}}"#]).await);
    let images = ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ],
    )
    .await);
    assert_eq!(images, "nginx:1 busybox:2");
    let generation = ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    )
    .await);
    assert_eq!(generation, "3");

    // Client-side apply three-way merge: a changed image is patched in.
    let v2 = APP.replace("nginx:1", "nginx:2");
    let out = ok(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(&v2)).await);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let images = ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ],
    )
    .await);
    assert_eq!(images, "nginx:2 busybox:1");

    // Server-side apply through kubectl, with a conflict against another manager.
    let ssa =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: app}\ndata: {mode: a}\n";
    ok(&kubectl_stdin(
        kc,
        &["apply", "--server-side", "--field-manager=one", "-f", "-"],
        Some(ssa),
    )
    .await);
    let err = fails(
        &kubectl_stdin(
            kc,
            &["apply", "--server-side", "--field-manager=two", "-f", "-"],
            Some(&ssa.replace("mode: a", "mode: b")),
        )
        .await,
    );
    assert!(
        err.contains("conflict") && err.contains(".data.mode"),
        "{err}"
    );
    ok(&kubectl_stdin(
        kc,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=two",
            "-f",
            "-",
        ],
        Some(&ssa.replace("mode: a", "mode: b")),
    )
    .await);
    assert_eq!(
        ok(&kubectl(
            kc,
            &[
                "-n",
                "app",
                "get",
                "cm",
                "cfg",
                "-o",
                "jsonpath={.data.mode}"
            ]
        )
        .await),
        "b"
    );

    // Server-side dry runs (apply, diff, delete) change nothing.
    let v9 = APP.replace("nginx:1", "nginx:9");
    let out = ok(&kubectl_stdin(kc, &["apply", "--dry-run=server", "-f", "-"], Some(&v9)).await);
    assert!(
        out.contains("deployment.apps/web configured (server dry run)"),
        "{out}"
    );
    let diff = kubectl_stdin(kc, &["diff", "-f", "-"], Some(&v9)).await;
    assert_eq!(
        diff.status.code(),
        Some(1),
        "kubectl diff reports a difference"
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("+      - image: nginx:9"));
    let out = ok(&kubectl(
        kc,
        &["-n", "app", "delete", "deploy", "web", "--dry-run=server"],
    )
    .await);
    assert!(out.contains("(server dry run)"), "{out}");
    let image = ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    )
    .await);
    assert_eq!(image, "nginx:2");

    // Imperative creates (protobuf request bodies).
    ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "create",
            "secret",
            "generic",
            "s2",
            "--from-literal=password=hunter2",
        ],
    )
    .await);
    assert_eq!(
        ok(&kubectl(
            kc,
            &[
                "-n",
                "app",
                "get",
                "secret",
                "s2",
                "-o",
                "jsonpath={.data.password}"
            ]
        )
        .await),
        "aHVudGVyMg=="
    );
    ok(&kubectl(kc, &["-n", "app", "create", "serviceaccount", "robot"]).await);
    ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "create",
            "role",
            "r",
            "--verb=get",
            "--resource=pods",
        ],
    )
    .await);
    let rules = ok(&kubectl(
        kc,
        &[
            "-n",
            "app",
            "get",
            "role",
            "r",
            "-o",
            "jsonpath={.rules[0].verbs[0]} {.rules[0].resources[0]}",
        ],
    )
    .await);
    assert_eq!(rules, "get pods");
    let err = fails(&kubectl_stdin(kc, &["create", "-f", "-"], Some(APP)).await);
    assert!(err.contains(r#"Error from server (AlreadyExists): error when creating "STDIN": namespaces "app" already exists"#), "{err}");

    let out = ok(&kubectl(kc, &["delete", "ns", "app"]).await);
    assert!(out.contains("namespace \"app\" deleted"), "{out}");
    let err = fails(&kubectl(kc, &["-n", "app", "get", "deploy", "web"]).await);
    assert!(err.contains("NotFound"), "{err}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_until_the_request_timeout() {
    use tokio::io::AsyncBufReadExt;
    let sim = sim().await;
    sim.apply_yaml(WIDGET_CRD).unwrap();
    sim.apply_yaml(WIDGET).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new("kubectl")
        .args(["get", "wd", "--watch", "--request-timeout=5s"])
        .env("KUBECONFIG", sim.kubeconfig_path())
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_row = async || -> Vec<String> {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("watch output in time")
            .unwrap()
            .expect("watch still running");
        line.split_whitespace().map(String::from).collect()
    };
    assert_eq!(next_row().await, ["NAME", "SIZE", "REPLICAS", "READY"]);
    assert_eq!(next_row().await, ["w1", "small", "2"]);
    // The watch is established once the initial state is printed; now change things.
    let kc = sim.kubeconfig_path();
    ok(&kubectl(
        kc,
        &[
            "patch",
            "wd",
            "w1",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":7}}"#,
        ],
    )
    .await);
    assert_eq!(next_row().await, ["w1", "small", "7"]);
    ok(&kubectl_stdin(kc, &["apply", "-f", "-"], Some(&WIDGET.replace("w1", "w2"))).await);
    assert_eq!(next_row().await, ["w2", "small", "2"]);
    // --request-timeout ends the watch: kubectl exits on its own.
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_forbids_service_accounts_without_bindings() {
    let sim = KubeSim::builder().rbac(true).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sa_kc = dir.path().join("sa");
    let token = sim.mint_service_account_token("default", "robot");
    sim.write_kubeconfig(&sa_kc, Some(&token)).unwrap();
    let err = fails(&kubectl(&sa_kc, &["get", "configmaps"]).await);
    assert!(
        err.contains(r#"configmaps is forbidden: User "system:serviceaccount:default:robot" cannot list resource "configmaps" in API group "" in the namespace "default""#),
        "{err}"
    );
    let rbac = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: default}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-reads, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects:
- {kind: ServiceAccount, name: robot, namespace: default}
"#;
    ok(&kubectl_stdin(sim.kubeconfig_path(), &["apply", "-f", "-"], Some(rbac)).await);
    ok(&kubectl(&sa_kc, &["get", "configmaps"]).await);
    // Imperative creates use kubectl's typed (protobuf) clients.
    let err = fails(&kubectl(&sa_kc, &["create", "configmap", "x", "--from-literal=a=b"]).await);
    assert!(
        err.contains("cannot create resource \"configmaps\""),
        "{err}"
    );
    let admin = sim.kubeconfig_path();
    ok(&kubectl(admin, &["create", "configmap", "x", "--from-literal=a=b"]).await);
    assert_eq!(
        ok(&kubectl(&sa_kc, &["get", "cm", "x", "-o", "jsonpath={.data.a}"]).await),
        "b"
    );
    // `auth can-i` (SelfSubjectAccessReview) with impersonation of the service account.
    let sa = "--as=system:serviceaccount:default:robot";
    assert_eq!(
        ok(&kubectl(admin, &["auth", "can-i", "watch", "configmaps", sa]).await).trim(),
        "yes"
    );
    let out = kubectl(admin, &["auth", "can-i", "delete", "configmaps", sa]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_plain_http_with_loaded_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crd.yaml"), WIDGET_CRD).unwrap();
    std::fs::write(dir.path().join("w.yaml"), WIDGET).unwrap();
    let kc = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
            "--kubeconfig-out",
        ])
        .arg(&kc)
        .arg("--load")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.starts_with("kube-sim serving at http://127.0.0.1:"),
        "{first}"
    );
    eprintln!("kube-sim binary ready in {:?}", started.elapsed());
    let row = ok(&kubectl(&kc, &["get", "wd", "w1", "--no-headers"]).await);
    assert!(row.starts_with("w1"), "{row}");
    child.kill().await.unwrap();
}

/// A controller records Events through `events.k8s.io/v1` (kube-runtime's
/// `Recorder`); an administrator reads them with `kubectl describe` and `kubectl
/// get events`, which use core `v1`. A real apiserver serves both from one store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_through_events_k8s_io_show_in_kubectl_describe() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    ok(&kubectl_stdin(
        kc,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plan, namespace: default}\ndata: {a: b}\n"),
    )
    .await);
    let client = sim.client().await.unwrap();
    let cm = kube::Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("plan")
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "vcfm-test".into(),
        instance: Some("vcfm-test-0".into()),
    };
    let recorder = Recorder::new(client, reporter);
    let event = Event {
        type_: EventType::Warning,
        reason: "PhaseFailed".into(),
        note: Some("phase 4 (UpdateSecrets) failed: the target Secret lacks a password".into()),
        action: "UpdateSecrets".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &kube::Resource::object_ref(&cm, &()))
        .await
        .unwrap();

    let described = ok(&kubectl(kc, &["describe", "configmap", "plan", "-n", "default"]).await);
    assert!(
        described.contains("PhaseFailed")
            && described.contains("the target Secret lacks a password"),
        "kubectl describe shows the event:\n{described}"
    );
    let core = ok(&kubectl(
        kc,
        &["get", "events.v1.", "-n", "default", "-o", "jsonpath={.items[0].involvedObject.name} {.items[0].reportingComponent} {.items[0].type}"],
    )
    .await);
    assert_eq!(core.trim(), "plan vcfm-test Warning");
    // The same object through events.k8s.io, selected by its own field names.
    let v1 = ok(&kubectl(
        kc,
        &[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            "default",
            "--field-selector",
            "regarding.name=plan",
            "-o",
            "jsonpath={.items[*].note}",
        ],
    )
    .await);
    assert!(v1.contains("lacks a password"), "{v1}");
    sim.shutdown().await;
}
