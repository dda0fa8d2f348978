//! `ebbctl completion bash` as a user loads it: sourced by a real bash,
//! it registers ebbctl and completes its subcommands and flags.

use std::process::Command;

/// Runs `script` in `bash -c` with the completion script at $1.
fn bash(script: &str, completion: &std::path::Path) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .arg(completion)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash ({e}): install the Debian package bash"));
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_bash_completion_loads_and_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ebbctl.bash");
    let out = Command::new(env!("CARGO_BIN_EXE_ebbctl"))
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&file, &out.stdout).unwrap();

    let registered = bash("source \"$1\" && complete -p ebbctl", &file);
    assert_eq!(
        registered.trim(),
        "complete -o bashdefault -o default -o nosort -F _ebbctl ebbctl"
    );
    // What bash would offer after `ebbctl notif<TAB>` and
    // `ebbctl notification <TAB>`.
    let complete = |words: &str, cword: usize| {
        bash(
            &format!(
                "source \"$1\"; COMP_WORDS=({words}); COMP_CWORD={cword}; \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _ebbctl ebbctl \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[*]}}\""
            ),
            &file,
        )
    };
    assert_eq!(complete("ebbctl notif", 1).trim(), "notification");
    let subs = complete("ebbctl notification ''", 2);
    let subs: Vec<&str> = subs.split_whitespace().collect();
    for want in ["list", "create", "delete"] {
        assert!(subs.contains(&want), "{want} not in {subs:?}");
    }
    assert!(
        !subs.contains(&"add"),
        "a hidden alias is offered: {subs:?}"
    );
    let flags = complete("ebbctl group create web --mi", 4);
    assert_eq!(flags.trim(), "--min");
}

/// `ebbctl completion SHELL` written to a file in `dir`.
fn script(dir: &std::path::Path, shell: &str) -> std::path::PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_ebbctl"))
        .args(["completion", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let file = dir.join(format!("ebbctl.{shell}"));
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

/// Runs `shell args...`, or fails naming the Debian package to install.
fn run(shell: &str, package: &str, args: &[&str]) -> std::process::Output {
    Command::new(shell).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {shell} ({e}): install the Debian package {package}")
    })
}

#[test]
fn the_zsh_completion_parses() {
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "zsh");
    let out = run("zsh", "zsh", &["-n", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_fish_completion_loads_cleanly_and_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "fish");
    let out = run(
        "fish",
        "fish",
        &[
            "--no-config",
            "-c",
            &format!(
                "source {}; complete -C 'ebbctl notif'; complete -C 'ebbctl notification '",
                file.display()
            ),
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // fish reports a bad `complete` line on stderr and goes on.
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    let words: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    assert_eq!(words[0], "notification", "{stdout}");
    for want in ["list", "create", "delete"] {
        assert!(words.contains(&want), "{want} not in {stdout}");
    }
    assert!(
        !words.contains(&"add"),
        "a hidden alias is offered: {stdout}"
    );
}
