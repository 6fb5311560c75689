//! Changes: folders and bounded task waiting (VM clone / power off / destroy are in
//! `test_calls`, compiled only for tests and the simulators).

use std::time::{Duration, Instant};

use crate::MoRef;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::xml::{self, Node};

/// Deadline for the short tasks (destroying a folder; power off and destroy in tests).
pub(crate) const SHORT_TASK: Duration = Duration::from_secs(600);

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
