//! The quickstart's story, driven by a custom metric the demo controls
//! (`--load metric`) so it holds on a busy host; the CPU path it shows by
//! default is proven by `cpu_scaling.rs`.

/// The demos each run a group of real instances: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_quickstart_demo_shows_live_samples_and_leaves_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let child = std::process::Command::new(ebb_tests::bin("ebb-controller"))
        .args(["demo", "--seconds", "32", "--plain", "--load", "metric"])
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
        .filter(|l| l.contains("InService load 10.0") || l.contains("InService load 90.0"))
        .count();
    assert!(live >= 2, "expected live samples:\n{stdout}");
    let done = |needle: &str| {
        stdout
            .lines()
            .any(|l| l.contains("Successful") && l.contains(needle))
    };
    assert!(
        done("alarm `load-high` executed rule `add-1`"),
        "no scale-out:\n{stdout}"
    );
    assert!(
        done("alarm `load-low` executed rule `remove-1`"),
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

/// On a terminal (a pty from `script`), the demo redraws one screen with
/// the instances, the alarms, the activities and the story.
#[test]
fn on_a_terminal_the_demo_redraws_a_live_screen() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let command = format!(
        "{} demo --seconds 8 --load metric",
        ebb_tests::bin("ebb-controller").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("EBB_AGENT_BIN", ebb_tests::bin("ebb-agent"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // Redrawn in place: cursor home, lines cleared to their end.
    let redraws = screen.matches("\x1b[H").count();
    assert!(redraws >= 5, "{redraws} redraws:\n{screen}");
    assert!(screen.contains("\x1b[K"), "{screen}");
    let last = screen.rsplit("\x1b[H").next().unwrap();
    for part in [
        "ebb demo  t=",
        "GROUP demo  Active  min 1 max 3",
        "INSTANCE",
        "ALARMS",
        "load-high   demo_load Average >= 70 for 3x1s  -> ",
        "load-low    demo_load Average <= 40 for 4x1s  -> ",
        "LATEST ACTIVITIES",
        // The latest activities, each with its cause.
        "changing the Total Capacity from ",
        "STORY",
    ] {
        assert!(
            last.contains(part),
            "`{part}` not on the last screen:\n{last}"
        );
    }
    assert!(
        last.lines()
            .any(|l| l.contains("InService") && l.contains("Healthy") && l.contains("connected")),
        "no instance in service on the last screen:\n{last}"
    );
    // The teardown is told as lines below the last screen.
    assert!(
        screen.contains("demo over: every instance released"),
        "{screen}"
    );
}
