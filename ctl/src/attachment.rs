//! `lb` and `db`: a group's load balancers and database allow-lists
//! (ESS's `AttachLoadBalancers` / `AttachDBInstances` and their kin).
//! Attachments are checked with the controller's own rules before they are
//! sent, each problem named by its flag.

use ebb_core::model::Invalid;
use ebb_core::model::attachments::{DbInstanceSpec, LoadBalancerSpec};
use ebb_proto::v1 as pb;

use crate::cli::{DbAttach, DbCmd, DbRef, LbAttach, LbCmd, LbRef};
use crate::conn::Admin;
use crate::error::{Error, Result};
use crate::output::{Output, print_json};
use crate::view::{
    DbInstanceView, LoadBalancerView, db_instances_table, load_balancers_table, one_line,
};

/// A flag's attachment, as the domain checks it.
pub fn lb_spec(a: &LbAttach) -> LoadBalancerSpec {
    LoadBalancerSpec {
        target: a.target.clone(),
        backend: a.backend.clone(),
        port: a.port,
        weight: a.weight,
        drain_timeout_secs: a.drain_timeout,
    }
}

pub fn db_spec(a: &DbAttach) -> DbInstanceSpec {
    DbInstanceSpec {
        target: a.which.target.clone(),
        database: a.which.database.clone(),
        user: a.which.user.clone(),
        auth_method: a.auth_method.clone(),
    }
}

/// The domain's problems with one attachment, each named by its flag
/// (`--port: 70000 is outside 1..=65535`), as a usage error.
fn by_flag(command: &str, errors: Invalid) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = errors
        .0
        .iter()
        .map(|e| {
            let key = e.field.rsplit('.').next().unwrap_or(&e.field);
            let flag = match key {
                "drain_timeout_secs" => "drain-timeout".to_owned(),
                other => other.replace('_', "-"),
            };
            format!("--{flag}: {}", one_line(&e.message))
        })
        .collect();
    Err(Error::Usage(format!("{command}: {}", problems.join("; "))))
}

/// Usage problems with an `lb` command, caught before any connection.
pub fn check_lb(cmd: &LbCmd) -> Result<()> {
    let LbCmd::Attach(a) = cmd else {
        return Ok(());
    };
    let mut errors = Invalid::default();
    lb_spec(a).build("load_balancer", &mut errors);
    by_flag("lb attach", errors)
}

/// Usage problems with a `db` command, caught before any connection.
pub fn check_db(cmd: &DbCmd) -> Result<()> {
    let DbCmd::Attach(a) = cmd else {
        return Ok(());
    };
    let mut errors = Invalid::default();
    db_spec(a).build("db_instance", &mut errors);
    by_flag("db attach", errors)
}

/// A note for a line when the target is not there to act on it yet.
fn unless_connected(connected: bool, target: &str, what: &str) -> String {
    if connected {
        String::new()
    } else {
        format!("; target agent {target} is not connected: {what} when it connects")
    }
}

fn show_load_balancers(list: &pb::LoadBalancerAttachments, out: Output) -> Result<()> {
    let views: Vec<LoadBalancerView> = list
        .load_balancers
        .iter()
        .map(LoadBalancerView::from)
        .collect();
    match out {
        Output::Json => print_json(&views),
        Output::Table | Output::Wide => {
            print!("{}", load_balancers_table(&views));
            Ok(())
        }
    }
}

fn show_db_instances(list: &pb::DbInstanceAttachments, out: Output) -> Result<()> {
    let views: Vec<DbInstanceView> = list.db_instances.iter().map(DbInstanceView::from).collect();
    match out {
        Output::Json => print_json(&views),
        Output::Table | Output::Wide => {
            print!("{}", db_instances_table(&views));
            Ok(())
        }
    }
}

/// `-o json` prints the group's attachments after the change; a table,
/// one line about the one changed.
fn lb_changed(list: &pb::LoadBalancerAttachments, line: String, out: Output) -> Result<()> {
    match out {
        Output::Json => show_load_balancers(list, out),
        Output::Table | Output::Wide => {
            println!("{line}");
            Ok(())
        }
    }
}

