//! The quickstart, alone in its binary: it burns every CPU and waits for the
//! host to calm down, which other tests running beside it would disturb.

#[test]
fn the_quickstart_demo_shows_live_samples_and_leaves_nothing_behind() {
    let child = std::process::Command::new(ebb_tests::bin("ebb-controller"))
        .args(["demo", "--seconds", "32", "--plain"])
        .env("EBB_AGENT_BIN", ebb_tests::bin("ebb-agent"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data_dir = std::env::temp_dir().join(format!("ebb-demo-{}", child.id()));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created group demo"), "{stdout}");
    let live = stdout
        .lines()
        .filter(|l| l.contains("InService cpu") && l.contains('%'))
        .count();
    assert!(live >= 2, "expected live samples:\n{stdout}");
    let done = |needle: &str| {
        stdout
            .lines()
            .any(|l| l.contains("Successful") && l.contains(needle))
    };
    assert!(
        done("alarm `cpu-high` executed rule `add-1`"),
        "no scale-out:\n{stdout}"
    );
    assert!(
        done("alarm `cpu-low` executed rule `remove-1`"),
        "no scale-in:\n{stdout}"
    );
    assert!(
        done("vanished") || done("is unhealthy"),
        "the killed instance was not replaced:\n{stdout}"
    );
    assert!(
        stdout.contains("demo over: every instance released"),
        "{stdout}"
    );
    assert!(!stdout.contains("teardown:"), "{stdout}");
    // The demo's instances ran from its own data dir; none may survive it.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &data_dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "demo left agents running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        !data_dir.exists(),
        "demo left {} behind",
        data_dir.display()
    );
}
