//! The house's shape, kept: no two files of `src/` import each other, even
//! through others, and neither do the top-level modules (`action`,
//! `config`, `journal`, ...). A circle means neither side can be read,
//! tested or replaced without the other; this test names each one with
//! the imports that close it, so the next engineer sees where to cut.
//!
//! The reading: every path in `use` items, in code and in macro arguments
//! (`crate::…`, `super::…`, `self::…`, a child module's name, or a name a
//! `use` brought in) is resolved to the file that defines its longest
//! known module prefix. A parent's `mod child;` is a declaration, not an
//! import, and a child naming what its parent module defines is nesting
//! (`super::DecodeError`); a circle is between files neither of which holds
//! the other. Test-only files (`tests.rs`, `*_tests.rs`) are left out: they
//! sit below the file they test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module path inside the crate (`["action", "channel", "slack"]`).
type ModPath = Vec<String>;

struct Crate {
    /// Every file module and the file that holds it.
    files: BTreeMap<ModPath, PathBuf>,
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string() == "test")
    })
}

fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut all = Vec::new();
        rust_files(src, &mut all);
        let mut files: BTreeMap<ModPath, PathBuf> = all
            .into_iter()
            .filter(|p| !is_test_file(p) && p.file_name().unwrap() != "main.rs")
            .map(|p| (module_of(src, &p), p))
            .collect();
        // Files a parent declares `#[cfg(test)] mod x;`: test code may
        // import anything, like `tests/`.
        let mut test_only = Vec::new();
        for (module, path) in &files {
            let ast = syn::parse_file(&std::fs::read_to_string(path).unwrap())
                .unwrap_or_else(|e| panic!("{}: cannot parse: {e}", path.display()));
            for it in &ast.items {
                if let syn::Item::Mod(m) = it {
                    if m.content.is_none() && is_cfg_test(&m.attrs) {
                        let mut child = module.clone();
                        child.push(m.ident.to_string());
                        test_only.push(child);
                    }
                }
            }
        }
        files.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
        Crate { files }
    }

    /// The file that defines the longest known prefix of `path`.
    fn file_of(&self, path: &[String]) -> Option<&ModPath> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.files.get_key_value(&path[..n]).map(|(k, _)| k))
    }
}

/// What one file imports: target module path -> the names it uses there.
struct Reader<'a> {
    krate: &'a Crate,
    /// The module the code being read is in (the file's, plus inline mods).
    here: ModPath,
    /// Names a `use` brought in, per inline module depth: name -> path.
    aliases: Vec<HashMap<String, ModPath>>,
    found: Vec<ModPath>,
}

