//! Inventory: `about`, lookups by inventory path, batched property reads, VM listings.

use std::collections::BTreeMap;

use crate::MoRef;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::xml::{self, Node};

/// vCenter's `about` information.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// Product name, e.g. `VMware vCenter Server`.
    pub name: String,
    /// Full product name with build.
    pub full_name: String,
    /// Product version, e.g. `8.0.2`.
    pub version: String,
    /// API version, e.g. `8.0.2.0`.
    pub api_version: String,
    /// Build number.
    pub build: String,
    /// Unique id of this vCenter instance.
    pub instance_uuid: String,
    /// `VirtualCenter` for vCenter, `HostAgent` for a standalone ESXi.
    pub api_type: String,
}

impl About {
    pub(crate) fn from_node(n: &Node) -> Self {
        let t = |k: &str| n.child_text(k).unwrap_or_default().to_string();
        Self {
            name: t("name"),
            full_name: t("fullName"),
            version: t("version"),
            api_version: t("apiVersion"),
            build: t("build"),
            instance_uuid: t("instanceUuid"),
            api_type: t("apiType"),
        }
    }

    /// `(major, minor, patch)` of `version`, missing parts as 0; `None` if unparsable.
    pub fn version_tuple(&self) -> Option<(u32, u32, u32)> {
        let mut it = self.version.split('.').map(str::parse::<u32>);
        let major = it.next()?.ok()?;
        let minor = it.next().unwrap_or(Ok(0)).ok()?;
        let patch = it.next().unwrap_or(Ok(0)).ok()?;
        Some((major, minor, patch))
    }
}

/// Properties of one object from a PropertyCollector read.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// Property path to value element (`val` with its `xsi:type`).
    pub props: BTreeMap<String, Node>,
    /// Properties the server could not read, with the fault type (often `NoPermission`).
    pub missing: Vec<(String, String)>,
}

impl ObjectContent {
    /// Text of a string/number/enum property.
    pub fn str(&self, path: &str) -> Option<&str> {
        self.props.get(path).map(|n| n.text.trim())
    }

    /// A reference-valued property.
    pub fn moref(&self, path: &str) -> Option<MoRef> {
        self.props.get(path).and_then(Node::as_moref)
    }

    /// An array-of-references property (empty when unset).
    pub fn morefs(&self, path: &str) -> Vec<MoRef> {
        self.props
            .get(path)
            .map(Node::as_morefs)
            .unwrap_or_default()
    }

    /// A boolean property.
    pub fn bool(&self, path: &str) -> Option<bool> {
        self.props.get(path).and_then(Node::as_bool)
    }
}

/// A VM found in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSummary {
    /// The VM.
    pub vm: MoRef,
    /// Its name.
    pub name: String,
    /// True for templates.
    pub template: bool,
    /// `poweredOn`, `poweredOff` or `suspended`.
    pub power_state: String,
}

/// Objects per PropertyCollector page; the server may return fewer and a continuation token.
const PAGE: usize = 500;

impl Client {
    /// Reads `about` fresh from the server (version checks must see upgrades/restarts).
    pub async fn about(&self) -> Result<About> {
        let content = self.retrieve_service_content().await?;
        let about = content
            .child("about")
            .ok_or_else(|| self.protocol("RetrieveServiceContent", "no about"))?;
        Ok(About::from_node(about))
    }

    /// `SearchIndex.FindByInventoryPath`: the object at `path`, or `None`.
    pub async fn find_by_inventory_path(&self, path: &str) -> Result<Option<MoRef>> {
        let si = self.service_content().await?.search_index.clone();
        let res = self
            .soap(
                "FindByInventoryPath",
                &si,
                &xml::el("inventoryPath", path),
                true,
            )
            .await?;
        Ok(res.child("returnval").and_then(Node::as_moref))
    }

    /// Finds an object by path and checks its type is one of `kinds`.
    async fn find_typed(&self, path: &str, label: &str, kinds: &[&str]) -> Result<MoRef> {
        let not_found = || Error::NotFound {
            server: self.server().to_string(),
            kind: label.to_string(),
            path: path.to_string(),
        };
        let found = self
            .find_by_inventory_path(path)
            .await?
            .ok_or_else(not_found)?;
        if kinds.contains(&found.kind.as_str()) {
            Ok(found)
        } else {
            Err(not_found())
        }
    }

