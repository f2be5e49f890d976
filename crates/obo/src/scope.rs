//! Scope template rendering, shared by token exchange and minting.
//!
//! `{upstream}` becomes the upstream name and `{tool}` the upstream's tool name. A call that is not a tool call
//! (`tools/list`, `resources/read`, ...) has no tool: every scope token of the template that mentions `{tool}` is
//! dropped rather than widened (never `*`), so `"mcp:{upstream} tools:{tool}"` renders as `"mcp:time"` and the
//! default `"tools:{tool}"` renders as the empty string (the exchange then sends no `scope`, the minted token has
//! no `scope` claim, i.e. no tool may be called with it).

/// Renders `template`. Errors if the tool name would not be a single RFC 6749 §3.3 scope token (a tool called
/// `"a b"` must not smuggle a second scope `b` into the request).
pub(crate) fn render(template: &str, upstream: &str, tool: Option<&str>) -> Result<String, String> {
    if let Some(t) = tool {
        let ok = !t.is_empty() && t.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E));
        if !ok {
            let shown: String = t.chars().take(64).collect();
            return Err(format!(
                "tool name {shown:?} cannot be put in a scope (needs printable ASCII without spaces, quotes or \
                 backslashes)"
            ));
        }
    }
    let mut out: Vec<String> = Vec::new();
    for token in template.split_ascii_whitespace() {
        let token = match tool {
            Some(t) => token.replace("{tool}", t),
            None if token.contains("{tool}") => continue,
            None => token.to_owned(),
        };
        out.push(token.replace("{upstream}", upstream));
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_tool_and_upstream() {
        assert_eq!(render("tools:{tool}", "time", Some("now")).as_deref(), Ok("tools:now"));
        assert_eq!(
            render("mcp:{upstream}  {upstream}:{tool}", "time", Some("now")).as_deref(),
            Ok("mcp:time time:now")
        );
    }

    #[test]
    fn no_tool_drops_tool_scopes() {
        assert_eq!(render("tools:{tool}", "time", None).as_deref(), Ok(""));
        assert_eq!(render("mcp:{upstream} tools:{tool}", "time", None).as_deref(), Ok("mcp:time"));
    }

    #[test]
    fn tool_cannot_inject_scopes() {
        for bad in ["a b", "", "x\"y", "x\\y", "é", "a\nb"] {
            assert!(render("tools:{tool}", "u", Some(bad)).is_err(), "{bad:?}");
        }
    }
}
