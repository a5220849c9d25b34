//! The suite on disk: the workspace root, the chaos dir, and a light scan of a test target's
//! source. Which tests exist is libtest's answer (see `discover`); the scan only says whether
//! a target holds experiments and describes each test's declared faults and budget, read
//! textually from the `#[chaos_test(...)]` attributes (and `Fault::new(..)` calls of builder
//! tests).
use std::path::{Path, PathBuf};

/// One test function of an experiment file.
#[derive(Clone, Debug, PartialEq)]
pub struct TestFn {
    /// The function's name.
    pub name: String,
    /// Its faults, as `kill postgres for 2s`.
    pub faults: Vec<String>,
    /// `recover_within`, as written.
    pub recover_within: Option<String>,
    /// Marked `#[ignore]`.
    pub ignored: bool,
    /// A `#[chaos_test]` (not a plain `#[test]`).
    pub chaos: bool,
}

/// What the scan of a test target's source says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scan {
    /// It uses `#[chaos_test]` or `Experiment::new` outside comments and strings.
    pub experiment: bool,
    /// Its test functions, described.
    pub tests: Vec<TestFn>,
}

/// Scans a test target's source.
pub fn scan(src: &str) -> Scan {
    let code = blank_strings(&strip_comments(src));
    Scan {
        experiment: code.contains("#[chaos_test") || code.contains("Experiment::new("),
        tests: parse_tests(src),
    }
}

/// Walks up from `from` to the directory whose Cargo.toml has a `[workspace]` table.
pub fn workspace_root(from: &Path) -> Result<PathBuf, String> {
    for dir in from.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && text.lines().any(|l| l.trim() == "[workspace]")
        {
            return Ok(dir.to_path_buf());
        }
    }
    Err(format!(
        "no Cargo.toml with [workspace] in {} or above it. Fix: run chaos inside the chaos workspace",
        from.display()
    ))
}

/// Where journals and reports go, as the runtime decides it for tests run from `root`:
/// `CHAOS_REPORT_DIR`, else `$CARGO_TARGET_DIR/chaos`, else `<root>/target/chaos`.
pub fn chaos_dir(root: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("CHAOS_REPORT_DIR").filter(|d| !d.is_empty()) {
        return root.join(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return root.join(d).join("chaos");
    }
    root.join("target").join("chaos")
}

/// Blanks out comments (keeping string literals and byte offsets), so commented-out
/// attributes are not read.
pub fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            out.push(b[i]);
            i += 1;
            while i < b.len() {
                out.push(b[i]);
                if b[i] == b'\\' && i + 1 < b.len() {
                    out.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if b[i - 1] == b'"' {
                    break;
                }
            }
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| src.to_string())
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
}

fn tokens(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '"' {
            let mut v = String::new();
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    i += 1;
                }
                v.push(c[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(v));
        } else if ch.is_alphanumeric() || ch == '_' || ch == '.' {
            let mut v = String::new();
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                v.push(c[i]);
                i += 1;
            }
            out.push(Tok::Ident(v));
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// `key`, `key = value` or `key(...)`, as the attribute is written.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Nothing after the key.
    Flag,
    /// `= "x"` or `= false`.
    Lit(String),
    /// `( ... )`.
    List(Vec<(String, Value)>),
}

fn parse_args(t: &[Tok], i: &mut usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while *i < t.len() {
        match &t[*i] {
            Tok::Punct(')') => break,
            Tok::Punct(',') => *i += 1,
            Tok::Ident(k) => {
                let key = k.clone();
                *i += 1;
                let value = match t.get(*i) {
                    Some(Tok::Punct('=')) => {
                        *i += 1;
                        let v = match t.get(*i) {
                            Some(Tok::Str(s)) | Some(Tok::Ident(s)) => s.clone(),
                            _ => String::new(),
                        };
                        *i += 1;
                        Value::Lit(v)
                    }
                    Some(Tok::Punct('(')) => {
                        *i += 1;
                        let inner = parse_args(t, i);
                        *i += 1; // ')'
                        Value::List(inner)
                    }
                    _ => Value::Flag,
                };
                out.push((key, value));
            }
            _ => *i += 1,
        }
    }
    out
}

/// Parses the inside of `#[chaos_test( ... )]`.
pub fn parse_attribute(args: &str) -> Vec<(String, Value)> {
    let t = tokens(args);
    let mut i = 0;
    parse_args(&t, &mut i)
}

