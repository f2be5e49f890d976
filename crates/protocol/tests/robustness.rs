//! The parsers on the input path must never panic, whatever bytes a client or upstream sends. This is a
//! deterministic mutation test (stable toolchain, no fuzzing engine): seeds of valid messages are mutated by
//! byte flips, truncation, splicing and duplication, and every parser is run on every result.

use portcullis_protocol::{sse, Message, RawObject};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"a__b","arguments":{"x":[1,2,{"y":null}]},"_meta":{"progressToken":7}}}"#,
    r#"{"jsonrpc":"2.0","id":"s-1","result":{"content":[{"type":"text","text":"h\u00e9\"llo"}],"isError":false}}"#,
    r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"Unknown tool: x"}}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,"total":2}}"#,
    r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
    "id: 1-2\nevent: message\ndata: {\"a\":1}\n\n: keepalive\r\ndata:\r\n\r\nretry: 10\n\n",
];

const SPICE: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\\",
    b"\\u",
    b"\n",
    b"\r",
    b"\0",
    b"\xff",
    b"null",
    b"-0",
    b"1e999",
    b"\"id\":",
    b"\"method\":",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 => {
                let i = rng.below(v.len() + 1);
                let s = SPICE[rng.below(SPICE.len())];
                v.splice(i..i, s.iter().copied());
            }
            3 if !v.is_empty() => {
                let a = rng.below(v.len());
                let b = (a + rng.below(32)).min(v.len());
                let chunk = v[a..b].to_vec();
                let i = rng.below(v.len() + 1);
                v.splice(i..i, chunk);
            }
            _ => {
                let other = SEEDS[rng.below(SEEDS.len())].as_bytes();
                let cut = rng.below(other.len() + 1);
                v.extend_from_slice(&other[cut..]);
            }
        }
    }
    v
}

#[test]
fn parsers_never_panic_on_mutated_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..40_000 {
        let seed = SEEDS[round % SEEDS.len()].as_bytes();
        let input = mutate(&mut rng, seed);
        if let Ok(m) = Message::parse(&input) {
            // Whatever parses must serialize to something that parses again to the same kind.
            let again = Message::parse(m.to_json().as_bytes()).expect("re-parse of our own output");
            assert_eq!(again.is_request(), m.is_request());
            assert_eq!(again.id(), m.id());
        }
        let _ = portcullis_protocol::message::split_batch(&input);
        if let Ok(s) = std::str::from_utf8(&input) {
            let _ = RawObject::parse(s).map(|o| o.to_json());
        }
        let mut d = sse::Decoder::new(256);
        for chunk in input.chunks(1 + rng.below(16)) {
            if d.feed(chunk).is_err() {
                break;
            }
        }
    }
}
