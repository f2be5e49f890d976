//! A topic's slice of the federated catalog: tools by glob (renamed by aliases), prompts by glob, and the
//! resources and templates of its resource upstreams.

use crate::federate::Federated;
use crate::view::{Entry, ViewInput};
use crate::{valid_public_name, CatalogError};
use globset::{Glob, GlobSet, GlobSetBuilder};
use portcullis_config::TopicConfig;
use std::collections::{HashMap, HashSet};

pub(crate) fn select<'a>(
    fed: &'a Federated<'a>,
    t: &TopicConfig,
    warnings: &mut Vec<String>,
) -> Result<ViewInput<'a>, CatalogError> {
    let topic = &t.name;
    let tool_globs = globs(topic, &t.tools)?;
    let prompt_globs = globs(topic, &t.prompts)?;

    // Target → the aliases that rename it in this topic.
    let known: HashSet<&str> = fed.tools.iter().map(|n| n.public.as_str()).collect();
    let mut aliases: HashMap<&str, Vec<&str>> = HashMap::new();
    for (alias, target) in &t.aliases {
        if !valid_public_name(alias) {
            warnings
                .push(format!("topic {topic:?}: alias {alias:?} ignored: not 1-128 characters from [A-Za-z0-9_.-]"));
        } else if !known.contains(target.as_str()) {
            warnings
                .push(format!("topic {topic:?}: alias {alias:?} targets {target:?}, which no upstream lists (yet)"));
        } else if !tool_globs.is_match(target) {
            warnings.push(format!(
                "topic {topic:?}: alias {alias:?} ignored: its target {target:?} is not included by the \
                 topic's tools globs; add it to tools"
            ));
        } else {
            aliases.entry(target).or_default().push(alias);
        }
    }

    // The alias replaces the federated name: a tool is listed (and resolves) under its aliases only.
    let mut tools = Vec::new();
    let mut listed: HashSet<&str> = HashSet::new();
    for n in fed.tools.iter().filter(|n| tool_globs.is_match(&n.public)) {
        let Some(names) = aliases.get(n.public.as_str()) else {
            if !listed.insert(&n.public) {
                return Err(alias_collision(topic, &n.public));
            }
            tools.push(n.as_entry());
            continue;
        };
        for &alias in names {
            if !listed.insert(alias) {
                return Err(alias_collision(topic, alias));
            }
            tools.push(Entry { public: alias.to_owned().into(), text: n.render_as(alias).into(), route: &n.route });
        }
    }
    let prompts = fed.prompts.iter().filter(|n| prompt_globs.is_match(&n.public)).map(|n| n.as_entry()).collect();
    let shows = |up: &str| t.resource_upstreams.iter().any(|r| r == up);
    Ok(ViewInput {
        tools,
        prompts,
        resources: fed.resources.iter().filter(|r| shows(&r.upstream)).collect(),
        templates: fed.templates.iter().filter(|r| shows(&r.upstream)).collect(),
    })
}

fn alias_collision(topic: &str, alias: &str) -> CatalogError {
    CatalogError::AliasCollision { topic: topic.to_owned(), alias: alias.to_owned() }
}

fn globs(topic: &str, patterns: &[String]) -> Result<GlobSet, CatalogError> {
    let mut b = GlobSetBuilder::new();
    for g in patterns {
        b.add(Glob::new(g).map_err(|e| CatalogError::Glob {
            topic: topic.to_owned(),
            glob: g.clone(),
            reason: e.to_string(),
        })?);
    }
    b.build().map_err(|e| CatalogError::Glob {
        topic: topic.to_owned(),
        glob: patterns.join(", "),
        reason: e.to_string(),
    })
}
