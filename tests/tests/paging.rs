//! Listings that grow come in pages: each page resumes after the last one
//! shown, so a client walking every page sees each record once, even while
//! new ones are written; ebbctl walks them for its users.

use std::collections::HashSet;

use ebb_proto::v1 as pb;
use ebb_tests::{Admin, ControllerProc, Sandbox, admin_call};
use tonic_types::StatusExt;

const INTERVAL_MS: u64 = 1000;

/// An inactive group: every change of its desired capacity is refused and
/// recorded as one Rejected activity.
fn inactive_group(admin: &mut Admin, name: &str) {
    admin_call!(
        *admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: name.into(),
            min_size: 0,
            max_size: 10,
            ..Default::default()
        }
    )
    .expect("create group");
}

/// One refused change; the refusal names the activity it recorded.
fn rejected_activity(admin: &mut Admin, group: &str, n: u32) -> String {
    let err = admin_call!(
        *admin,
        modify_scaling_group,
        pb::ModifyScalingGroupRequest {
            scaling_group: group.into(),
            desired_capacity: Some(1 + n % 10),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let (_, rest) = err
        .message()
        .rsplit_once("(activity ")
        .unwrap_or_else(|| panic!("no activity named in `{}`", err.message()));
    rest.trim_end_matches(')').to_owned()
}

/// Each activity's place in the listing: newest first, then by id.
fn strictly_newest_first(page: &[pb::Activity]) -> bool {
    page.windows(2)
        .all(|w| (w[0].started_at_ms, w[0].id.as_str()) > (w[1].started_at_ms, w[1].id.as_str()))
}

#[test]
fn five_thousand_activities_page_through_once_each_by_api_and_ebbctl() {
    let sb = Sandbox::new();
    let ctl = ControllerProc::start_with(
        sb.path(),
        INTERVAL_MS,
        "[activities]\nkeep_per_group = 10000\n",
    )
    .unwrap();
    let mut admin = Admin::local(&ctl);
    inactive_group(&mut admin, "many");
    inactive_group(&mut admin, "other");
    let mut created: HashSet<String> = HashSet::new();
    for n in 0..5000 {
        assert!(created.insert(rejected_activity(&mut admin, "many", n)));
    }
    for n in 0..20 {
        rejected_activity(&mut admin, "other", n);
    }
    assert_eq!(created.len(), 5000);

    // Through the API, 137 at a time (a size that divides nothing), while
    // three more activities are written between pages.
    let mut seen: Vec<pb::Activity> = Vec::new();
    let mut written_meanwhile: HashSet<String> = HashSet::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let r = admin_call!(
            admin,
            describe_scaling_activities,
            pb::DescribeScalingActivitiesRequest {
                scaling_group: "many".into(),
                page_size: 137,
                page_token: page_token.clone(),
                ..Default::default()
            }
        )
        .unwrap();
        pages += 1;
        assert!(r.activities.len() <= 137);
        assert!(strictly_newest_first(&r.activities));
        seen.extend(r.activities);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
        for n in 0..3 {
            written_meanwhile.insert(rejected_activity(&mut admin, "many", n));
        }
    }
    assert!(strictly_newest_first(&seen), "pages overlap or go back");
    let ids: HashSet<String> = seen.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), seen.len(), "an activity was listed twice");
    let missing: Vec<&String> = created.difference(&ids).collect();
    assert!(missing.is_empty(), "{} never listed", missing.len());
    // A record written during the walk may show (when it sorts after the
    // page being read) or not; nothing else may.
    assert!(
        ids.difference(&created)
            .all(|id| written_meanwhile.contains(id))
    );
    assert!(seen.iter().all(|a| a.status == "Rejected"));
    assert!(pages >= 5000 / 137);

    // Through ebbctl, which asks for pages of 1000 until it has them all.
    let total = created.len() + written_meanwhile.len();
    let listed = ctl.ebbctl_json(&[
        "activity",
        "list",
        "--group",
        "many",
        "--limit",
        &(total + 100).to_string(),
    ]);
    let listed = listed.as_array().unwrap();
    let listed_ids: HashSet<String> = listed
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed.len(), total);
    assert_eq!(listed_ids.len(), total, "ebbctl listed an activity twice");
    assert!(created.is_subset(&listed_ids));
    assert!(written_meanwhile.is_subset(&listed_ids));

    // A page size above the most, or a token from nowhere: refused by field.
    let err = admin_call!(
        admin,
        describe_scaling_activities,
        pb::DescribeScalingActivitiesRequest {
            page_size: 1001,
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "page_size: 1001 is above 1000");
    let err = admin_call!(
        admin,
        describe_scaling_activities,
        pb::DescribeScalingActivitiesRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let details = err.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "page_token"
    );
}