impl Reader<'_> {
    /// An absolute path for `segs` as written here, if it names the crate.
    fn absolute(&self, segs: &[String]) -> Option<ModPath> {
        let first = segs.first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => {
                let mut b = self.here.clone();
                let mut rest = segs;
                while rest.first().is_some_and(|s| s == "super") {
                    b.pop()?;
                    rest = &rest[1..];
                }
                b.extend(rest.iter().cloned());
                return Some(b);
            }
            _ => {
                if let Some(p) = self.aliases.iter().rev().find_map(|a| a.get(first)) {
                    let mut b = p.clone();
                    b.extend(segs[1..].iter().cloned());
                    return Some(b);
                }
                // A child module of this one, named without `self::`.
                let mut child = self.here.clone();
                child.push(first.clone());
                if self.krate.files.keys().any(|k| k.starts_with(&child)) {
                    child.extend(segs[1..].iter().cloned());
                    return Some(child);
                }
                return None;
            }
        };
        base.extend(segs[1..].iter().cloned());
        Some(base)
    }

    fn note(&mut self, segs: &[String]) {
        if let Some(abs) = self.absolute(segs) {
            self.found.push(abs);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let mut full = prefix.clone();
                if name != "self" {
                    full.push(name.clone());
                }
                self.bring(
                    full,
                    if name == "self" {
                        prefix.last().cloned()
                    } else {
                        Some(name)
                    },
                );
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.bring(full, Some(r.rename.to_string()));
            }
            syn::UseTree::Glob(_) => self.note(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn bring(&mut self, full: Vec<String>, as_name: Option<String>) {
        if let Some(abs) = self.absolute(&full) {
            if let Some(n) = as_name {
                self.aliases.last_mut().unwrap().insert(n, abs.clone());
            }
            self.found.push(abs);
        }
    }

    /// Paths inside macro arguments (`format!("{}", crate::x::y())`).
    fn tokens(&mut self, ts: proc_macro2::TokenStream) {
        let toks: Vec<proc_macro2::TokenTree> = ts.into_iter().collect();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                proc_macro2::TokenTree::Group(g) => self.tokens(g.stream()),
                proc_macro2::TokenTree::Ident(id) => {
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    while j + 2 < toks.len() && is_colon(&toks[j]) && is_colon(&toks[j + 1]) {
                        if let proc_macro2::TokenTree::Ident(next) = &toks[j + 2] {
                            segs.push(next.to_string());
                            j += 3;
                        } else {
                            break;
                        }
                    }
                    if segs.len() > 1 {
                        self.note(&segs);
                    }
                    i = j.max(i + 1);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn is_colon(t: &proc_macro2::TokenTree) -> bool {
    matches!(t, proc_macro2::TokenTree::Punct(p) if p.as_char() == ':')
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if is_cfg_test(&u.attrs) {
            return;
        }
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) {
            return;
        }
        if let Some((_, items)) = &m.content {
            self.here.push(m.ident.to_string());
            self.aliases.push(HashMap::new());
            // Uses first: a name may be used above the `use` that brings it.
            for it in items {
                if let syn::Item::Use(u) = it {
                    self.visit_item_use(u);
                }
            }
            for it in items {
                if !matches!(it, syn::Item::Use(_)) {
                    self.visit_item(it);
                }
            }
            self.aliases.pop();
            self.here.pop();
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 || self.aliases.iter().any(|a| a.contains_key(&segs[0])) {
            self.note(&segs);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if !is_cfg_test(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// File -> files it imports, with the names taken from each.
fn file_graph(krate: &Crate) -> BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> {
    let mut graph = BTreeMap::new();
    for (module, path) in &krate.files {
        let text = std::fs::read_to_string(path).unwrap();
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: cannot parse: {e}", path.display()));
        let mut r = Reader {
            krate,
            here: module.clone(),
            aliases: vec![HashMap::new()],
            found: Vec::new(),
        };
        for it in &ast.items {
            if let syn::Item::Use(u) = it {
                r.visit_item_use(u);
            }
        }
        for it in &ast.items {
            if !matches!(it, syn::Item::Use(_)) {
                r.visit_item(it);
            }
        }
        let mut out: BTreeMap<ModPath, BTreeSet<String>> = BTreeMap::new();
        for abs in r.found {
            let Some(target) = krate.file_of(&abs) else {
                continue;
            };
            // Its own file, or a module that holds it: a child naming its
            // parent's items lives in that namespace (`super::Error`), and
            // the parent declares it; that is nesting, not a circle.
            if module.starts_with(target) {
                continue;
            }
            let name = abs[target.len()..]
                .first()
                .cloned()
                .unwrap_or_else(|| "*".into());
            out.entry(target.clone()).or_default().insert(name);
        }
        graph.insert(module.clone(), out);
    }
    graph
}

/// Strongly connected components with more than one member (Tarjan).
fn circles<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct T<'g, N: Ord> {
        g: &'g BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<&'g N, (usize, usize)>,
        stack: Vec<&'g N>,
        on: BTreeSet<&'g N>,
        next: usize,
        out: Vec<Vec<N>>,
    }
    impl<'g, N: Ord + Clone> T<'g, N> {
        fn strong(&mut self, v: &'g N) {
            self.index.insert(v, (self.next, self.next));
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.strong(w);
                    let low = self.index[w].1.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                } else if self.on.contains(w) {
                    let low = self.index[w].0.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.strong(v);
        }
    }
    t.out
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn report<N: Ord + Clone>(
    what: &str,
    graph: &BTreeMap<N, BTreeMap<N, BTreeSet<String>>>,
    name: impl Fn(&N) -> String,
) -> Vec<String> {
    let plain: BTreeMap<N, BTreeSet<N>> = graph
        .iter()
        .map(|(k, v)| (k.clone(), v.keys().cloned().collect()))
        .collect();
    circles(&plain)
        .into_iter()
        .map(|comp| {
            let members: BTreeSet<&N> = comp.iter().collect();
            let mut s = format!(
                "{what} circle of {}: {}\n",
                comp.len(),
                comp.iter().map(&name).collect::<Vec<_>>().join(", ")
            );
            for a in &comp {
                for (b, names) in &graph[a] {
                    if members.contains(b) {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        s += &format!("    {} -> {}: {}\n", name(a), name(b), names.join(", "));
                    }
                }
            }
            s
        })
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_two_files_of_src_import_each_other() {
    let krate = Crate::read(&src());
    let graph = file_graph(&krate);
    let found = report("file", &graph, |m: &ModPath| show(m));
    assert!(
        found.is_empty(),
        "import circles between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let krate = Crate::read(&src());
    let files = file_graph(&krate);
    let top = |m: &ModPath| m.first().cloned().unwrap_or_else(|| "crate".into());
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, tos) in &files {
        let a = top(from);
        let entry = graph.entry(a.clone()).or_default();
        for (to, names) in tos {
            let b = top(to);
            if a != b {
                let set = entry.entry(b).or_default();
                for n in names {
                    set.insert(format!("{}::{n}", show(to)));
                }
            }
        }
    }
    let found = report("module", &graph, String::clone);
    assert!(
        found.is_empty(),
        "import circles between modules:\n{}",
        found.join("\n")
    );
}

/// The reader itself: it must see what a circle is made of, or the two
/// tests above would pass on any tree.
#[test]
fn the_reader_sees_a_circle_through_use_super_children_and_macros() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path();
    std::fs::create_dir_all(s.join("a")).unwrap();
    std::fs::write(s.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(
        s.join("a/mod.rs"),
        "pub mod x; pub mod y; fn f() { x::g(); }",
    )
    .unwrap();
    std::fs::write(s.join("a/x.rs"), "use super::{Helper, y::Y}; pub fn g() {}").unwrap();
    std::fs::write(s.join("a/y.rs"), "pub struct Y; fn f() { super::x::g() }").unwrap();
    std::fs::write(
        s.join("b.rs"),
        "pub fn h() { println!(\"{}\", crate::c::k()); }",
    )
    .unwrap();
    std::fs::write(
        s.join("c.rs"),
        "use crate::b; pub fn k() -> u8 { b::h(); 1 }",
    )
    .unwrap();
    let krate = Crate::read(s);
    let graph = file_graph(&krate);
    let found = report("file", &graph, |m: &ModPath| show(m));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("a::x -> a::y: Y") && found[0].contains("a::y -> a::x: g"),
        "{found:?}"
    );
    assert!(
        found[1].contains("b -> c: k") && found[1].contains("c -> b: *, h"),
        "{found:?}"
    );
}

/// Names the places in `files` that hold the whole journal: the
/// `SharedJournal` type or a `dyn Journal` (every role at once).
fn whole_journal_holders(src: &Path, files: &[PathBuf]) -> Vec<String> {
    struct Holders<'a> {
        file: &'a str,
        found: Vec<String>,
    }
    impl<'ast> Visit<'ast> for Holders<'_> {
        fn visit_path(&mut self, p: &'ast syn::Path) {
            if p.segments
                .last()
                .is_some_and(|s| s.ident == "SharedJournal")
            {
                self.found.push(format!("{}: SharedJournal", self.file));
            }
            syn::visit::visit_path(self, p);
        }
        fn visit_use_name(&mut self, u: &'ast syn::UseName) {
            if u.ident == "SharedJournal" {
                self.found.push(format!("{}: use SharedJournal", self.file));
            }
        }
        fn visit_type_trait_object(&mut self, t: &'ast syn::TypeTraitObject) {
            for b in &t.bounds {
                if let syn::TypeParamBound::Trait(tb) = b {
                    if tb
                        .path
                        .segments
                        .last()
                        .is_some_and(|s| s.ident == "Journal")
                    {
                        self.found.push(format!("{}: dyn Journal", self.file));
                    }
                }
            }
            syn::visit::visit_type_trait_object(self, t);
        }
    }
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut h = Holders {
            file: &rel,
            found: Vec::new(),
        };
        h.visit_file(&ast);
        found.extend(h.found);
    }
    found.sort();
    found.dedup();
    found
}

/// Only the wiring (`app`, the command line, a drill's own run) and the
/// journal itself hold the whole journal; every component holds the roles
/// it uses (`Shared<dyn Reads>`, `Box<dyn Ingest>`, ...), so what a part can
/// do to the journal is read from its fields.
#[test]
fn only_the_wiring_holds_the_whole_journal() {
    let src = src();
    // The crate's files as the import check reads them: test-only files
    // and `main.rs` are left out.
    let wiring = ["journal/", "app/", "cli/", "drill/", "lib.rs"];
    let files: Vec<PathBuf> = Crate::read(&src)
        .files
        .into_values()
        .filter(|f| {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            !wiring.iter().any(|w| rel.starts_with(w))
        })
        .collect();
    let holders = whole_journal_holders(&src, &files);
    assert!(
        holders.is_empty(),
        "these hold the whole journal; give them the roles they use:\n{}",
        holders.join("\n")
    );
}

#[test]
fn the_journal_check_sees_a_shared_journal_and_a_dyn_journal() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path();
    std::fs::write(
        s.join("a.rs"),
        "use crate::journal::SharedJournal;\nstruct A { j: Box<dyn crate::journal::Journal> }\n",
    )
    .unwrap();
    std::fs::write(s.join("b.rs"), "struct B { j: Shared<dyn Reads> }\n").unwrap();
    let files = vec![s.join("a.rs"), s.join("b.rs")];
    assert_eq!(
        whole_journal_holders(s, &files),
        vec!["a.rs: dyn Journal", "a.rs: use SharedJournal"]
    );
}