const NOT_PARAMS: &[&str] = &[
    "fault",
    "target",
    "duration",
    "after",
    "recover_within",
    "observer",
    "workload",
    "snapshot",
];

fn lit<'a>(args: &'a [(String, Value)], key: &str) -> Option<&'a str> {
    args.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| match v {
            Value::Lit(s) => Some(s.as_str()),
            _ => None,
        })
}

fn describe(kind: &str, args: &[(String, Value)]) -> String {
    let mut s = kind.to_string();
    if let Some(t) = lit(args, "target") {
        s.push(' ');
        s.push_str(t);
    }
    if let Some(a) = lit(args, "after") {
        s.push_str(&format!(" after {a}"));
    }
    s.push_str(&format!(" for {}", lit(args, "duration").unwrap_or("3s")));
    let params: Vec<String> = args
        .iter()
        .filter(|(k, _)| !NOT_PARAMS.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            Value::Lit(v) => Some(format!("{k}={v}")),
            _ => None,
        })
        .collect();
    if !params.is_empty() {
        s.push_str(&format!(" ({})", params.join(", ")));
    }
    s
}

/// The faults an attribute declares, described.
pub fn faults_of(args: &[(String, Value)]) -> Vec<String> {
    if let Some(kind) = lit(args, "fault") {
        return vec![describe(kind, args)];
    }
    args.iter()
        .filter(|(k, _)| k == "faults")
        .flat_map(|(_, v)| match v {
            Value::List(items) => items
                .iter()
                .map(|(kind, v)| match v {
                    Value::List(inner) => describe(kind, inner),
                    _ => describe(kind, &[]),
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The index just past the `)` that closes the `(` at `open`.
fn matching_paren(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = open;
    let mut in_str = false;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The name of the first `fn NAME` at or after `from`, and where it is.
fn next_fn(src: &str, from: usize) -> Option<(String, usize)> {
    let mut at = from;
    while let Some(k) = src[at..].find("fn ") {
        let pos = at + k;
        let boundary = pos == 0
            || !src.as_bytes()[pos - 1].is_ascii_alphanumeric() && src.as_bytes()[pos - 1] != b'_';
        if boundary {
            let name: String = src[pos + 3..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                return Some((name, pos));
            }
        }
        at = pos + 3;
    }
    None
}

/// The tests of an experiment file: every `#[chaos_test(..)]` fn, and every `#[test]` fn
/// (with the `Fault::new("kind", "target")` calls in its body, for builder experiments).
pub fn parse_tests(src: &str) -> Vec<TestFn> {
    let s = strip_comments(src);
    // Where to look (no string contents), and what to read (the strings are the values).
    let code = blank_strings(&s);
    let b = code.as_bytes();
    let mut found: Vec<(usize, TestFn)> = Vec::new();
    let mut at = 0;
    while let Some(k) = code[at..].find("#[chaos_test") {
        let start = at + k;
        let after_name = start + "#[chaos_test".len();
        let (args, end) = if b.get(after_name) == Some(&b'(') {
            match matching_paren(b, after_name) {
                Some(end) => (parse_attribute(&s[after_name + 1..end - 1]), end),
                None => break,
            }
        } else {
            (Vec::new(), after_name)
        };
        let Some((name, fn_at)) = next_fn(&code, end) else {
            break;
        };
        found.push((
            start,
            TestFn {
                name,
                faults: faults_of(&args),
                recover_within: lit(&args, "recover_within").map(str::to_string),
                ignored: code[start..fn_at].contains("#[ignore"),
                chaos: true,
            },
        ));
        at = fn_at;
    }
    let mut at = 0;
    while let Some(k) = code[at..].find("#[test]") {
        let start = at + k;
        let Some((name, fn_at)) = next_fn(&code, start) else {
            break;
        };
        let body_end = [
            code[fn_at..].find("#[test]"),
            code[fn_at..].find("#[chaos_test"),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|e| fn_at + e)
        .unwrap_or(code.len());
        let (body, body_code) = (&s[fn_at..body_end], &code[fn_at..body_end]);
        let mut faults = Vec::new();
        let mut bat = 0;
        while let Some(f) = body_code[bat..].find("Fault::new(") {
            let open = bat + f + "Fault::new".len();
            let Some(end) = matching_paren(body_code.as_bytes(), open) else {
                break;
            };
            let strs: Vec<String> = tokens(&body[open + 1..end - 1])
                .into_iter()
                .filter_map(|t| if let Tok::Str(s) = t { Some(s) } else { None })
                .collect();
            if !strs.is_empty() {
                faults.push(strs.join(" "));
            }
            bat = end;
        }
        found.push((
            start,
            TestFn {
                name,
                faults,
                recover_within: None,
                ignored: code[start..fn_at].contains("#[ignore"),
                chaos: false,
            },
        ));
        at = fn_at;
    }
    found.sort_by_key(|(pos, _)| *pos);
    found.into_iter().map(|(_, t)| t).collect()
}

/// Blanks the inside of string literals (same byte offsets), so markers in strings are not found.
fn blank_strings(src: &str) -> String {
    let mut out = Vec::with_capacity(src.len());
    let mut in_str = false;
    let mut escaped = false;
    for &c in src.as_bytes() {
        if !in_str {
            in_str = c == b'"';
            out.push(c);
        } else if escaped {
            escaped = false;
            out.push(b' ');
        } else if c == b'\\' {
            escaped = true;
            out.push(b' ');
        } else if c == b'"' {
            in_str = false;
            out.push(c);
        } else {
            out.push(if c == b'\n' { c } else { b' ' });
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| src.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
//! Experiment 01.
use chaos_runtime::{ChaosRun, chaos_test};

// #[chaos_test(fault = "stop", target = "nope", recover_within = "1s")]
// async fn commented_out(run: ChaosRun) {}

#[chaos_test(
    fault = "kill",
    target = "postgres",
    duration = "2s",
    recover_within = "5s"
)]
async fn orders_survive_postgres_sudden_death(run: ChaosRun) {
    let s = "fn not_a_test() #[chaos_test]";
}

/// Doc (with "quotes" and parens).
#[chaos_test(fault = "latency", target = "redis", latency = "100ms", jitter = "10ms", recover_within = "3s")]
#[ignore]
async fn slow_cache(run: ChaosRun) {}

#[chaos_test(faults(kill(target = "redis"), network_partition(target = "postgres", after = "1s", duration = "4s", direction = "both")), recover_within = "10s")]
async fn cascade(run: ChaosRun) {}

#[test]
fn built_in_code() {
    Experiment::new("x").fault(Fault::new("pause", "nginx").hold(d)).fault(Fault::new("kill", "redis")).run(|_| async {});
}

fn helper() {}
"#;

    #[test]
    fn reads_tests_and_their_faults_from_the_source() {
        let t = parse_tests(SRC);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "orders_survive_postgres_sudden_death",
                "slow_cache",
                "cascade",
                "built_in_code"
            ]
        );
        assert_eq!(t[0].faults, ["kill postgres for 2s"]);
        assert_eq!(t[0].recover_within.as_deref(), Some("5s"));
        assert!(!t[0].ignored && t[1].ignored);
        assert_eq!(
            t[1].faults,
            ["latency redis for 3s (latency=100ms, jitter=10ms)"]
        );
        assert_eq!(
            t[2].faults,
            [
                "kill redis for 3s",
                "network_partition postgres after 1s for 4s (direction=both)"
            ]
        );
        assert_eq!(t[3].faults, ["pause nginx", "kill redis"]);
    }

    #[test]
    fn experiments_are_told_from_other_tests() {
        assert!(scan(SRC).experiment);
        assert!(!scan("#[test]\nfn plain() { let s = \"#[chaos_test]\"; }").experiment);
        assert!(!scan("// #[chaos_test]\n#[test]\nfn plain() {}").experiment);
        assert!(scan("#[test]\nfn b() { Experiment::new(\"x\"); }").experiment);
    }

    #[test]
    fn comments_are_blanked_but_strings_kept() {
        let s = strip_comments("a // x\n\"// kept\" /* b /* c */ d */ e");
        assert_eq!(s.len(), "a // x\n\"// kept\" /* b /* c */ d */ e".len());
        assert!(
            s.contains("\"// kept\"") && s.contains('e') && !s.contains('x') && !s.contains('d')
        );
    }

    #[test]
    fn the_workspace_root_is_found_from_below() {
        let here = std::env::current_dir().unwrap();
        let root = workspace_root(&here).unwrap();
        assert!(root.join("chaos-cli").is_dir());
        assert!(workspace_root(Path::new("/")).is_err());
    }
}
