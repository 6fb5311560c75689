//! Changes: folders, VM clone / power off / destroy, and bounded task waiting.

use std::time::{Duration, Instant};

use crate::MoRef;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::xml::{self, Node};

/// Where and how to clone a VM.
#[derive(Debug, Clone)]
pub struct CloneSpec {
    /// Destination folder.
    pub folder: MoRef,
    /// Destination resource pool (required when cloning a template).
    pub pool: Option<MoRef>,
    /// Destination datastore (default: the source's).
    pub datastore: Option<MoRef>,
    /// Power on after cloning.
    pub power_on: bool,
    /// Deadline for the clone task.
    pub timeout: Duration,
}

impl CloneSpec {
    /// Clone into `folder` and `pool`, powered off, with a 30-minute deadline.
    pub fn new(folder: MoRef, pool: Option<MoRef>) -> Self {
        Self {
            folder,
            pool,
            datastore: None,
            power_on: false,
            timeout: Duration::from_secs(1800),
        }
    }
}

/// Deadline for the short tasks (power off, destroy).
const SHORT_TASK: Duration = Duration::from_secs(600);

/// Inventory paths escape `%`, `/` and `\` in names as `%25`, `%2f`, `%5c`; `CreateFolder`
/// takes the plain name.
fn unescape_path_component(s: &str) -> String {
    s.replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "\\")
        .replace("%5C", "\\")
        .replace("%25", "%")
}

