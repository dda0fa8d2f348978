//! The command tree as a user types it: what parses, and what is a usage
//! error (exit 2).

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use super::{ActivityCmd, Cli, Command, ConfigCmd, GroupCmd, HookCmd, NotificationCmd, RuleCmd};
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
        &["ebbctl", "completion", "tcsh"],
        &["ebbctl", "completion"],
        &["ebbctl", "man"],
        &["ebbctl", "apply", "-f", "x.toml", "--wait-timeout", "9"],
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

/// Every flag and argument a user can see, and every subcommand's examples.
fn undocumented(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || matches!(arg.get_id().as_str(), "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg.get_id().as_str().to_uppercase(),
            };
            missing.push(format!("{path} {name}: no help text"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() {
            missing.push(format!("{sub_path}: no about line"));
        }
        let examples = sub.get_after_help().map(|h| h.to_string());
        if !examples.is_some_and(|h| h.starts_with("Examples:\n  ebbctl ")) {
            missing.push(format!("{sub_path}: no `Examples:` in its after_help"));
        }
        undocumented(sub, &sub_path, missing);
    }
}

#[test]
fn every_flag_has_help_and_every_subcommand_examples() {
    let mut missing = Vec::new();
    undocumented(&Cli::command(), "ebbctl", &mut missing);
    assert!(
        missing.is_empty(),
        "{} undocumented:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn names_are_positional_and_the_old_spellings_still_parse() {
    let name = |args: &[&str]| match Cli::parse_from(args).command {
        Command::Group(GroupCmd::Create(c)) => c.name.into_string(),
        Command::Rule(RuleCmd::Create(c)) => c.def.simple.then(|| c.name.into_string()).unwrap(),
        other => panic!("parsed {other:?}"),
    };
    assert_eq!(
        name(&[
            "ebbctl", "group", "create", "web", "--min", "1", "--max", "2"
        ]),
        "web"
    );
    assert_eq!(
        name(&[
            "ebbctl", "group", "create", "--name", "web", "--min", "1", "--max", "2"
        ]),
        "web"
    );
    assert_eq!(
        name(&["ebbctl", "rule", "create", "r1", "--group", "g", "--simple"]),
        "r1"
    );
    // Not both, and not neither.
    for args in [
        &[
            "ebbctl", "group", "create", "a", "--name", "b", "--min", "1", "--max", "2",
        ][..],
        &["ebbctl", "group", "create", "--min", "1", "--max", "2"],
        &["ebbctl", "hook", "delete", "--group", "g"],
        &["ebbctl", "notification", "create", "--group", "g"],
    ] {
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
    // notification add/remove and hook delete --hook, for one release.
    for (args, want) in [
        (
            &[
                "ebbctl",
                "notification",
                "create",
                "http://h/x",
                "--group",
                "g",
            ][..],
            "http://h/x",
        ),
        (
            &[
                "ebbctl",
                "notification",
                "add",
                "--group",
                "g",
                "--url",
                "http://h/y",
            ],
            "http://h/y",
        ),
        (
            &[
                "ebbctl",
                "notification",
                "delete",
                "http://h/x",
                "--group",
                "g",
            ],
            "http://h/x",
        ),
        (
            &[
                "ebbctl",
                "notification",
                "remove",
                "--group",
                "g",
                "--url",
                "http://h/z",
            ],
            "http://h/z",
        ),
    ] {
        let url = match Cli::parse_from(args).command {
            Command::Notification(NotificationCmd::Create { url, .. })
            | Command::Notification(NotificationCmd::Delete { url, .. }) => url.into_string(),
            other => panic!("parsed {other:?}"),
        };
        assert_eq!(url, want, "{args:?}");
    }
    for args in [
        &["ebbctl", "hook", "delete", "drain", "--group", "g"][..],
        &[
            "ebbctl", "hook", "delete", "--group", "g", "--hook", "drain",
        ],
    ] {
        let Command::Hook(HookCmd::Delete { hook, .. }) = Cli::parse_from(args).command else {
            panic!("{args:?}")
        };
        assert_eq!(hook.into_string(), "drain");
    }
    // The old spellings are not shown.
    let help = Cli::command()
        .find_subcommand_mut("notification")
        .unwrap()
        .render_help()
        .to_string();
    assert!(help.contains("create") && !help.contains("add"), "{help}");
}
