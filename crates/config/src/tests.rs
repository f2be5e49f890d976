use super::*;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s, "test.toml", PathBuf::from("."))
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse("[[upstream]]\nname = \"t\"\ncommand = [\"x\"]\n").unwrap();
    assert_eq!(c.server.max_body, 4 << 20);
    assert_eq!(c.upstreams[0].timeout, Duration::from_secs(60));
    assert_eq!(c.upstreams[0].max_message, 16 << 20);
    assert!(c.upstreams[0].client_requests.is_empty());
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let e = parse("[[upstream]]\nname = \"t\"\ncommand = [\"x\"]\nretries = 3\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("test.toml: upstream"), "{msg}");
    assert!(msg.contains("unknown field `retries`"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn bad_duration_names_key() {
    let e = parse("[[upstream]]\nname = \"t\"\ncommand = [\"x\"]\ntimeout = \"soon\"\n").unwrap_err();
    assert_eq!(e.key, "upstream[0].timeout");
    assert!(e.reason.contains("invalid duration"), "{}", e.reason);
}

#[test]
fn validation_errors_name_keys() {
    let cases = [
        ("[[upstream]]\nname = \"a b\"\ncommand = [\"x\"]\n", "upstream[0].name"),
        ("[[upstream]]\nname = \"a__b\"\ncommand = [\"x\"]\n", "upstream[0].name"),
        ("[[upstream]]\nname = \"a\"\n", "upstream[0].command"),
        ("[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\nurl = \"http://x\"\n", "upstream[0].url"),
        ("[[upstream]]\nname = \"a\"\nurl = \"ftp://x\"\n", "upstream[0].url"),
        (
            "[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\n[[upstream]]\nname = \"a\"\ncommand = [\"y\"]\n",
            "upstream[1].name",
        ),
        ("[[topic]]\nname = \"s/x\"\ntools = [\"*\"]\n", "topic[0].name"),
        ("[[topic]]\nname = \"s\"\ntools = [\"[\"]\n", "topic[0].tools[0]"),
        ("[server]\nall_tools_endpoint = false\n", "server.all_tools_endpoint"),
        ("[server]\nmax_body = \"4 parsecs\"\n", "server.max_body"),
    ];
    for (src, key) in cases {
        let e = parse(src).expect_err(src);
        assert_eq!(e.key, key, "{src}: {e}");
    }
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
    assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
    assert_eq!(parse_size("100").unwrap(), 100);
    assert!(parse_size("4XB").is_err());
}

#[test]
fn credentials_parse_strictly() {
    let base = "[[upstream]]\nname = \"u\"\nurl = \"http://x/mcp\"\n";
    let c = parse(&format!("{base}credential = {{ kind = \"static\", value_env = \"TOKEN\" }}\n")).unwrap();
    assert!(matches!(c.upstreams[0].credential, CredentialConfig::Static { .. }));
    let e = parse(&format!("{base}credential = {{ kind = \"static\", value_env = \"T\", bogus = 1 }}\n")).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = parse(&format!("{base}credential = {{ kind = \"magic\" }}\n")).unwrap_err();
    assert!(e.key.starts_with("upstream[0].credential"), "{e}");
    let e = parse(&format!(
        "{base}credential = {{ kind = \"mint_obo\", key_file = \"k.pem\", issuer = \"i\", ttl = \"1h\" }}\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "upstream[0].credential.ttl");
}

#[test]
fn auth_section_validates() {
    let e = parse("[auth]\nresource = \"http://127.0.0.1:8080/mcp\"\n").unwrap_err();
    assert_eq!(e.key, "auth");
    let e = parse("[auth]\nresource = \"x\"\n[[auth.api_key]]\nid = \"a\"\nsha256 = \"00\"\nsubject = \"s\"\n")
        .unwrap_err();
    assert_eq!(e.key, "auth.resource");
    let ok = format!(
        "[auth]\nresource = \"http://127.0.0.1:8080/mcp\"\n[[auth.api_key]]\nid = \"a\"\nsha256 = \"{}\"\nsubject = \"s\"\n",
        "a".repeat(64)
    );
    assert!(parse(&ok).is_ok());
    let e = parse("[auth]\nresource = \"http://h/mcp\"\n[[auth.jwt]]\nissuer = \"i\"\njwks_file = \"j\"\nalgorithms = [\"HS256\"]\n")
        .unwrap_err();
    assert_eq!(e.key, "auth.jwt[0].algorithms[0]");
}