#[test]
fn other_listings_page_by_their_order_and_ebbctl_reads_past_the_first_page() {
    let sb = Sandbox::new();
    let ctl =
        ControllerProc::start_with(sb.path(), INTERVAL_MS, "[limits]\nrules_per_group = 2000\n")
            .unwrap();
    let mut admin = Admin::local(&ctl);
    for name in ["g-c", "g-a", "g-e", "g-b", "g-d"] {
        inactive_group(&mut admin, name);
    }

    // Groups by name, two to a page; one created during the walk, after the
    // cursor, shows in a later page.
    let mut names: Vec<String> = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = admin_call!(
            admin,
            describe_scaling_groups,
            pb::DescribeScalingGroupsRequest {
                page_size: 2,
                page_token: page_token.clone(),
                ..Default::default()
            }
        )
        .unwrap();
        assert!(r.scaling_groups.len() <= 2);
        names.extend(r.scaling_groups.into_iter().map(|g| g.name));
        if r.next_page_token.is_empty() {
            break;
        }
        if names.len() == 2 {
            inactive_group(&mut admin, "g-f");
        }
        page_token = r.next_page_token;
    }
    assert_eq!(names, ["g-a", "g-b", "g-c", "g-d", "g-e", "g-f"]);

    // 1,005 rules in one group: one page holds 1,000.
    for n in 0..1005 {
        admin_call!(
            admin,
            create_scaling_rule,
            pb::CreateScalingRuleRequest {
                scaling_group: "g-a".into(),
                name: format!("r{n:04}"),
                definition_json: r#"{"rule_type":"SimpleScalingRule","adjustment_type":"QuantityChangeInCapacity","adjustment_value":1}"#.into(),
            }
        )
        .unwrap();
    }
    let first = admin_call!(
        admin,
        describe_scaling_rules,
        pb::DescribeScalingRulesRequest {
            scaling_group: "g-a".into(),
            ..Default::default()
        }
    )
    .unwrap();
    assert_eq!(first.scaling_rules.len(), 1000);
    assert!(!first.next_page_token.is_empty());
    let rest = admin_call!(
        admin,
        describe_scaling_rules,
        pb::DescribeScalingRulesRequest {
            scaling_group: "g-a".into(),
            page_token: first.next_page_token,
            ..Default::default()
        }
    )
    .unwrap();
    let rest: Vec<String> = rest.scaling_rules.into_iter().map(|r| r.name).collect();
    assert_eq!(rest, ["r1000", "r1001", "r1002", "r1003", "r1004"]);

    let listed = ctl.ebbctl_json(&["rule", "list", "--group", "g-a"]);
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..1005).map(|n| format!("r{n:04}")).collect();
    assert_eq!(listed, expected);

    let r = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest {
            page_size: 1001,
            ..Default::default()
        }
    )
    .unwrap_err();
    assert_eq!(r.code(), tonic::Code::InvalidArgument);
    assert_eq!(r.message(), "page_size: 1001 is above 1000");

    // The controller filters: the join tokens of one group.
    for group in ["g-a", "g-b"] {
        admin_call!(
            admin,
            create_join_token,
            pb::CreateJoinTokenRequest {
                scaling_group: group.into(),
                ..Default::default()
            }
        )
        .unwrap();
    }
    let tokens = admin_call!(
        admin,
        list_join_tokens,
        pb::ListJoinTokensRequest {
            scaling_group: "g-b".into(),
            ..Default::default()
        }
    )
    .unwrap()
    .tokens;
    assert_eq!(tokens.len(), 1);
    let g_b = admin_call!(
        admin,
        describe_scaling_groups,
        pb::DescribeScalingGroupsRequest {
            scaling_groups: vec!["g-b".into()],
            ..Default::default()
        }
    )
    .unwrap()
    .scaling_groups
    .remove(0);
    assert_eq!(tokens[0].scaling_group_id, g_b.id);
    let listed = ctl.ebbctl_json(&["token", "list", "--group", "g-b"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], tokens[0].id.as_str());

    // Listings by time page too: the two tokens, one a page, oldest first.
    let mut walked = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = admin_call!(
            admin,
            list_join_tokens,
            pb::ListJoinTokensRequest {
                page_size: 1,
                page_token: page_token.clone(),
                ..Default::default()
            }
        )
        .unwrap();
        walked.extend(r.tokens);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    assert_eq!(walked.len(), 2);
    assert!(
        (walked[0].created_at_ms, &walked[0].id) < (walked[1].created_at_ms, &walked[1].id),
        "not in creation order"
    );
    assert!(walked.iter().any(|t| t.id == tokens[0].id));

    // Revocations since a time, filtered by the controller.
    let revoke = |admin: &mut Admin, who: &str| {
        admin_call!(
            *admin,
            revoke_certificate,
            pb::RevokeCertificateRequest {
                identity: format!("instance/{who}"),
                reason: "paging test".into(),
                ..Default::default()
            }
        )
        .unwrap()
    };
    let first = revoke(&mut admin, "r1");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = revoke(&mut admin, "r2");
    assert!(second.revoked_at_ms > first.revoked_at_ms);
    let since = admin_call!(
        admin,
        describe_revoked_certificates,
        pb::DescribeRevokedCertificatesRequest {
            since_ms: second.revoked_at_ms,
            ..Default::default()
        }
    )
    .unwrap()
    .certificates;
    let since: Vec<&str> = since.iter().map(|r| r.identity.as_str()).collect();
    assert_eq!(since, [second.identity.as_str()]);
}
