//! vSphere tags and folders the migration creates on the target, and their
//! removal on rollback.
//!
//! What vcfm creates is recorded in `status.createdVSphereObjects`, so that
//! rollback removes only that. Two windows are closed as well:
//! - categories and tags carry a description naming the migration's uid, so
//!   one created just before a crash (and never recorded) is recognised as
//!   ours when the phase runs again;
//! - folders and attachments of pre-existing tags get no such mark, so their
//!   intent is recorded (and persisted) *before* they are created.

use crate::error::PhaseError;
use vcfm_api::{CreatedVSphereObject, PhaseName};
use vcfm_vsphere::{Cardinality, Category, CategorySpec, MoRef, Tag};

pub const REGION_CATEGORY: &str = "openshift-region";
pub const ZONE_CATEGORY: &str = "openshift-zone";

pub const KIND_CATEGORY: &str = "TagCategory";
pub const KIND_TAG: &str = "Tag";
pub const KIND_ATTACHMENT: &str = "TagAttachment";
pub const KIND_FOLDER: &str = "Folder";

/// The one type each topology category's tags are attached to: region tags on
/// datacenters, zone tags on compute clusters. The OpenShift installer creates
/// each category associable with just that type (its zonal vSphere Terraform:
/// `openshift-region` with `Datacenter`, `openshift-zone` with
/// `ClusterComputeResource`), so that is what vcfm requires of a pre-existing
/// category and how it creates a missing one.
pub fn topology_types(category: &str) -> &'static [&'static str] {
    if category == ZONE_CATEGORY {
        &["ClusterComputeResource"]
    } else {
        &["Datacenter"]
    }
}
/// Types the installer makes the ownership category associable with.
pub const OWNERSHIP_TYPES: &[&str] = &[
    "VirtualMachine",
    "ResourcePool",
    "Folder",
    "Datastore",
    "StoragePod",
];

/// Name of the installer-style ownership category: `openshift-<infraID>`.
pub fn ownership_category(infra_id: &str) -> String {
    format!("openshift-{infra_id}")
}

fn urns(types: &[&str]) -> Vec<String> {
    types.iter().map(|t| format!("urn:vim25:{t}")).collect()
}

/// What a phase step knows of the vSphere objects its migration creates:
/// whose they are (the migration, named in the descriptions it writes), what
/// status already records, and where a new record goes (the step's status
/// updates, persisted with its outcome).
pub struct Ledger<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
    /// The phase new records are made for.
    pub phase: PhaseName,
    /// `status.createdVSphereObjects` as read.
    pub recorded: &'a [CreatedVSphereObject],
    /// Keeps one more record (the keeper deduplicates).
    pub add: Box<dyn Fn(CreatedVSphereObject) + Send + Sync + 'a>,
}

impl Ledger<'_> {
    /// The description vcfm writes on what it creates.
    pub fn marker(&self) -> String {
        format!(
            "Created by vcfm migration {}/{} (uid {})",
            self.namespace,
            self.name,
            self.uid.unwrap_or("unknown")
        )
    }

    /// Whether a description is this migration's mark.
    pub fn is_ours(&self, description: &str) -> bool {
        self.uid
            .is_some_and(|uid| description.contains(&format!("(uid {uid})")))
    }

    /// Objects recorded for `phase` (all phases when `None`).
    pub fn recorded(
        &self,
        phase: Option<PhaseName>,
    ) -> impl Iterator<Item = &CreatedVSphereObject> {
        self.recorded
            .iter()
            .filter(move |o| phase.is_none_or(|p| o.phase == p))
    }

    /// Whether an object is recorded in the persisted status (any phase).
    pub fn is_recorded(&self, server: &str, kind: &str, id: &str) -> bool {
        self.recorded(None)
            .any(|o| o.server == server && o.kind == kind && o.id == id)
    }

    /// Records a created object for this ledger's phase.
    pub fn record(&self, server: &str, kind: &str, id: &str, name: &str) {
        (self.add)(CreatedVSphereObject {
            phase: self.phase,
            server: server.into(),
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
        });
    }
}

pub fn topology_spec(name: &str, description: String) -> CategorySpec {
    CategorySpec {
        name: name.into(),
        description,
        cardinality: Cardinality::Single,
        associable_types: urns(topology_types(name)),
    }
}

pub fn ownership_spec(infra_id: &str, description: String) -> CategorySpec {
    CategorySpec {
        name: ownership_category(infra_id),
        description,
        cardinality: Cardinality::Single,
        associable_types: urns(OWNERSHIP_TYPES),
    }
}

