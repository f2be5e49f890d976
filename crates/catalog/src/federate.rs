//! Upstream lists → namespaced items: parse each item once, give tools and prompts their federated name,
//! find collisions, and collect warnings for items that cannot be served.

use crate::view::Entry;
use crate::{valid_public_name, CatalogError, ListKind, Route, UpstreamLists};
use portcullis_protocol::RawObject;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// A tool or prompt under its federated name.
pub(crate) struct Named {
    pub public: String,
    pub route: Route,
    /// The item with `name` already set to `public`; re-rendered only for aliases.
    obj: RawObject,
    pub rendered: String,
}

impl Named {
    pub fn as_entry(&self) -> Entry<'_> {
        Entry { public: self.public.as_str().into(), text: self.rendered.as_str().into(), route: &self.route }
    }

    /// The item as listed under another public name (a topic alias).
    pub fn render_as(&self, public: &str) -> String {
        let mut o = self.obj.clone();
        o.set_str("name", public);
        o.to_json()
    }
}

/// A resource (keyed by its `uri`) or a resource template (keyed by its literal prefix), bytes as sent.
pub(crate) struct Located<'a> {
    pub upstream: Arc<str>,
    pub key: String,
    pub text: &'a str,
}

pub(crate) struct Federated<'a> {
    pub tools: Vec<Named>,
    pub prompts: Vec<Named>,
    pub resources: Vec<Located<'a>>,
    pub templates: Vec<Located<'a>>,
}

pub(crate) fn federate<'a>(
    sep: &str,
    upstreams: &'a [(Arc<str>, Arc<UpstreamLists>)],
    warnings: &mut Vec<String>,
) -> Result<Federated<'a>, CatalogError> {
    let mut fed = Federated { tools: Vec::new(), prompts: Vec::new(), resources: Vec::new(), templates: Vec::new() };
    let (mut tool_owner, mut prompt_owner) = (HashMap::new(), HashMap::new());
    let mut uri_owner: HashMap<String, Arc<str>> = HashMap::new();
    for (up, lists) in upstreams {
        let mut named = Namer { up, sep, warnings: &mut *warnings };
        named.add(ListKind::Tools, &lists.tools, &mut tool_owner, &mut fed.tools)?;
        named.add(ListKind::Prompts, &lists.prompts, &mut prompt_owner, &mut fed.prompts)?;
        for (i, item) in lists.resources.iter().enumerate() {
            let Some(uri) = string_key(up, ListKind::Resources, i, item, "uri", warnings) else {
                continue;
            };
            let first = uri_owner.entry(uri.clone()).or_insert_with(|| up.clone());
            if **first != **up {
                warnings.push(format!(
                    "resource {uri:?} is listed by upstream {first:?} and by upstream {up:?}; \
                     resources/read for it is refused as ambiguous"
                ));
            }
            fed.resources.push(Located { upstream: up.clone(), key: uri, text: item.get() });
        }
        for (i, item) in lists.templates.iter().enumerate() {
            let key = "uriTemplate";
            let Some(t) = string_key(up, ListKind::Templates, i, item, key, warnings) else {
                continue;
            };
            let prefix = t.split('{').next().unwrap_or_default().to_owned();
            fed.templates.push(Located { upstream: up.clone(), key: prefix, text: item.get() });
        }
    }
    Ok(fed)
}

struct Namer<'w> {
    up: &'w Arc<str>,
    sep: &'w str,
    warnings: &'w mut Vec<String>,
}

impl Namer<'_> {
    fn add(
        &mut self,
        kind: ListKind,
        items: &[Box<RawValue>],
        owner: &mut HashMap<String, Arc<str>>,
        out: &mut Vec<Named>,
    ) -> Result<(), CatalogError> {
        let up = self.up;
        let what = singular(kind);
        for (i, item) in items.iter().enumerate() {
            let mut obj = match RawObject::parse(item.get()) {
                Ok(o) => o,
                Err(e) => {
                    self.warnings.push(format!(
                        "upstream {up:?}: {what} #{i} skipped: not a JSON object without duplicate keys ({e})"
                    ));
                    continue;
                }
            };
            let Some(name) = obj.get_str("name") else {
                self.warnings.push(format!("upstream {up:?}: {what} #{i} skipped: it has no string \"name\""));
                continue;
            };
            let public = format!("{up}{}{name}", self.sep);
            if !valid_public_name(&public) {
                self.warnings.push(format!(
                    "upstream {up:?}: {what} {name:?} skipped: its public name {public:?} is not \
                     1-128 characters from [A-Za-z0-9_.-]"
                ));
                continue;
            }
            match owner.get(&public) {
                Some(first) if **first == **up => {
                    self.warnings
                        .push(format!("upstream {up:?}: {what} {name:?} is listed twice; the second one is skipped"));
                    continue;
                }
                Some(first) => {
                    return Err(CatalogError::Collision {
                        name: public,
                        first: first.to_string(),
                        second: up.to_string(),
                    })
                }
                None => {}
            }
            owner.insert(public.clone(), up.clone());
            obj.set_str("name", &public);
            let rendered = obj.to_json();
            out.push(Named { public, route: Route { upstream: up.clone(), name }, obj, rendered });
        }
        Ok(())
    }
}

/// The string at `key` of a resource or template item, or a warning.
fn string_key(
    up: &str,
    kind: ListKind,
    i: usize,
    item: &RawValue,
    key: &str,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let found = RawObject::parse(item.get())
        .map_err(|e| format!("not a JSON object without duplicate keys ({e})"))
        .and_then(|o| o.get_str(key).ok_or_else(|| format!("it has no string {key:?}")));
    match found {
        Ok(s) => Some(s),
        Err(why) => {
            warnings.push(format!("upstream {up:?}: {} #{i} skipped: {why}", singular(kind)));
            None
        }
    }
}

fn singular(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Tools => "tool",
        ListKind::Prompts => "prompt",
        ListKind::Resources => "resource",
        ListKind::Templates => "resource template",
    }
}
