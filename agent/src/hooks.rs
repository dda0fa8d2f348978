//! Lifecycle hook scripts: the controller asks the agent to run a command on
//! its own instance (drain connections, flush a cache, register somewhere)
//! and the command's exit status completes the lifecycle action.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ebb_proto::v1 as pb;
use tokio::io::AsyncReadExt;

/// What is sent back of a script's output: its last few KiB.
const OUTPUT_TAIL_BYTES: usize = 4096;
/// How long output is still read after the script exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs one hook script and describes how it ended. Never fails: a script
/// that cannot start, runs past its timeout or is refused is an answer too.
pub async fn run(request: pb::RunHook, allowed: bool) -> pb::HookResult {
    let started = Instant::now();
    let mut result = pb::HookResult {
        token: request.token.clone(),
        ..Default::default()
    };
    if !allowed {
        result.error =
            "hook scripts are disabled in agent.toml ([hooks] allow_scripts = false)".into();
        return result;
    }
    let Some((program, args)) = request.command.split_first() else {
        result.error = "the hook has no command".into();
        return result;
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .envs(&request.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            result.error = format!("cannot run `{program}`: {e}");
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
        Ok(Err(e)) => result.error = format!("waiting for `{program}`: {e}"),
        Err(_) => result.error = format!("still running after {timeout:?}; killed"),
    }
    result
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

    #[tokio::test]
    async fn exit_status_and_output_come_back() {
        let r = run(
            request(
                &[
                    "sh",
                    "-c",
                    "echo draining $EBB_INSTANCE_ID; echo oops >&2; exit 3",
                ],
                10_000,
            ),
            true,
        )
        .await;
        assert_eq!(r.token, "lat-1");
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.output, "draining i-7\noops\n");
        assert!(r.error.is_empty());
    }

    #[tokio::test]
    async fn refused_missing_and_slow_scripts_say_why() {
        let r = run(request(&["true"], 10_000), false).await;
        assert_eq!(r.exit_code, None);
        assert!(r.error.contains("disabled in agent.toml"), "{}", r.error);

        let r = run(request(&["/nonexistent/ebb-hook"], 10_000), true).await;
        assert_eq!(r.exit_code, None);
        assert!(
            r.error.starts_with("cannot run `/nonexistent/ebb-hook`"),
            "{}",
            r.error
        );

        let r = run(request(&[], 10_000), true).await;
        assert_eq!(r.error, "the hook has no command");

        let r = run(request(&["sleep", "30"], 100), true).await;
        assert_eq!(r.exit_code, None);
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
