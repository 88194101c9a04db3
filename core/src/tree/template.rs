//! Tree templates (arborescences): the firm's GED folder layout, read from
//! TOML and validated before anything is stored.
//!
//! ```toml
//! name = "cabinet"
//! [[themes]]
//! id = "comptabilite"
//! label = "Comptabilité"
//! shared_with_clients = true
//!
//! [[dirs]]
//! name = "Comptabilité"
//! theme = "comptabilite"
//! dirs = [{ name = "Achats", per_exercice = true }]
//! ```
//!
//! Every problem in a file is reported at once, each with its line and
//! column, so a template is fixed in one pass.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A validated template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeTemplate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub themes: Vec<Theme>,
    pub dirs: Vec<Dir>,
}

/// A section of the tree that can be shared with the client's people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Theme {
    pub id: String,
    pub label: String,
    pub shared_with_clients: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    pub name: String,
    /// Receives an exercice folder per fiscal year, with the monthly folders.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_exercice: bool,
    /// Children without a theme of their own take their parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<Dir>,
}

/// One directory of a template with its full path, ready to instantiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFolder {
    pub path: String,
    pub parent_path: String,
    pub name: String,
    /// Its own theme or the nearest ancestor's.
    pub theme: Option<String>,
    pub per_exercice: bool,
}

impl TreeTemplate {
    /// Parses and validates a template file's text. `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<TreeTemplate, TemplateError> {
        let raw: RawTemplate = toml::from_str(text).map_err(|e| TemplateError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut problems = Vec::new();
        let template = raw.validate(text, &mut problems);
        if problems.is_empty() {
            Ok(template)
        } else {
            Err(TemplateError::Invalid {
                file: file.to_string(),
                problems: problems
                    .into_iter()
                    .map(|(span, message)| {
                        let (line, column) = line_column(text, span.start);
                        Problem {
                            line,
                            column,
                            message,
                        }
                    })
                    .collect(),
            })
        }
    }

