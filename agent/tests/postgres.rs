//! A target agent's PostgreSQL driver against a real PostgreSQL 15 cluster
//! (`initdb` into a temp dir, its own port and socket dir): the managed
//! block of pg_hba.conf, both reloads, and connections over TCP that the
//! block lets in or not.
//!
//! Needs root (as `.ci/run` is): initdb refuses root, so the cluster is
//! made and run as the `postgres` user.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ebb_agent::config::{PgReload, PostgresConfig};
use ebb_agent::target::pgwire::Session;
use ebb_agent::target::postgres::{BEGIN, END, Postgres};
use ebb_proto::v1::{AllowList, AttachmentReport, Member};
use ebb_tests::peers::{PgCluster, as_postgres, run};

const DEADLINE: Duration = Duration::from_secs(30);
/// What the cluster's pg_hba.conf holds before ebb writes: the local
/// socket only, so every TCP connection needs a line of ebb's block.
const ORIGINAL: &str = "# the operator's own lines\nlocal all all trust\n";

/// A running cluster of the test's own (`ebb_tests::peers`), listening on
/// 127.0.0.1, its pg_hba.conf holding only the operator's lines.
struct Cluster(PgCluster);

impl Cluster {
    fn start() -> Self {
        Self(PgCluster::start("127.0.0.1", ORIGINAL))
    }

    fn hba(&self) -> PathBuf {
        self.0.hba()
    }

    fn config(&self, reload: PgReload) -> PostgresConfig {
        PostgresConfig {
            hba_file: self.0.hba(),
            reload,
            socket_dir: self.0.socket_dir().to_owned(),
            port: self.0.port,
            user: "postgres".into(),
            data_dir: Some(self.0.data()),
        }
    }

    /// Whether a TCP connection from 127.0.0.1 as `postgres` is let in,
    /// and PostgreSQL's answer when it is not.
    async fn tcp_login(&self) -> Result<(), String> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.0.port))
            .await
            .map_err(|e| e.to_string())?;
        Session::start(stream, "postgres", "postgres")
            .await?
            .close()
            .await;
        Ok(())
    }

    /// `pg_hba_file_rules`' host lines, as (address, auth method).
    async fn rules(&self) -> Vec<(String, String)> {
        let socket = self
            .0
            .socket_dir()
            .join(format!(".s.PGSQL.{}", self.0.port));
        let mut s = Session::connect_unix(&socket, "postgres").await.unwrap();
        let rows = s
            .query("SELECT address, auth_method FROM pg_hba_file_rules WHERE type = 'host' ORDER BY line_number")
            .await
            .unwrap();
        s.close().await;
        rows.into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect()
    }
}

fn list(members: &[(&str, &str)], method: &str) -> Vec<AllowList> {
    vec![AllowList {
        attachment_id: "g-1/postgres/postgres".into(),
        database: "postgres".into(),
        user: "postgres".into(),
        auth_method: method.into(),
        members: members
            .iter()
            .map(|(id, address)| Member {
                instance_id: id.to_string(),
                address: address.to_string(),
                ..Default::default()
            })
            .collect(),
    }]
}

/// The lines between ebb's markers.
fn block(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(BEGIN).expect("a block") + BEGIN.len() + 1;
    let end = text.find(END).expect("an end marker");
    text[start..end].lines().map(str::to_owned).collect()
}

fn held(r: &[AttachmentReport]) -> Vec<String> {
    let mut ids: Vec<_> = r[0].members.iter().map(|m| m.instance_id.clone()).collect();
    ids.sort();
    ids
}

