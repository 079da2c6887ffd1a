//! The architecture's rules that code can check (ARCHITECTURE.md lists the layers):
//! no import cycles between the crate's top-level modules, none between the files of any
//! folder (nor across folders, at file level), and one file per CLI command.
//!
//! A file's imports are every `crate::`, `super::` and `self::` path in it, and every
//! `child::` path of a child module it declares (`mod child;`, read as `self::child::`),
//! outside comments and string literals, with `use` groups expanded; each path resolves
//! to the file that defines the longest module prefix it names. Inside an inline
//! `mod name { .. }` (tests, generated code), `super::` first climbs that block.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`ir/op.rs` -> [ir, op], `ir/mod.rs` -> [ir],
/// `lib.rs` -> []).
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The text with comments, string and char literals blanked (a string becomes `""`).
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&b, i) {
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == '"' {
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            } else {
                out.push(c);
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (b.get(i + 2) == Some(&'\'') || (next == Some('\\') && b.get(i + 3) == Some(&'\''))) {
            // a char literal ('a' or '\n'); lifetimes ('a) are left alone
            i += if next == Some('\\') { 4 } else { 3 };
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The paths of a `use` group body (`a, b::{c, d}`), each prefixed by `prefix`.
fn expand(prefix: &[String], body: &str) -> Vec<Vec<String>> {
    let mut items = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for ch in body.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    items.push(cur);
    let mut out = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(open) = item.find('{') {
            let head: Vec<String> =
                item[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
            let inner = item[open + 1..].trim_end().strip_suffix('}').unwrap_or(&item[open + 1..]);
            out.extend(expand(&[prefix, &head].concat(), inner));
        } else {
            let path = item.split(" as ").next().unwrap_or(item);
            let segs: Vec<String> =
                path.split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
            out.push([prefix, &segs].concat());
        }
    }
    out
}

fn ident_at(s: &str, at: usize) -> &str {
    let end = s[at..].find(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(s.len(), |e| at + e);
    &s[at..end]
}

/// The index of the `}` closing the `{` at `open`.
fn block_end(text: &str, open: usize) -> usize {
    let mut depth = 0;
    for (k, ch) in text[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return open + k;
        }
    }
    text.len()
}

/// The `mod name` items of a stripped file: each name with the index of the `;` or `{`
/// after it (any visibility or attributes before it).
fn mod_items(text: &str) -> Vec<(&str, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("mod").map(|i| from + i) {
        from = i + 3;
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue;
        }
        let after = &text[i + 3..];
        let name_at = after.len() - after.trim_start().len();
        let name = ident_at(after, name_at);
        if name_at == 0 || name.is_empty() {
            continue;
        }
        let tail = &after[name_at + name.len()..];
        let at = i + 3 + name_at + name.len() + (tail.len() - tail.trim_start().len());
        if matches!(bytes.get(at), Some(b';' | b'{')) {
            out.push((name, at));
        }
    }
    out
}

/// Every `crate::`/`super::`/`self::` path of a stripped file, and every `child::` path
/// of a child module it declares by `mod child;` (as `self::child::`). Inside an inline
/// `mod name { .. }`, `self::` and the first `super::`s name that block's own file.
fn paths_of(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let items = mod_items(text);
    let kids: Vec<&str> = items.iter().filter(|(_, at)| bytes[*at] == b';').map(|(name, _)| *name).collect();
    let inline: Vec<(usize, usize)> =
        items.iter().filter(|(_, at)| bytes[*at] == b'{').map(|(_, at)| (*at, block_end(text, *at))).collect();
    let roots = ["crate", "super", "self"].into_iter().chain(kids.iter().copied());
    for (r, root) in roots.enumerate() {
        let kid = r >= 3;
        let mut from = 0;
        while let Some(i) = text[from..].find(root).map(|i| from + i) {
            from = i + root.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':') {
                continue;
            }
            // a child's bare name counts only as the head of a path
            if kid && !text[i + root.len()..].starts_with("::") {
                continue;
            }
            // segments: root(::seg)* and, at a `{`, a use group
            let mut found = Vec::new();
            let mut segs = if kid { vec!["self".to_string(), root.to_string()] } else { vec![root.to_string()] };
            let mut j = i + root.len();
            loop {
                let rest = &text[j..];
                if !rest.starts_with("::") {
                    break;
                }
                j += 2;
                if text[j..].starts_with('{') {
                    found.extend(expand(&segs, &text[j + 1..block_end(text, j)]));
                    segs.clear();
                    break;
                }
                let id = ident_at(text, j);
                if id.is_empty() {
                    break;
                }
                segs.push(id.to_string());
                j += id.len();
            }
            if segs.len() > 1 {
                found.push(segs);
            }
            let depth = inline.iter().filter(|(open, close)| *open < i && i < *close).count();
            if kid || root == "crate" || depth == 0 {
                out.extend(found);
                continue;
            }
            for path in found {
                let ups = path.iter().take_while(|s| *s == "super").count();
                if root == "super" && ups > depth {
                    out.push(path[depth..].to_vec());
                }
            }
        }
    }
    out
}

/// Resolves `path`, named in module `module`, to the file module it reaches.
fn resolve(module: &[String], path: &[String], files: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let (mut base, mut rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("super" | "self") => (module.to_vec(), path),
        _ => return None,
    };
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    let full = [base, rest.to_vec()].concat();
    (0..=full.len()).rev().map(|k| full[..k].to_vec()).find(|m| files.contains(m))
}

/// File-module graph of a crate given as (path under src, text) pairs.
fn file_graph(sources: &[(String, String)]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: BTreeSet<Vec<String>> = sources.iter().map(|(p, _)| module_path(p)).collect();
    let mut g = BTreeMap::new();
    for (p, text) in sources {
        let m = module_path(p);
        let deps: BTreeSet<Vec<String>> = paths_of(&strip(text))
            .iter()
            .filter_map(|path| resolve(&m, path, &files))
            .filter(|t| *t != m && !t.is_empty())
            .collect();
        g.insert(m, deps);
    }
    g
}

/// Strongly connected components of more than one node (Tarjan, iterative).
fn cycles<N: Ord + Clone>(g: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    let nodes: Vec<&N> = g.keys().collect();
    let index_of: BTreeMap<&N, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let adj: Vec<Vec<usize>> =
        nodes.iter().map(|n| g[*n].iter().filter_map(|d| index_of.get(d).copied()).collect()).collect();
    let n = nodes.len();
    let (mut idx, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut out, mut counter) = (Vec::new(), Vec::new(), 0);
    for s in 0..n {
        if idx[s] != usize::MAX {
            continue;
        }
        let mut work = vec![(s, 0usize)];
        while let Some(&mut (v, ref mut k)) = work.last_mut() {
            if *k == 0 && idx[v] == usize::MAX {
                idx[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = adj[v].get(*k) {
                *k += 1;
                if idx[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(idx[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == idx[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    comp.push(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    out.push(comp);
                }
            }
        }
    }
    out
}

fn crate_sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(f).expect("read file"))
        })
        .collect()
}

/// The top-level module graph: a file's edges go from its first path segment.
fn module_graph(files: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in files {
        let Some(top) = m.first() else { continue };
        let e = g.entry(top.clone()).or_default();
        for d in deps {
            if d[0] != *top {
                e.insert(d[0].clone());
            }
        }
    }
    g
}

fn show(c: &[Vec<String>]) -> String {
    c.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(", ")
}

#[test]
fn no_import_cycles_between_top_level_modules() {
    let g = module_graph(&file_graph(&crate_sources()));
    assert!(g.contains_key("ir") && g.contains_key("cli"), "modules found: {:?}", g.keys());
    let c = cycles(&g);
    assert!(c.is_empty(), "import cycles between modules: {c:?}");
}

#[test]
fn no_import_cycles_between_files() {
    let g = file_graph(&crate_sources());
    assert!(g.len() > 50, "files found: {}", g.len());
    let c: Vec<String> = cycles(&g).iter().map(|c| show(c)).collect();
    assert!(c.is_empty(), "files that import each other in a circle:\n{}", c.join("\n"));
}

/// The checker finds what it is for: a circle through a `use` group, `super::`, a full
/// path and a child module named bare, and nothing in a comment or a string.
#[test]
fn the_cycle_checker_sees_cycles() {
    let files = |texts: &[(&str, &str)]| -> Vec<(String, String)> {
        texts.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
    };
    let circle = files(&[
        ("lib.rs", "mod a; mod b;"),
        ("a/mod.rs", "pub mod x; pub mod y;"),
        ("a/x.rs", "use super::{y::{self, Thing}, z as _};"),
        ("a/y.rs", "fn f() { crate::b::g(); }"),
        ("b.rs", "pub fn g() -> crate::a::x::T { todo() }"),
    ]);
    let c = cycles(&file_graph(&circle));
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(show(&c[0]), "a::x, a::y, b");
    assert_eq!(cycles(&module_graph(&file_graph(&circle))).len(), 1);
    let quiet = files(&[
        ("lib.rs", "mod a; mod b;"),
        ("a.rs", "// crate::b::g\nconst S: &str = \"crate::b::g\"; use crate::b;"),
        ("b.rs", "const R: &str = r#\"crate::a::x\"#; fn f<'a>(c: char) -> bool { c == '\"' }"),
    ]);
    assert!(cycles(&file_graph(&quiet)).is_empty());
    // a parent naming its child module bare (`kid::f()`, `kid::{..}`) imports it
    let bare = files(&[
        ("lib.rs", "mod p;"),
        ("p/mod.rs", "#[cfg(all())]\npub(crate) mod kid;\npub struct T;\nfn g() { kid::f(); }"),
        ("p/kid.rs", "use super::T;\npub fn f() {}"),
    ]);
    let c = cycles(&file_graph(&bare));
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(show(&c[0]), "p, p::kid");
    let bare_group = files(&[
        ("lib.rs", "mod p;"),
        ("p/mod.rs", "mod kid;\nuse kid::{f, g as _};\npub struct T;"),
        ("p/kid.rs", "pub fn f() -> super::T { todo() }"),
    ]);
    assert_eq!(cycles(&file_graph(&bare_group)).len(), 1);
    // a name that is no declared child (or only a word) is no path
    let not_kids = files(&[
        ("lib.rs", "mod p;"),
        ("p/mod.rs", "mod kid;\nfn g(kid: u8, other: u8) { other::f(); my_kid::f(); let _ = kid; }"),
        ("p/kid.rs", "use super::T;"),
    ]);
    assert!(cycles(&file_graph(&not_kids)).is_empty());
    // `super::` in an inline module (tests, generated protobuf) names its own file first
    let inline = files(&[
        ("lib.rs", "mod p;"),
        ("p/mod.rs", "mod kid;\npub use kid::f;"),
        ("p/kid.rs", "pub fn f() {}\nmod tests { use super::*; use super::super::kid as _; }"),
    ]);
    assert!(cycles(&file_graph(&inline)).is_empty());
    let inline_up = files(&[
        ("lib.rs", "mod p;"),
        ("p/mod.rs", "mod kid;\npub use kid::f;\npub struct T;"),
        ("p/kid.rs", "pub fn f() {}\nmod tests { fn t() -> super::super::T { crate::p::T } }"),
    ]);
    assert_eq!(cycles(&file_graph(&inline_up)).len(), 1);
}

/// One file per command: every variant of `cli/mod.rs`'s `Command` runs `<file>::run` of
/// its own file, and takes that file's `Args`.
#[test]
fn one_file_per_command() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let text = std::fs::read_to_string(dir.join("mod.rs")).expect("cli/mod.rs");
    let body = text.split("enum Command {").nth(1).and_then(|r| r.split("\n}").next()).expect("enum Command");
    let files: Vec<&str> =
        body.lines().filter_map(|l| l.trim().split_once('(').and_then(|(_, r)| r.strip_suffix("::Args),"))).collect();
    assert!(files.len() >= 15, "{files:?}");
    let mut seen = BTreeSet::new();
    for f in files {
        assert!(seen.insert(f), "two commands share cli/{f}.rs");
        let code = std::fs::read_to_string(dir.join(format!("{f}.rs"))).unwrap_or_default();
        assert!(code.contains("pub struct Args") && code.contains("pub fn run("), "cli/{f}.rs: Args and run");
    }
}
