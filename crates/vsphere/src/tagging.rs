//! vAPI tagging (`/rest/com/vmware/cis/tagging/...`): categories, tags, associations.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::MoRef;
use crate::client::Client;
use crate::error::{Error, RestErrorKind, Result};

const CATEGORY: &str = "/com/vmware/cis/tagging/category";
const TAG: &str = "/com/vmware/cis/tagging/tag";
const ASSOCIATION: &str = "/com/vmware/cis/tagging/tag-association";

/// How many tags of a category one object may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Cardinality {
    /// At most one tag of the category per object (topology categories).
    Single,
    /// Any number.
    Multiple,
}

/// A tag category as vCenter returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Category {
    /// `urn:vmomi:InventoryServiceCategory:...`.
    pub id: String,
    /// Name, unique per vCenter.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Cardinality.
    pub cardinality: Cardinality,
    /// Object types the category's tags can be attached to, as stored by the server (real
    /// vCenter may drop the `urn:vim25:` prefix that was sent; empty means all types).
    #[serde(default)]
    pub associable_types: Vec<String>,
}

/// What a category must be; used to create it or validate an existing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorySpec {
    /// Name.
    pub name: String,
    /// Description used when creating.
    pub description: String,
    /// Required cardinality.
    pub cardinality: Cardinality,
    /// Types that must be associable (`Datacenter` or `urn:vim25:Datacenter`).
    pub associable_types: Vec<String>,
}

/// A tag as vCenter returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tag {
    /// `urn:vmomi:InventoryServiceTag:...`.
    pub id: String,
    /// Name, unique per category.
    pub name: String,
    /// Category id.
    pub category_id: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// `urn:vim25:Datacenter` and `Datacenter` name the same type; compare without the prefix.
pub fn normalise_associable_type(t: &str) -> &str {
    t.strip_prefix("urn:vim25:").unwrap_or(t)
}

impl Category {
    /// Why this category cannot serve `spec`, or `None` when it can.
    pub fn incompatibility(&self, spec: &CategorySpec) -> Option<String> {
        if self.cardinality != spec.cardinality {
            return Some(
                format!(
                    "cardinality is {:?}, {:?} is required",
                    self.cardinality, spec.cardinality
                )
                .to_uppercase(),
            );
        }
        if self.associable_types.is_empty() {
            return None; // Associable with every type.
        }
        let have: Vec<&str> = self
            .associable_types
            .iter()
            .map(|t| normalise_associable_type(t))
            .collect();
        let lacking: Vec<&str> = spec
            .associable_types
            .iter()
            .map(|t| normalise_associable_type(t))
            .filter(|t| !have.contains(t))
            .collect();
        (!lacking.is_empty()).then(|| format!("not associable with {}", lacking.join(", ")))
    }
}

