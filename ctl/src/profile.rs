//! The profile file, `$XDG_CONFIG_HOME/ebb/ebbctl.toml` (else
//! `~/.config/ebb/ebbctl.toml`): named sets of connection settings, one
//! TOML table each, so a remote controller needs no flags on every call.
//! A flag or an `EBB_*` variable beats the profile; the profile beats the
//! local controller's data dir.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";
/// The file's place under the config dir.
const FILE: &str = "ebb/ebbctl.toml";

/// One profile's settings; each is optional and falls back as a missing
/// flag does. Relative paths are relative to the profile file's directory.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The controllers to try, in order (one string or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub controller: Vec<String>,
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a \"host:port\" string or a list of them")
    })? {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

/// Where the profile file is: `$XDG_CONFIG_HOME/ebb/ebbctl.toml`, else
/// `$HOME/.config/ebb/ebbctl.toml`; `None` without either variable.
pub fn file_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    match (xdg_config_home, home) {
        // The XDG spec says a relative value is to be ignored.
        (Some(xdg), _) if Path::new(&xdg).is_absolute() => Some(PathBuf::from(xdg).join(FILE)),
        (_, Some(home)) if !home.is_empty() => Some(PathBuf::from(home).join(".config").join(FILE)),
        _ => None,
    }
}

/// The profile `name` from the file at `path`, or `default` when no name
/// is given. A named profile must exist; the default one may be absent,
/// and so may the file when no profile is named.
pub fn load(path: Option<&Path>, name: Option<&str>) -> Result<Option<Profile>> {
    let Some(path) = path else {
        return match name {
            Some(name) => Err(Error::Usage(format!(
                "profile `{name}`: no profile file (neither XDG_CONFIG_HOME nor HOME is set)"
            ))),
            None => Ok(None),
        };
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_none() => return Ok(None),
        Err(e) => return Err(Error::read(path, &e, "")),
    };
    let mut profiles = parse(path, &text)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let wanted = name.unwrap_or(DEFAULT_PROFILE);
    match profiles.remove(wanted) {
        Some(profile) => Ok(Some(profile.relative_to(dir))),
        None if name.is_none() => Ok(None),
        None => Err(Error::Usage(format!(
            "profile `{wanted}` is not in {} (it has: {})",
            path.display(),
            if profiles.is_empty() {
                "none".to_owned()
            } else {
                profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ))),
    }
}

/// Every profile in the file; a mistake names the file, its line and key.
fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, Profile>> {
    toml::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                let line_text = text.lines().nth(line - 1).unwrap_or("");
                let key = line_text
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                    .filter(|k| !k.is_empty());
                (Some(line), key)
            }
            None => (None, None),
        };
        let mut place = String::new();
        if let Some(line) = line {
            place.push_str(&format!("line {line}"));
        }
        if let Some(key) = key {
            place.push_str(&format!(", key `{key}`"));
        }
        let message = e.message().trim_end();
        Error::Usage(format!(
            "bad profile file {}: {}{}",
            path.display(),
            if place.is_empty() {
                String::new()
            } else {
                format!("{place}: ")
            },
            message
        ))
    })
}

impl Profile {
    fn relative_to(self, dir: &Path) -> Self {
        let abs = |p: Option<PathBuf>| p.map(|p| if p.is_absolute() { p } else { dir.join(p) });
        Self {
            ca: abs(self.ca),
            cert: abs(self.cert),
            key: abs(self.key),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ebbctl.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_file_is_under_xdg_config_home_else_home() {
        assert_eq!(
            file_path(Some("/x".into()), Some("/h".into())),
            Some(PathBuf::from("/x/ebb/ebbctl.toml"))
        );
        assert_eq!(
            file_path(None, Some("/h".into())),
            Some(PathBuf::from("/h/.config/ebb/ebbctl.toml"))
        );
        assert_eq!(
            file_path(Some("rel".into()), Some("/h".into())),
            Some(PathBuf::from("/h/.config/ebb/ebbctl.toml"))
        );
        assert_eq!(file_path(None, None), None);
    }

    #[test]
    fn a_named_profile_is_read_with_paths_relative_to_the_file() {
        let (dir, path) = write(
            "[default]\ncontroller = \"a:1\"\n\n[prod]\ncontroller = [\"p1:7440\", \"p2:7440\"]\n\
             server_name = \"ctl.prod\"\nca = \"prod/ca.crt\"\ncert = \"/abs/admin.crt\"\n",
        );
        let prod = load(Some(&path), Some("prod")).unwrap().unwrap();
        assert_eq!(prod.controller, ["p1:7440", "p2:7440"]);
        assert_eq!(prod.server_name.as_deref(), Some("ctl.prod"));
        assert_eq!(prod.ca, Some(dir.path().join("prod/ca.crt")));
        assert_eq!(prod.cert, Some(PathBuf::from("/abs/admin.crt")));
        assert_eq!(prod.key, None);
        let default = load(Some(&path), None).unwrap().unwrap();
        assert_eq!(default.controller, ["a:1"]);
    }

    #[test]
    fn no_file_or_no_default_profile_is_no_profile() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load(Some(&dir.path().join("none.toml")), None).unwrap(),
            None
        );
        assert_eq!(load(None, None).unwrap(), None);
        let (_dir, path) = write("[prod]\ncontroller = \"p:1\"\n");
        assert_eq!(load(Some(&path), None).unwrap(), None);
    }

    #[test]
    fn an_unknown_profile_is_named_with_those_there_are() {
        let (_dir, path) = write("[prod]\ncontroller = \"p:1\"\n[staging]\n");
        let err = load(Some(&path), Some("dev")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "profile `dev` is not in {} (it has: prod, staging)",
                path.display()
            )
        );
        assert_eq!(err.exit_code(), 2);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ebbctl.toml");
        let err = load(Some(&missing), Some("dev")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read "), "{err}");
        assert!(err.contains("it does not exist"), "{err}");
    }

    #[test]
    fn a_bad_file_names_the_file_line_and_key() {
        let (_dir, path) = write("[prod]\ncontroller = \"p:1\"\ncerts = \"x\"\n");
        let err = load(Some(&path), Some("prod")).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "bad profile file {}: line 3, key `certs`: unknown field `certs`",
                path.display()
            )),
            "{err}"
        );
        let (_dir, path) = write("[default]\n\nca = 7\n");
        let err = load(Some(&path), None).unwrap_err().to_string();
        assert!(err.contains(": line 3, key `ca`: "), "{err}");
        let (_dir, path) = write("[default]\ncontroller = 7\n");
        let err = load(Some(&path), None).unwrap_err().to_string();
        assert!(
            err.contains(": line 2, key `controller`: expected a \"host:port\" string"),
            "{err}"
        );
        let (_dir, path) = write("[default\n");
        let err = load(Some(&path), None).unwrap_err().to_string();
        assert!(err.contains("bad profile file"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
