//! `includes: [globs]` (OpenGSLB's key): regions, domains, agent tokens and custom
//! geolocation mappings kept in other files, merged into the main one.
//!
//! Each included file is parsed on its own (unknown keys and keys that only the main file
//! may set are errors, never ignored), with its lines numbered after the main file's and
//! every earlier file's, so that a problem found after merging still names its own file
//! and line ([`Included`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::schema::{RawConfig, RawCustomMapping, RawDomain, RawGeolocation, RawRegion};
use super::{Problem, yaml_problem};

/// Nesting deeper than this is refused (a loop of globs would never end otherwise).
const MAX_DEPTH: usize = 10;

/// What an included file may hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInclude {
    #[serde(default)]
    includes: Vec<Spanned<String>>,
    #[serde(default)]
    regions: Vec<RawRegion>,
    #[serde(default)]
    domains: Vec<RawDomain>,
    #[serde(default)]
    overwatch: Option<RawIncludeOverwatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncludeOverwatch {
    #[serde(default)]
    agent_tokens: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    geolocation: Option<RawIncludeGeo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncludeGeo {
    #[serde(default)]
    custom_mappings: Vec<RawCustomMapping>,
}

/// An included file's place in the merged numbering: its lines are `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    /// The file.
    pub file: String,
    /// Its first line in the merged numbering.
    pub first: u64,
    /// Its last line there.
    pub last: u64,
}

/// Merges every file `raw.includes` names (relative to `main`'s directory) into `raw`.
/// Problems carry merged line numbers; `included` says whose they are.
pub(super) fn merge(
    raw: &mut RawConfig,
    main: &Path,
    main_lines: u64,
    included: &mut Vec<Included>,
) -> Result<(), Vec<Problem>> {
    let mut next_line = main_lines + 1;
    let mut seen = vec![main.canonicalize().unwrap_or_else(|_| main.to_path_buf())];
    let patterns = std::mem::take(&mut raw.includes);
    merge_patterns(raw, main, &patterns, 1, &mut seen, &mut next_line, included)
}

fn merge_patterns(
    raw: &mut RawConfig,
    from: &Path,
    patterns: &[Spanned<String>],
    depth: usize,
    seen: &mut Vec<PathBuf>,
    next_line: &mut u64,
    included: &mut Vec<Included>,
) -> Result<(), Vec<Problem>> {
    let at = |s: &Spanned<String>, message: String| Problem {
        line: s.referenced.line(),
        column: s.referenced.column(),
        message,
    };
    let base = from.parent().unwrap_or(Path::new("."));
    for pattern in patterns {
        if depth > MAX_DEPTH {
            return Err(vec![at(
                pattern,
                format!("includes: nested more than {MAX_DEPTH} deep"),
            )]);
        }
        let mut files = expand(base, &pattern.value);
        files.sort();
        for file in files {
            let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
            if seen.contains(&canonical) {
                return Err(vec![at(
                    pattern,
                    format!(
                        "includes: {} is included twice (or includes itself)",
                        file.display()
                    ),
                )]);
            }
            seen.push(canonical);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                vec![at(
                    pattern,
                    format!("includes: cannot read {}: {e}", file.display()),
                )]
            })?;
            let first = *next_line;
            let lines = text.lines().count().max(1) as u64;
            *next_line += lines;
            included.push(Included {
                file: file.display().to_string(),
                first,
                last: first + lines - 1,
            });
            // Blank lines first: the file's spans are numbered after every earlier one.
            let shifted = format!("{}{text}", "\n".repeat((first - 1) as usize));
            let part: RawInclude =
                serde_saphyr::from_str(&shifted).map_err(|e| vec![yaml_problem(&e)])?;
            let mut problems = Vec::new();
            add(
                raw,
                part.regions,
                part.domains,
                part.overwatch,
                &mut problems,
            );
            if !problems.is_empty() {
                return Err(problems);
            }
            merge_patterns(
                raw,
                &file,
                &part.includes,
                depth + 1,
                seen,
                next_line,
                included,
            )?;
        }
    }
    Ok(())
}

/// Appends regions, domains and mappings; a token set differently twice is an error.
fn add(
    raw: &mut RawConfig,
    regions: Vec<RawRegion>,
    domains: Vec<RawDomain>,
    overwatch: Option<RawIncludeOverwatch>,
    problems: &mut Vec<Problem>,
) {
    raw.regions.extend(regions);
    raw.domains.extend(domains);
    let Some(overwatch) = overwatch else { return };
    for (service, token) in overwatch.agent_tokens {
        match raw.overwatch.agent_tokens.get(&service) {
            Some(existing) if existing.value != token.value => problems.push(Problem {
                line: token.referenced.line(),
                column: token.referenced.column(),
                message: format!(
                    "overwatch.agent_tokens.{service}: set differently in another file; one token per service"
                ),
            }),
            Some(_) => {}
            None => {
                raw.overwatch.agent_tokens.insert(service, token);
            }
        }
    }
    if let Some(geo) = overwatch.geolocation {
        raw.overwatch
            .geolocation
            .get_or_insert_with(|| RawGeolocation {
                database_path: None,
                default_region: None,
                custom_mappings: Vec::new(),
                ecs_enabled: true,
            })
            .custom_mappings
            .extend(geo.custom_mappings);
    }
}

/// The files a glob names under `base`: `*` and `?` within a path component, `**` for
/// any number of directories, as OpenGSLB's includes.
fn expand(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let start = if Path::new(pattern).is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = Vec::new();
    walk(&start, &parts, &mut out);
    out.retain(|p| p.is_file());
    out.dedup();
    out
}

fn walk(dir: &Path, parts: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(dir.to_path_buf());
        return;
    };
    if *first == "**" {
        walk(dir, rest, out); // zero directories
        for sub in entries(dir).into_iter().filter(|p| p.is_dir()) {
            walk(&sub, parts, out);
        }
        return;
    }
    if !first.contains(['*', '?']) {
        walk(&dir.join(first), rest, out);
        return;
    }
    for entry in entries(dir) {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with('.') && matches(first.as_bytes(), name.as_bytes()) {
            walk(&entry, rest, out);
        }
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// `*` (any run) and `?` (one byte) within one name.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            matches(rest, name) || (!name.is_empty() && matches(pattern, &name[1..]))
        }
        (Some((b'?', rest)), Some((_, name_rest))) => matches(rest, name_rest),
        (Some((p, rest)), Some((n, name_rest))) if p == n => matches(rest, name_rest),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_and_any_depth() {
        assert!(matches(b"*.yaml", b"eu.yaml"));
        assert!(matches(b"r?.yaml", b"r1.yaml"));
        assert!(!matches(b"*.yaml", b"eu.yml"));
        let dir = std::env::temp_dir().join(format!("opengslb-includes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("domains/eu/deep")).expect("dirs");
        for f in [
            "regions.yaml",
            "domains/a.yaml",
            "domains/eu/deep/b.yaml",
            "domains/c.txt",
        ] {
            std::fs::write(dir.join(f), "").expect("write");
        }
        let names = |pattern: &str| -> Vec<String> {
            expand(&dir, pattern)
                .iter()
                .map(|p| p.strip_prefix(&dir).expect("inside").display().to_string())
                .collect()
        };
        assert_eq!(names("*.yaml"), ["regions.yaml"]);
        assert_eq!(names("domains/*.yaml"), ["domains/a.yaml"]);
        assert_eq!(
            names("domains/**/*.yaml"),
            ["domains/a.yaml", "domains/eu/deep/b.yaml"]
        );
        assert!(names("nowhere/*.yaml").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
