//! Integration tests against real govmomi vcsim instances, TLS verified against their CA.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vcfm_vsphere::sim::{Vcsim, VcsimOptions};
use vcfm_vsphere::{
    CallLog, Cardinality, CategorySpec, ClientConfig, CloneSpec, Credentials, Error, MoRef,
    RestErrorKind, RetryPolicy, SessionCache, TlsOptions,
};

fn sim() -> Vcsim {
    Vcsim::start(VcsimOptions::default()).expect("vcsim must start (run tools/vcsim/build.sh)")
}

fn zone_spec(name: &str) -> CategorySpec {
    CategorySpec {
        name: name.into(),
        description: "OpenShift zone".into(),
        cardinality: Cardinality::Single,
        associable_types: vec![
            "urn:vim25:Datacenter".into(),
            "urn:vim25:ClusterComputeResource".into(),
        ],
    }
}

#[tokio::test]
async fn two_instances_serve_verified_tls_with_realistic_about() {
    let sims = Vcsim::start_many(2, &VcsimOptions::default()).unwrap();
    assert_ne!(sims[0].server(), sims[1].server());
    assert!(
        !sims[0].server().contains(':'),
        "server names are plain hosts: {}",
        sims[0].server()
    );
    let mut uuids = Vec::new();
    for s in &sims {
        let c = s.client().unwrap();
        let about = c.about().await.unwrap();
        assert_eq!(about.version, "8.0.2");
        assert_eq!(about.api_version, "8.0.2.0");
        assert_eq!(about.version_tuple(), Some((8, 0, 2)));
        assert_eq!(about.api_type, "VirtualCenter");
        uuids.push(about.instance_uuid);
        c.login().await.unwrap();
        assert_eq!(c.stats().soap_logins, 1);
        assert_eq!(c.stats().rest_logins, 1);
    }
    assert_ne!(uuids[0], uuids[1], "each vCenter has its own instanceUuid");
}