async fn eventually_login(c: &Cluster, allowed: bool) {
    let start = Instant::now();
    loop {
        let r = c.tcp_login().await;
        if r.is_ok() == allowed {
            if let Err(e) = r {
                assert!(e.contains("no pg_hba.conf entry"), "{e}");
            }
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "a login from 127.0.0.1 is still {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_block_follows_the_allow_list_and_postgres_reloads_it() {
    let c = Cluster::start();
    let before = std::fs::metadata(c.hba()).unwrap();
    eventually_login(&c, false).await;

    // Over SQL: the block holds exactly the members' lines, appended after
    // the operator's, and PostgreSQL lets the member in.
    let mut pg = Postgres::new(c.config(PgReload::Sql));
    let r = pg
        .converge(&list(&[("i-1", "127.0.0.1"), ("i-2", "fd00::7")], "trust"))
        .await;
    assert_eq!(r[0].error, "", "{r:?}");
    assert_eq!(held(&r), ["i-1", "i-2"]);
    assert_eq!(
        block(&c.hba()),
        [
            "host postgres postgres 127.0.0.1/32 trust # i-1 g-1/postgres/postgres",
            "host postgres postgres fd00::7/128 trust # i-2 g-1/postgres/postgres",
        ]
    );
    let text = std::fs::read_to_string(c.hba()).unwrap();
    assert!(text.starts_with(ORIGINAL), "{text}");
    assert_eq!(
        c.rules().await,
        [
            ("127.0.0.1".into(), "trust".into()),
            ("fd00::7".into(), "trust".into())
        ]
    );
    eventually_login(&c, true).await;
    // PostgreSQL can still read it: same owner and mode.
    let after = std::fs::metadata(c.hba()).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (before.uid(), before.gid(), before.mode())
    );

    // A member removed: its line is gone, and so is its access.
    let r = pg.converge(&list(&[("i-2", "fd00::7")], "trust")).await;
    assert_eq!(held(&r), ["i-2"]);
    assert_eq!(
        block(&c.hba()),
        ["host postgres postgres fd00::7/128 trust # i-2 g-1/postgres/postgres"]
    );
    eventually_login(&c, false).await;

    // A line edited into the block by hand is taken out at the next pass.
    let text = std::fs::read_to_string(c.hba()).unwrap();
    let edited = text.replace(END, &format!("host all all 127.0.0.1/32 trust\n{END}"));
    std::fs::write(c.hba(), edited).unwrap();
    pg.converge(&list(&[("i-2", "fd00::7")], "trust")).await;
    assert_eq!(std::fs::read_to_string(c.hba()).unwrap(), text);
    eventually_login(&c, false).await;

    // Bad entries are refused and the file is left exactly as it was.
    let untouched = std::fs::read(c.hba()).unwrap();
    let r = pg
        .converge(&list(
            &[("i-1", "127.0.0.1/0"), ("i-2", "fd00::7")],
            "trust",
        ))
        .await;
    assert!(r[0].error.contains("not applied"), "{r:?}");
    let bad = r[0]
        .members
        .iter()
        .find(|m| m.instance_id == "i-1")
        .unwrap();
    assert!(bad.error.contains("not an IP address"), "{r:?}");
    let r = pg
        .converge(&list(
            &[("i-1", "127.0.0.1")],
            "trust\nhost all all 0.0.0.0/0 trust",
        ))
        .await;
    assert!(r[0].error.contains("auth method"), "{r:?}");
    assert_eq!(held(&r), ["i-2"], "the lines it had are kept");
    assert_eq!(std::fs::read(c.hba()).unwrap(), untouched);
    eventually_login(&c, false).await;

    // Over a signal to the postmaster: the member is back in.
    let mut pg = Postgres::new(c.config(PgReload::Signal));
    let r = pg.converge(&list(&[("i-1", "127.0.0.1")], "trust")).await;
    assert_eq!(
        (r[0].error.as_str(), held(&r)),
        ("", vec!["i-1".to_owned()])
    );
    eventually_login(&c, true).await;

    // An empty list leaves an empty block and the operator's lines.
    pg.converge(&list(&[], "trust")).await;
    assert!(block(&c.hba()).is_empty());
    eventually_login(&c, false).await;
}

#[tokio::test]
async fn what_postgres_finds_wrong_in_the_file_is_the_attachment_error() {
    let c = Cluster::start();
    let mut pg = Postgres::new(c.config(PgReload::Sql));
    // `ldap` without its options is a line PostgreSQL will not load.
    let r = pg.converge(&list(&[("i-1", "127.0.0.1")], "ldap")).await;
    assert!(
        r[0].error.contains("pg_hba.conf line") && r[0].error.contains("ldap"),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_reload_role_that_needs_a_password_is_named() {
    let c = Cluster::start();
    std::fs::write(c.hba(), "local all all scram-sha-256\n").unwrap();
    run(as_postgres("pg_ctl")
        .arg("-D")
        .arg(c.0.data())
        .arg("reload"));
    let mut pg = Postgres::new(c.config(PgReload::Sql));
    let start = Instant::now();
    loop {
        let r = pg.converge(&list(&[("i-1", "127.0.0.1")], "trust")).await;
        if r[0].error.contains("supports only `trust` or `peer`") {
            assert!(r[0].error.contains("SCRAM"), "{r:?}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
