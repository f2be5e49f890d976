#![allow(clippy::unwrap_used)] // tests may panic on unexpected values

use super::*;
use portcullis_protocol::raw::raw;
use std::collections::BTreeMap;

fn items(json: &[&str]) -> Vec<Box<RawValue>> {
    json.iter().map(|s| raw(s)).collect()
}

fn tools(names: &[&str]) -> Vec<Box<RawValue>> {
    names.iter().map(|n| raw(&format!(r#"{{"name":"{n}","inputSchema":{{"type":"object"}}}}"#))).collect()
}

fn up(name: &str, lists: UpstreamLists) -> (Arc<str>, Arc<UpstreamLists>) {
    (Arc::from(name), Arc::new(lists))
}

fn with_tools(name: &str, names: &[&str]) -> (Arc<str>, Arc<UpstreamLists>) {
    up(name, UpstreamLists { tools: tools(names), ..Default::default() })
}

fn topic(name: &str, tools: &[&str], aliases: &[(&str, &str)]) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        description: None,
        tools: tools.iter().map(|s| s.to_string()).collect(),
        aliases: aliases.iter().map(|(a, t)| (a.to_string(), t.to_string())).collect::<BTreeMap<_, _>>(),
        prompts: Vec::new(),
        resource_upstreams: Vec::new(),
        page_size: 200,
        scopes: Vec::new(),
    }
}

fn build(ups: &[(Arc<str>, Arc<UpstreamLists>)], topics: &[TopicConfig]) -> Catalog {
    Catalog::build("__", 200, ups, topics, 1).expect("catalog builds")
}

/// Public names on one page, parsed back from the rendered JSON.
fn names_on(page: &str, kind: ListKind) -> (Vec<String>, Option<String>) {
    let v: serde_json::Value = serde_json::from_str(page).expect("page is JSON");
    let names = v[kind.result_key()]
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    (names, v["nextCursor"].as_str().map(str::to_owned))
}

fn route(upstream: &str, name: &str) -> Route {
    Route { upstream: upstream.into(), name: name.into() }
}

#[test]
fn federated_names_keep_every_other_byte() {
    let tool = r#"{"name":"now","execution":{ "taskSupport" : "required" },"_meta":{"vendor.x/y":[1, {"z":null}]},"inputSchema":{"type":"object","properties":{}}}"#;
    let prompt = r#"{"name":"greet","arguments":[ {"name":"who"} ]}"#;
    let ups = [up("time", UpstreamLists { tools: items(&[tool]), prompts: items(&[prompt]), ..Default::default() })];
    let cat = build(&ups, &[]);
    let all = cat.view(None).expect("all-tools view");
    assert_eq!(
        all.page(ListKind::Tools, None).unwrap(),
        r#"{"tools":[{"name":"time__now","execution":{ "taskSupport" : "required" },"_meta":{"vendor.x/y":[1, {"z":null}]},"inputSchema":{"type":"object","properties":{}}}]}"#
    );
    assert_eq!(
        all.page(ListKind::Prompts, None).unwrap(),
        r#"{"prompts":[{"name":"time__greet","arguments":[ {"name":"who"} ]}]}"#
    );
    assert_eq!(all.resolve_tool("time__now"), Some(&route("time", "now")));
    assert_eq!(all.resolve_prompt("time__greet"), Some(&route("time", "greet")));
    assert_eq!(all.resolve_tool("now"), None);
    assert_eq!(all.resolve_tool("time__greet"), None);
    assert_eq!(all.tool_names(), ["time__now"]);
    assert!(cat.warnings().is_empty(), "{:?}", cat.warnings());
    assert_eq!(all.page(ListKind::Resources, None).unwrap(), r#"{"resources":[]}"#);
}

#[test]
fn topic_globs_and_aliases() {
    let mut ups = vec![with_tools("time", &["now", "convert"]), with_tools("tickets", &["get_ticket", "close_ticket"])];
    ups[0].1 = Arc::new(UpstreamLists {
        tools: tools(&["now", "convert"]),
        prompts: items(&[r#"{"name":"p"}"#]),
        ..Default::default()
    });
    let mut support = topic("support", &["time__*", "tickets__get_ticket"], &[("ticket", "tickets__get_ticket")]);
    support.prompts = vec!["time__*".into()];
    let cat = build(&ups, &[support, topic("clock", &["time__now"], &[])]);
    assert_eq!(cat.topics().collect::<Vec<_>>(), ["support", "clock"]);

    let v = cat.view(Some("support")).expect("topic view");
    assert_eq!(v.tool_names(), ["time__now", "time__convert", "ticket"]);
    assert_eq!(v.resolve_tool("ticket"), Some(&route("tickets", "get_ticket")));
    // The alias replaces the federated name; excluded tools answer like nonexistent ones.
    assert_eq!(v.resolve_tool("tickets__get_ticket"), None);
    assert_eq!(v.resolve_tool("tickets__close_ticket"), None);
    assert_eq!(v.resolve_tool("no_such_tool"), None);
    assert_eq!(v.resolve_prompt("time__p"), Some(&route("time", "p")));
    let page = v.page(ListKind::Tools, None).unwrap();
    assert!(page.contains(r#"{"name":"ticket","inputSchema":{"type":"object"}}"#));
    assert!(!page.contains("get_ticket") && !page.contains("close_ticket"));
    assert!(v.sees_upstream("tickets") && v.sees_upstream("time"));

    let clock = cat.view(Some("clock")).expect("clock");
    assert_eq!(clock.tool_names(), ["time__now"]);
    assert_eq!(clock.resolve_prompt("time__p"), None, "prompts need a glob");
    assert!(!clock.sees_upstream("tickets"));
    assert!(cat.view(Some("nope")).is_none());

    // The all-tools view is unaffected by aliases.
    let all = cat.view(None).expect("all");
    assert_eq!(all.resolve_tool("ticket"), None);
    assert_eq!(all.resolve_tool("tickets__get_ticket"), Some(&route("tickets", "get_ticket")));
}

#[test]
fn alias_problems() {
    let ups = [with_tools("time", &["now"]), with_tools("x", &["y"])];
    let t = topic("t", &["time__*"], &[("later", "time__later"), ("why", "x__y")]);
    let cat = build(&ups, &[t]);
    let w = cat.warnings().join("\n");
    assert!(w.contains(r#"alias "later" targets "time__later", which no upstream lists"#), "{w}");
    assert!(w.contains(r#"alias "why" ignored"#), "{w}");
    assert_eq!(cat.view(Some("t")).unwrap().resolve_tool("why"), None);

    let clash = topic("ops", &["time__*", "x__*"], &[("x__y", "time__now")]);
    let err = Catalog::build("__", 200, &ups, &[clash], 1).unwrap_err();
    assert_eq!(err, CatalogError::AliasCollision { topic: "ops".into(), alias: "x__y".into() });
    assert!(err.to_string().contains(r#"topic "ops""#));

    // Swapping two names is not a collision.
    let swap = topic("swap", &["*"], &[("x__y", "time__now"), ("time__now", "x__y")]);
    let cat = build(&ups, &[swap]);
    let v = cat.view(Some("swap")).unwrap();
    assert_eq!(v.resolve_tool("x__y"), Some(&route("time", "now")));
    assert_eq!(v.resolve_tool("time__now"), Some(&route("x", "y")));
}

#[test]
fn collision_names_both_upstreams() {
    let ups = [with_tools("a_", &["x"]), with_tools("a", &["_x"])];
    let err = Catalog::build("__", 200, &ups, &[], 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "public name \"a___x\" is produced by upstream \"a_\" and by upstream \"a\"; \
         rename one of the upstreams or change server.name_separator"
    );
}

#[test]
fn pagination_across_upstreams() {
    let five = ["t0", "t1", "t2", "t3", "t4"];
    let ups = [with_tools("a", &five), with_tools("b", &five), with_tools("c", &five)];
    let cat = Catalog::build("__", 4, &ups, &[], 7).unwrap();
    let v = cat.view(None).unwrap();
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let (names, next) = names_on(v.page(ListKind::Tools, cursor.as_deref()).unwrap(), ListKind::Tools);
        pages += 1;
        assert!(names.len() == 4 || next.is_none());
        seen.extend(names);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let want: Vec<String> =
        ["a", "b", "c"].iter().flat_map(|u| five.iter().map(move |t| format!("{u}__{t}"))).collect();
    assert_eq!(seen, want);

    // Bad cursors: garbage, another list's cursor, past the end.
    assert_eq!(v.page(ListKind::Tools, Some("garbage")), Err(BadCursor));
    assert_eq!(v.page(ListKind::Tools, Some("")), Err(BadCursor));
    let tools_cursor = cursor::encode(ListKind::Tools, 4, 7);
    assert_eq!(v.page(ListKind::Prompts, Some(&tools_cursor)), Err(BadCursor));
    let past = cursor::encode(ListKind::Tools, 15, 7);
    assert_eq!(v.page(ListKind::Tools, Some(&past)), Err(BadCursor));

    // A cursor from an older generation still works while in range.
    let newer = Catalog::build("__", 4, &ups, &[], 8).unwrap();
    let old = cursor::encode(ListKind::Tools, 8, 7);
    let (names, _) = names_on(newer.view(None).unwrap().page(ListKind::Tools, Some(&old)).unwrap(), ListKind::Tools);
    assert_eq!(names[0], "b__t3");
}

#[test]
fn resource_routing() {
    let a = UpstreamLists {
        resources: items(&[r#"{"uri":"file:///a.txt","name":"a"}"#, r#"{"uri":"mem://same"}"#]),
        templates: items(&[r#"{"uriTemplate":"file:///{path}","name":"files"}"#]),
        ..Default::default()
    };
    let b = UpstreamLists {
        resources: items(&[r#"{"uri":"mem://same"}"#]),
        templates: items(&[
            r#"{"uriTemplate":"file:///logs/{day}","name":"logs"}"#,
            r#"{"uriTemplate":"db://{table}"}"#,
        ]),
        ..Default::default()
    };
    let c = UpstreamLists { templates: items(&[r#"{"uriTemplate":"db://{schema}/{table}"}"#]), ..Default::default() };
    let ups = [up("a", a), up("b", b), up("c", c)];
    let mut t = topic("t", &["*"], &[]);
    t.resource_upstreams = vec!["b".into()];
    let cat = build(&ups, &[t]);
    let all = cat.view(None).unwrap();
    let up_of = |uri: &str| all.resolve_resource(uri).map(|u| u.to_string());
    assert_eq!(up_of("file:///a.txt").as_deref(), Some("a"));
    assert_eq!(up_of("file:///b.txt").as_deref(), Some("a"));
    assert_eq!(up_of("file:///logs/monday").as_deref(), Some("b"));
    assert_eq!(up_of("db://users"), None, "b and c tie on \"db://\"");
    assert_eq!(up_of("mem://same"), None, "two upstreams list it");
    assert_eq!(up_of("http://elsewhere"), None);
    assert!(cat.warnings().iter().any(|w| w.contains("\"mem://same\"")));
    assert_eq!(
        all.page(ListKind::Resources, None).unwrap(),
        r#"{"resources":[{"uri":"file:///a.txt","name":"a"},{"uri":"mem://same"},{"uri":"mem://same"}]}"#
    );

    let v = cat.view(Some("t")).unwrap();
    assert_eq!(v.resolve_resource("file:///a.txt"), None);
    assert_eq!(v.resolve_resource("mem://same").as_deref(), Some("b"));
    assert_eq!(v.resolve_resource("db://users").as_deref(), Some("b"));
    assert!(v.sees_upstream("b") && !v.sees_upstream("a") && !v.sees_upstream("c"));
    let (templates, _) = names_on(v.page(ListKind::Templates, None).unwrap(), ListKind::Templates);
    assert_eq!(templates, ["logs", ""]);
}

#[test]
fn invalid_items_are_skipped_with_warnings() {
    let long = "x".repeat(126);
    let ups = [up(
        "u",
        UpstreamLists {
            tools: items(&[
                r#"{"name":"ok"}"#,
                r#"{"name":"has space"}"#,
                r#"{"name":"caf\u00e9"}"#,
                &format!(r#"{{"name":"{long}"}}"#),
                r#"{"title":"no name"}"#,
                r#"{"name":7}"#,
                r#"["not","an","object"]"#,
                r#"{"name":"dup","name":"dup2"}"#,
                r#"{"name":"ok","description":"listed twice"}"#,
            ]),
            resources: items(&[r#"{"name":"no uri"}"#]),
            templates: items(&[r#"{"uriTemplate":3}"#]),
            ..Default::default()
        },
    )];
    let cat = build(&ups, &[]);
    let all = cat.view(None).unwrap();
    assert_eq!(all.tool_names(), ["u__ok"]);
    assert_eq!(all.len(ListKind::Resources), 0);
    assert_eq!(all.len(ListKind::Templates), 0);
    let w = cat.warnings();
    assert_eq!(w.len(), 10, "{w:#?}");
    assert!(w[0].contains(r#"tool "has space" skipped: its public name "u__has space""#));
    assert!(w[1].contains("café"));
    assert!(w[3].contains("tool #4 skipped: it has no string \"name\""));
    assert!(w[7].contains("listed twice"));
}

#[test]
fn list_kinds() {
    for k in ListKind::ALL {
        assert_eq!(ListKind::from_method(k.method()), Some(k));
    }
    assert_eq!(ListKind::from_method("resources/templates/list"), Some(ListKind::Templates));
    assert_eq!(ListKind::Templates.result_key(), "resourceTemplates");
    assert_eq!(ListKind::from_method("tools/call"), None);
}

#[test]
fn cursor_round_trip() {
    let c = cursor::encode(ListKind::Prompts, 1234, u64::MAX);
    assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(cursor::decode(&c), Some((ListKind::Prompts, 1234, u64::MAX)));
}

#[test]
fn catalog_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Catalog>();
}