/// Percent-encodes an id for a URL path segment (ids are URNs with `:`; keep those).
fn seg(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn ids(v: Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .into_iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl Client {
    fn decode<T: serde::de::DeserializeOwned>(&self, endpoint: &str, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| self.protocol(endpoint, &e.to_string()))
    }

    /// Ids of all categories.
    pub async fn list_categories(&self) -> Result<Vec<String>> {
        Ok(ids(self.rest(Method::GET, CATEGORY, None, true).await?))
    }

    /// One category.
    pub async fn get_category(&self, id: &str) -> Result<Category> {
        let v = self
            .rest(
                Method::GET,
                &format!("{CATEGORY}/id:{}", seg(id)),
                None,
                true,
            )
            .await?;
        self.decode("GET category", v)
    }

    /// The category named `name`, if any.
    pub async fn find_category(&self, name: &str) -> Result<Option<Category>> {
        for id in self.list_categories().await? {
            match self.get_category(&id).await {
                Ok(c) if c.name == name => return Ok(Some(c)),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {} // Deleted concurrently.
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Creates a category; fails with `already_exists` if the name is taken.
    pub async fn create_category(&self, spec: &CategorySpec) -> Result<String> {
        let body = json!({"create_spec": {
            "name": spec.name, "description": spec.description,
            "cardinality": spec.cardinality, "associable_types": spec.associable_types,
        }});
        let v = self
            .rest(Method::POST, CATEGORY, Some(&body), false)
            .await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.protocol("POST category", "no id returned"))
    }

    /// Returns the category named `spec.name`, creating it when missing. An existing one
    /// must be compatible (same cardinality, every required type associable, compared
    /// without the `urn:vim25:` prefix); otherwise [`Error::IncompatibleCategory`].
    pub async fn ensure_category(&self, spec: &CategorySpec) -> Result<Category> {
        let existing = match self.find_category(&spec.name).await? {
            Some(c) => c,
            None => match self.create_category(spec).await {
                Ok(id) => return self.get_category(&id).await,
                // Created concurrently by someone else: validate theirs.
                Err(e) if e.is_already_exists() => {
                    self.find_category(&spec.name).await?.ok_or(e)?
                }
                Err(e) => return Err(e),
            },
        };
        match existing.incompatibility(spec) {
            None => Ok(existing),
            Some(reason) => Err(Error::IncompatibleCategory {
                server: self.server().to_string(),
                name: spec.name.clone(),
                reason,
            }),
        }
    }

    /// Deletes a category (and, server-side, its tags). Already gone is success.
    pub async fn delete_category(&self, id: &str) -> Result<()> {
        match self
            .rest(
                Method::DELETE,
                &format!("{CATEGORY}/id:{}", seg(id)),
                None,
                true,
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Ids of all tags.
    pub async fn list_tags(&self) -> Result<Vec<String>> {
        Ok(ids(self.rest(Method::GET, TAG, None, true).await?))
    }

    /// One tag.
    pub async fn get_tag(&self, id: &str) -> Result<Tag> {
        let v = self
            .rest(Method::GET, &format!("{TAG}/id:{}", seg(id)), None, true)
            .await?;
        self.decode("GET tag", v)
    }

    /// Ids of the tags of a category.
    pub async fn list_tags_for_category(&self, category_id: &str) -> Result<Vec<String>> {
        let path = format!(
            "{TAG}/id:{}?~action=list-tags-for-category",
            seg(category_id)
        );
        Ok(ids(self.rest(Method::POST, &path, None, true).await?))
    }

    /// The tag named `name` in a category, if any.
    pub async fn find_tag(&self, category_id: &str, name: &str) -> Result<Option<Tag>> {
        for id in self.list_tags_for_category(category_id).await? {
            match self.get_tag(&id).await {
                Ok(t) if t.name == name => return Ok(Some(t)),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Creates a tag; fails with `already_exists` if the category has one with that name.
    pub async fn create_tag(
        &self,
        category_id: &str,
        name: &str,
        description: &str,
    ) -> Result<String> {
        let body = json!({"create_spec": {"name": name, "description": description, "category_id": category_id}});
        let v = self.rest(Method::POST, TAG, Some(&body), false).await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.protocol("POST tag", "no id returned"))
    }

    /// Returns the tag `name` of the category, creating it when missing.
    pub async fn ensure_tag(
        &self,
        category_id: &str,
        name: &str,
        description: &str,
    ) -> Result<Tag> {
        if let Some(t) = self.find_tag(category_id, name).await? {
            return Ok(t);
        }
        match self.create_tag(category_id, name, description).await {
            Ok(id) => self.get_tag(&id).await,
            Err(e) if e.is_already_exists() => self.find_tag(category_id, name).await?.ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Deletes a tag. Already gone is success.
    pub async fn delete_tag(&self, id: &str) -> Result<()> {
        match self
            .rest(Method::DELETE, &format!("{TAG}/id:{}", seg(id)), None, true)
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Attaches a tag to an object. An existing attachment is success.
    pub async fn attach_tag(&self, tag_id: &str, object: &MoRef) -> Result<()> {
        let path = format!("{ASSOCIATION}/id:{}?~action=attach", seg(tag_id));
        // Attaching is idempotent server-side, so a retry after a lost response is safe.
        match self
            .rest(
                Method::POST,
                &path,
                Some(&json!({"object_id": object})),
                true,
            )
            .await
        {
            Err(Error::Rest {
                kind: RestErrorKind::AlreadyExists,
                ..
            }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Detaches a tag from an object.
    pub async fn detach_tag(&self, tag_id: &str, object: &MoRef) -> Result<()> {
        let path = format!("{ASSOCIATION}/id:{}?~action=detach", seg(tag_id));
        self.rest(
            Method::POST,
            &path,
            Some(&json!({"object_id": object})),
            true,
        )
        .await
        .map(|_| ())
    }

    /// Ids of the tags attached to an object.
    pub async fn list_attached_tags(&self, object: &MoRef) -> Result<Vec<String>> {
        let path = format!("{ASSOCIATION}?~action=list-attached-tags");
        Ok(ids(self
            .rest(
                Method::POST,
                &path,
                Some(&json!({"object_id": object})),
                true,
            )
            .await?))
    }

    /// The tags of category `category_id` attached to `object` (empty: it carries none).
    /// Lets a phase detect an object already tagged with a *different* region/zone.
    pub async fn attached_tags_of_category(
        &self,
        object: &MoRef,
        category_id: &str,
    ) -> Result<Vec<Tag>> {
        let mut out = Vec::new();
        for id in self.list_attached_tags(object).await? {
            match self.get_tag(&id).await {
                Ok(t) if t.category_id == category_id => out.push(t),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /rest/com/vmware/cis/tagging/category/id:...` as recorded from a vCenter 8.0U2:
    /// the category was created with `urn:vim25:` types and comes back without the prefix.
    const RECORDED_CATEGORY: &str = r#"{"value":{"associable_types":["ClusterComputeResource","Datacenter"],
        "name":"openshift-zone","description":"Added by openshift-install do not remove",
        "id":"urn:vmomi:InventoryServiceCategory:9c4f5c8a-1c1e-4b6c-9a33-4d0d0b1a2f10:GLOBAL",
        "used_by":[],"cardinality":"SINGLE"}}"#;

    fn zone_spec() -> CategorySpec {
        CategorySpec {
            name: "openshift-zone".into(),
            description: String::new(),
            cardinality: Cardinality::Single,
            associable_types: vec![
                "urn:vim25:Datacenter".into(),
                "urn:vim25:ClusterComputeResource".into(),
            ],
        }
    }

    #[test]
    fn recorded_category_without_prefix_is_compatible() {
        let v: Value = serde_json::from_str(RECORDED_CATEGORY).unwrap();
        let c: Category = serde_json::from_value(v["value"].clone()).unwrap();
        assert_eq!(c.cardinality, Cardinality::Single);
        assert_eq!(c.incompatibility(&zone_spec()), None);
    }

    #[test]
    fn incompatible_categories_say_why() {
        let mut c: Category = serde_json::from_value(
            serde_json::from_str::<Value>(RECORDED_CATEGORY).unwrap()["value"].clone(),
        )
        .unwrap();
        c.associable_types = vec!["urn:vim25:Datacenter".into()];
        assert_eq!(
            c.incompatibility(&zone_spec()).as_deref(),
            Some("not associable with ClusterComputeResource")
        );
        c.cardinality = Cardinality::Multiple;
        assert!(
            c.incompatibility(&zone_spec())
                .unwrap()
                .contains("MULTIPLE")
        );
        c.cardinality = Cardinality::Single;
        c.associable_types.clear();
        assert_eq!(
            c.incompatibility(&zone_spec()),
            None,
            "empty associable types means all types"
        );
    }

    #[test]
    fn ids_are_path_safe() {
        assert_eq!(
            seg("urn:vmomi:X:a b/c:GLOBAL"),
            "urn:vmomi:X:a%20b%2Fc:GLOBAL"
        );
    }
}
