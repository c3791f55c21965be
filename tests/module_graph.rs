//! The shape of the root package, checked: the files of `src/` import each
//! other without a cycle, the runner names no service, and the checkers,
//! the histories and the scenario format depend on nothing that runs them.
//!
//! The graph has one node per file of `src/` (`main.rs`, the binary, is a
//! crate of its own and stays out) and an edge for every path that starts
//! with `crate`, `super`, `self` or the name of a child module, in `use`
//! items and in code alike. A path leads to the deepest module that exists
//! as a file (or inside one, for inline modules such as `mod tests`), and
//! through `pub use` re-exports to the file that defines the item, so a
//! folder's `mod.rs` may re-export its children without tying every user
//! of the folder to all of them. Comments and string literals are skipped.
#![allow(clippy::disallowed_methods)] // host-side test: reads the package's own sources

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A token of Rust source, as far as paths need.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    /// A string literal's contents (raw or not).
    Str(String),
    Punct(char),
}

/// The tokens of `src`, without comments; numbers, lifetimes and char
/// literals are dropped.
fn tokens(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r'))) && {
            // A raw string: r"..", r#".."#, br"..".
            let mut j = i + if c == 'b' { 2 } else { 1 };
            while b.get(j) == Some(&'#') {
                j += 1;
            }
            b.get(j) == Some(&'"') && (i == 0 || !ident_char(b[i - 1]))
        } {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            let start = j;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                    break;
                }
                j += 1;
            }
            out.push(Tok::Str(b[start..j.min(b.len())].iter().collect()));
            i = j + 1 + hashes;
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut s = String::new();
            while j < b.len() && b[j] != '"' {
                if b[j] == '\\' {
                    j += 1;
                }
                if j < b.len() {
                    s.push(b[j]);
                }
                j += 1;
            }
            out.push(Tok::Str(s));
            i = j + 1;
        } else if c == '\'' || (c == 'b' && next == Some('\'')) {
            let q = if c == 'b' { i + 1 } else { i };
            if b.get(q + 1) == Some(&'\\') {
                // An escaped char literal: up to its closing quote.
                let mut j = q + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if b.get(q + 2) == Some(&'\'') {
                i = q + 3;
            } else {
                // A lifetime or a label: the name follows as an identifier.
                i = q + 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            // r#ident
            if word == "r" && b.get(i) == Some(&'#') && b.get(i + 1).is_some_and(|&c| c.is_ascii_alphabetic() || c == '_') {
                continue;
            }
            out.push(Tok::Ident(word));
        } else if c.is_ascii_digit() {
            while i < b.len() && (ident_char(b[i]) || b[i] == '.' && b.get(i + 1).is_some_and(|c| c.is_ascii_digit())) {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Tok::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// One file of the package: its module path (`run::deploy::table` is
/// `["run", "deploy", "table"]`; `lib.rs` is `[]`) and its tokens.
struct File {
    name: String,
    module: Vec<String>,
    toks: Vec<Tok>,
}

/// A path found in a file: the module it was written in, its segments as
/// written, and for a `pub use` the name it exports.
struct Found {
    file: usize,
    scope: Vec<String>,
    segs: Vec<String>,
    exports: Option<String>,
}

struct Package {
    files: Vec<File>,
    /// Every module (file or inline) -> the file it lives in.
    modules: BTreeMap<Vec<String>, usize>,
}

impl Package {
    /// `(name relative to src/, source)` pairs.
    fn new(sources: &[(String, String)]) -> Package {
        let mut files = Vec::new();
        for (name, text) in sources {
            let mut module: Vec<String> = name.trim_end_matches(".rs").split('/').map(str::to_string).collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            files.push(File { name: name.clone(), module, toks: tokens(text) });
        }
        let mut modules = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            modules.insert(f.module.clone(), i);
        }
        // Inline modules (`mod tests { .. }`).
        for (i, f) in files.iter().enumerate() {
            walk_scopes(&f.toks, &f.module, |_, scope| {
                modules.entry(scope.to_vec()).or_insert(i);
            });
        }
        Package { files, modules }
    }

    fn is_child(&self, scope: &[String], name: &str) -> bool {
        let mut p = scope.to_vec();
        p.push(name.to_string());
        self.modules.contains_key(&p)
    }

    /// Every crate-internal path of every file.
    fn paths(&self) -> Vec<Found> {
        let mut out = Vec::new();
        for (fi, f) in self.files.iter().enumerate() {
            let t = &f.toks;
            let mut skip_to = 0;
            walk_scopes(t, &f.module, |i, scope| {
                if i < skip_to {
                    return;
                }
                let after_sep = i > 0 && t[i - 1] == Tok::PathSep;
                match &t[i] {
                    Tok::Ident(w) if w == "use" && !after_sep => {
                        let public = is_pub(t, i);
                        let mut pos = i + 1;
                        let mut trees = Vec::new();
                        use_tree(t, &mut pos, Vec::new(), &mut trees);
                        skip_to = pos;
                        for (segs, name) in trees {
                            let exports = if public { name } else { None };
                            out.push(Found { file: fi, scope: scope.to_vec(), segs, exports });
                        }
                    }
                    Tok::Ident(w) if !after_sep && t.get(i + 1) == Some(&Tok::PathSep) && (w == "crate" || w == "super" || w == "self" || self.is_child(scope, w)) => {
                        let mut segs = vec![w.clone()];
                        let mut j = i + 1;
                        while t.get(j) == Some(&Tok::PathSep) {
                            match t.get(j + 1) {
                                Some(Tok::Ident(s)) => segs.push(s.clone()),
                                _ => break,
                            }
                            j += 2;
                        }
                        skip_to = j;
                        out.push(Found { file: fi, scope: scope.to_vec(), segs, exports: None });
                    }
                    _ => {}
                }
            });
        }
        out
    }

    /// The absolute module path of `segs` written in `scope`, if it is
    /// inside the crate.
    fn absolute(&self, scope: &[String], segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        let mut abs: Vec<String>;
        let mut rest = &segs[1..];
        match first.as_str() {
            "crate" => abs = Vec::new(),
            "self" => abs = scope.to_vec(),
            "super" => {
                abs = scope.to_vec();
                abs.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    abs.pop();
                    rest = &rest[1..];
                }
            }
            w if self.is_child(scope, w) => {
                abs = scope.to_vec();
                abs.push(w.to_string());
            }
            _ => return None,
        }
        abs.extend(rest.iter().cloned());
        Some(abs)
    }

    /// The file an absolute path leads to: the deepest module that exists,
    /// then through its re-exports.
    fn resolve(&self, abs: &[String], exports: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>, depth: usize) -> usize {
        let k = (0..=abs.len()).rev().find(|&k| self.modules.contains_key(&abs[..k])).expect("the crate root exists");
        let module = &abs[..k];
        if let (Some(name), true) = (abs.get(k), depth < 16) {
            if let Some(target) = exports.get(module).and_then(|m| m.get(name)) {
                let mut next = target.clone();
                next.extend(abs[k + 1..].iter().cloned());
                if next != abs {
                    return self.resolve(&next, exports, depth + 1);
                }
            }
        }
        self.modules[module]
    }

    /// File -> the files it depends on (names relative to `src/`).
    fn graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let found = self.paths();
        let mut exports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for f in &found {
            if let (Some(name), Some(abs)) = (&f.exports, self.absolute(&f.scope, &f.segs)) {
                exports.entry(f.scope.clone()).or_default().insert(name.clone(), abs);
            }
        }
        let mut g: BTreeMap<String, BTreeSet<String>> = self.files.iter().map(|f| (f.name.clone(), BTreeSet::new())).collect();
        for f in &found {
            let Some(abs) = self.absolute(&f.scope, &f.segs) else { continue };
            let to = self.resolve(&abs, &exports, 0);
            if to != f.file {
                g.get_mut(&self.files[f.file].name).expect("every file is a node").insert(self.files[to].name.clone());
            }
        }
        g
    }
}

/// Calls `visit(index, module)` for every token with the module it is in,
/// following inline `mod name { .. }` blocks.
fn walk_scopes(t: &[Tok], root: &[String], mut visit: impl FnMut(usize, &[String])) {
    let mut scope = root.to_vec();
    let mut opened: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    for i in 0..t.len() {
        visit(i, &scope);
        match &t[i] {
            Tok::Punct('{') => {
                depth += 1;
                if i >= 2 && t[i - 2] == Tok::Ident("mod".into()) {
                    if let Tok::Ident(name) = &t[i - 1] {
                        scope.push(name.clone());
                        opened.push(depth);
                    }
                }
            }
            Tok::Punct('}') => {
                if opened.last() == Some(&depth) {
                    opened.pop();
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
}

/// Whether the `use` at `i` is `pub` (or `pub(crate)`, `pub(super)`, ...).
fn is_pub(t: &[Tok], i: usize) -> bool {
    if i >= 1 && t[i - 1] == Tok::Ident("pub".into()) {
        return true;
    }
    if i >= 1 && t[i - 1] == Tok::Punct(')') {
        let open = (0..i - 1).rev().find(|&j| t[j] == Tok::Punct('('));
        return open.is_some_and(|j| j >= 1 && t[j - 1] == Tok::Ident("pub".into()));
    }
    false
}

/// Parses one use tree at `pos` (after `use`, or inside braces) into full
/// paths, each with the name it binds (`None` for a glob).
fn use_tree(t: &[Tok], pos: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut segs = prefix;
    if t.get(*pos) == Some(&Tok::PathSep) {
        // `use ::name`: another crate.
        *pos += 1;
        segs.push("::".into());
    }
    loop {
        match t.get(*pos) {
            Some(Tok::Ident(s)) => {
                segs.push(s.clone());
                *pos += 1;
            }
            Some(Tok::Punct('{')) => {
                *pos += 1;
                while let Some(tok) = t.get(*pos) {
                    if *tok == Tok::Punct('}') {
                        *pos += 1;
                        break;
                    }
                    use_tree(t, pos, segs.clone(), out);
                    if t.get(*pos) == Some(&Tok::Punct(',')) {
                        *pos += 1;
                    }
                }
                return;
            }
            Some(Tok::Punct('*')) => {
                *pos += 1;
                out.push((segs, None));
                return;
            }
            _ => break,
        }
        if t.get(*pos) == Some(&Tok::PathSep) {
            *pos += 1;
        } else {
            break;
        }
    }
    if segs.last().is_some_and(|s| s == "self") {
        segs.pop();
    }
    let mut name = segs.last().cloned();
    if t.get(*pos) == Some(&Tok::Ident("as".into())) {
        if let Some(Tok::Ident(alias)) = t.get(*pos + 1) {
            name = Some(alias.clone());
        }
        *pos += 2;
    }
    if !segs.is_empty() && segs[0] != "::" {
        out.push((segs, name));
    }
}

/// The first cycle of the graph, as a path that returns to its start.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn dfs<'a>(n: &'a str, g: &'a BTreeMap<String, BTreeSet<String>>, mark: &mut BTreeMap<&'a str, Mark>, stack: &mut Vec<&'a str>) -> Option<Vec<String>> {
        mark.insert(n, Mark::Open);
        stack.push(n);
        for m in &g[n] {
            match mark.get(m.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|s| *s == m).expect("open nodes are on the stack");
                    let mut cycle: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = dfs(m, g, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(n, Mark::Done);
        None
    }
    let mut mark = BTreeMap::new();
    for n in g.keys() {
        if mark.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = dfs(n, g, &mut mark, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The package's sources: every `src/**/*.rs` but `main.rs`.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src/").map(|e| e.expect("dir entry").path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, base, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let name = p.strip_prefix(base).expect("under src/").to_string_lossy().replace('\\', "/");
                if name != "main.rs" {
                    out.push((name, std::fs::read_to_string(&p).expect("source file")));
                }
            }
        }
    }
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    assert!(out.len() > 20, "the sources are there");
    out
}

fn src_graph() -> BTreeMap<String, BTreeSet<String>> {
    Package::new(&sources()).graph()
}

#[test]
fn the_files_of_src_import_each_other_without_a_cycle() {
    let g = src_graph();
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle among the files of src/: {}", cycle.join(" -> "));
    }
}

/// The files of `src/` under `dir` (a folder, or one file).
fn under<'a>(g: &'a BTreeMap<String, BTreeSet<String>>, dir: &str) -> Vec<&'a String> {
    g.keys().filter(|f| *f == dir || f.starts_with(&format!("{dir}/"))).collect()
}

/// Asserts that the files under each of `dirs` use only files under `dirs`.
fn depends_only_on(dirs: &[&str]) {
    let g = src_graph();
    let inside = |f: &str| dirs.iter().any(|d| f == *d || f.starts_with(&format!("{d}/")));
    for d in dirs {
        let files = under(&g, d);
        assert!(!files.is_empty(), "{d} exists");
        for f in files {
            let outside: Vec<&String> = g[f].iter().filter(|t| !inside(t)).collect();
            assert!(outside.is_empty(), "{f} uses {outside:?}: it may use only {dirs:?}");
        }
    }
}

#[test]
fn the_checkers_and_the_histories_depend_on_nothing_else_in_the_package() {
    depends_only_on(&["check", "history.rs"]);
}

#[test]
fn the_scenario_format_depends_on_nothing_that_runs_it() {
    depends_only_on(&["scenario"]);
    for (name, text) in sources().iter().filter(|(n, _)| n.starts_with("scenario/")) {
        assert!(!text.contains("engine::"), "{name} reaches into the engine: the format knows no service");
    }
}

/// Every name that belongs to one service: its kind, its roles, its
/// dynamic fault targets.
fn service_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for s in tablesim::run::deploy::catalog::SERVICES {
        let rules = s.rules();
        names.insert(rules.kind().to_string());
        let def = tablesim::scenario::ServiceDef::default();
        names.extend(rules.roles(&def).into_iter().map(|r| r.name));
        names.extend(rules.dynamic_targets().iter().map(|t| t.name.to_string()));
    }
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[test]
fn the_runner_names_no_service_and_no_role_of_one() {
    let names = service_names();
    let sources = sources();
    let runner: Vec<&(String, String)> = sources.iter().filter(|(n, _)| n.starts_with("run/") && !n.starts_with("run/deploy/")).collect();
    assert!(runner.len() >= 3, "the runner's files are there");
    let g = src_graph();
    for (name, text) in runner {
        // It reaches the deployments only through their interface and catalog.
        for to in &g[name] {
            assert!(!to.starts_with("run/deploy/") || to == "run/deploy/mod.rs" || to == "run/deploy/catalog.rs", "{name} uses {to}: the runner knows deployments only through their interface");
        }
        assert!(!text.contains("engine::"), "{name} reaches into the engine: the runner knows the world, not the service");
        for t in tokens(text) {
            if let Tok::Str(s) = t {
                assert!(!names.contains(&s), "{name} names {s:?}, which belongs to a service (names: {names:?})");
            }
        }
    }
}

/// The analysis itself, on made-up packages: a cycle is found and named,
/// re-exports lead to the defining file, and comments, strings and test
/// modules add no edge.
#[test]
fn the_graph_finds_a_cycle_and_follows_re_exports() {
    let src = |files: &[(&str, &str)]| files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect::<Vec<_>>();
    let cyclic = Package::new(&src(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("a.rs", "use crate::b::X;\npub struct Y;"),
        ("b.rs", "pub struct X;\nfn f() { let _ = super::c::Z; }"),
        ("c.rs", "pub struct Z;\nfn g() -> crate::a::Y { todo!() }"),
    ]))
    .graph();
    assert_eq!(find_cycle(&cyclic).expect("a cycle").join(" -> "), "a.rs -> b.rs -> c.rs -> a.rs");

    let fine = Package::new(&src(&[
        ("lib.rs", "pub mod a; pub mod e;"),
        ("a/mod.rs", "mod d;\npub use d::{Z as W, V};\npub use self::d::U;"),
        ("a/d.rs", "pub struct Z; pub struct V; pub struct U;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::e::T;\n}"),
        ("e.rs", "use crate::a::{W, V};\n// use crate::a::d::Z;\nconst S: &str = \"crate::a::d::Z\";\npub struct T;\nfn f(_: crate::a::U) {}"),
    ]))
    .graph();
    assert_eq!(fine["e.rs"], BTreeSet::from(["a/d.rs".to_string()]), "through the re-exports, not the folder's mod.rs");
    assert_eq!(fine["a/mod.rs"], BTreeSet::from(["a/d.rs".to_string()]));
    // The test module of a/d.rs uses e.rs, which uses a/d.rs: a cycle.
    assert_eq!(find_cycle(&fine).expect("a cycle through a test module").join(" -> "), "a/d.rs -> e.rs -> a/d.rs");
}
