//! Generated records for the summary tests and benchmark, with a reference
//! tree kept beside each record's text so tests can compute expected
//! statistics without the scanner under test.
#![allow(dead_code)]

use tally_core::{IsoWeek, Record, RecordId, Timestamp};

/// A JSON value as generated: numbers keep their text (`1e400` included).
#[derive(Debug, Clone)]
pub enum Gen {
    Obj(Vec<(String, Gen)>),
    Arr(Vec<Gen>),
    Str(String),
    Num(String),
    Bool(bool),
    Null,
}

impl Gen {
    pub fn write(&self, out: &mut String) {
        match self {
            Gen::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
            Gen::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Gen::Str(s) => out.push_str(&escape_all(s)),
            Gen::Num(t) => out.push_str(t),
            Gen::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Gen::Null => out.push_str("null"),
        }
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

/// JSON string literal; non-ASCII written as `\u` escapes half of the time so
/// both the borrowed and the decoding paths of the scanner are exercised.
fn escape_all(s: &str) -> String {
    if s.len() % 2 == 0 {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// A small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] =
    &["alpha", "béta", "γάμμα", "日本語", "emoji 😀", "quote\"d", "back\\slash", "tab\there", "", "z"];
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-17",
    "2.5",
    "1e400",
    "-1e400",
    "123456789012345678901234567890",
    "1e-400",
    "0.125",
    "1E3",
    "-2.75e2",
];

/// A record with nested objects (deeper than 4 levels sometimes), nulls,
/// arrays, unicode keys and values, huge numbers, and optional fields.
pub fn rich_value(rng: &mut Rng) -> Gen {
    let mut m: Vec<(String, Gen)> = Vec::new();
    m.push(("n".into(), Gen::Num(rng.pick(NUMBERS).to_string())));
    if rng.chance(80) {
        m.push(("i".into(), Gen::Num((rng.below(2001) as i64 - 1000).to_string())));
    }
    if rng.chance(70) {
        m.push(("s".into(), Gen::Str(format!("{}{}", rng.pick(WORDS), rng.below(30)))));
    }
    if rng.chance(30) {
        m.push(("maybe".into(), if rng.chance(50) { Gen::Null } else { Gen::Bool(rng.chance(50)) }));
    }
    m.push((
        "mixed".into(),
        match rng.below(6) {
            0 => Gen::Null,
            1 => Gen::Bool(true),
            2 => Gen::Str(rng.pick(WORDS).to_string()),
            3 => Gen::Num(rng.pick(NUMBERS).to_string()),
            4 => Gen::Arr((0..rng.below(4)).map(|i| Gen::Num(i.to_string())).collect()),
            _ => Gen::Obj(vec![("inner".into(), Gen::Num("1".into()))]),
        },
    ));
    if rng.chance(60) {
        m.push(("tags".into(), Gen::Arr((0..rng.below(5)).map(|_| Gen::Str(rng.pick(WORDS).to_string())).collect())));
    }
    // a.b.c.d.e: depth 5, so `a.b.c.d` is reported as an object and `e` is not
    let deep = Gen::Obj(vec![("e".into(), Gen::Num("5".into()))]);
    let d = Gen::Obj(vec![("d".into(), deep), ("leaf".into(), Gen::Str(rng.pick(WORDS).to_string()))]);
    if rng.chance(50) {
        m.push(("a".into(), Gen::Obj(vec![("b".into(), Gen::Obj(vec![("c".into(), d)]))])));
    }
    if rng.chance(40) {
        m.push(("ünï.cödé".into(), Gen::Obj(vec![("k".into(), Gen::Num(format!("{}.5", rng.below(100))))])));
    }
    if rng.chance(10) {
        m.push(("empty".into(), Gen::Obj(vec![])));
    }
    Gen::Obj(m)
}

/// A ~250-byte event of one fixed shape, for tests that check statistics
/// of known fields (the benchmark uses [`varied_event_text`]).
pub fn event_text(rng: &mut Rng) -> String {
    const EVENTS: &[&str] = &["page_view", "click", "purchase", "signup", "logout"];
    const CITIES: &[&str] = &["Lyon", "Paris", "Berlin", "Lisbon", "Oslo", "Tokyo", "Quito"];
    format!(
        r#"{{"event":"{}","user":{{"id":{},"name":"user-{}","plan":"{}","geo":{{"city":"{}","lat":{:.4},"lon":{:.4}}}}},"value":{:.2},"items":{},"ok":{},"session":"s-{:016x}","tags":["{}","web"],"ref":null,"ms":{}}}"#,
        rng.pick(EVENTS),
        rng.below(1_000_000),
        rng.below(50_000),
        rng.pick(&["free", "pro", "team"]),
        rng.pick(CITIES),
        rng.below(180_000) as f64 / 1000.0 - 90.0,
        rng.below(360_000) as f64 / 1000.0 - 180.0,
        rng.below(100_000) as f64 / 100.0,
        rng.below(12),
        rng.chance(90),
        rng.next(),
        rng.pick(EVENTS),
        rng.below(5000),
    )
}

/// `n` records spread over `week` in received order, built by `data`.
pub fn records(week: IsoWeek, n: usize, seed: u64, mut data: impl FnMut(&mut Rng) -> String) -> Vec<Record> {
    let mut rng = Rng(seed);
    let span = (week.end().as_millis() - week.start().as_millis()) as u64;
    let mut times: Vec<i64> = (0..n).map(|_| week.start().as_millis() + rng.below(span) as i64).collect();
    times.sort_unstable();
    times
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let at = Timestamp::from_millis(t);
            Record { id: RecordId::deterministic(at, &seed.to_be_bytes(), i), received_at: at, data: data(&mut rng) }
        })
        .collect()
}

/// A JSON string literal of `s` appended to `out`; with `ascii`, non-ASCII
/// characters are written as `\u` escapes (surrogate pairs for emoji), as
/// some producers do, so the scanner's decoding path gets its share.
fn push_json_str(out: &mut String, s: &str, ascii: bool) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const TITLES: &[&str] = &[
    "Home",
    "Café crème ☕ — menu",
    "Über uns",
    "東京の天気",
    "Ciao 👋 benvenuti",
    "Señor \"Frog\"",
    "Prices\tQ3",
    "line one\nline two",
    "Ærøskøbing havn",
    "Новости",
    "checkout",
    "C:\\temp\\report",
];
const NAMES: &[&str] = &["José", "Zoë", "王伟", "Anna", "Øystein", "Ayşe", "Nguyễn Văn A", "Bob", "😀 fan", "Ólafur"];
const CITIES_U: &[&str] = &["Lyon", "Zürich", "São Paulo", "Kraków", "Tōkyō", "Oslo", "Reykjavík", "Quito", "Berlin"];
const COUNTRIES: &[&str] = &["FR", "CH", "BR", "PL", "JP", "NO", "IS", "EC", "DE"];
const QUERIES: &[&str] =
    &["red shoes", "chaussures rouges", "靴", "naïve café", "🎧 headphones", "size:42 \"wide\"", "", "tv 55\""];
const MESSAGES: &[&str] = &[
    "timeout after 30s",
    "connexion refusée",
    "unexpected token '<' in JSON",
    "Zugriff verweigert: \"admin\"",
    "null pointer 💥",
    "line 1\nline 2",
];

/// A varied ~250-byte event for the benchmark: five kinds (pageview, order,
/// error, signup, search) with their own fields, nested objects, arrays (of
/// objects too), unicode with and without `\u` escapes, fields whose type
/// varies (number / string / null) and optional fields. Every variation
/// happens in at least a few percent of records, so a reader that infers a
/// schema from a sample (DuckDB's `read_json_auto`) sees all of them.
pub fn varied_event_text(rng: &mut Rng) -> String {
    use std::fmt::Write as _;
    let mut o = String::with_capacity(320);
    let ascii = rng.chance(25);
    let kind = match rng.below(100) {
        0..40 => "pageview",
        40..60 => "order",
        60..72 => "error",
        72..82 => "signup",
        _ => "search",
    };
    let _ = write!(o, r#"{{"kind":"{kind}","user":{{"id":"#);
    match rng.below(10) {
        0..7 => {
            let _ = write!(o, "{}", rng.below(1_000_000));
        }
        7..9 => {
            let _ = write!(o, r#""u-{:06x}""#, rng.below(1 << 24));
        }
        _ => o.push_str("null"),
    }
    if rng.chance(60) {
        let _ = write!(o, r#","locale":"{}""#, rng.pick(&["fr-FR", "de-CH", "pt-BR", "ja-JP", "en-US"]));
    }
    if rng.chance(15) {
        let _ = write!(o, r#","anon":{}"#, rng.chance(50));
    }
    o.push('}');
    if rng.chance(70) {
        let _ = write!(
            o,
            r#","device":{{"os":"{}","v":"{}.{}","screen":[{},{}]}}"#,
            rng.pick(&["iOS", "Android", "Windows", "macOS", "Linux"]),
            rng.below(18),
            rng.below(10),
            rng.pick(&[390, 412, 1280, 1920]),
            rng.pick(&[844, 915, 720, 1080]),
        );
    }
    match kind {
        "pageview" => {
            let _ = write!(o, r#","url":"/p/{}/{}","title":"#, rng.below(500), rng.below(20));
            push_json_str(&mut o, rng.pick::<&str>(TITLES), ascii);
            o.push_str(r#","ref":"#);
            if rng.chance(40) {
                o.push_str("null");
            } else {
                let _ = write!(o, r#""https://{}/""#, rng.pick(&["google.com", "t.co", "news.ycombinator.com"]));
            }
            let _ = write!(o, r#","ms":{},"scroll":{:.3}"#, rng.below(60_000), rng.below(1001) as f64 / 1000.0);
        }
        "order" => {
            let _ = write!(o, r#","order":{{"id":"o-{:08x}","items":["#, rng.next() as u32);
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    o.push(',');
                }
                let _ = write!(
                    o,
                    r#"{{"sku":"SKU-{}","qty":{},"price":{:.2}}}"#,
                    rng.below(900),
                    1 + rng.below(4),
                    rng.below(20_000) as f64 / 100.0
                );
            }
            o.push_str(r#"],"total":"#);
            let total = rng.below(100_000) as f64 / 100.0;
            match rng.below(10) {
                0..7 => {
                    let _ = write!(o, "{total:.2}");
                }
                7..9 => {
                    let _ = write!(o, r#""{total:.2}""#);
                }
                _ => o.push_str("null"),
            }
            let _ = write!(o, r#","currency":"{}""#, rng.pick(&["EUR", "CHF", "BRL", "JPY", "USD"]));
            if rng.chance(20) {
                let _ = write!(o, r#","coupon":"SAVE{}""#, 5 * (1 + rng.below(4)));
            }
            o.push_str(r#"},"ship":{"city":"#);
            let city = rng.below(CITIES_U.len() as u64) as usize;
            push_json_str(&mut o, CITIES_U[city], ascii);
            let _ = write!(o, r#","country":"{}"}}"#, COUNTRIES[city]);
        }
        "error" => {
            o.push_str(r#","error":{"code":"#);
            if rng.chance(60) {
                let _ = write!(o, "{}", rng.pick(&[400, 404, 500, 502, 503]));
            } else {
                let _ = write!(o, r#""{}""#, rng.pick(&["E_TIMEOUT", "E_PARSE", "E_AUTH"]));
            }
            o.push_str(r#","msg":"#);
            push_json_str(&mut o, rng.pick::<&str>(MESSAGES), ascii);
            o.push_str(r#","stack":["#);
            for i in 0..rng.below(4) {
                if i > 0 {
                    o.push(',');
                }
                let _ = write!(o, r#""at f{} (app.js:{}:{})""#, rng.below(50), rng.below(3000), rng.below(80));
            }
            let _ = write!(o, r#"],"fatal":{}}}"#, rng.chance(10));
        }
        "signup" => {
            o.push_str(r#","name":"#);
            push_json_str(&mut o, rng.pick::<&str>(NAMES), ascii);
            let _ = write!(o, r#","plan":"{}","age":"#, rng.pick(&["free", "pro", "team"]));
            match rng.below(10) {
                0..7 => {
                    let _ = write!(o, "{}", 16 + rng.below(70));
                }
                7..9 => o.push_str("null"),
                _ => o.push_str(r#""unknown""#),
            }
            let _ = write!(o, r#","consents":{{"email":{},"sms":{}}}"#, rng.chance(60), rng.chance(20));
            if rng.chance(30) {
                let _ = write!(o, r#","referrer":"friend-{}""#, rng.below(1000));
            }
        }
        _ => {
            o.push_str(r#","q":"#);
            push_json_str(&mut o, rng.pick::<&str>(QUERIES), ascii);
            let _ = write!(
                o,
                r#","results":{},"filters":{{"cat":"{}""#,
                rng.below(500),
                rng.pick(&["shoes", "tv", "audio"])
            );
            if rng.chance(40) {
                let _ = write!(o, r#","max":{}"#, 10 * rng.below(100));
            }
            o.push_str(r#"},"suggest":["#);
            for i in 0..rng.below(3) {
                if i > 0 {
                    o.push(',');
                }
                push_json_str(&mut o, rng.pick::<&str>(QUERIES), ascii);
            }
            o.push(']');
        }
    }
    let _ = write!(o, r#","session":"s-{:012x}","ts":"#, rng.next() >> 16);
    if rng.chance(95) {
        let _ = write!(o, "{}", 1_763_000_000_000u64 + rng.below(1_000_000_000));
    } else {
        o.push_str("null");
    }
    if rng.chance(30) {
        let _ = write!(o, r#","tags":["{}""#, rng.pick(&["beta", "ab:B", "vip", "ünïcode"]));
        if rng.chance(50) {
            o.push_str(r#","web""#);
        }
        o.push(']');
    }
    o.push('}');
    o
}
