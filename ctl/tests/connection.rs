//! Where ebbctl takes its connection settings from, run as a user runs it:
//! a flag beats its `EBB_*` variable, which beats the profile file, which
//! beats the local data dir. No controller is needed: the first file
//! ebbctl cannot read names the setting it came from.

use std::path::Path;
use std::process::{Command, Output};

const VARS: [&str; 7] = [
    "EBB_CONTROLLER",
    "EBB_CA",
    "EBB_CERT",
    "EBB_KEY",
    "EBB_SERVER_NAME",
    "EBB_PROFILE",
    "EBB_DATA",
];

/// `ebbctl group list` with only the given variables, its config home at `config`.
fn ebbctl(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebbctl"));
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", config)
        .current_dir(config)
        .args(args)
        .arg("group")
        .arg("list");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ebbctl")
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "ebbctl succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

fn write_profiles(config: &Path, text: &str) {
    std::fs::create_dir_all(config.join("ebb")).unwrap();
    std::fs::write(config.join("ebb/ebbctl.toml"), text).unwrap();
}

#[test]
fn flags_beat_variables_beat_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path();
    write_profiles(
        config,
        "[default]\ncontroller = \"127.0.0.1:1\"\nca = \"/profile/ca.crt\"\n\n\
         [other]\ncontroller = \"127.0.0.1:1\"\nca = \"other/ca.crt\"\n",
    );
    // The default profile alone.
    let out = ebbctl(config, &[], &[]);
    assert_eq!(
        stderr(&out),
        "ebbctl: cannot read /profile/ca.crt: it does not exist (use --ca)"
    );
    // A named profile, by variable and by flag; its relative paths are the file's.
    let out = ebbctl(config, &[("EBB_PROFILE", "other")], &[]);
    assert_eq!(
        stderr(&out),
        format!(
            "ebbctl: cannot read {}: it does not exist (use --ca)",
            config.join("ebb/other/ca.crt").display()
        )
    );
    let out = ebbctl(config, &[("EBB_PROFILE", "nope")], &["--profile", "other"]);
    assert!(stderr(&out).contains("ebb/other/ca.crt"), "{out:?}");
    // The variable beats the profile; the flag beats the variable.
    let out = ebbctl(config, &[("EBB_CA", "/env/ca.crt")], &[]);
    assert_eq!(
        stderr(&out),
        "ebbctl: cannot read /env/ca.crt: it does not exist (use --ca)"
    );
    let out = ebbctl(
        config,
        &[("EBB_CA", "/env/ca.crt")],
        &["--ca", "/flag/ca.crt"],
    );
    assert_eq!(
        stderr(&out),
        "ebbctl: cannot read /flag/ca.crt: it does not exist (use --ca)"
    );
    // EBB_CERT and EBB_KEY likewise, once the CA can be read.
    std::fs::write(config.join("ca.crt"), "not a certificate").unwrap();
    let ca = config.join("ca.crt");
    let out = ebbctl(
        config,
        &[
            ("EBB_CA", ca.to_str().unwrap()),
            ("EBB_CERT", "/env/admin.crt"),
        ],
        &[],
    );
    assert_eq!(
        stderr(&out),
        "ebbctl: cannot read /env/admin.crt: it does not exist (use --cert)"
    );
}

#[test]
fn a_data_dir_given_means_that_controller_not_the_default_profile() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path();
    write_profiles(
        config,
        "[default]\ncontroller = \"127.0.0.1:1\"\nca = \"/profile/ca.crt\"\n\n\
         [other]\nca = \"/other/ca.crt\"\n",
    );
    let data = config.join("data");
    let data = data.to_str().unwrap();
    for (env, args) in [
        (&[][..], &["--data-dir", data][..]),
        (&[("EBB_DATA", data)][..], &[][..]),
    ] {
        let out = ebbctl(config, env, args);
        assert_eq!(
            stderr(&out),
            format!(
                "ebbctl: no controller found: {data}/endpoints.toml does not exist \
                 (is ebb-controller serve running here? use --data-dir or --controller)"
            )
        );
    }
    // A profile named is used all the same.
    let out = ebbctl(config, &[], &["--data-dir", data, "--profile", "other"]);
    assert!(
        stderr(&out).starts_with("ebbctl: no controller found"),
        "{out:?}"
    );
    let out = ebbctl(
        config,
        &[("EBB_CONTROLLER", "127.0.0.1:1")],
        &["--data-dir", data, "--profile", "other"],
    );
    assert_eq!(
        stderr(&out),
        "ebbctl: cannot read /other/ca.crt: it does not exist (use --ca)"
    );
}

#[test]
fn ebb_controller_needs_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path();
    // No profile file and no data dir: without EBB_CONTROLLER there is
    // nothing to connect to; with it, only the certificates are missing.
    let out = ebbctl(config, &[], &[]);
    assert!(
        stderr(&out).starts_with("ebbctl: no controller found"),
        "{out:?}"
    );
    let out = ebbctl(
        config,
        &[("EBB_CONTROLLER", "127.0.0.1:1"), ("EBB_KEY", "/env/k")],
        &[],
    );
    assert_eq!(
        stderr(&out),
        "ebbctl: cannot read ./ebb-data/pki/ca.crt: it does not exist (use --ca)"
    );
}

#[test]
fn a_bad_profile_file_or_an_unknown_profile_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path();
    let file = config.join("ebb/ebbctl.toml");
    write_profiles(config, "[default]\ncontroller = \"a:1\"\nkeyfile = \"k\"\n");
    let out = ebbctl(config, &[], &[]);
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "ebbctl: bad profile file {}: line 3, key `keyfile`: unknown field `keyfile`",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(2));
    write_profiles(config, "[default]\ncontroller = \"a:1\"\n");
    let out = ebbctl(config, &[], &["--profile", "prod"]);
    assert_eq!(
        stderr(&out),
        format!(
            "ebbctl: profile `prod` is not in {} (it has: default)",
            file.display()
        )
    );
    assert_eq!(out.status.code(), Some(2));
}
