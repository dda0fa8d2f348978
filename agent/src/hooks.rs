//! Lifecycle hook scripts: the controller asks the agent to run a command on
//! its own instance (drain connections, flush a cache, register somewhere)
//! and the command's exit status completes the lifecycle action.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ebb_proto::v1 as pb;
use tokio::io::AsyncReadExt;

use crate::config::HooksConfig;

/// What is sent back of a script's output: its last few KiB.
const OUTPUT_TAIL_BYTES: usize = 4096;
/// How long output is still read after the script exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The only variable a script gets besides the hook's own: the agent's
/// environment (and whatever it holds) stays with the agent.
const SCRIPT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs one hook script and describes how it ended. Never fails: a script
/// that cannot start, runs past its timeout or is refused is an answer too.
/// A refusal (scripts off, or `argv[0]` not an executable of the hooks
/// directory) is answered at once with `refused` set and the reason.
pub async fn run(request: pb::RunHook, hooks: &HooksConfig) -> pb::HookResult {
    let started = Instant::now();
    let mut result = pb::HookResult {
        token: request.token.clone(),
        ..Default::default()
    };
    let Some((program, args)) = request.command.split_first() else {
        result.error = "the hook has no command".into();
        result.refused = true;
        return result;
    };
    let path = match allowed_program(hooks, program) {
        Ok(path) => path,
        Err(why) => {
            result.error = why;
            result.refused = true;
            return result;
        }
    };
    let spawned = tokio::process::Command::new(&path)
        .args(args)
        .env_clear()
        .envs(&request.env)
        .env("PATH", SCRIPT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            result.error = format!("cannot run `{}`: {e}", path.display());
            return result;
        }
    };
    // Both pipes are drained while the script runs, so a chatty script
    // never blocks on a full pipe.
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let drain = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(mut s) = stdout {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        out.extend_from_slice(&err);
        out
    });
    let timeout = Duration::from_millis(request.timeout_ms.max(1));
    let outcome = tokio::time::timeout(timeout, child.wait()).await;
    if outcome.is_err() {
        let _ = child.kill().await;
    }
    // A background process the script left holding its output is not
    // waited for.
    let mut drain = drain;
    let output = match tokio::time::timeout(OUTPUT_GRACE, &mut drain).await {
        Ok(Ok(bytes)) => bytes,
        _ => {
            drain.abort();
            Vec::new()
        }
    };
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result.output = tail(&output);
    match outcome {
        Ok(Ok(status)) => match status.code() {
            Some(code) => result.exit_code = Some(code),
            None => {
                use std::os::unix::process::ExitStatusExt;
                result.error = format!("killed by signal {}", status.signal().unwrap_or_default());
            }
        },
        Ok(Err(e)) => result.error = format!("waiting for `{}`: {e}", path.display()),
        Err(_) => result.error = format!("still running after {timeout:?}; killed"),
    }
    result
}

/// Where `program` (a hook's `argv[0]`) may run from, or why it may not:
/// scripts must be allowed, and `program` must resolve, symlinks and `..`
/// followed, to an executable file inside the hooks directory that is not
/// world-writable (nor is the directory). A bare name is looked up in the
/// directory, a relative path is taken from it.
fn allowed_program(hooks: &HooksConfig, program: &str) -> Result<PathBuf, String> {
    if !hooks.allow_scripts {
        return Err(
            "hook scripts are disabled in agent.toml ([hooks] allow_scripts = false)".into(),
        );
    }
    let dir = &hooks.dir;
    let shown = dir.display();
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| format!("the hooks directory {shown} cannot be read: {e}"))?;
    let dir_mode = std::fs::metadata(&canon_dir)
        .map_err(|e| format!("the hooks directory {shown} cannot be read: {e}"))?
        .permissions()
        .mode();
    if dir_mode & 0o002 != 0 {
        return Err(format!(
            "the hooks directory {shown} is world-writable; no script in it runs"
        ));
    }
    let named = Path::new(program);
    let candidate = if named.is_absolute() {
        named.to_owned()
    } else {
        canon_dir.join(named)
    };
    let outside = || format!("`{program}` is not inside the hooks directory {shown}");
    let resolved = match candidate.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                if named.is_absolute() && !candidate.starts_with(&canon_dir) {
                    outside()
                } else {
                    format!("`{program}` does not exist in the hooks directory {shown}")
                },
            );
        }
        Err(e) => return Err(format!("`{program}` cannot be read: {e}")),
    };
    if !resolved.starts_with(&canon_dir) || resolved == canon_dir {
        return Err(outside());
    }
    let meta =
        std::fs::metadata(&resolved).map_err(|e| format!("`{program}` cannot be read: {e}"))?;
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        Err(format!(
            "`{program}` in the hooks directory {shown} is not a file"
        ))
    } else if mode & 0o111 == 0 {
        Err(format!(
            "`{program}` in the hooks directory {shown} is not executable"
        ))
    } else if mode & 0o002 != 0 {
        Err(format!(
            "`{program}` in the hooks directory {shown} is world-writable"
        ))
    } else {
        Ok(resolved)
    }
}

