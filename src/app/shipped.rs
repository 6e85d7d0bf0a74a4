//! Which file a playbook argument names: the path as given when it exists, else a playbook by
//! name in `./playbooks/` or among those the Debian package ships in
//! `/usr/share/pvefleet/playbooks` (so `pvefleet run fix-rrd` works from any directory).
//!
//! Only the lookup lives here; reading and validating the file is [`crate::playbook`]'s.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::AppError;

/// Where the Debian package installs the shipped playbooks.
pub const SHIPPED_DIR: &str = "/usr/share/pvefleet/playbooks";

/// Environment variable overriding [`SHIPPED_DIR`] (a package unpacked elsewhere; tests).
pub const SHIPPED_DIR_ENV: &str = "PVEFLEET_SHIPPED_PLAYBOOKS";

/// The directory, relative to the current one, that holds the operator's own playbooks (and
/// in a source tree the shipped ones).
pub const LOCAL_DIR: &str = "playbooks";

/// No file for a playbook argument in any of the places looked at.
#[derive(Debug, thiserror::Error)]
pub struct NotFound {
    /// The argument as given.
    pub arg: PathBuf,
    /// Every path looked at, in order.
    pub looked: Vec<PathBuf>,
    /// The shipped playbooks' directory.
    pub shipped_dir: PathBuf,
    /// The names of the playbooks found there (sorted; empty when there is none).
    pub shipped: Vec<String>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "no playbook {:?}; looked for:", self.arg)?;
        for p in &self.looked {
            writeln!(f, "  {}", p.display())?;
        }
        if self.shipped.is_empty() {
            write!(
                f,
                "no shipped playbooks in {} (the Debian package installs them there)",
                self.shipped_dir.display()
            )
        } else {
            write!(
                f,
                "shipped playbooks (in {}): {}",
                self.shipped_dir.display(),
                self.shipped.join(", ")
            )
        }
    }
}

impl From<NotFound> for AppError {
    fn from(e: NotFound) -> Self {
        // As for any other playbook file that cannot be read.
        AppError::BadInput(e.to_string())
    }
}

/// Where playbooks are looked for.
#[derive(Debug, Clone)]
pub struct PlaybookSearch {
    /// What relative paths are relative to (empty: the process's current directory, and the
    /// paths found stay relative, as the operator wrote them).
    pub cwd: PathBuf,
    /// The shipped playbooks' directory.
    pub shipped_dir: PathBuf,
}

impl PlaybookSearch {
    /// The current directory and [`SHIPPED_DIR`] (or `$PVEFLEET_SHIPPED_PLAYBOOKS`).
    pub fn from_env() -> PlaybookSearch {
        let shipped_dir = std::env::var_os(SHIPPED_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(SHIPPED_DIR), PathBuf::from);
        PlaybookSearch {
            cwd: PathBuf::new(),
            shipped_dir,
        }
    }

    /// The paths tried for `arg`, in order: `arg` itself; then, when `arg` is a bare name
    /// (`fix-rrd`, `fix-rrd.toml`) or `playbooks/NAME` as the README writes it, `NAME.toml`,
    /// `playbooks/NAME.toml` and the shipped `NAME.toml`. A path to anywhere else is only
    /// itself.
    pub fn candidates(&self, arg: &Path) -> Vec<PathBuf> {
        let mut out = vec![self.cwd.join(arg)];
        if let Some(name) = playbook_name(arg) {
            let file = format!("{name}.toml");
            for p in [
                self.cwd.join(&file),
                self.cwd.join(LOCAL_DIR).join(&file),
                self.shipped_dir.join(&file),
            ] {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The file `arg` names: the first of [`Self::candidates`] that is a file. A path that names
    /// no playbook by name comes back as given, so that reading it reports the error as for
    /// any file.
    pub fn find(&self, arg: &Path) -> Result<PathBuf, NotFound> {
        let looked = self.candidates(arg);
        if let Some(p) = looked.iter().find(|p| p.is_file()) {
            return Ok(p.clone());
        }
        if looked.len() == 1 {
            return Ok(looked[0].clone());
        }
        Err(NotFound {
            arg: arg.to_path_buf(),
            looked,
            shipped_dir: self.shipped_dir.clone(),
            shipped: shipped_names(&self.shipped_dir),
        })
    }
}

/// The file a playbook argument of `plan` or `run` names (see [`PlaybookSearch::find`]).
pub fn find_playbook(arg: &Path) -> Result<PathBuf, AppError> {
    Ok(PlaybookSearch::from_env().find(arg)?)
}

/// The name `arg` gives a playbook by, when it is `NAME`, `NAME.toml`, `playbooks/NAME` or
/// `playbooks/NAME.toml` (a leading `./` allowed); `None` for any other path.
fn playbook_name(arg: &Path) -> Option<String> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in arg.components() {
        match c {
            Component::CurDir if parts.is_empty() => {}
            Component::Normal(s) => parts.push(s),
            _ => return None,
        }
    }
    let last = match parts.as_slice() {
        [name] => name,
        [dir, name] if *dir == OsStr::new(LOCAL_DIR) => name,
        _ => return None,
    };
    let last = last.to_str()?;
    let name = last.strip_suffix(".toml").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_string())
}

/// One playbook `plan`/`run` can find by name.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    /// The name to give (`pvefleet run NAME`).
    pub name: String,
    /// The first line of its `description` (empty when it has none or cannot be read).
    pub purpose: String,
    /// The file.
    pub path: PathBuf,
    /// `local` (./playbooks) or `shipped`.
    pub source: &'static str,
    /// A local playbook of the same name is found first.
    pub shadowed: bool,
}