    /// Datacenter at `/<dc>`.
    pub async fn find_datacenter(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "datacenter", &["Datacenter"]).await
    }

    /// Compute cluster at `/<dc>/host/<cluster>`.
    pub async fn find_cluster(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "compute cluster", &["ClusterComputeResource"])
            .await
    }

    /// Host at `/<dc>/host/<cluster>/<host>`.
    pub async fn find_host(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "host", &["HostSystem"]).await
    }

    /// Datastore at `/<dc>/datastore/<ds>`.
    pub async fn find_datastore(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "datastore", &["Datastore"]).await
    }

    /// Network by path (`/<dc>/network/<name>`) or by name within datacenter `dc_path`.
    pub async fn find_network(&self, dc_path: &str, name_or_path: &str) -> Result<MoRef> {
        let path = if name_or_path.starts_with('/') {
            name_or_path.to_string()
        } else {
            format!("{}/network/{}", dc_path.trim_end_matches('/'), name_or_path)
        };
        self.find_typed(
            &path,
            "network",
            &["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"],
        )
        .await
    }

    /// Resource pool at `/<dc>/host/<cluster>/Resources[/<pool>...]`.
    pub async fn find_resource_pool(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "resource pool", &["ResourcePool", "VirtualApp"])
            .await
    }

    /// Folder at `/<dc>/vm/<folder>...`.
    pub async fn find_folder(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "folder", &["Folder"]).await
    }

    /// VM or template at `/<dc>/vm/[<folder>/]<name>`.
    pub async fn find_vm(&self, path: &str) -> Result<MoRef> {
        self.find_typed(path, "virtual machine", &["VirtualMachine"])
            .await
    }

    /// Reads `paths` of `objects` (all of managed type `kind`) with `RetrievePropertiesEx`,
    /// following `ContinueRetrievePropertiesEx` tokens. Objects come back in server order.
    pub async fn retrieve_properties(
        &self,
        kind: &str,
        objects: &[MoRef],
        paths: &[&str],
    ) -> Result<Vec<ObjectContent>> {
        self.retrieve_properties_paged(kind, objects, paths, PAGE)
            .await
    }

    /// As [`Client::retrieve_properties`] with an explicit page size (`maxObjects`).
    pub async fn retrieve_properties_paged(
        &self,
        kind: &str,
        objects: &[MoRef],
        paths: &[&str],
        page: usize,
    ) -> Result<Vec<ObjectContent>> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let mut spec = format!("<specSet><propSet>{}", xml::el("type", kind));
        for p in paths {
            spec.push_str(&xml::el("pathSet", p));
        }
        spec.push_str("</propSet>");
        for o in objects {
            spec.push_str(&format!(
                "<objectSet>{}<skip>false</skip></objectSet>",
                xml::moref_el("obj", o)
            ));
        }
        spec.push_str("</specSet>");
        self.collect(&spec, page.max(1)).await
    }

    /// Runs a filter spec (`<specSet>...</specSet>`) and follows continuation tokens.
    async fn collect(&self, spec: &str, page: usize) -> Result<Vec<ObjectContent>> {
        let pc = self.service_content().await?.property_collector.clone();
        let args = format!("{spec}<options><maxObjects>{page}</maxObjects></options>");
        let mut res = self.soap("RetrievePropertiesEx", &pc, &args, true).await?;
        let mut out = Vec::new();
        // Bounded: a misbehaving server repeating tokens must not loop forever.
        for _ in 0..100_000 {
            let Some(ret) = res.child("returnval") else {
                break;
            };
            out.extend(ret.children_named("objects").filter_map(parse_object));
            let Some(token) = ret
                .child_text("token")
                .filter(|t| !t.is_empty())
                .map(str::to_string)
            else {
                break;
            };
            res = self
                .soap(
                    "ContinueRetrievePropertiesEx",
                    &pc,
                    &xml::el("token", &token),
                    true,
                )
                .await?;
        }
        Ok(out)
    }

    /// VMs (and templates) of a folder: direct children, or the whole subtree with `recursive`.
    pub async fn list_vms(&self, folder: &MoRef, recursive: bool) -> Result<Vec<VmSummary>> {
        let paths = ["name", "config.template", "runtime.powerState"];
        let objects = if recursive {
            let vm = self.service_content().await?.view_manager.clone();
            let args = format!(
                "{}{}<recursive>true</recursive>",
                xml::moref_el("container", folder),
                xml::el("type", "VirtualMachine")
            );
            let res = self.soap("CreateContainerView", &vm, &args, false).await?;
            let view = res
                .child("returnval")
                .and_then(Node::as_moref)
                .ok_or_else(|| self.protocol("CreateContainerView", "no view"))?;
            let mut spec = String::from("<specSet><propSet><type>VirtualMachine</type>");
            for p in paths {
                spec.push_str(&xml::el("pathSet", p));
            }
            spec.push_str(&format!(
                concat!(
                    "</propSet><objectSet>{}<skip>true</skip>",
                    r#"<selectSet xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="TraversalSpec">"#,
                    "<name>view</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet>",
                    "</objectSet></specSet>"
                ),
                xml::moref_el("obj", &view)
            ));
            let result = self.collect(&spec, PAGE).await;
            // Views hold server memory until destroyed; do it even when the read failed.
            let destroyed = self.soap("DestroyView", &view, "", false).await;
            let objects = result?;
            destroyed?;
            objects
        } else {
            let f = self
                .retrieve_properties("Folder", std::slice::from_ref(folder), &["childEntity"])
                .await?;
            let children = f
                .first()
                .map(|o| o.morefs("childEntity"))
                .unwrap_or_default();
            let vms: Vec<MoRef> = children
                .into_iter()
                .filter(|m| m.kind == "VirtualMachine")
                .collect();
            self.retrieve_properties("VirtualMachine", &vms, &paths)
                .await?
        };
        let mut out: Vec<VmSummary> = objects
            .into_iter()
            .map(|o| VmSummary {
                name: o.str("name").unwrap_or_default().to_string(),
                template: o.bool("config.template").unwrap_or(false),
                power_state: o.str("runtime.powerState").unwrap_or_default().to_string(),
                vm: o.obj,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Virtual hardware version of a VM or template (`config.version` `vmx-19` → 19);
    /// `None` when the server does not say.
    pub async fn hardware_version(&self, vm: &MoRef) -> Result<Option<u32>> {
        let o = self
            .retrieve_properties(
                "VirtualMachine",
                std::slice::from_ref(vm),
                &["config.version"],
            )
            .await?;
        Ok(o.first()
            .and_then(|o| o.str("config.version"))
            .and_then(|v| v.strip_prefix("vmx-"))
            .and_then(|n| n.parse().ok()))
    }

    /// The networks attached to a compute cluster or resource (its `network` property), with
    /// their names: what the OpenShift machine controller matches `networkName` against.
    pub async fn cluster_networks(&self, cluster: &MoRef) -> Result<Vec<(MoRef, String)>> {
        let c = self
            .retrieve_properties(&cluster.kind, std::slice::from_ref(cluster), &["network"])
            .await?;
        let nets = c.first().map(|o| o.morefs("network")).unwrap_or_default();
        let mut kinds: Vec<&str> = nets.iter().map(|n| n.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut out = Vec::new();
        for kind in kinds {
            let of_kind: Vec<MoRef> = nets.iter().filter(|n| n.kind == kind).cloned().collect();
            for o in self.retrieve_properties(kind, &of_kind, &["name"]).await? {
                let name = o.str("name").unwrap_or_default().to_string();
                out.push((o.obj, name));
            }
        }
        Ok(out)
    }

    /// The compute resource a resource pool (or vApp) belongs to (its `owner`).
    pub async fn resource_pool_owner(&self, pool: &MoRef) -> Result<Option<MoRef>> {
        let o = self
            .retrieve_properties(&pool.kind, std::slice::from_ref(pool), &["owner"])
            .await?;
        Ok(o.first().and_then(|o| o.moref("owner")))
    }

    /// Direct children of a folder (any type).
    pub async fn folder_children(&self, folder: &MoRef) -> Result<Vec<MoRef>> {
        let f = self
            .retrieve_properties("Folder", std::slice::from_ref(folder), &["childEntity"])
            .await?;
        let first = f.first().ok_or_else(|| Error::ManagedObjectNotFound {
            server: self.server().to_string(),
            method: "RetrievePropertiesEx".into(),
            object: folder.to_string(),
        })?;
        Ok(first.morefs("childEntity"))
    }
}

fn parse_object(o: &Node) -> Option<ObjectContent> {
    let obj = o.child("obj")?.as_moref()?;
    let mut props = BTreeMap::new();
    for p in o.children_named("propSet") {
        if let (Some(name), Some(val)) = (p.child_text("name"), p.child("val")) {
            props.insert(name.to_string(), val.clone());
        }
    }
    let missing = o
        .children_named("missingSet")
        .map(|m| {
            let path = m.child_text("path").unwrap_or_default().to_string();
            let fault = m
                .path(&["fault", "fault"])
                .and_then(|f| f.xsi_type.clone())
                .unwrap_or_else(|| "unknown fault".into());
            (path, fault)
        })
        .collect();
    Some(ObjectContent {
        obj,
        props,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tuple_parses_partial_versions() {
        let a = |v: &str| {
            About {
                version: v.into(),
                ..About::default()
            }
            .version_tuple()
        };
        assert_eq!(a("8.0.2"), Some((8, 0, 2)));
        assert_eq!(a("7.0"), Some((7, 0, 0)));
        assert_eq!(a("x"), None);
    }

    #[test]
    fn parses_object_content_with_missing_set() {
        let doc = r#"<objects><obj type="VirtualMachine">vm-1</obj>
            <propSet><name>name</name><val xsi:type="xsd:string">web</val></propSet>
            <missingSet><path>config</path><fault><fault xsi:type="NoPermission"/></fault></missingSet></objects>"#;
        let o = parse_object(&xml::parse(doc).unwrap()).unwrap();
        assert_eq!(o.obj, MoRef::new("VirtualMachine", "vm-1"));
        assert_eq!(o.str("name"), Some("web"));
        assert_eq!(
            o.missing,
            vec![("config".to_string(), "NoPermission".to_string())]
        );
    }
}
