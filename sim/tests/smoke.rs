//! The binary end to end: the CI smoke run (a short shipped trace, every
//! JSON field present) and bad input refused with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The CI smoke run: the example group on the short shipped trace, seeded
/// noise, JSON with the per-second series.
const SMOKE_RUN: &[&str] = &[
    "run",
    "--file",
    "examples/target-tracking.toml",
    "--trace",
    "traces/smoke.csv",
    "--noise",
    "0.05",
    "--seed",
    "1",
    "-o",
    "json",
    "--series",
];

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb-sim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("ebb-sim runs")
}

#[test]
fn smoke_run_reports_every_field_for_every_policy() {
    let out = sim(SMOKE_RUN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["target"], 60.0);
    assert!(doc["ideal_instance_hours"].as_f64().unwrap() > 0.0, "{doc}");
    let results = doc["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ebb", "hpa", "aws"]);
    for r in results {
        for key in [
            "instance_hours",
            "overloaded_secs",
            "above_target_secs",
            "activities",
            "scale_outs",
            "scale_ins",
            "flaps",
            "peak_capacity",
        ] {
            assert!(r[key].is_number(), "{key} missing in {r}");
        }
        assert!(r["instance_hours"].as_f64().unwrap() > 0.0, "{r}");
        // The trace's steps (300 → 900 → 1500 units/s) need more than the 2
        // instances the group starts with: every policy scales out.
        assert!(r["scale_outs"].as_u64().unwrap() > 0, "{r}");
        assert!(r["peak_capacity"].as_u64().unwrap() >= 15, "{r}");
        let series = r["series"].as_array().unwrap();
        assert_eq!(series.len(), 60, "one point a minute for an hour");
        for key in ["t", "demand", "capacity", "in_service", "utilisation"] {
            assert!(series[0][key].is_number(), "series.{key} missing");
        }
    }
    // The plot: one panel per policy, with its figures in the caption.
    let svg = std::env::temp_dir().join(format!("ebb-sim-smoke-{}.svg", std::process::id()));
    let plotted = sim(&[
        "run",
        "--file",
        "examples/target-tracking.toml",
        "--trace",
        "traces/smoke.csv",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        plotted.status.success(),
        "{}",
        String::from_utf8_lossy(&plotted.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_file(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    for policy in ["smoke: ebb (", "smoke: hpa (", "smoke: aws ("] {
        assert!(text.contains(policy), "no panel {policy}");
    }
    assert!(
        text.matches("<polyline").count() >= 9,
        "three lines per panel"
    );
    // The same seed gives the same figures.
    let again = sim(SMOKE_RUN);
    assert_eq!(out.stdout, again.stdout);
}

fn refused(args: &[&str], want: &str) {
    let out = sim(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err}");
}

#[test]
fn bad_input_is_refused_naming_where() {
    let dir = std::env::temp_dir().join(format!("ebb-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_trace = dir.join("bad.csv");
    std::fs::write(&bad_trace, "unix_seconds,demand\n100,5\n160,lots\n").unwrap();
    let bad_file = dir.join("bad.toml");
    let good = std::fs::read_to_string(root().join("examples/target-tracking.toml")).unwrap();
    std::fs::write(
        &bad_file,
        good.replace("target_value = 60.0", "target_value = 160.0"),
    )
    .unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        good.replace("min_size = 2", "min_size = 2\nmin_sise = 3"),
    )
    .unwrap();
    let (bad_trace, bad_file, typo) = (
        bad_trace.to_str().unwrap(),
        bad_file.to_str().unwrap(),
        typo.to_str().unwrap(),
    );
    let file = "examples/target-tracking.toml";
    let trace = "traces/smoke.csv";
    refused(
        &["run", "--file", file, "--trace", bad_trace],
        &format!("{bad_trace}:3:5: demand `lots` is not a number"),
    );
    refused(
        &["run", "--file", bad_file, "--trace", trace],
        "rule cpu-60.target_value: 160 is above 100",
    );
    refused(
        &["run", "--file", typo, "--trace", trace],
        &format!("{typo}:10:1: group.min_sise: unknown field `min_sise`"),
    );
    refused(
        &["run", "--file", file, "--trace", "traces/none.csv"],
        "cannot read traces/none.csv",
    );
    refused(
        &["run", "--file", file, "--trace", trace, "--noise", "2"],
        "--noise 2 must be within 0..=1",
    );
    refused(
        &["run", "--file", file, "--trace", trace, "--capacity", "0"],
        "--capacity 0 must be above 0",
    );
    refused(
        &[
            "run",
            "--file",
            file,
            "--trace",
            trace,
            "--start-capacity",
            "41",
        ],
        "--start-capacity 41 is outside the group's bounds 2..=40",
    );
    refused(
        &["run", "--file", file, "--trace", trace, "--boot-secs=-5"],
        "--boot-secs -5 must be 0 or more",
    );
    refused(
        &["run", "--file", file, "--trace", trace, "--target", "0"],
        "--target 0 must be within (0, 100]",
    );
    let prom = dir.join("bad.json");
    std::fs::write(
        &prom,
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    )
    .unwrap();
    refused(
        &["run", "--file", file, "--trace", prom.to_str().unwrap()],
        "data.resultType is `vector`, expected `matrix`",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_prometheus_export_replays_like_the_same_csv() {
    let dir = std::env::temp_dir().join(format!("ebb-sim-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = std::fs::read_to_string(root().join("traces/smoke.csv")).unwrap();
    let values: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let (t, d) = l.split_once(',').unwrap();
            format!("[{t},\"{d}\"]")
        })
        .collect();
    let json = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
        values.join(",")
    );
    let prom = dir.join("smoke.json");
    std::fs::write(&prom, json).unwrap();
    let run = |trace: &str| {
        sim(&[
            "run",
            "--file",
            "examples/target-tracking.toml",
            "--trace",
            trace,
            "-o",
            "json",
        ])
    };
    let from_csv: serde_json::Value =
        serde_json::from_slice(&run("traces/smoke.csv").stdout).unwrap();
    let out = run(prom.to_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(from_csv["results"][0]["activities"].as_u64().unwrap() > 0);
    assert_eq!(from_csv["results"], from_json["results"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
