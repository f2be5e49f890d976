//! Checks serde cannot express. Each failure returns (key path, reason).

use crate::Config;
use std::collections::HashSet;

type Res = Result<(), (String, String)>;

/// Names that end up in federated tool names: the MCP tool-name alphabet.
pub fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn err(key: String, reason: impl Into<String>) -> Res {
    Err((key, reason.into()))
}

pub(crate) fn validate(cfg: &Config) -> Res {
    let sep = &cfg.server.name_separator;
    if sep.is_empty() || !valid_name(sep, 8) {
        return err("server.name_separator".into(), "must be 1-8 characters from [A-Za-z0-9_.-]");
    }
    if cfg.server.max_body == 0 {
        return err("server.max_body".into(), "must be greater than zero");
    }
    for (i, o) in cfg.server.allowed_origins.iter().enumerate() {
        if !(o.starts_with("http://") || o.starts_with("https://")) {
            return err(format!("server.allowed_origins[{i}]"), format!("{o:?} is not an http(s) origin"));
        }
    }
    let mut names = HashSet::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let key = |k: &str| format!("upstream[{i}].{k}");
        if !valid_name(&u.name, 32) {
            return err(key("name"), format!("{:?} must be 1-32 characters from [A-Za-z0-9_.-]", u.name));
        }
        if u.name.contains(sep.as_str()) {
            return err(key("name"), format!("{:?} contains the name separator {sep:?}", u.name));
        }
        if !names.insert(u.name.as_str()) {
            return err(key("name"), format!("upstream {:?} is defined twice", u.name));
        }
        match (&u.command, &u.url) {
            (Some(_), Some(_)) => return err(key("url"), "set either `command` (stdio) or `url` (HTTP), not both"),
            (None, None) => return err(key("command"), "set `command` (stdio child) or `url` (HTTP upstream)"),
            (Some(c), None) if c.is_empty() || c[0].is_empty() => {
                return err(key("command"), "must name a program, e.g. [\"npx\", \"-y\", \"pkg\"]")
            }
            (None, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return err(key("url"), format!("{url:?} must start with http:// or https://"))
            }
            _ => {}
        }
        if u.url.is_some() && u.per_session {
            return err(key("per_session"), "only stdio upstreams (`command`) can run one process per session");
        }
        for k in u.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return err(key(&format!("env.{k}")), "not a valid environment variable name");
            }
        }
        if u.timeout.is_zero() {
            return err(key("timeout"), "must be greater than zero");
        }
        if u.max_message < 1024 {
            return err(key("max_message"), "must be at least 1KiB");
        }
        if u.restart_initial_backoff > u.restart_max_backoff {
            return err(key("restart_initial_backoff"), "must not exceed restart_max_backoff");
        }
        if u.max_children == 0 {
            return err(key("max_children"), "must be at least 1");
        }
        crate::auth::validate_credential(i, &u.credential, u.is_stdio())?;
    }
    let mut topics = HashSet::new();
    for (i, t) in cfg.topics.iter().enumerate() {
        let key = |k: &str| format!("topic[{i}].{k}");
        if !valid_name(&t.name, 64) || t.name.contains('.') {
            return err(
                key("name"),
                format!("{:?} must be 1-64 characters from [A-Za-z0-9_-] (it is a URL path)", t.name),
            );
        }
        if !topics.insert(t.name.as_str()) {
            return err(key("name"), format!("topic {:?} is defined twice", t.name));
        }
        if t.tools.is_empty() {
            return err(key("tools"), "a topic needs at least one tool glob");
        }
        for (j, g) in t.tools.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                return err(format!("topic[{i}].tools[{j}]"), format!("invalid glob {g:?}: {e}"));
            }
        }
        for (j, g) in t.prompts.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                return err(format!("topic[{i}].prompts[{j}]"), format!("invalid glob {g:?}: {e}"));
            }
        }
        for (j, u) in t.resource_upstreams.iter().enumerate() {
            if cfg.upstream(u).is_none() {
                return err(format!("topic[{i}].resource_upstreams[{j}]"), format!("no upstream named {u:?}"));
            }
        }
        if t.page_size == 0 {
            return err(key("page_size"), "must be at least 1");
        }
        for (alias, target) in &t.aliases {
            if !valid_name(alias, 64) {
                return err(key(&format!("aliases.{alias}")), "alias must be 1-64 characters from [A-Za-z0-9_.-]");
            }
            if !valid_name(target, 128) {
                return err(key(&format!("aliases.{alias}")), format!("{target:?} is not a federated tool name"));
            }
        }
    }
    if let Some(a) = &cfg.auth {
        crate::auth::validate(a)?;
    }
    if !cfg.server.all_tools_endpoint && cfg.topics.is_empty() {
        return err(
            "server.all_tools_endpoint".into(),
            "is false and no [[topic]] is defined: nothing would be served",
        );
    }
    Ok(())
}