impl Client {
    /// Creates every missing folder of a VM-folder path (`/<dc>/vm/a/b`) and returns the last
    /// one. Idempotent: an existing path is returned as is, and a concurrent creator's
    /// `DuplicateName` is resolved by looking the folder up again.
    pub async fn ensure_folder(&self, path: &str) -> Result<MoRef> {
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() < 3 || parts[1] != "vm" {
            return Err(Error::Config(format!(
                "folder path {path:?} must look like /<datacenter>/vm/<folder>[/...]"
            )));
        }
        if let Some(found) = self.find_by_inventory_path(path).await? {
            return self.expect_folder(path, found);
        }
        // Walk down from the datacenter's vm folder, creating what is missing.
        let base = format!("/{}/vm", parts[0]);
        let mut parent = self.find_folder(&base).await?;
        let mut current = base;
        let mut known_missing = false;
        for name in &parts[2..] {
            current = format!("{current}/{name}");
            let existing = if known_missing {
                None
            } else {
                self.find_by_inventory_path(&current).await?
            };
            parent = match existing {
                Some(found) => self.expect_folder(&current, found)?,
                None => {
                    known_missing = true;
                    match self
                        .create_folder(&parent, &unescape_path_component(name))
                        .await
                    {
                        Ok(created) => created,
                        Err(Error::DuplicateName { .. }) => {
                            known_missing = false;
                            let found =
                                self.find_by_inventory_path(&current)
                                    .await?
                                    .ok_or_else(|| Error::NotFound {
                                        server: self.server().to_string(),
                                        kind: "folder".into(),
                                        path: current.clone(),
                                    })?;
                            self.expect_folder(&current, found)?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
        }
        Ok(parent)
    }

    /// `Folder.CreateFolder`: one level; [`Error::DuplicateName`] when the name is taken.
    pub async fn create_folder(&self, parent: &MoRef, name: &str) -> Result<MoRef> {
        let res = self
            .soap("CreateFolder", parent, &xml::el("name", name), false)
            .await?;
        res.child("returnval")
            .and_then(Node::as_moref)
            .ok_or_else(|| self.protocol("CreateFolder", "no folder returned"))
    }

    fn expect_folder(&self, path: &str, found: MoRef) -> Result<MoRef> {
        if found.kind == "Folder" {
            Ok(found)
        } else {
            Err(Error::DuplicateName {
                server: self.server().to_string(),
                method: "CreateFolder".into(),
                name: path.to_string(),
                parent: format!("the inventory (a {} already uses this path)", found.kind),
            })
        }
    }

    /// Destroys a folder only if it has no children (rollback must never delete VMs).
    pub async fn destroy_empty_folder(&self, folder: &MoRef) -> Result<()> {
        let children = self.folder_children(folder).await?;
        if !children.is_empty() {
            return Err(Error::FolderNotEmpty {
                server: self.server().to_string(),
                folder: folder.to_string(),
                children: children.len(),
            });
        }
        let task = self.start_task("Destroy_Task", folder, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Clones `source` (VM or template) as `name`; returns the new VM.
    pub async fn clone_vm(&self, source: &MoRef, name: &str, spec: &CloneSpec) -> Result<MoRef> {
        let mut location = String::new();
        if let Some(ds) = &spec.datastore {
            location.push_str(&xml::moref_el("datastore", ds));
        }
        if let Some(pool) = &spec.pool {
            location.push_str(&xml::moref_el("pool", pool));
        }
        let args = format!(
            "{}{}<spec><location>{location}</location><template>false</template><powerOn>{}</powerOn></spec>",
            xml::moref_el("folder", &spec.folder),
            xml::el("name", name),
            spec.power_on
        );
        let task = self.start_task("CloneVM_Task", source, &args).await?;
        let result = self.wait_for_task(&task, spec.timeout).await?;
        result
            .and_then(|n| n.as_moref())
            .ok_or_else(|| self.protocol("CloneVM_Task", "task result is not a VM reference"))
    }

    /// Powers a VM off; already off is success.
    pub async fn power_off_vm(&self, vm: &MoRef) -> Result<()> {
        let state = self
            .retrieve_properties(
                "VirtualMachine",
                std::slice::from_ref(vm),
                &["runtime.powerState"],
            )
            .await?;
        let state = state
            .first()
            .and_then(|o| o.str("runtime.powerState"))
            .unwrap_or_default()
            .to_string();
        if state == "poweredOff" {
            return Ok(());
        }
        let task = self.start_task("PowerOffVM_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Powers a VM off if needed and destroys it (disks included).
    pub async fn destroy_vm(&self, vm: &MoRef) -> Result<()> {
        self.power_off_vm(vm).await?;
        let task = self.start_task("Destroy_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Destroys a VM without powering it off first: fails on a powered-on VM, as vCenter does.
    pub async fn destroy_vm_no_power_off(&self, vm: &MoRef) -> Result<()> {
        let task = self.start_task("Destroy_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Starts a `*_Task` method and returns the task reference.
    pub(crate) async fn start_task(&self, method: &str, this: &MoRef, args: &str) -> Result<MoRef> {
        let res = self.soap(method, this, args, false).await?;
        res.child("returnval")
            .and_then(Node::as_moref)
            .ok_or_else(|| self.protocol(method, "no task returned"))
    }

    /// Polls `task` until it succeeds (returns `info.result`), fails (returns the task's fault
    /// as [`Error::TaskFailed`]) or `deadline` passes ([`Error::TaskTimeout`]).
    pub async fn wait_for_task(&self, task: &MoRef, deadline: Duration) -> Result<Option<Node>> {
        let started = Instant::now();
        let mut interval = self.poll_interval();
        loop {
            let info = self
                .retrieve_properties("Task", std::slice::from_ref(task), &["info"])
                .await?;
            let info = info
                .first()
                .and_then(|o| o.props.get("info"))
                .ok_or_else(|| Error::ManagedObjectNotFound {
                    server: self.server().to_string(),
                    method: "wait_for_task".into(),
                    object: task.to_string(),
                })?;
            let state = info.child_text("state").unwrap_or_default().to_string();
            let operation = info
                .child_text("descriptionId")
                .or(info.child_text("name"))
                .unwrap_or("task")
                .to_string();
            match state.as_str() {
                "success" => return Ok(info.child("result").cloned()),
                "error" => {
                    let err = info.child("error");
                    let message = self.redact(
                        err.and_then(|e| e.child_text("localizedMessage"))
                            .unwrap_or_default(),
                    );
                    let target = info
                        .child("entity")
                        .and_then(Node::as_moref)
                        .unwrap_or_else(|| task.clone());
                    let fault = self.map_fault_detail(
                        &operation,
                        &target,
                        err.and_then(|e| e.child("fault")),
                        message,
                    );
                    return Err(Error::TaskFailed {
                        server: self.server().to_string(),
                        operation,
                        task: task.value.clone(),
                        fault: Box::new(fault),
                    });
                }
                _ => {}
            }
            let waited = started.elapsed();
            if waited >= deadline {
                return Err(Error::TaskTimeout {
                    server: self.server().to_string(),
                    operation,
                    task: task.value.clone(),
                    state,
                    waited,
                });
            }
            tokio::time::sleep(interval.min(deadline - waited)).await;
            interval = (interval * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_components_are_unescaped_for_create_folder() {
        assert_eq!(super::unescape_path_component("a%2fb%5Cc%25d"), "a/b\\c%d");
    }
}
