//! One served view of the catalog (the all-tools endpoint or a topic): routes, resource routing and
//! pre-rendered list pages.

use crate::cursor::{self, BadCursor};
use crate::federate::Located;
use crate::{ListKind, Route};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A tool or prompt as this view lists it.
pub(crate) struct Entry<'a> {
    pub public: Cow<'a, str>,
    pub text: Cow<'a, str>,
    pub route: &'a Route,
}

/// The items selected for a view, in list order.
pub(crate) struct ViewInput<'a> {
    pub tools: Vec<Entry<'a>>,
    pub prompts: Vec<Entry<'a>>,
    pub resources: Vec<&'a Located<'a>>,
    pub templates: Vec<&'a Located<'a>>,
}

/// What one endpoint shows and routes. Anything not listed here resolves to `None`, exactly like a name no
/// upstream has.
#[derive(Debug)]
pub struct View {
    tools: HashMap<String, Route>,
    tool_names: Vec<String>,
    prompts: HashMap<String, Route>,
    /// Exact resource URI → upstream; `None` when two upstreams list the same URI.
    uris: HashMap<String, Option<Arc<str>>>,
    /// (literal prefix of a uriTemplate, upstream).
    templates: Vec<(String, Arc<str>)>,
    upstreams: HashSet<Arc<str>>,
    /// Per [`ListKind`], the rendered pages.
    pages: [Vec<String>; 4],
    lens: [usize; 4],
    page_size: usize,
}

impl ViewInput<'_> {
    pub fn build(self, page_size: usize, generation: u64) -> View {
        let page_size = page_size.max(1);
        let mut upstreams = HashSet::new();
        let mut routes = |entries: &[Entry<'_>]| -> HashMap<String, Route> {
            entries
                .iter()
                .map(|e| {
                    upstreams.insert(e.route.upstream.clone());
                    (e.public.to_string(), e.route.clone())
                })
                .collect()
        };
        let tools = routes(&self.tools);
        let prompts = routes(&self.prompts);
        let mut uris: HashMap<String, Option<Arc<str>>> = HashMap::new();
        for r in &self.resources {
            upstreams.insert(r.upstream.clone());
            let slot = uris.entry(r.key.clone()).or_insert_with(|| Some(r.upstream.clone()));
            if slot.as_deref() != Some(&*r.upstream) {
                *slot = None;
            }
        }
        let mut templates = Vec::with_capacity(self.templates.len());
        for t in &self.templates {
            upstreams.insert(t.upstream.clone());
            templates.push((t.key.clone(), t.upstream.clone()));
        }
        let lists = [texts(&self.tools), texts(&self.prompts), raws(&self.resources), raws(&self.templates)];
        let lens = [0, 1, 2, 3].map(|i| lists[i].len());
        let pages = ListKind::ALL.map(|k| cursor::render_pages(k, &lists[k.index()], page_size, generation));
        View {
            tool_names: self.tools.iter().map(|e| e.public.to_string()).collect(),
            tools,
            prompts,
            uris,
            templates,
            upstreams,
            pages,
            lens,
            page_size,
        }
    }
}

impl View {
    pub fn resolve_tool(&self, public: &str) -> Option<&Route> {
        self.tools.get(public)
    }

    pub fn resolve_prompt(&self, public: &str) -> Option<&Route> {
        self.prompts.get(public)
    }

    /// Resource URIs are not renamed. An exact URI from a resources/list → that upstream; otherwise the
    /// upstream whose resource template has the longest literal prefix (text before the first `{`) of `uri`.
    /// `None` if nothing matches, or if two upstreams list the same URI or tie on the longest prefix.
    pub fn resolve_resource(&self, uri: &str) -> Option<Arc<str>> {
        if let Some(exact) = self.uris.get(uri) {
            return exact.clone();
        }
        let mut best: Option<(usize, &Arc<str>)> = None;
        let mut tied = false;
        for (prefix, up) in &self.templates {
            if !uri.starts_with(prefix.as_str()) {
                continue;
            }
            match best {
                Some((len, _)) if prefix.len() < len => {}
                Some((len, b)) if prefix.len() == len => tied |= **b != **up,
                _ => {
                    best = Some((prefix.len(), up));
                    tied = false;
                }
            }
        }
        best.filter(|_| !tied).map(|(_, up)| up.clone())
    }

    /// The JSON text of a complete list result for `cursor` (`None` = first page). Pages are rendered at build
    /// time, so this is a lookup. A cursor from an older catalog generation is accepted while its offset is in
    /// range; if the page size changed meanwhile, the page holding that offset is returned.
    pub fn page(&self, kind: ListKind, cursor: Option<&str>) -> Result<&str, BadCursor> {
        let pages = &self.pages[kind.index()];
        let index = match cursor {
            None => 0,
            Some(c) => {
                let (k, offset, _generation) = cursor::decode(c).ok_or(BadCursor)?;
                let offset = usize::try_from(offset).map_err(|_| BadCursor)?;
                if k != kind || offset >= self.lens[kind.index()] {
                    return Err(BadCursor);
                }
                offset / self.page_size
            }
        };
        pages.get(index).map(String::as_str).ok_or(BadCursor)
    }

    /// Whether any tool, prompt, resource or resource template of `upstream` is in this view.
    pub fn sees_upstream(&self, upstream: &str) -> bool {
        self.upstreams.contains(upstream)
    }

    /// Public tool names in list order (for `portcullis check`).
    pub fn tool_names(&self) -> Vec<&str> {
        self.tool_names.iter().map(String::as_str).collect()
    }

    /// Number of items in a list.
    pub fn len(&self, kind: ListKind) -> usize {
        self.lens[kind.index()]
    }
}

fn texts<'s>(entries: &'s [Entry<'_>]) -> Vec<&'s str> {
    entries.iter().map(|e| &*e.text).collect()
}

fn raws<'s>(items: &[&Located<'s>]) -> Vec<&'s str> {
    items.iter().map(|l| l.text).collect()
}