fn db_changed(list: &pb::DbInstanceAttachments, line: String, out: Output) -> Result<()> {
    match out {
        Output::Json => show_db_instances(list, out),
        Output::Table | Output::Wide => {
            println!("{line}");
            Ok(())
        }
    }
}

pub async fn lb(admin: &mut Admin, cmd: LbCmd, out: Output) -> Result<()> {
    match cmd {
        LbCmd::List { group } => {
            let list = admin
                .describe_load_balancers(pb::DescribeLoadBalancersRequest {
                    scaling_group: group,
                })
                .await?;
            show_load_balancers(&list, out)
        }
        LbCmd::Attach(a) => {
            let spec = lb_spec(&a);
            let list = admin
                .attach_load_balancers(pb::AttachLoadBalancersRequest {
                    scaling_group: a.group.clone(),
                    load_balancers: vec![pb::LoadBalancerAttachment {
                        target: spec.target,
                        backend: spec.backend,
                        port: spec.port,
                        weight: spec.weight.unwrap_or(0),
                        drain_timeout_secs: spec.drain_timeout_secs,
                        ..Default::default()
                    }],
                })
                .await?;
            let line = match list
                .load_balancers
                .iter()
                .find(|l| l.target == a.target && l.backend == a.backend)
            {
                Some(l) => format!(
                    "load balancer {}/{} attached to group {}: port {}, weight {}, drain {}s{}",
                    l.target,
                    l.backend,
                    a.group,
                    l.port,
                    l.weight,
                    l.drain_timeout_secs.unwrap_or_default(),
                    unless_connected(l.target_connected, &l.target, "it adds the group's servers")
                ),
                None => format!(
                    "load balancer {}/{} attached to group {}",
                    a.target, a.backend, a.group
                ),
            };
            lb_changed(&list, line, out)
        }
        LbCmd::Detach(LbRef {
            group,
            target,
            backend,
        }) => {
            let list = admin
                .detach_load_balancers(pb::DetachLoadBalancersRequest {
                    scaling_group: group.clone(),
                    load_balancers: vec![pb::LoadBalancerRef {
                        target: target.clone(),
                        backend: backend.clone(),
                    }],
                })
                .await?;
            let line = match list
                .load_balancers
                .iter()
                .find(|l| l.target == target && l.backend == backend)
            {
                Some(l) => format!(
                    "load balancer {target}/{backend} detaching from group {group}: \
                     {} until its target removes the group's servers (at most 60 s){}",
                    l.state,
                    unless_connected(l.target_connected, &target, "it removes them")
                ),
                None => format!("load balancer {target}/{backend} detached from group {group}"),
            };
            lb_changed(&list, line, out)
        }
    }
}

