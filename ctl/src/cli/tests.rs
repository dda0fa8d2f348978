//! The command tree as a user types it: what parses, and what is a usage
//! error (exit 2).

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use super::{ActivityCmd, Cli, Command, ConfigCmd, GroupCmd, RuleCmd};
use crate::output::Output;

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn config_create_takes_the_command_after_the_separator() {
    let cli = Cli::parse_from([
        "ebbctl",
        "config",
        "create",
        "--group",
        "web",
        "--name",
        "web-v1",
        "--env",
        "PORT=8080",
        "--",
        "python3",
        "-m",
        "http.server",
        "0",
    ]);
    let Command::Config(ConfigCmd::Create(c)) = cli.command else {
        panic!("parsed {:?}", cli.command)
    };
    assert_eq!(c.fields.command, ["python3", "-m", "http.server", "0"]);
    assert_eq!(c.fields.env, [("PORT".to_owned(), "8080".to_owned())]);
}

#[test]
fn bad_values_are_usage_errors() {
    for args in [
        &["ebbctl", "group", "create", "--name", "w", "--min", "1"][..],
        &[
            "ebbctl",
            "group",
            "create",
            "--name",
            "w",
            "--min",
            "1",
            "--max",
            "2",
            "--removal-policy",
            "Oldest",
        ],
        &["ebbctl", "instance", "list", "--state", "Running"],
        &[
            "ebbctl", "config", "create", "--group", "g", "--name", "n", "--env", "NOEQUALS",
        ],
        &["ebbctl", "-o", "yaml", "group", "list"],
    ] {
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn global_flags_go_anywhere() {
    let cli = Cli::parse_from(["ebbctl", "group", "list", "-o", "json", "--data-dir", "/d"]);
    assert_eq!(cli.global.output, Output::Json);
    assert_eq!(cli.global.data_dir, Some(PathBuf::from("/d")));
}

#[test]
fn suspend_takes_known_processes_and_since_an_rfc3339_time() {
    let cli = Cli::parse_from(["ebbctl", "group", "suspend", "web", "ScaleIn", "ScaleOut"]);
    let Command::Group(GroupCmd::Suspend(p)) = cli.command else {
        panic!("parsed {:?}", cli.command)
    };
    assert_eq!(
        (p.group.as_str(), &p.processes[..]),
        ("web", &["ScaleIn".to_owned(), "ScaleOut".to_owned()][..])
    );
    let cli = Cli::parse_from([
        "ebbctl",
        "activity",
        "list",
        "--since",
        "2024-05-01T14:00:00Z",
    ]);
    let Command::Activity(ActivityCmd::List { since, .. }) = cli.command else {
        panic!()
    };
    assert_eq!(since, Some(1_714_572_000_000));
    for args in [
        &["ebbctl", "group", "suspend", "web", "Launch"][..],
        &["ebbctl", "group", "resume", "web"],
        &["ebbctl", "activity", "list", "--since", "yesterday"],
        &[
            "ebbctl",
            "alarm",
            "create",
            "--group",
            "g",
            "--name",
            "a",
            "--metric",
            "CpuUtilization",
            "--statistic",
            "Average",
            "--period",
            "61",
            "--comparison",
            ">",
            "--threshold",
            "80",
            "--action",
            "r",
        ],
        &[
            "ebbctl",
            "alarm",
            "create",
            "--group",
            "g",
            "--name",
            "a",
            "--metric",
            "CpuUtilization",
            "--statistic",
            "Average",
            "--period",
            "60",
            "--comparison",
            ">",
            "--threshold",
            "80",
        ],
        &[
            "ebbctl",
            "rule",
            "execute",
            "r",
            "--group",
            "g",
            "--metric-value",
            "90",
        ],
        &[
            "ebbctl",
            "task",
            "create",
            "--group",
            "g",
            "--name",
            "t",
            "--launch-time",
            "2025-01-06T08:00:00Z",
            "--recurrence",
            "hourly:1",
            "--min",
            "1",
        ],
    ] {
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn scale_and_thresholds_take_negative_numbers() {
    let cli = Cli::parse_from([
        "ebbctl",
        "scale",
        "--group",
        "web",
        "--adjustment-type",
        "QuantityChangeInCapacity",
        "--adjustment-value",
        "-2",
    ]);
    let Command::Scale(s) = cli.command else {
        panic!()
    };
    assert_eq!(s.adjustment_value, -2);
    let cli = Cli::parse_from([
        "ebbctl",
        "rule",
        "execute",
        "steps",
        "--group",
        "web",
        "--metric-value",
        "-3.5",
        "--threshold",
        "-10",
    ]);
    let Command::Rule(RuleCmd::Execute(e)) = cli.command else {
        panic!()
    };
    assert_eq!((e.metric_value, e.threshold), (Some(-3.5), Some(-10.0)));
}
