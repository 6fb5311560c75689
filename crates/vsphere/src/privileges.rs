//! `AuthorizationManager.HasUserPrivilegeOnEntities`: which privileges a user lacks where.

use crate::MoRef;
use crate::client::Client;
use crate::error::Result;
use crate::xml::{self, Node};

/// Result of a privilege check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivilegeReport {
    /// User that was checked.
    pub user: String,
    /// For each entity lacking something: the entity and the missing privilege ids, in the
    /// order they were asked. Entities with every privilege are absent.
    pub missing: Vec<(MoRef, Vec<String>)>,
}

impl PrivilegeReport {
    /// True when nothing is missing.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Missing privileges on one entity.
    pub fn missing_on(&self, entity: &MoRef) -> &[String] {
        self.missing
            .iter()
            .find(|(e, _)| e == entity)
            .map_or(&[], |(_, p)| p.as_slice())
    }

    /// One line per entity, for an administrator: `Folder:group-v3: Folder.Create, ...`.
    pub fn describe(&self) -> String {
        self.missing
            .iter()
            .map(|(e, p)| format!("{e}: {}", p.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Client {
    /// Checks that `user` holds every privilege of `privileges` on every entity of `entities`.
    pub async fn check_user_privileges(
        &self,
        user: &str,
        entities: &[MoRef],
        privileges: &[&str],
    ) -> Result<PrivilegeReport> {
        let am = self.service_content().await?.authorization_manager.clone();
        let mut args: String = entities
            .iter()
            .map(|e| xml::moref_el("entities", e))
            .collect();
        args.push_str(&xml::el("userName", user));
        for p in privileges {
            args.push_str(&xml::el("privId", p));
        }
        let res = self
            .soap("HasUserPrivilegeOnEntities", &am, &args, true)
            .await?;
        Ok(report(user, entities, privileges, &res))
    }
}

impl Client {
    /// Privilege ids this vCenter defines (`AuthorizationManager.privilegeList`). Versions
    /// differ (e.g. `Cns.Searchable` exists from 6.7U3); the OpenShift installer checks only
    /// the privileges the server knows (openshift/installer
    /// `pkg/asset/installconfig/vsphere/permissions.go`, `pruneToAvailablePermissions`).
    pub async fn defined_privileges(&self) -> Result<std::collections::BTreeSet<String>> {
        let am = self.service_content().await?.authorization_manager.clone();
        let objs = self
            .retrieve_properties(
                "AuthorizationManager",
                std::slice::from_ref(&am),
                &["privilegeList"],
            )
            .await?;
        Ok(objs
            .first()
            .and_then(|o| o.props.get("privilegeList"))
            .map(|list| {
                list.children_named("AuthorizationPrivilege")
                    .filter_map(|p| p.child_text("privId"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Builds the report; an entity or privilege the server did not answer for counts as missing
/// (a preflight must fail closed).
fn report(user: &str, entities: &[MoRef], privileges: &[&str], res: &Node) -> PrivilegeReport {
    let mut missing = Vec::new();
    for entity in entities {
        let answer = res
            .children_named("returnval")
            .find(|r| r.child("entity").and_then(Node::as_moref).as_ref() == Some(entity));
        let lacking: Vec<String> = privileges
            .iter()
            .filter(|p| {
                let granted = answer.and_then(|a| {
                    a.children_named("privAvailability")
                        .find(|pa| pa.child_text("privId") == Some(**p))
                        .and_then(|pa| pa.child("isGranted"))
                        .and_then(Node::as_bool)
                });
                granted != Some(true)
            })
            .map(|p| p.to_string())
            .collect();
        if !lacking.is_empty() {
            missing.push((entity.clone(), lacking));
        }
    }
    PrivilegeReport {
        user: user.to_string(),
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape of a real vCenter 8 answer (vim25 WSDL `EntityPrivilege`).
    const RECORDED: &str = r#"<HasUserPrivilegeOnEntitiesResponse xmlns="urn:vim25">
      <returnval><entity type="Folder">group-v4</entity>
        <privAvailability><privId>Folder.Create</privId><isGranted>false</isGranted></privAvailability>
        <privAvailability><privId>System.Read</privId><isGranted>true</isGranted></privAvailability></returnval>
      <returnval><entity type="Datacenter">datacenter-3</entity>
        <privAvailability><privId>Folder.Create</privId><isGranted>true</isGranted></privAvailability>
        <privAvailability><privId>System.Read</privId><isGranted>true</isGranted></privAvailability></returnval>
    </HasUserPrivilegeOnEntitiesResponse>"#;

    #[test]
    fn reports_exactly_the_missing_privileges_and_fails_closed() {
        let res = xml::parse(RECORDED).unwrap();
        let folder = MoRef::new("Folder", "group-v4");
        let dc = MoRef::new("Datacenter", "datacenter-3");
        let unanswered = MoRef::new("Folder", "group-h5");
        let r = report(
            "u",
            &[folder.clone(), dc.clone(), unanswered.clone()],
            &["Folder.Create", "System.Read"],
            &res,
        );
        assert_eq!(r.missing_on(&folder), ["Folder.Create"]);
        assert!(r.missing_on(&dc).is_empty());
        assert_eq!(r.missing_on(&unanswered), ["Folder.Create", "System.Read"]);
        assert!(!r.is_complete());
        assert!(r.describe().contains("Folder:group-v4: Folder.Create"));
    }
}
