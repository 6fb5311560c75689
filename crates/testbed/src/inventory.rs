//! Whole-cluster and whole-vCenter listings, to prove a read-only or refused run changed
//! nothing.

use kube::api::{Api, DynamicObject, ListParams};

/// resourceVersion of every object of every listable kind, but Events and the
/// kinds in `skip` (what a read-only or refused run may legitimately write).
pub async fn all_objects(
    skip: &[&str],
    client: &kube::Client,
) -> std::collections::BTreeMap<String, String> {
    use kube::discovery::{Discovery, verbs};
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST)
                || ar.kind == "Event"
                || skip.contains(&ar.kind.as_str())
            {
                continue;
            }
            let list = Api::<DynamicObject>::all_with(client.clone(), &ar)
                .list(&ListParams::default())
                .await
                .unwrap();
            for o in list.items {
                out.insert(
                    format!(
                        "{} {}/{}",
                        ar.kind,
                        o.metadata.namespace.unwrap_or_default(),
                        o.metadata.name.unwrap_or_default()
                    ),
                    o.metadata.resource_version.unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// Asserts two [`all_objects`] listings are equal, naming only what differs.
pub fn assert_same_objects(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
    what: &str,
) {
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect();
    assert!(changed.is_empty(), "{what}: {changed:#?}");
}

/// Categories, tags, VM folders and VMs (with power state) of one simulated vCenter.
pub async fn vcenter_inventory(
    sim: &openshift_sim::SimCluster,
    site: openshift_sim::Site,
) -> std::collections::BTreeSet<String> {
    let vc = sim.vsphere_client(site).unwrap();
    let info = sim.vcenter(site);
    let mut out = std::collections::BTreeSet::new();
    for c in vc.list_categories().await.unwrap() {
        out.insert(format!("category {c}"));
    }
    for t in vc.list_tags().await.unwrap() {
        out.insert(format!("tag {t}"));
    }
    let root = vc
        .find_folder(&format!("/{}/vm", info.datacenter))
        .await
        .unwrap();
    for child in vc.folder_children(&root).await.unwrap() {
        out.insert(format!("child {child:?}"));
    }
    for v in vc.list_vms(&root, true).await.unwrap() {
        out.insert(format!("vm {} {} {}", v.vm, v.name, v.power_state));
    }
    let _ = vc.logout().await;
    out
}