/// The last `OUTPUT_TAIL_BYTES` of `bytes` as text, cut at a char boundary.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut start = text.len().saturating_sub(OUTPUT_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&str], timeout_ms: u64) -> pb::RunHook {
        pb::RunHook {
            token: "lat-1".into(),
            hook_name: "drain".into(),
            transition: "SCALE_IN".into(),
            command: argv.iter().map(|s| s.to_string()).collect(),
            timeout_ms,
            env: [("EBB_INSTANCE_ID".to_owned(), "i-7".to_owned())].into(),
        }
    }

    /// A hooks directory holding `name` with `body` and `mode`, allowed.
    struct HooksDir {
        dir: tempfile::TempDir,
        config: HooksConfig,
    }

    impl HooksDir {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let hooks = dir.path().join("hooks.d");
            std::fs::create_dir(&hooks).unwrap();
            std::fs::set_permissions(&hooks, std::fs::Permissions::from_mode(0o755)).unwrap();
            Self {
                config: HooksConfig {
                    allow_scripts: true,
                    dir: hooks,
                },
                dir,
            }
        }

        fn script(&self, name: &str, body: &str, mode: u32) -> PathBuf {
            let path = self.config.dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }

        /// A script beside the hooks directory, not in it.
        fn outside(&self, name: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    #[tokio::test]
    async fn exit_status_output_and_a_clean_environment_come_back() {
        let h = HooksDir::new();
        h.script(
            "drain",
            "echo draining $EBB_INSTANCE_ID $1; echo \"path=$PATH home=${HOME:-none}\"; echo oops >&2; exit 3",
            0o755,
        );
        let r = run(request(&["drain", "now"], 10_000), &h.config).await;
        assert_eq!(r.token, "lat-1");
        assert_eq!(r.exit_code, Some(3), "{r:?}");
        assert_eq!(
            r.output,
            format!("draining i-7 now\npath={SCRIPT_PATH} home=none\noops\n")
        );
        assert!(r.error.is_empty() && !r.refused, "{r:?}");
        // The absolute path of a script inside the directory runs too.
        let inside = h.script("ok", "exit 0", 0o750);
        let r = run(request(&[inside.to_str().unwrap()], 10_000), &h.config).await;
        assert_eq!((r.exit_code, r.refused), (Some(0), false), "{r:?}");
    }

    #[tokio::test]
    async fn scripts_are_refused_by_default() {
        let h = HooksDir::new();
        h.script("drain", "exit 0", 0o755);
        let r = run(request(&["drain"], 10_000), &HooksConfig::default()).await;
        assert_eq!((r.exit_code, r.refused), (None, true));
        assert_eq!(
            r.error,
            "hook scripts are disabled in agent.toml ([hooks] allow_scripts = false)"
        );
    }

    #[tokio::test]
    async fn only_executables_inside_the_hooks_directory_run() {
        let h = HooksDir::new();
        let dir = h.config.dir.display().to_string();
        h.script("not-exec", "exit 0", 0o644);
        h.script("open", "exit 0", 0o757);
        std::fs::create_dir(h.config.dir.join("sub")).unwrap();
        let outside = h.outside("evil");
        std::os::unix::fs::symlink(&outside, h.config.dir.join("link")).unwrap();
        let outside = outside.to_str().unwrap().to_owned();
        for (argv0, why) in [
            (
                "sh",
                format!("`sh` does not exist in the hooks directory {dir}"),
            ),
            (
                "/bin/sh",
                format!("`/bin/sh` is not inside the hooks directory {dir}"),
            ),
            (
                outside.as_str(),
                format!("`{outside}` is not inside the hooks directory {dir}"),
            ),
            (
                "../evil",
                format!("`../evil` is not inside the hooks directory {dir}"),
            ),
            (
                "sub/../../evil",
                format!("`sub/../../evil` is not inside the hooks directory {dir}"),
            ),
            (
                "link",
                format!("`link` is not inside the hooks directory {dir}"),
            ),
            (".", format!("`.` is not inside the hooks directory {dir}")),
            (
                "sub",
                format!("`sub` in the hooks directory {dir} is not a file"),
            ),
            (
                "not-exec",
                format!("`not-exec` in the hooks directory {dir} is not executable"),
            ),
            (
                "open",
                format!("`open` in the hooks directory {dir} is world-writable"),
            ),
            (
                "/nonexistent/ebb-hook",
                format!("`/nonexistent/ebb-hook` is not inside the hooks directory {dir}"),
            ),
        ] {
            let r = run(request(&[argv0], 10_000), &h.config).await;
            assert_eq!((r.exit_code, r.refused), (None, true), "{argv0}: {r:?}");
            assert_eq!(r.error, why, "{argv0}");
        }
        let r = run(request(&[], 10_000), &h.config).await;
        assert_eq!(r.error, "the hook has no command");

        // A world-writable directory: anyone could have put the script there.
        h.script("fine", "exit 0", 0o755);
        std::fs::set_permissions(&h.config.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let r = run(request(&["fine"], 10_000), &h.config).await;
        assert_eq!(
            r.error,
            format!("the hooks directory {dir} is world-writable; no script in it runs")
        );
    }

    #[tokio::test]
    async fn a_slow_script_is_killed_at_its_timeout() {
        let h = HooksDir::new();
        h.script("slow", "exec sleep 30", 0o755);
        let r = run(request(&["slow"], 100), &h.config).await;
        assert_eq!((r.exit_code, r.refused), (None, false));
        assert!(r.error.contains("killed"), "{}", r.error);
        assert!(r.duration_ms < 10_000, "{}", r.duration_ms);
    }

    #[test]
    fn only_the_tail_is_kept() {
        let long = "x".repeat(OUTPUT_TAIL_BYTES + 10) + "end";
        let t = tail(long.as_bytes());
        assert_eq!(t.len(), OUTPUT_TAIL_BYTES);
        assert!(t.ends_with("end"));
        // A multi-byte char cut in half is skipped, not split.
        let s = "é".repeat(OUTPUT_TAIL_BYTES);
        assert!(tail(s.as_bytes()).chars().all(|c| c == 'é'));
    }
}