pub async fn db(admin: &mut Admin, cmd: DbCmd, out: Output) -> Result<()> {
    match cmd {
        DbCmd::List { group } => {
            let list = admin
                .describe_db_instances(pb::DescribeDbInstancesRequest {
                    scaling_group: group,
                })
                .await?;
            show_db_instances(&list, out)
        }
        DbCmd::Attach(a) => {
            let spec = db_spec(&a);
            let list = admin
                .attach_db_instances(pb::AttachDbInstancesRequest {
                    scaling_group: a.which.group.clone(),
                    db_instances: vec![pb::DbInstanceAttachment {
                        target: spec.target,
                        database: spec.database,
                        user: spec.user,
                        auth_method: spec.auth_method.unwrap_or_default(),
                        ..Default::default()
                    }],
                })
                .await?;
            let w = &a.which;
            let line = match list
                .db_instances
                .iter()
                .find(|d| d.target == w.target && d.database == w.database && d.user == w.user)
            {
                Some(d) => format!(
                    "database allow-list {}/{}/{} attached to group {}: auth method {}{}",
                    d.target,
                    d.database,
                    d.user,
                    w.group,
                    d.auth_method,
                    unless_connected(d.target_connected, &d.target, "it writes the group's lines")
                ),
                None => format!(
                    "database allow-list {}/{}/{} attached to group {}",
                    w.target, w.database, w.user, w.group
                ),
            };
            db_changed(&list, line, out)
        }
        DbCmd::Detach(DbRef {
            group,
            target,
            database,
            user,
        }) => {
            let list = admin
                .detach_db_instances(pb::DetachDbInstancesRequest {
                    scaling_group: group.clone(),
                    db_instances: vec![pb::DbInstanceRef {
                        target: target.clone(),
                        database: database.clone(),
                        user: user.clone(),
                    }],
                })
                .await?;
            let line = format!(
                "database allow-list {target}/{database}/{user} detached from group {group}: \
                 target {target} removes the group's lines"
            );
            db_changed(&list, line, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn check(args: &[&str]) -> Result<()> {
        let cli = crate::cli::Cli::try_parse_from(args).unwrap();
        match &cli.command {
            crate::cli::Command::Lb(c) => check_lb(c),
            crate::cli::Command::Db(c) => check_db(c),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn bad_attachments_are_refused_naming_each_flag() {
        let lb = |extra: &[&str]| {
            let mut args = vec![
                "ebbctl",
                "lb",
                "attach",
                "--group",
                "web",
                "--target",
                "lb1",
                "--backend",
                "web",
            ];
            args.extend_from_slice(extra);
            check(&args)
        };
        lb(&["--port", "8080"]).unwrap();
        lb(&["--port", "1", "--weight", "256", "--drain-timeout", "0"]).unwrap();
        for (extra, want) in [
            (
                &["--port", "70000"][..],
                "lb attach: --port: 70000 is outside 1..=65535",
            ),
            (
                &["--port", "0"],
                "lb attach: --port: 0 is outside 1..=65535",
            ),
            (
                &["--port", "80", "--weight", "0"],
                "lb attach: --weight: 0 is outside 1..=256",
            ),
            (
                &["--port", "80", "--drain-timeout", "3601"],
                "lb attach: --drain-timeout: 3601 is outside 0..=3600",
            ),
        ] {
            let err = lb(extra).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
        }
        let err = check(&[
            "ebbctl",
            "lb",
            "attach",
            "--group",
            "web",
            "--target",
            "lb 1",
            "--backend",
            "a/b",
            "--port",
            "0",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("lb attach: --target: `lb 1` may use only")
                && err.contains("; --backend: `a/b` may use only")
                && err.ends_with("; --port: 0 is outside 1..=65535"),
            "{err}"
        );
    }

    #[test]
    fn an_auth_method_or_name_that_would_break_a_pg_hba_line_is_refused() {
        let db = |extra: &[&str]| {
            let mut args = vec![
                "ebbctl", "db", "attach", "--group", "web", "--target", "db1",
            ];
            args.extend_from_slice(extra);
            check(&args)
        };
        db(&["--database", "app", "--user", "all"]).unwrap();
        db(&["--database", "app", "--user", "app", "--auth-method", "md5"]).unwrap();
        let err = db(&[
            "--database",
            "app",
            "--user",
            "app",
            "--auth-method",
            "trust\nhost all all 0.0.0.0/0 trust",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "db attach: --auth-method: `trust\\nhost all all 0.0.0.0/0 trust` is not a pg_hba host method"
            ) && !err.contains('\n'),
            "{err}"
        );
        let err = db(&["--database", "a b", "--user", "+admins"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("db attach: --database: `a b` may use only")
                && err.contains("; --user: `+admins` may use only"),
            "{err}"
        );
        // Detaching is by name only: a name never attached is the controller's to refuse.
        check(&[
            "ebbctl",
            "db",
            "detach",
            "--group",
            "web",
            "--target",
            "db1",
            "--database",
            "a b",
            "--user",
            "x",
        ])
        .unwrap();
    }
}