    /// Every directory, parents before children, in template order.
    pub fn folders(&self) -> Vec<TemplateFolder> {
        fn walk(dirs: &[Dir], parent: &str, theme: Option<&str>, out: &mut Vec<TemplateFolder>) {
            for d in dirs {
                let path = if parent.is_empty() {
                    d.name.clone()
                } else {
                    format!("{parent}/{}", d.name)
                };
                let theme = d.theme.as_deref().or(theme);
                out.push(TemplateFolder {
                    path: path.clone(),
                    parent_path: parent.to_string(),
                    name: d.name.clone(),
                    theme: theme.map(str::to_string),
                    per_exercice: d.per_exercice,
                });
                walk(&d.dirs, &path, theme, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.dirs, "", None, &mut out);
        out
    }

    /// The themes shared with clients: what an invitation offers by default.
    pub fn shared_themes(&self) -> Vec<&Theme> {
        self.themes
            .iter()
            .filter(|t| t.shared_with_clients)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}: not a valid TOML tree template: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {} problem(s) in the tree template:\n{}", problems.len(), ProblemList(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a str, &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}:{}:{}: {}", self.0, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Characters Windows, macOS or the GED refuse in a folder name.
const FORBIDDEN: &[char] = &['/', '\\', ':', '*', '?', '"', '<', '>', '|'];
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];
/// Bytes, as most file systems count them.
const MAX_NAME_BYTES: usize = 255;

/// Why `name` cannot be a folder name, if it cannot.
pub fn folder_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("empty folder name: give every directory a `name`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_control())
    {
        let shown = if c.is_control() {
            format!("control character U+{:04X}", c as u32)
        } else {
            format!("`{c}`")
        };
        return Some(format!(
            "folder name {name:?} contains {shown}, which cannot appear in a folder name \
             (not allowed: / \\ : * ? \" < > | and control characters)"
        ));
    }
    if name != name.trim() {
        return Some(format!(
            "folder name {name:?} starts or ends with a space: remove it"
        ));
    }
    if name.ends_with('.') {
        return Some(format!(
            "folder name {name:?} ends with a dot, which Windows drops: remove it"
        ));
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    if RESERVED.contains(&stem.as_str()) {
        return Some(format!(
            "folder name {name:?} is reserved on Windows: choose another"
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "folder name {name:?} is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    None
}

/// Template and theme names: what a command line and a config key can carry.
fn slug_problem(what: &str, s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| {
        format!(
            "{what} {s:?} is not a valid identifier: use 1 to 64 of a-z, A-Z, 0-9, `-`, `_`, `.`"
        )
    })
}

type Problems = Vec<(Range<usize>, String)>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    themes: Vec<RawTheme>,
    #[serde(default)]
    dirs: Vec<RawDir>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTheme {
    id: Spanned<String>,
    label: Spanned<String>,
    #[serde(default = "yes")]
    shared_with_clients: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    name: Spanned<String>,
    #[serde(default)]
    per_exercice: bool,
    theme: Option<Spanned<String>>,
    #[serde(default)]
    dirs: Vec<RawDir>,
}

impl RawTemplate {
    fn validate(self, text: &str, problems: &mut Problems) -> TreeTemplate {
        let name_span = self.name.span();
        let name = self.name.into_inner();
        if let Some(p) = slug_problem("template name", &name) {
            problems.push((name_span.clone(), p));
        }
        let mut theme_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut themes = Vec::new();
        for t in self.themes {
            let span = t.id.span();
            let id = t.id.into_inner();
            if let Some(p) = slug_problem("theme id", &id) {
                problems.push((span.clone(), p));
            }
            if let Some(&first) = theme_ids.get(&id) {
                problems.push((
                    span.clone(),
                    format!(
                        "theme {id:?} is declared twice (first on line {}): keep one",
                        line_column(text, first).0
                    ),
                ));
            }
            theme_ids.entry(id.clone()).or_insert(span.start);
            if t.label.get_ref().trim().is_empty() {
                problems.push((
                    t.label.span(),
                    format!("theme {id:?} has an empty label: give it the name people see"),
                ));
            }
            themes.push(Theme {
                id,
                label: t.label.into_inner(),
                shared_with_clients: t.shared_with_clients,
            });
        }
        if self.dirs.is_empty() {
            problems.push((
                name_span,
                format!("template {name:?} has no directories: add at least one [[dirs]]"),
            ));
        }
        let known: HashSet<&str> = themes.iter().map(|t| t.id.as_str()).collect();
        let dirs = validate_dirs(self.dirs, "", &known, problems);
        TreeTemplate {
            name,
            description: self.description,
            themes,
            dirs,
        }
    }
}

fn validate_dirs(
    raw: Vec<RawDir>,
    parent: &str,
    themes: &HashSet<&str>,
    problems: &mut Problems,
) -> Vec<Dir> {
    let where_ = |parent: &str| {
        if parent.is_empty() {
            "at the top of the tree".to_string()
        } else {
            format!("under {parent:?}")
        }
    };
    // Folder names compare as the GED and Windows do: case-insensitively.
    let mut seen: BTreeMap<String, (String, Range<usize>)> = BTreeMap::new();
    let mut out = Vec::new();
    for d in raw {
        let span = d.name.span();
        let name = d.name.into_inner();
        if let Some(p) = folder_name_problem(&name) {
            problems.push((span.clone(), p));
        }
        let key = name.to_lowercase();
        if let Some((first, _)) = seen.get(&key) {
            problems.push((
                span.clone(),
                format!(
                    "duplicate directory {name:?} {} (same as {first:?}): names must be unique under one parent, case ignored",
                    where_(parent)
                ),
            ));
        } else {
            seen.insert(key, (name.clone(), span.clone()));
        }
        let theme = d.theme.map(|t| {
            if !themes.contains(t.get_ref().as_str()) {
                let known = if themes.is_empty() {
                    "none is declared: add a [[themes]] entry".to_string()
                } else {
                    let mut k: Vec<&str> = themes.iter().copied().collect();
                    k.sort_unstable();
                    format!("declared themes: {}", k.join(", "))
                };
                problems.push((
                    t.span(),
                    format!(
                        "directory {name:?} has unknown theme {:?}; {known}",
                        t.get_ref()
                    ),
                ));
            }
            t.into_inner()
        });
        let path = if parent.is_empty() {
            name.clone()
        } else {
            format!("{parent}/{name}")
        };
        let dirs = validate_dirs(d.dirs, &path, themes, problems);
        out.push(Dir {
            name,
            per_exercice: d.per_exercice,
            theme,
            dirs,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match TreeTemplate::parse("t.toml", text) {
            Err(TemplateError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    const GOOD: &str = r#"
name = "mini"
[[themes]]
id = "compta"
label = "Comptabilité"

[[dirs]]
name = "Comptabilité"
theme = "compta"
dirs = [{ name = "Achats", per_exercice = true }, { name = "Ventes", per_exercice = true }]

[[dirs]]
name = "Juridique"
"#;

    #[test]
    fn folders_carry_paths_and_inherited_themes() {
        let t = TreeTemplate::parse("t.toml", GOOD).expect("valid");
        let f = t.folders();
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Comptabilité",
                "Comptabilité/Achats",
                "Comptabilité/Ventes",
                "Juridique"
            ]
        );
        assert_eq!(f[1].parent_path, "Comptabilité");
        assert_eq!(f[1].theme.as_deref(), Some("compta"), "inherited");
        assert!(f[1].per_exercice && !f[0].per_exercice);
        assert_eq!(f[3].theme, None);
        assert!(
            t.themes[0].shared_with_clients,
            "shared unless said otherwise"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "name = \"x\"\n[[dirs]]\nname = \"A\"\n[[dirs]]\nname = \"a\"\n[[dirs]]\nname = \"\"\n[[dirs]]\nname = \"B/C\"\ntheme = \"nope\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (5, 8));
        assert!(
            p[0].message
                .contains("duplicate directory \"a\" at the top"),
            "{}",
            p[0].message
        );
        assert_eq!(p[1].line, 7);
        assert!(p[1].message.contains("empty folder name"));
        assert_eq!(p[2].line, 9);
        assert!(p[2].message.contains("contains `/`"), "{}", p[2].message);
        assert_eq!(p[3].line, 10);
        assert!(
            p[3].message.contains("unknown theme \"nope\"")
                && p[3].message.contains("add a [[themes]]"),
            "{}",
            p[3].message
        );
    }

    #[test]
    fn duplicates_are_per_parent() {
        let text = r#"
name = "x"
[[dirs]]
name = "A"
dirs = [{ name = "Banque" }, { name = "Banque" }]
[[dirs]]
name = "B"
dirs = [{ name = "Banque" }]
"#;
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("under \"A\""), "{}", p[0].message);
    }

    #[test]
    fn folder_names_that_cannot_exist_are_refused() {
        for bad in [
            "a:b",
            "x*",
            "q?",
            "tab\there",
            " lead",
            "trail ",
            "end.",
            "CON",
            "nul.txt",
        ] {
            assert!(folder_name_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in [
            "Notes de frais",
            "2026-08 Août",
            "Social-Paie",
            "Kbis & statuts",
        ] {
            assert_eq!(folder_name_problem(good), None, "{good:?} refused");
        }
    }

    #[test]
    fn syntax_and_unknown_keys_are_errors_with_positions() {
        let e = TreeTemplate::parse("t.toml", "name = \"x\"\n[[dirs]]\nnam = \"A\"\n")
            .expect_err("unknown key");
        let msg = e.to_string();
        assert!(msg.contains("t.toml") && msg.contains("line 3"), "{msg}");
        let p = problems("name = \"bad name\"\n");
        assert!(
            p.iter()
                .any(|p| p.message.contains("not a valid identifier"))
        );
        assert!(p.iter().any(|p| p.message.contains("no directories")));
    }

    #[test]
    fn the_shipped_trees_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/trees");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("config/trees") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            TreeTemplate::parse(&path.display().to_string(), &text)
                .unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 1);
    }
}