/// The playbooks found by name, local ones first (the order `find` tries them in).
pub fn list(search: &PlaybookSearch) -> Vec<Listed> {
    let mut out: Vec<Listed> = Vec::new();
    let local = search.cwd.join(LOCAL_DIR);
    for (dir, source) in [(&local, "local"), (&search.shipped_dir, "shipped")] {
        for name in shipped_names(dir) {
            let path = dir.join(format!("{name}.toml"));
            let purpose = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
                .and_then(|t| t.get("description")?.as_str().map(str::to_string))
                .and_then(|d| d.lines().next().map(str::to_string))
                .unwrap_or_default();
            let shadowed = out.iter().any(|l| l.name == name);
            out.push(Listed {
                name,
                purpose,
                path,
                source,
                shadowed,
            });
        }
    }
    out
}

/// `pvefleet playbooks`.
pub fn cmd_playbooks(g: &crate::cli::GlobalOpts) -> Result<u8, AppError> {
    let found = list(&PlaybookSearch::from_env());
    if g.json {
        super::print_json(&serde_json::json!({"version": 1, "playbooks": found}));
        return Ok(crate::exit::OK);
    }
    if found.is_empty() {
        println!(
            "no playbooks in ./{LOCAL_DIR} or {}",
            PlaybookSearch::from_env().shipped_dir.display()
        );
    }
    for l in &found {
        let note = if l.shadowed {
            " (shadowed by the local one)"
        } else {
            ""
        };
        println!(
            "{:18} {}
{:18} {} {}{note}",
            l.name,
            crate::sanitize::sanitize_str(&l.purpose),
            "",
            l.source,
            l.path.display()
        );
    }
    Ok(crate::exit::OK)
}

