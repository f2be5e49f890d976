//! Federation: merges what each upstream listed (tools, prompts, resources, resource templates) into one
//! namespaced catalog, and cuts it into views: the all-tools view served at `/mcp` and one view per topic
//! (`/mcp/{topic}`) with its globs and aliases applied. Each view answers two questions on the hot path: "which
//! upstream, under which name, serves this public tool/prompt/resource?" and "what is page N of this list?".
//!
//! Pure and synchronous: no I/O, no tokio. The gateway rebuilds a [`Catalog`] after every upstream (re)listing
//! and swaps it in. Items stay raw JSON: tools and prompts get their `name` key rewritten through
//! [`portcullis_protocol::RawObject`] (every other key's bytes kept), resources and templates are copied
//! verbatim, and list pages are rendered once at build time. This crate does not pin, scan or quarantine
//! definitions, and does not decide who may call what (policy does).
//!
//! Main type: [`Catalog`].

mod cursor;
mod federate;
mod topic;
mod view;

#[cfg(test)]
mod tests;

pub use cursor::BadCursor;
pub use view::View;

use portcullis_config::TopicConfig;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// What one upstream listed, items exactly as sent (all pages concatenated).
#[derive(Debug, Clone, Default)]
pub struct UpstreamLists {
    pub tools: Vec<Box<RawValue>>,
    pub prompts: Vec<Box<RawValue>>,
    pub resources: Vec<Box<RawValue>>,
    pub templates: Vec<Box<RawValue>>,
}

/// The four paginated MCP lists.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub const ALL: [ListKind; 4] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::Templates];

    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The key of the array in the list result.
    pub fn result_key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    pub fn from_method(m: &str) -> Option<Self> {
        ListKind::ALL.into_iter().find(|k| k.method() == m)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a public tool or prompt name goes: the upstream and the name that upstream knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub upstream: Arc<str>,
    pub name: String,
}

/// A catalog that cannot be served as configured. Items an upstream got wrong are warnings, not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "public name {name:?} is produced by upstream {first:?} and by upstream {second:?}; \
         rename one of the upstreams or change server.name_separator"
    )]
    Collision { name: String, first: String, second: String },
    #[error(
        "topic {topic:?}: alias {alias:?} is also the name of another tool in this topic; \
         choose a different alias in the topic's aliases"
    )]
    AliasCollision { topic: String, alias: String },
    #[error("topic {topic:?}: invalid glob {glob:?}: {reason}")]
    Glob { topic: String, glob: String, reason: String },
}

/// The federated catalog: the all-tools view plus one view per topic.
#[derive(Debug)]
pub struct Catalog {
    generation: u64,
    all: View,
    topics: Vec<(String, View)>,
    by_topic: HashMap<String, usize>,
    warnings: Vec<String>,
}

impl Catalog {
    /// Build every view. `upstreams` are in config order (that is the list order); `generation` is the
    /// caller's rebuild counter, baked into list cursors (a cursor from an older generation is still accepted
    /// while its offset is in range).
    ///
    /// Skipped with a warning (see [`Catalog::warnings`]): an item that is not a JSON object or lacks a string
    /// `name`/`uri`/`uriTemplate`; a tool or prompt whose public name is not `^[A-Za-z0-9_.-]{1,128}$`; a name an
    /// upstream lists twice; an alias whose target no upstream lists (it may not be up yet) or that the topic's
    /// globs do not include.
    ///
    /// Errors: two upstreams producing the same public tool or prompt name; an alias equal to another name
    /// listed in its topic; an invalid glob.
    pub fn build(
        sep: &str,
        all_tools_page_size: usize,
        upstreams: &[(Arc<str>, Arc<UpstreamLists>)],
        topics: &[TopicConfig],
        generation: u64,
    ) -> Result<Catalog, CatalogError> {
        let mut warnings = Vec::new();
        let fed = federate::federate(sep, upstreams, &mut warnings)?;
        let all = view::ViewInput {
            tools: fed.tools.iter().map(federate::Named::as_entry).collect(),
            prompts: fed.prompts.iter().map(federate::Named::as_entry).collect(),
            resources: fed.resources.iter().collect(),
            templates: fed.templates.iter().collect(),
        }
        .build(all_tools_page_size, generation);
        let mut views = Vec::with_capacity(topics.len());
        let mut by_topic = HashMap::with_capacity(topics.len());
        for t in topics {
            let v = topic::select(&fed, t, &mut warnings)?.build(t.page_size, generation);
            by_topic.insert(t.name.clone(), views.len());
            views.push((t.name.clone(), v));
        }
        Ok(Catalog { generation, all, topics: views, by_topic, warnings })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A catalog with nothing in it (before any upstream has been listed); topics exist but are empty.
    pub fn empty(topics: &[TopicConfig]) -> Catalog {
        let mk = |size| {
            view::ViewInput { tools: Vec::new(), prompts: Vec::new(), resources: Vec::new(), templates: Vec::new() }
                .build(size, 0)
        };
        let views: Vec<(String, View)> = topics.iter().map(|t| (t.name.clone(), mk(t.page_size))).collect();
        let by_topic = views.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        Catalog { generation: 0, all: mk(1), topics: views, by_topic, warnings: Vec::new() }
    }

    /// Problems found while building, one human-readable line each (for logs and `portcullis check`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `None` → the all-tools view (`/mcp`); `Some(topic)` → that topic's view, `None` if no such topic.
    pub fn view(&self, topic: Option<&str>) -> Option<&View> {
        match topic {
            None => Some(&self.all),
            Some(t) => self.by_topic.get(t).and_then(|&i| self.topics.get(i)).map(|(_, v)| v),
        }
    }

    /// Topic names in config order.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|(n, _)| n.as_str())
    }
}

/// `^[A-Za-z0-9_.-]{1,128}$`: what a public tool or prompt name may look like.
pub fn valid_public_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl UpstreamLists {
    pub fn get_mut(&mut self, kind: ListKind) -> &mut Vec<Box<RawValue>> {
        match kind {
            ListKind::Tools => &mut self.tools,
            ListKind::Prompts => &mut self.prompts,
            ListKind::Resources => &mut self.resources,
            ListKind::Templates => &mut self.templates,
        }
    }
}
