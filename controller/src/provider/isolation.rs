//! Who a local instance runs as. With isolation on, each instance's agent
//! and workload run as a uid of their own, taken from a configured range,
//! with no supplementary groups, no capabilities, `no_new_privs` and a clean
//! environment; so a compromised workload can read neither the controller's
//! `pki/` nor another instance's key (DESIGN §3).
//!
//! The switch is made by util-linux's `setpriv`, exec'd in place of the
//! program, so the pid (and the provider's record of it) is the program's.
//! It works for root and for a controller that holds CAP_SETUID, CAP_SETGID,
//! CAP_CHOWN, CAP_KILL and CAP_DAC_OVERRIDE (the packaged unit grants them):
//! `setpriv` also drops the inheritable and ambient capabilities, which
//! `setuid` alone keeps for a controller that is not root.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The PATH instance processes get: they inherit nothing of the controller's.
pub const INSTANCE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a non-root controller needs to run instances as other
/// users: set and drop uids and gids, hand files to them, signal and remove
/// what they leave. Bit numbers from linux/capability.h.
const NEEDED_CAPS: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
];

/// The uids instances run as, and which are taken.
#[derive(Debug)]
pub struct Users {
    first: u32,
    count: u32,
    setpriv: PathBuf,
    /// Instance id -> uid, for every instance this provider knows of.
    taken: Mutex<HashMap<String, u32>>,
}

impl Users {
    pub fn new(first: u32, count: u32, setpriv: PathBuf) -> Self {
        Self {
            first,
            count,
            setpriv,
            taken: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a uid in use (an instance found on disk).
    pub fn note(&self, id: &str, uid: u32) {
        self.lock().insert(id.to_owned(), uid);
    }

    /// The lowest free uid of the range for `id`.
    pub fn take(&self, id: &str) -> Result<u32, String> {
        let mut taken = self.lock();
        if let Some(&uid) = taken.get(id) {
            return Ok(uid);
        }
        let used: std::collections::HashSet<u32> = taken.values().copied().collect();
        let uid = (self.first..self.first.saturating_add(self.count))
            .find(|u| !used.contains(u))
            .ok_or_else(|| {
                format!(
                    "all {} instance uids ({}..{}) are in use; widen provider.uid_range",
                    self.count,
                    self.first,
                    self.first.saturating_add(self.count)
                )
            })?;
        taken.insert(id.to_owned(), uid);
        Ok(uid)
    }

    pub fn free(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `setpriv` that `argv` puts in front of a program.
    pub fn setpriv(&self) -> &Path {
        &self.setpriv
    }

    /// The argv that runs `program` as `uid` (and gid `uid`) through setpriv.
    pub fn argv(&self, uid: u32, program: impl AsRef<OsStr>) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            self.setpriv.clone().into(),
            format!("--reuid={uid}").into(),
            format!("--regid={uid}").into(),
        ];
        argv.extend(
            [
                "--clear-groups",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--no-new-privs",
                "--",
            ]
            .map(OsString::from),
        );
        argv.push(program.as_ref().to_owned());
        argv
    }
}

/// Why this process cannot run instances as other users, if it cannot.
pub fn cannot_switch_users() -> Option<String> {
    let status = match fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot read /proc/self/status: {e}")),
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "the controller is not root and lacks {}",
            missing.join(", ")
        ))
    }
}

/// util-linux's `setpriv`, looked up where Debian and RPM distributions put it.
pub fn find_setpriv() -> Result<PathBuf, String> {
    ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "setpriv (util-linux) is not installed".to_owned())
}

/// The first directory from `/` down to `dir` that other users cannot
/// traverse, which would keep instance users from their own files.
pub fn untraversable(dir: &Path) -> Option<(PathBuf, u32)> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let mut path = PathBuf::new();
    for part in dir.components() {
        path.push(part);
        let Ok(meta) = fs::metadata(&path) else {
            // Not made yet: the provider makes it traversable.
            return None;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            return Some((path, mode));
        }
    }
    None
}

/// Gives `path` to `uid` (and gid `uid`).
pub fn give(path: &Path, uid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .map_err(|e| format!("cannot give {} to uid {uid}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_taken_lowest_first_and_freed() {
        let users = Users::new(1000, 3, PathBuf::from("/usr/bin/setpriv"));
        users.note("old", 1001);
        assert_eq!(users.take("a"), Ok(1000));
        assert_eq!(users.take("a"), Ok(1000), "the same id keeps its uid");
        assert_eq!(users.take("b"), Ok(1002));
        let full = users.take("c").unwrap_err();
        assert!(full.contains("all 3 instance uids"), "{full}");
        users.free("old");
        assert_eq!(users.take("c"), Ok(1001));
    }

    #[test]
    fn a_private_ancestor_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = tmp.path().join("a/b");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(tmp.path().join("a"), fs::Permissions::from_mode(0o700)).unwrap();
        let (path, mode) = untraversable(&inner).expect("a is private");
        assert_eq!((path, mode), (tmp.path().join("a"), 0o700));
        fs::set_permissions(tmp.path().join("a"), fs::Permissions::from_mode(0o751)).unwrap();
        // Anything above the temp dir is the host's business; /tmp is 1777.
        assert_eq!(untraversable(&inner), None);
    }
}