/// The names (file stems) of the `*.toml` files in `dir`, sorted; empty when it cannot be read.
pub fn shipped_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension() == Some(OsStr::new("toml")))
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current directory and a shipped directory, both temporary, and a search over them.
    struct Dirs {
        _tmp: tempfile::TempDir,
        cwd: PathBuf,
        shipped: PathBuf,
    }

    impl Dirs {
        fn new() -> Dirs {
            let tmp = tempfile::tempdir().unwrap();
            let cwd = tmp.path().join("work");
            let shipped = tmp.path().join("usr/share/pvefleet/playbooks");
            std::fs::create_dir_all(&cwd).unwrap();
            std::fs::create_dir_all(&shipped).unwrap();
            Dirs {
                _tmp: tmp,
                cwd,
                shipped,
            }
        }

        fn search(&self) -> PlaybookSearch {
            PlaybookSearch {
                cwd: self.cwd.clone(),
                shipped_dir: self.shipped.clone(),
            }
        }

        fn touch(&self, path: &Path) -> PathBuf {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "name = \"x\"\n").unwrap();
            path.to_path_buf()
        }
    }

    #[test]
    fn the_list_has_each_playbook_with_its_purpose_and_marks_a_shadowed_one() {
        let d = Dirs::new();
        std::fs::write(
            d.shipped.join("fix-rrd.toml"),
            "name = \"fix-rrd\"\ndescription = \"Fix RRD errors\\nmore\"\n",
        )
        .unwrap();
        d.touch(&d.shipped.join("upgrade.toml"));
        d.touch(&d.cwd.join("playbooks/upgrade.toml"));
        let l = list(&d.search());
        let got: Vec<(&str, &str, &str, bool)> = l
            .iter()
            .map(|l| (l.name.as_str(), l.purpose.as_str(), l.source, l.shadowed))
            .collect();
        assert_eq!(
            got,
            [
                ("upgrade", "", "local", false),
                ("fix-rrd", "Fix RRD errors", "shipped", false),
                ("upgrade", "", "shipped", true),
            ]
        );
    }

    #[test]
    fn bare_name_finds_the_shipped_playbook_with_or_without_toml() {
        let d = Dirs::new();
        let shipped = d.touch(&d.shipped.join("fix-rrd.toml"));
        for arg in ["fix-rrd", "fix-rrd.toml", "./fix-rrd"] {
            assert_eq!(d.search().find(Path::new(arg)).unwrap(), shipped, "{arg}");
        }
    }

    #[test]
    fn local_playbooks_dir_comes_before_the_shipped_one() {
        let d = Dirs::new();
        d.touch(&d.shipped.join("fix-rrd.toml"));
        let local = d.touch(&d.cwd.join("playbooks/fix-rrd.toml"));
        assert_eq!(d.search().find(Path::new("fix-rrd")).unwrap(), local);
    }

    #[test]
    fn a_file_in_the_current_directory_comes_first() {
        let d = Dirs::new();
        d.touch(&d.shipped.join("fix-rrd.toml"));
        d.touch(&d.cwd.join("playbooks/fix-rrd.toml"));
        let here = d.touch(&d.cwd.join("fix-rrd.toml"));
        assert_eq!(d.search().find(Path::new("fix-rrd")).unwrap(), here);
        assert_eq!(d.search().find(Path::new("fix-rrd.toml")).unwrap(), here);
        // A file named exactly as given, even without `.toml`, is taken as it is.
        let exact = d.touch(&d.cwd.join("fix-rrd"));
        assert_eq!(d.search().find(Path::new("fix-rrd")).unwrap(), exact);
    }

    #[test]
    fn readme_style_playbooks_path_falls_back_to_the_shipped_one() {
        let d = Dirs::new();
        let shipped = d.touch(&d.shipped.join("fix-rrd.toml"));
        assert_eq!(
            d.search()
                .find(Path::new("playbooks/fix-rrd.toml"))
                .unwrap(),
            shipped
        );
    }

    #[test]
    fn other_paths_are_returned_as_given_for_the_loader_to_report() {
        let d = Dirs::new();
        d.touch(&d.shipped.join("fix-rrd.toml"));
        for arg in ["/etc/fix-rrd.toml", "elsewhere/fix-rrd.toml", "../fix-rrd"] {
            assert_eq!(
                d.search().find(Path::new(arg)).unwrap(),
                d.cwd.join(arg),
                "{arg}"
            );
        }
    }

    #[test]
    fn the_given_path_is_kept_relative_when_cwd_is_the_process_one() {
        let s = PlaybookSearch {
            cwd: PathBuf::new(),
            shipped_dir: PathBuf::from("/nonexistent/pvefleet"),
        };
        assert_eq!(
            s.candidates(Path::new("fix-rrd")),
            ["fix-rrd", "fix-rrd.toml", "playbooks/fix-rrd.toml"]
                .iter()
                .map(PathBuf::from)
                .chain([PathBuf::from("/nonexistent/pvefleet/fix-rrd.toml")])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn not_found_lists_where_it_looked_and_the_shipped_names() {
        let d = Dirs::new();
        d.touch(&d.shipped.join("sync-clock.toml"));
        d.touch(&d.shipped.join("fix-rrd.toml"));
        d.touch(&d.shipped.join("README.md"));
        let e = d.search().find(Path::new("fix-rdd")).unwrap_err();
        assert_eq!(
            e.looked,
            vec![
                d.cwd.join("fix-rdd"),
                d.cwd.join("fix-rdd.toml"),
                d.cwd.join("playbooks/fix-rdd.toml"),
                d.shipped.join("fix-rdd.toml"),
            ]
        );
        assert_eq!(e.shipped, ["fix-rrd", "sync-clock"]);
        let text = e.to_string();
        assert!(
            text.starts_with("no playbook \"fix-rdd\"; looked for:\n"),
            "{text}"
        );
        for p in &e.looked {
            assert!(text.contains(&format!("\n  {}\n", p.display())), "{text}");
        }
        assert!(
            text.ends_with(&format!(
                "shipped playbooks (in {}): fix-rrd, sync-clock",
                d.shipped.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn not_found_without_shipped_playbooks_says_where_they_would_be() {
        let d = Dirs::new();
        let s = PlaybookSearch {
            shipped_dir: d.cwd.join("absent"),
            ..d.search()
        };
        let e = s.find(Path::new("fix-rrd")).unwrap_err();
        assert!(e.shipped.is_empty());
        assert!(
            e.to_string().ends_with(&format!(
                "no shipped playbooks in {} (the Debian package installs them there)",
                d.cwd.join("absent").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_directory_named_like_the_playbook_is_not_taken_for_it() {
        let d = Dirs::new();
        std::fs::create_dir_all(d.cwd.join("fix-rrd")).unwrap();
        std::fs::create_dir_all(d.cwd.join("playbooks/fix-rrd.toml")).unwrap();
        let shipped = d.touch(&d.shipped.join("fix-rrd.toml"));
        assert_eq!(d.search().find(Path::new("fix-rrd")).unwrap(), shipped);
    }

    #[test]
    fn names_accepted_and_refused() {
        let name = |s: &str| playbook_name(Path::new(s));
        assert_eq!(name("fix-rrd").as_deref(), Some("fix-rrd"));
        assert_eq!(name("fix-rrd.toml").as_deref(), Some("fix-rrd"));
        assert_eq!(name("./playbooks/fix-rrd").as_deref(), Some("fix-rrd"));
        assert_eq!(name("other/fix-rrd.toml"), None);
        assert_eq!(name("/fix-rrd.toml"), None);
        assert_eq!(name(".toml"), None);
        assert_eq!(name(".."), None);
    }
}