#[tokio::test]
async fn finds_every_kind_of_object_by_inventory_path() {
    let vc = sim();
    let c = vc.client().unwrap();
    let inv = vc.inventory().clone();
    assert_eq!(c.find_datacenter("/DC0").await.unwrap().kind, "Datacenter");
    assert_eq!(
        c.find_cluster(&inv.clusters[0]).await.unwrap().kind,
        "ClusterComputeResource"
    );
    assert_eq!(
        c.find_host("/DC0/host/DC0_C0/DC0_C0_H0")
            .await
            .unwrap()
            .kind,
        "HostSystem"
    );
    assert_eq!(
        c.find_datastore(&inv.datastores[0]).await.unwrap().kind,
        "Datastore"
    );
    let by_name = c.find_network("/DC0", "VM Network").await.unwrap();
    assert_eq!(
        by_name,
        c.find_network("/DC0", "/DC0/network/VM Network")
            .await
            .unwrap()
    );
    assert_eq!(
        c.find_network("/DC0", "DC0_DVPG0").await.unwrap().kind,
        "DistributedVirtualPortgroup"
    );
    assert_eq!(
        c.find_resource_pool("/DC0/host/DC0_C0/Resources")
            .await
            .unwrap()
            .kind,
        "ResourcePool"
    );
    assert_eq!(c.find_folder("/DC0/vm").await.unwrap().kind, "Folder");
    assert_eq!(
        c.find_vm(&vc.template_paths()[0]).await.unwrap().kind,
        "VirtualMachine"
    );

    let err = c.find_cluster("/DC0/host/NoSuchCluster").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind, path, .. } if kind == "compute cluster" && path == "/DC0/host/NoSuchCluster")
    );
    assert!(
        err.to_string().contains("check the inventory path"),
        "{err}"
    );
    // A path to an object of another kind is not a match.
    assert!(matches!(
        c.find_datacenter("/DC0/vm").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn reads_properties_in_pages_with_continuation() {
    let vc = Vcsim::start(VcsimOptions {
        vms: 3,
        ..VcsimOptions::default()
    })
    .unwrap();
    let log = CallLog::new(100);
    let c = vc.client().unwrap().with_observer(Arc::new(log.clone()));
    let mut vms = Vec::new();
    for p in &vc.inventory().vms {
        vms.push(c.find_vm(p).await.unwrap());
    }
    assert!(vms.len() >= 6, "{vms:?}");
    let all = c
        .retrieve_properties("VirtualMachine", &vms, &["name", "runtime.powerState"])
        .await
        .unwrap();
    let paged = c
        .retrieve_properties_paged("VirtualMachine", &vms, &["name", "runtime.powerState"], 2)
        .await
        .unwrap();
    let names = |v: &[vcfm_vsphere::ObjectContent]| {
        let mut n: Vec<String> = v
            .iter()
            .map(|o| o.str("name").unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(all.len(), vms.len());
    assert_eq!(names(&all), names(&paged));
    assert!(
        all.iter()
            .all(|o| o.str("runtime.powerState") == Some("poweredOn"))
    );
    let continuations = log
        .records()
        .iter()
        .filter(|r| r.method == "ContinueRetrievePropertiesEx")
        .count();
    assert!(
        continuations >= vms.len() / 2 - 1,
        "paging used {continuations} continuation calls"
    );
}

#[tokio::test]
async fn folder_paths_are_created_idempotently_and_only_empty_folders_destroyed() {
    let vc = sim();
    let c = vc.client().unwrap();
    let other = vc.client().unwrap(); // separate session, same vCenter
    let (a, b) = tokio::join!(
        c.ensure_folder("/DC0/vm/infra/ocp/abc"),
        other.ensure_folder("/DC0/vm/infra/ocp/abc")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "concurrent creators end with the same folder");
    assert_eq!(c.ensure_folder("/DC0/vm/infra/ocp/abc").await.unwrap(), a);
    assert_eq!(c.find_folder("/DC0/vm/infra/ocp/abc").await.unwrap(), a);

    let parent = c.find_folder("/DC0/vm/infra/ocp").await.unwrap();
    let dup = c.create_folder(&parent, "abc").await.unwrap_err();
    assert!(
        matches!(&dup, Error::DuplicateName { name, .. } if name == "abc"),
        "{dup:?}"
    );
    assert!(dup.is_already_exists());

    let not_empty = c.destroy_empty_folder(&parent).await.unwrap_err();
    assert!(
        matches!(not_empty, Error::FolderNotEmpty { children: 1, .. }),
        "{not_empty:?}"
    );
    c.destroy_empty_folder(&a).await.unwrap();
    assert!(
        c.find_by_inventory_path("/DC0/vm/infra/ocp/abc")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        c.find_folder("/DC0/vm/infra/ocp").await.unwrap(),
        parent,
        "parent kept"
    );

    let bad = c.ensure_folder("/DC0/host/x").await.unwrap_err();
    assert!(matches!(bad, Error::Config(_)));
}

#[tokio::test]
async fn clones_a_template_and_destroys_the_clone() {
    let vc = sim();
    let c = vc.client().unwrap();
    let template = c.find_vm(&vc.template_paths()[0]).await.unwrap();
    let folder = c.ensure_folder("/DC0/vm/ocp-infra").await.unwrap();
    let pool = c
        .find_resource_pool("/DC0/host/DC0_C0/Resources")
        .await
        .unwrap();
    let ds = c.find_datastore("/DC0/datastore/LocalDS_0").await.unwrap();
    let spec = CloneSpec {
        datastore: Some(ds),
        ..CloneSpec::new(folder.clone(), Some(pool))
    };
    let vm = c.clone_vm(&template, "ocp-master-0", &spec).await.unwrap();
    assert_eq!(vm.kind, "VirtualMachine");
    assert_eq!(
        c.find_vm("/DC0/vm/ocp-infra/ocp-master-0").await.unwrap(),
        vm
    );

    let listed = c.list_vms(&folder, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ocp-master-0");
    assert!(!listed[0].template);
    let root_vms = c
        .list_vms(&c.find_folder("/DC0/vm").await.unwrap(), false)
        .await
        .unwrap();
    assert!(
        root_vms
            .iter()
            .any(|v| v.template && v.name == "rhcos-template")
    );
    assert!(
        !root_vms.iter().any(|v| v.name == "ocp-master-0"),
        "direct children only"
    );
    let recursive = c
        .list_vms(&c.find_folder("/DC0/vm").await.unwrap(), true)
        .await
        .unwrap();
    assert!(recursive.iter().any(|v| v.name == "ocp-master-0"));

    c.destroy_vm(&vm).await.unwrap();
    assert!(matches!(
        c.find_vm("/DC0/vm/ocp-infra/ocp-master-0").await,
        Err(Error::NotFound { .. })
    ));
    assert!(c.list_vms(&folder, false).await.unwrap().is_empty());
    c.destroy_empty_folder(&folder).await.unwrap();
}

#[tokio::test]
async fn task_failures_surface_the_fault() {
    let vc = sim();
    let c = vc.client().unwrap();
    let template = c.find_vm(&vc.template_paths()[0]).await.unwrap();
    let folder = c.find_folder("/DC0/vm").await.unwrap();
    // Cloning a template needs a resource pool; vCenter fails the task.
    let err = c
        .clone_vm(&template, "no-pool", &CloneSpec::new(folder, None))
        .await
        .unwrap_err();
    match &err {
        Error::TaskFailed {
            fault, operation, ..
        } => {
            assert!(operation.contains("clone"), "{operation}");
            assert!(
                matches!(&**fault, Error::InvalidArgument { property, .. } if property == "spec.location.pool"),
                "{fault:?}"
            );
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("spec.location.pool"), "{err}");

    // Destroying a powered-on VM fails with the fault's type.
    let vm = c.find_vm(&vc.inventory().vms[0]).await.unwrap();
    let err = c.destroy_vm_no_power_off(&vm).await.unwrap_err();
    assert!(
        matches!(&err, Error::TaskFailed { fault, .. } if matches!(&**fault, Error::Fault { fault, .. } if fault == "InvalidPowerState")),
        "{err:?}"
    );
    // The helper powers off first, then succeeds.
    c.destroy_vm(&vm).await.unwrap();
}

#[tokio::test]
async fn waiting_on_an_unknown_task_fails_instead_of_polling() {
    let vc = sim();
    let c = vc.client().unwrap();
    let err = c
        .wait_for_task(
            &MoRef::new("Task", "task-does-not-exist"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn logs_in_again_after_the_session_is_terminated() {
    let vc = sim();
    let a = vc.client().unwrap();
    let admin = vc.client().unwrap();
    a.find_datacenter("/DC0").await.unwrap();
    let key = a.current_session_key().await.unwrap();
    admin
        .terminate_sessions(std::slice::from_ref(&key))
        .await
        .unwrap();
    // The next call hits NotAuthenticated, logs in again and succeeds.
    assert_eq!(a.find_datacenter("/DC0").await.unwrap().kind, "Datacenter");
    assert_eq!(a.stats().soap_logins, 2);
    assert_ne!(a.current_session_key().await.unwrap(), key);
}

#[tokio::test]
async fn logout_ends_the_server_side_session() {
    let vc = sim();
    let a = vc.client().unwrap();
    let admin = vc.client().unwrap();
    a.login().await.unwrap();
    let key = a.current_session_key().await.unwrap();
    a.logout().await.unwrap();
    let err = admin.terminate_sessions(&[key]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Fault { fault, .. } if fault == "NotFound"),
        "session must be gone: {err:?}"
    );
    // A logged-out client logs in again on demand.
    a.find_datacenter("/DC0").await.unwrap();
    assert_eq!(a.stats().soap_logins, 2);
}

#[tokio::test]
async fn dropping_the_last_handle_logs_out_in_the_background() {
    let vc = sim();
    let admin = vc.client().unwrap();
    let c = vc.client().unwrap();
    c.login().await.unwrap();
    let key = c.current_session_key().await.unwrap();
    let clone = c.clone();
    drop(c);
    assert!(
        admin.session_is_active(&key, vc.username()).await.unwrap(),
        "a clone still holds the session"
    );
    drop(clone);
    for _ in 0..100 {
        if !admin.session_is_active(&key, vc.username()).await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session still active 2s after the last handle was dropped");
}

#[tokio::test]
async fn survives_a_vcsim_restart_for_soap_and_rest() {
    let mut vc = sim();
    let c = vc.client().unwrap();
    c.find_datacenter("/DC0").await.unwrap();
    c.list_categories().await.unwrap();
    vc.restart().unwrap();
    // Same address, same CA: the client re-logs in on both APIs transparently.
    c.find_datacenter("/DC0").await.unwrap();
    assert!(c.list_categories().await.unwrap().is_empty());
    let s = c.stats();
    assert_eq!((s.soap_logins, s.rest_logins), (2, 2));
}

#[tokio::test]
async fn logs_in_again_after_idle_expiry() {
    let vc = Vcsim::start(VcsimOptions {
        session_idle_timeout: Some(Duration::from_millis(500)),
        ..VcsimOptions::default()
    })
    .unwrap();
    let c = vc.client().unwrap();
    c.find_datacenter("/DC0").await.unwrap();
    c.list_categories().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.find_datacenter("/DC0").await.unwrap();
    c.list_categories().await.unwrap();
    let s = c.stats();
    assert_eq!((s.soap_logins, s.rest_logins), (2, 2));
}

#[tokio::test]
async fn wrong_password_is_invalid_login_on_both_apis() {
    let vc = sim();
    let bad = Credentials::new(vc.username(), "wrong-password");
    let c = vcfm_vsphere::Client::new(vc.client_config_for(bad.clone()).unwrap()).unwrap();
    let err = c.find_datacenter("/DC0").await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidLogin { user, .. } if user == vc.username()),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-password"));
    let c = vcfm_vsphere::Client::new(vc.client_config_for(bad).unwrap()).unwrap();
    let err = c.list_categories().await.unwrap_err();
    assert!(matches!(err, Error::InvalidLogin { .. }), "{err:?}");
}

#[tokio::test]
async fn reports_exactly_which_privileges_a_user_lacks_where() {
    let limited = Credentials::new("ocp-limited@vsphere.local", "Limited-Pw1");
    let vc = Vcsim::start(VcsimOptions {
        limited_user: Some(limited.clone()),
        limited_missing: vec![
            "Folder.Create".into(),
            "InventoryService.Tagging.AttachTag".into(),
        ],
        ..VcsimOptions::default()
    })
    .unwrap();
    let admin = vc.client().unwrap();
    let dc = admin.find_datacenter("/DC0").await.unwrap();
    let vm_folder = admin.find_folder("/DC0/vm").await.unwrap();
    let cluster = admin.find_cluster("/DC0/host/DC0_C0").await.unwrap();
    let entities = [dc.clone(), vm_folder.clone(), cluster.clone()];
    let privs = [
        "Folder.Create",
        "VirtualMachine.Provisioning.Clone",
        "InventoryService.Tagging.AttachTag",
        "Datastore.AllocateSpace",
    ];

    let report = admin
        .check_user_privileges(limited.username(), &entities, &privs)
        .await
        .unwrap();
    for e in &entities {
        assert_eq!(
            report.missing_on(e),
            ["Folder.Create", "InventoryService.Tagging.AttachTag"],
            "{e}"
        );
    }
    assert!(report.describe().contains("Folder.Create"));

    let full = admin
        .check_user_privileges(vc.username(), &entities, &privs)
        .await
        .unwrap();
    assert!(full.is_complete(), "{full:?}");
    let nobody = admin
        .check_user_privileges(
            "nobody@vsphere.local",
            std::slice::from_ref(&vm_folder),
            &privs,
        )
        .await
        .unwrap();
    assert_eq!(nobody.missing_on(&vm_folder).len(), privs.len());

    // The limited user can log in and check itself (as preflight does with the target creds).
    let own = vcfm_vsphere::Client::new(vc.client_config_for(limited.clone()).unwrap()).unwrap();
    let self_report = own
        .check_user_privileges(limited.username(), std::slice::from_ref(&vm_folder), &privs)
        .await
        .unwrap();
    assert_eq!(
        self_report.missing_on(&vm_folder),
        ["Folder.Create", "InventoryService.Tagging.AttachTag"]
    );
}

#[tokio::test]
async fn tagging_round_trip_with_idempotent_ensure_and_attach() {
    let vc = sim();
    let c = vc.client().unwrap();
    let cluster = c.find_cluster("/DC0/host/DC0_C0").await.unwrap();
    let dc = c.find_datacenter("/DC0").await.unwrap();

    let cat = c
        .ensure_category(&zone_spec("openshift-zone"))
        .await
        .unwrap();
    assert_eq!(
        c.ensure_category(&zone_spec("openshift-zone"))
            .await
            .unwrap()
            .id,
        cat.id
    );
    assert_eq!(
        c.find_category("openshift-zone").await.unwrap().unwrap().id,
        cat.id
    );
    assert!(c.list_categories().await.unwrap().contains(&cat.id));

    let tag = c.ensure_tag(&cat.id, "us-east-1a", "zone").await.unwrap();
    assert_eq!(
        c.ensure_tag(&cat.id, "us-east-1a", "zone")
            .await
            .unwrap()
            .id,
        tag.id
    );
    let other = c.ensure_tag(&cat.id, "us-east-1b", "zone").await.unwrap();
    assert_eq!(c.list_tags_for_category(&cat.id).await.unwrap().len(), 2);
    assert_eq!(c.get_tag(&tag.id).await.unwrap().category_id, cat.id);
    assert!(c.list_tags().await.unwrap().contains(&other.id));
    let dup = c.create_tag(&cat.id, "us-east-1a", "").await.unwrap_err();
    assert!(
        matches!(
            dup,
            Error::Rest {
                kind: RestErrorKind::AlreadyExists,
                ..
            }
        ),
        "{dup:?}"
    );

    assert!(
        c.attached_tags_of_category(&cluster, &cat.id)
            .await
            .unwrap()
            .is_empty()
    );
    c.attach_tag(&tag.id, &cluster).await.unwrap();
    c.attach_tag(&tag.id, &cluster).await.unwrap(); // already attached: success
    assert_eq!(
        c.list_attached_tags(&cluster).await.unwrap(),
        vec![tag.id.clone()]
    );
    let carried = c
        .attached_tags_of_category(&cluster, &cat.id)
        .await
        .unwrap();
    assert_eq!(
        carried.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["us-east-1a"]
    );
    assert!(
        c.attached_tags_of_category(&dc, &cat.id)
            .await
            .unwrap()
            .is_empty()
    );

    c.detach_tag(&tag.id, &cluster).await.unwrap();
    assert!(c.list_attached_tags(&cluster).await.unwrap().is_empty());
    c.delete_tag(&tag.id).await.unwrap();
    c.delete_tag(&tag.id).await.unwrap(); // already gone: success
    let gone = c.get_tag(&tag.id).await.unwrap_err();
    assert!(
        matches!(
            gone,
            Error::Rest {
                kind: RestErrorKind::NotFound,
                status: 404,
                ..
            }
        ),
        "{gone:?}"
    );
    c.delete_category(&cat.id).await.unwrap();
    assert!(c.find_category("openshift-zone").await.unwrap().is_none());
}

#[tokio::test]
async fn rejects_incompatible_pre_existing_categories() {
    let vc = sim();
    let c = vc.client().unwrap();
    let multiple = CategorySpec {
        cardinality: Cardinality::Multiple,
        ..zone_spec("openshift-region")
    };
    c.create_category(&multiple).await.unwrap();
    let err = c
        .ensure_category(&zone_spec("openshift-region"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::IncompatibleCategory { name, reason, .. } if name == "openshift-region" && reason.contains("CARDINALITY")),
        "{err:?}"
    );
    assert!(err.to_string().contains("fix or delete it"), "{err}");

    let dc_only = CategorySpec {
        associable_types: vec!["urn:vim25:Datacenter".into()],
        ..zone_spec("openshift-zone")
    };
    c.create_category(&dc_only).await.unwrap();
    let err = c
        .ensure_category(&zone_spec("openshift-zone"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not associable with ClusterComputeResource"),
        "{err}"
    );

    let dup = c.create_category(&dc_only).await.unwrap_err();
    assert!(
        matches!(
            dup,
            Error::Rest {
                kind: RestErrorKind::AlreadyExists,
                status: 400,
                ..
            }
        ),
        "{dup:?}"
    );
}

#[tokio::test]
async fn category_stored_without_urn_prefix_is_accepted() {
    // Real vCenter stores associable types without `urn:vim25:`; vcsim echoes what it is
    // sent, so create the category the way vCenter would return it.
    let vc = sim();
    let c = vc.client().unwrap();
    let stored = CategorySpec {
        associable_types: vec!["Datacenter".into(), "ClusterComputeResource".into()],
        ..zone_spec("openshift-zone")
    };
    let id = c.create_category(&stored).await.unwrap();
    let read = c.get_category(&id).await.unwrap();
    assert_eq!(
        read.associable_types,
        ["Datacenter", "ClusterComputeResource"]
    );
    assert_eq!(
        c.ensure_category(&zone_spec("openshift-zone"))
            .await
            .unwrap()
            .id,
        id
    );
}

#[tokio::test]
async fn unreachable_server_fails_within_its_timeout() {
    // A listener that accepts and never answers: the call must end at its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let mut cfg = ClientConfig::new(format!("127.0.0.1:{port}"), Credentials::new("u", "p"))
        .with_tls(TlsOptions::insecure())
        .with_timeout(Duration::from_millis(400))
        .with_retry(RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
        });
    cfg.connect_timeout = Duration::from_millis(400);
    let log = CallLog::new(10);
    let c = vcfm_vsphere::Client::new(cfg)
        .unwrap()
        .with_observer(Arc::new(log.clone()));
    let started = Instant::now();
    let err = c.about().await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(log.total(), 2, "idempotent call retried once");
    assert!(
        took < Duration::from_secs(10),
        "gave up after {took:?}, far beyond 2 x 400ms"
    );
    // A per-handle timeout overrides the configured one.
    let quick = c.with_timeout(Duration::from_millis(150));
    let err = quick.about().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(150)),
        "{err:?}"
    );
    hold.abort();

    // Connection refused is a transport error, also retried.
    let refused = vcfm_vsphere::Client::new(
        ClientConfig::new(format!("127.0.0.1:{port}"), Credentials::new("u", "p"))
            .with_tls(TlsOptions::insecure()),
    )
    .unwrap();
    let _ = hold.await;
    let err = refused.about().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_ca_fails_tls_and_thumbprint_pinning_works() {
    let sims = Vcsim::start_many(2, &VcsimOptions::default()).unwrap();
    let (a, b) = (&sims[0], &sims[1]);
    // B's CA does not vouch for A's certificate.
    let cfg = ClientConfig::new(a.server(), a.credentials())
        .with_tls(TlsOptions::with_ca_pem(b.ca_pem().unwrap()));
    let err = vcfm_vsphere::Client::new(cfg)
        .unwrap()
        .about()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message, .. } if message.contains("certificate")),
        "{err:?}"
    );
    assert!(err.to_string().contains("CA bundle"), "{err}");
    // The message names the presented certificate so an administrator can verify and pin it.
    assert!(
        err.to_string().contains(&a.server_thumbprint().unwrap()),
        "{err}"
    );
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // System roots do not trust vcsim either.
    let err = vcfm_vsphere::Client::new(ClientConfig::new(a.server(), a.credentials()))
        .unwrap()
        .about()
        .await;
    assert!(
        matches!(err, Err(Error::Tls { .. }) | Err(Error::Config(_))),
        "{err:?}"
    );

    let pinned = ClientConfig::new(a.server(), a.credentials())
        .with_tls(TlsOptions::with_thumbprint(a.server_thumbprint().unwrap()));
    assert_eq!(
        vcfm_vsphere::Client::new(pinned)
            .unwrap()
            .about()
            .await
            .unwrap()
            .version,
        "8.0.2"
    );
    let wrong = ClientConfig::new(a.server(), a.credentials())
        .with_tls(TlsOptions::with_thumbprint(b.server_thumbprint().unwrap()));
    let err = vcfm_vsphere::Client::new(wrong)
        .unwrap()
        .about()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message, .. } if message.contains("thumbprint")),
        "{err:?}"
    );
}

#[tokio::test]
async fn session_cache_shares_one_session_per_server_and_user() {
    let sims = Vcsim::start_many(2, &VcsimOptions::default()).unwrap();
    let cache = SessionCache::default();
    for _ in 0..20 {
        for s in &sims {
            let c = cache.client(s.client_config().unwrap()).unwrap();
            c.find_datacenter("/DC0").await.unwrap();
        }
    }
    assert_eq!(cache.len(), 2);
    for s in &sims {
        let c = cache.client(s.client_config().unwrap()).unwrap();
        assert_eq!(c.stats().soap_logins, 1, "20 phases, one login");
    }
    // Rotated password: a new client replaces the cached one.
    let rotated = cache
        .client(
            sims[0]
                .client_config_for(Credentials::new(sims[0].username(), "new-pw"))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(rotated.stats().calls, 0);
    assert_eq!(cache.len(), 2);
    cache.logout_all().await;
    assert!(cache.is_empty());
}

#[tokio::test]
async fn observer_sees_only_its_handle_calls_with_faults() {
    let vc = sim();
    let c = vc.client().unwrap();
    let log = CallLog::new(3);
    let phase = c.with_observer(Arc::new(log.clone()));
    c.find_datacenter("/DC0").await.unwrap(); // not observed
    let vm_folder = phase.find_folder("/DC0/vm").await.unwrap();
    phase.create_folder(&vm_folder, "x").await.unwrap();
    phase.create_folder(&vm_folder, "x").await.unwrap_err();
    phase.list_categories().await.unwrap();
    assert!(log.total() >= 4, "{}", log.summary());
    assert_eq!(log.failed(), 1);
    let recs = log.records();
    assert_eq!(recs.len(), 3, "bounded");
    let dup = recs.iter().find(|r| !r.ok).unwrap();
    assert_eq!(dup.method, "CreateFolder");
    assert_eq!(dup.fault.as_deref(), Some("DuplicateName"));
    assert_eq!(dup.target.as_deref(), Some(vm_folder.to_string().as_str()));
    assert!(log.summary().contains("DuplicateName"));
}

#[test]
fn missing_binary_is_a_clear_error() {
    let opts = VcsimOptions {
        binary: Some("/nonexistent/vcsim".into()),
        ..VcsimOptions::default()
    };
    let err = Vcsim::start(opts).unwrap_err();
    assert!(
        matches!(err, vcfm_vsphere::sim::SimError::BinaryMissing(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("run tools/vcsim/build.sh"),
        "{err}"
    );
}

#[tokio::test]
async fn source_and_target_vcenters_stay_independent_through_one_cache() {
    let sims = Vcsim::start_many(2, &VcsimOptions::default()).unwrap();
    let cache = SessionCache::default();
    let source = cache.client(sims[0].client_config().unwrap()).unwrap();
    let target = cache.client(sims[1].client_config().unwrap()).unwrap();

    // What a migration does on the target: folder, topology tags, a machine clone.
    let folder = target.ensure_folder("/DC0/vm/infra-abc12").await.unwrap();
    let zone = target
        .ensure_category(&zone_spec("openshift-zone"))
        .await
        .unwrap();
    let tag = target.ensure_tag(&zone.id, "zone-a", "").await.unwrap();
    let cluster = target.find_cluster("/DC0/host/DC0_C0").await.unwrap();
    target.attach_tag(&tag.id, &cluster).await.unwrap();
    let pool = target
        .find_resource_pool("/DC0/host/DC0_C0/Resources")
        .await
        .unwrap();
    let template = target.find_vm(&sims[1].template_paths()[0]).await.unwrap();
    let vm = target
        .clone_vm(
            &template,
            "infra-abc12-worker-0",
            &CloneSpec::new(folder.clone(), Some(pool)),
        )
        .await
        .unwrap();

    // The source saw none of it.
    assert!(
        source
            .find_by_inventory_path("/DC0/vm/infra-abc12")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        source
            .find_category("openshift-zone")
            .await
            .unwrap()
            .is_none()
    );
    let source_cluster = source.find_cluster("/DC0/host/DC0_C0").await.unwrap();
    assert!(
        source
            .list_attached_tags(&source_cluster)
            .await
            .unwrap()
            .is_empty()
    );
    assert_ne!(
        source.about().await.unwrap().instance_uuid,
        target.about().await.unwrap().instance_uuid
    );

    // Rollback on the target.
    target.destroy_vm(&vm).await.unwrap();
    target.destroy_empty_folder(&folder).await.unwrap();
    target.detach_tag(&tag.id, &cluster).await.unwrap();
    target.delete_tag(&tag.id).await.unwrap();
    target.delete_category(&zone.id).await.unwrap();
    assert!(
        target
            .find_category("openshift-zone")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        (source.stats().soap_logins, target.stats().soap_logins),
        (1, 1)
    );
}

/// `v0.56.0` -> (0, 56, 0).
fn semver(v: &str) -> (u32, u32, u32) {
    let mut parts = v
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[tokio::test]
async fn helper_is_built_from_a_govmomi_newer_than_debians_0_24() {
    let bin = vcfm_vsphere::sim::binary_path();
    let reported = vcfm_vsphere::sim::govmomi_version(&bin).unwrap();
    assert!(
        semver(&reported) > (0, 24, u32::MAX),
        "vcsim -version reports govmomi {reported}"
    );
    let vc = sim();
    assert_eq!(
        vc.govmomi_version(),
        reported,
        "the running instance says the same"
    );
}

#[tokio::test]
async fn limited_user_is_refused_the_calls_its_role_lacks() {
    let limited = Credentials::new("ocp-limited@vsphere.local", "Limited-Pw1");
    let missing = [
        "Folder.Create",
        "VirtualMachine.Provisioning.Clone",
        "InventoryService.Tagging.CreateCategory",
        "InventoryService.Tagging.AttachTag",
    ];
    let vc = Vcsim::start(VcsimOptions {
        limited_user: Some(limited.clone()),
        limited_missing: missing.iter().map(|p| p.to_string()).collect(),
        ..VcsimOptions::default()
    })
    .unwrap();
    let admin = vc.client().unwrap();
    let user = vcfm_vsphere::Client::new(vc.client_config_for(limited.clone()).unwrap()).unwrap();
    let vm_folder = admin.find_folder("/DC0/vm").await.unwrap();
    let cluster = admin.find_cluster("/DC0/host/DC0_C0").await.unwrap();
    let template = admin.find_vm(&vc.template_paths()[0]).await.unwrap();
    let pool = admin
        .find_resource_pool("/DC0/host/DC0_C0/Resources")
        .await
        .unwrap();

    // The privilege check answers per role, for the user and for the administrator.
    let privs = [
        "Folder.Create",
        "VirtualMachine.Provisioning.Clone",
        "VirtualMachine.Inventory.CreateFromExisting",
    ];
    let report = admin
        .check_user_privileges(
            limited.username(),
            &[vm_folder.clone(), template.clone()],
            &privs,
        )
        .await
        .unwrap();
    assert_eq!(
        report.missing_on(&template),
        ["Folder.Create", "VirtualMachine.Provisioning.Clone"]
    );
    assert!(
        admin
            .check_user_privileges(vc.username(), std::slice::from_ref(&vm_folder), &privs)
            .await
            .unwrap()
            .is_complete()
    );

    // SOAP: the calls fault with NoPermission naming the privilege and the object.
    let err = user.create_folder(&vm_folder, "denied").await.unwrap_err();
    assert!(
        matches!(&err, Error::NoPermission { privilege, object, .. }
            if privilege == "Folder.Create" && *object == vm_folder.to_string()),
        "{err:?}"
    );
    assert!(
        admin
            .find_by_inventory_path("/DC0/vm/denied")
            .await
            .unwrap()
            .is_none(),
        "nothing was created"
    );
    let err = user
        .clone_vm(
            &template,
            "denied-clone",
            &CloneSpec::new(vm_folder.clone(), Some(pool.clone())),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoPermission { privilege, object, .. }
            if privilege == "VirtualMachine.Provisioning.Clone" && *object == template.to_string()),
        "{err:?}"
    );
    // What the role holds still works.
    let vm = user
        .find_vm(&vc.inventory().vms[0])
        .await
        .expect("System.Read is held");
    assert_eq!(vm.kind, "VirtualMachine");

    // REST: creating a category and attaching a tag are `unauthorized` (HTTP 403);
    // creating a tag (CreateTag is held) works.
    let err = user
        .create_category(&zone_spec("openshift-zone"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rest {
                kind: RestErrorKind::Unauthorized,
                status: 403,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        admin
            .find_category("openshift-zone")
            .await
            .unwrap()
            .is_none()
    );
    let cat = admin
        .ensure_category(&zone_spec("openshift-zone"))
        .await
        .unwrap();
    let tag = user.ensure_tag(&cat.id, "zone-a", "").await.unwrap();
    let err = user.attach_tag(&tag.id, &cluster).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rest {
                kind: RestErrorKind::Unauthorized,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(admin.list_attached_tags(&cluster).await.unwrap().is_empty());
    // The administrator is not limited.
    admin.attach_tag(&tag.id, &cluster).await.unwrap();
    admin.create_folder(&vm_folder, "allowed").await.unwrap();
}

#[tokio::test]
async fn destroying_an_object_removes_its_tag_associations() {
    let vc = sim();
    let c = vc.client().unwrap();
    let cat = c
        .ensure_category(&CategorySpec {
            associable_types: vec![],
            cardinality: Cardinality::Multiple,
            ..zone_spec("vcfm-owned")
        })
        .await
        .unwrap();
    let tag = c.ensure_tag(&cat.id, "migration-1", "").await.unwrap();
    let template = c.find_vm(&vc.template_paths()[0]).await.unwrap();
    let folder = c.ensure_folder("/DC0/vm/tagged").await.unwrap();
    let pool = c
        .find_resource_pool("/DC0/host/DC0_C0/Resources")
        .await
        .unwrap();
    let vm = c
        .clone_vm(
            &template,
            "tagged-vm",
            &CloneSpec::new(folder.clone(), Some(pool)),
        )
        .await
        .unwrap();
    let cluster = c.find_cluster("/DC0/host/DC0_C0").await.unwrap();
    for o in [&vm, &folder, &cluster] {
        c.attach_tag(&tag.id, o).await.unwrap();
        assert_eq!(
            c.list_attached_tags(o).await.unwrap(),
            vec![tag.id.clone()],
            "{o}"
        );
    }

    c.destroy_vm(&vm).await.unwrap();
    assert!(
        c.list_attached_tags(&vm).await.unwrap().is_empty(),
        "the destroyed VM's association is gone"
    );
    c.destroy_empty_folder(&folder).await.unwrap();
    assert!(c.list_attached_tags(&folder).await.unwrap().is_empty());
    assert_eq!(
        c.list_attached_tags(&cluster).await.unwrap(),
        vec![tag.id.clone()],
        "objects that still exist keep their tags"
    );
    // The tag itself stays (vCenter deletes only the association).
    assert_eq!(c.get_tag(&tag.id).await.unwrap().name, "migration-1");
}

async fn hardware_version(c: &vcfm_vsphere::Client, vm: &MoRef) -> (String, bool) {
    let props = c
        .retrieve_properties(
            "VirtualMachine",
            std::slice::from_ref(vm),
            &["config.version", "config.template"],
        )
        .await
        .expect("reading config.version");
    (
        props[0]
            .str("config.version")
            .expect("config.version")
            .to_string(),
        props[0].bool("config.template").expect("config.template"),
    )
}

fn vmx(v: &str) -> u32 {
    v.trim_start_matches("vmx-")
        .parse()
        .expect("a vmx-N hardware version")
}

#[tokio::test]
async fn templates_and_vms_are_at_hardware_version_15_or_later_by_default() {
    let vc = sim();
    let c = vc.client().unwrap();
    let template = c.find_vm(&vc.template_paths()[0]).await.unwrap();
    let (version, is_template) = hardware_version(&c, &template).await;
    assert!(is_template);
    assert!(
        vmx(&version) >= 15,
        "the machine controller refuses templates below vmx-15: {version}"
    );
    assert_eq!(version, vc.template_hardware_version());
    let vm = c.find_vm(&vc.inventory().vms[0]).await.unwrap();
    assert_eq!(hardware_version(&c, &vm).await.0, vc.hardware_version());
    let folder = c.find_folder("/DC0/vm").await.unwrap();
    let pool = c
        .find_resource_pool("/DC0/host/DC0_C0/Resources")
        .await
        .unwrap();
    let clone = c
        .clone_vm(&template, "worker-0", &CloneSpec::new(folder, Some(pool)))
        .await
        .unwrap();
    assert_eq!(
        hardware_version(&c, &clone).await,
        (version, false),
        "a clone keeps the template's version"
    );
}

#[tokio::test]
async fn an_old_template_and_a_same_named_vm_can_be_asked_for() {
    let vc = Vcsim::start(VcsimOptions {
        template_hardware_version: Some("vmx-13".into()),
        duplicate_template_folder: Some("other/place".into()),
        ..VcsimOptions::default()
    })
    .unwrap();
    let c = vc.client().unwrap();
    let template = c.find_vm(&vc.template_paths()[0]).await.unwrap();
    assert_eq!(
        hardware_version(&c, &template).await,
        ("vmx-13".into(), true)
    );
    let vm = c.find_vm(&vc.inventory().vms[0]).await.unwrap();
    assert!(
        vmx(&hardware_version(&c, &vm).await.0) >= 15,
        "only the template is old"
    );

    assert_eq!(
        vc.duplicate_template_paths(),
        ["/DC0/vm/other/place/rhcos-template"]
    );
    let dup = c.find_vm(&vc.duplicate_template_paths()[0]).await.unwrap();
    assert_ne!(dup, template);
    assert!(!hardware_version(&c, &dup).await.1, "the duplicate is a VM");
    let named: Vec<_> = c
        .list_vms(&c.find_folder("/DC0/vm").await.unwrap(), true)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.name == "rhcos-template")
        .collect();
    assert_eq!(named.len(), 2, "{named:?}");
}

/// The helper's fault bursts answer like vCenter's internal errors: the armed
/// method fails with `SystemError` exactly as many times as armed, other
/// methods meanwhile work, and the next call succeeds.
#[tokio::test]
async fn system_error_bursts_fail_only_the_armed_calls() {
    let mut vc = sim();
    let c = vc.client().unwrap();
    let parent = c.find_folder("/DC0/vm").await.unwrap();
    vc.inject_system_errors("CreateFolder", 2).unwrap();
    for attempt in 0..2 {
        let e = c.create_folder(&parent, "burst").await.unwrap_err();
        assert!(
            matches!(&e, Error::Fault { fault, .. } if fault == "SystemError"),
            "attempt {attempt}: {e:?}"
        );
        assert_eq!(c.find_folder("/DC0/vm").await.unwrap(), parent);
    }
    let made = c.create_folder(&parent, "burst").await.unwrap();
    assert_eq!(c.find_folder("/DC0/vm/burst").await.unwrap(), made);
}