/// Fails with an actionable message when a pre-existing category cannot serve `spec`.
pub fn check_compatible(
    server: &str,
    found: &Category,
    spec: &CategorySpec,
) -> Result<(), PhaseError> {
    match found.incompatibility(spec) {
        None => Ok(()),
        Some(why) => Err(PhaseError::fatal(format!(
            "target vCenter {server}: tag category {:?} exists but is incompatible ({why}); it must have cardinality SINGLE and be associable with {}: fix or delete it in vCenter, then retry",
            spec.name,
            spec.associable_types
                .iter()
                .map(|t| vcfm_vsphere::normalise_associable_type(t))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Returns the category, creating it (marked as ours, recorded) when missing.
/// A pre-existing one must be compatible.
pub async fn ensure_category(
    ledger: &Ledger<'_>,
    vc: &vcfm_vsphere::Client,
    spec: &CategorySpec,
) -> Result<Category, PhaseError> {
    let server = vc.server().to_string();
    let found = match vc.find_category(&spec.name).await? {
        Some(c) => c,
        None => match vc.create_category(spec).await {
            Ok(id) => vc.get_category(&id).await?,
            Err(e) if e.is_already_exists() => {
                vc.find_category(&spec.name).await?.ok_or_else(|| {
                    PhaseError::transient(format!(
                        "tag category {} vanished after a name clash",
                        spec.name
                    ))
                })?
            }
            Err(e) => return Err(e.into()),
        },
    };
    check_compatible(&server, &found, spec)?;
    if ledger.is_ours(&found.description) {
        ledger.record(&server, KIND_CATEGORY, &found.id, &found.name);
    }
    Ok(found)
}

/// Returns the tag `name` of a category, creating it (marked, recorded) when missing.
pub async fn ensure_tag(
    ledger: &Ledger<'_>,
    vc: &vcfm_vsphere::Client,
    category: &Category,
    name: &str,
) -> Result<Tag, PhaseError> {
    let tag = vc.ensure_tag(&category.id, name, &ledger.marker()).await?;
    if ledger.is_ours(&tag.description) {
        ledger.record(
            vc.server(),
            KIND_TAG,
            &tag.id,
            &format!("{}/{}", category.name, tag.name),
        );
    }
    Ok(tag)
}

/// The ownership category and tag on a vCenter (created when missing).
pub async fn ensure_ownership(
    ledger: &Ledger<'_>,
    vc: &vcfm_vsphere::Client,
    infra_id: &str,
) -> Result<Tag, PhaseError> {
    let cat = ensure_category(ledger, vc, &ownership_spec(infra_id, ledger.marker())).await?;
    ensure_tag(ledger, vc, &cat, infra_id).await
}

/// Id under which an attachment is recorded.
pub fn attachment_id(tag_id: &str, object: &MoRef) -> String {
    format!("{tag_id}@{object}")
}

fn parse_attachment(id: &str) -> Option<(&str, MoRef)> {
    let (tag, obj) = id.rsplit_once('@')?;
    let (kind, value) = obj.split_once(':')?;
    Some((tag, MoRef::new(kind, value)))
}

/// What [`attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Already attached (by us earlier or before the migration).
    Present,
    /// Attached now.
    Attached,
    /// Intent recorded; attach on the next step, once the record is persisted.
    Recorded,
}

/// Attaches `tag` to `object`, recording the attachment so rollback can undo
/// it. For a tag that is not ours the record is persisted first.
pub async fn attach(
    ledger: &Ledger<'_>,
    vc: &vcfm_vsphere::Client,
    tag: &Tag,
    object: &MoRef,
    object_name: &str,
) -> Result<Attach, PhaseError> {
    let server = vc.server();
    if vc.list_attached_tags(object).await?.contains(&tag.id) {
        return Ok(Attach::Present);
    }
    let id = attachment_id(&tag.id, object);
    let name = format!("{} on {object_name}", tag.name);
    if !ledger.is_ours(&tag.description) && !ledger.is_recorded(server, KIND_ATTACHMENT, &id) {
        ledger.record(server, KIND_ATTACHMENT, &id, &name);
        return Ok(Attach::Recorded);
    }
    ledger.record(server, KIND_ATTACHMENT, &id, &name);
    vc.attach_tag(&tag.id, object).await?;
    Ok(Attach::Attached)
}

/// Undoes what was recorded in `objs` on the vCenter `vc` connects to
/// (objects of other servers are left alone): detaches attachments, deletes
/// empty folders (deepest first), then tags, then categories left without
/// tags. Idempotent (already gone is fine). Returns one note per object.
pub async fn undo_created(
    vc: &vcfm_vsphere::Client,
    objs: &[CreatedVSphereObject],
) -> Result<Vec<String>, PhaseError> {
    let mut notes = vec![];
    let server = vc.server();
    let of = |kind: &str| {
        objs.iter()
            .filter(|o| o.server == server && o.kind == kind)
            .collect::<Vec<_>>()
    };
    for o in of(KIND_ATTACHMENT) {
        let Some((tag, obj)) = parse_attachment(&o.id) else {
            continue;
        };
        match vc.list_attached_tags(&obj).await {
            Ok(ids) if ids.iter().any(|t| t == tag) => {
                vc.detach_tag(tag, &obj).await?;
                notes.push(format!("detached {} ({server})", o.name));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut folders = of(KIND_FOLDER);
    folders.sort_by_key(|o| std::cmp::Reverse(o.id.matches('/').count()));
    for o in folders {
        let Some(f) = vc.find_by_inventory_path(&o.id).await? else {
            continue;
        };
        match vc.destroy_empty_folder(&f).await {
            Ok(()) => notes.push(format!("deleted folder {} ({server})", o.id)),
            Err(vcfm_vsphere::Error::FolderNotEmpty { children, .. }) => notes.push(format!(
                "kept folder {} ({server}): it is not empty ({children} objects); delete it by hand once empty",
                o.id
            )),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    for o in of(KIND_TAG) {
        match vc.get_tag(&o.id).await {
            Ok(_) => {
                vc.delete_tag(&o.id).await?;
                notes.push(format!("deleted tag {} ({server})", o.name));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    for o in of(KIND_CATEGORY) {
        let tags = match vc.list_tags_for_category(&o.id).await {
            Ok(t) => t,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        if tags.is_empty() {
            vc.delete_category(&o.id).await?;
            notes.push(format!("deleted tag category {} ({server})", o.name));
        } else {
            notes.push(format!(
                "kept tag category {} ({server}): {} tag(s) not created by this migration use it",
                o.name,
                tags.len()
            ));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(phase: PhaseName, kind: &str, id: &str) -> CreatedVSphereObject {
        CreatedVSphereObject {
            phase,
            server: "vc".into(),
            kind: kind.into(),
            id: id.into(),
            name: id.into(),
        }
    }

    #[test]
    fn the_ledger_knows_its_marks_and_records_for_its_phase() {
        let recorded = [object(PhaseName::CreateTags, KIND_TAG, "t1")];
        let added = std::sync::Mutex::new(vec![]);
        let ledger = Ledger {
            namespace: "ns",
            name: "m",
            uid: Some("u-1"),
            phase: PhaseName::CreateFolder,
            recorded: &recorded,
            add: Box::new(|o| added.lock().unwrap().push(o)),
        };
        let mark = ledger.marker();
        assert_eq!(mark, "Created by vcfm migration ns/m (uid u-1)");
        assert!(ledger.is_ours(&mark));
        assert!(!ledger.is_ours("Created by vcfm migration ns/m (uid u-2)"));
        assert!(!ledger.is_ours(""));
        assert!(ledger.is_recorded("vc", KIND_TAG, "t1"));
        assert!(!ledger.is_recorded("other", KIND_TAG, "t1"));
        assert_eq!(ledger.recorded(Some(PhaseName::CreateFolder)).count(), 0);
        ledger.record("vc", KIND_FOLDER, "/DC/vm/x", "/DC/vm/x");
        drop(ledger);
        assert_eq!(
            added.into_inner().unwrap(),
            vec![object(PhaseName::CreateFolder, KIND_FOLDER, "/DC/vm/x")]
        );
        // Without a uid nothing is recognised as ours.
        let anonymous = Ledger {
            namespace: "ns",
            name: "m",
            uid: None,
            phase: PhaseName::CreateTags,
            recorded: &[],
            add: Box::new(|_| {}),
        };
        assert!(!anonymous.is_ours(&anonymous.marker()));
    }

    #[test]
    fn attachment_ids_round_trip() {
        let obj = MoRef::new("Datacenter", "datacenter-2");
        let id = attachment_id("urn:vmomi:InventoryServiceTag:1-2:GLOBAL", &obj);
        assert_eq!(
            id,
            "urn:vmomi:InventoryServiceTag:1-2:GLOBAL@Datacenter:datacenter-2"
        );
        let (t, o) = parse_attachment(&id).unwrap();
        assert_eq!(t, "urn:vmomi:InventoryServiceTag:1-2:GLOBAL");
        assert_eq!(o, obj);
    }

    #[test]
    fn specs_match_what_the_installer_creates() {
        let s = ownership_spec("ocp-x7k2p", String::new());
        assert_eq!(s.name, "openshift-ocp-x7k2p");
        assert_eq!(s.associable_types.len(), 5);
        let t = topology_spec(ZONE_CATEGORY, String::new());
        assert_eq!(t.cardinality, Cardinality::Single);
        assert_eq!(t.associable_types, ["urn:vim25:ClusterComputeResource"]);
        let r = topology_spec(REGION_CATEGORY, String::new());
        assert_eq!(r.associable_types, ["urn:vim25:Datacenter"]);
    }
}
