//! Behaviour of IAM-style policies: parsing refusals, matching and decisions.

use proptest::prelude::*;
use ssm_session::policy::{
    self, AuthzRequest, Decision, Location, Policy, PolicyError, StatementLocation,
};

const TARGET: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc";
const DOCUMENT: &str = "arn:aws:ssm:us-east-1::document/SSM-SessionManagerRunShell";

fn parse(json: &str) -> Policy {
    match Policy::from_json(json) {
        Ok(policy) => policy,
        Err(error) => panic!("{json} refused: {error}"),
    }
}

/// A policy from statements, with the Version.
fn statements(statements: &str) -> Policy {
    parse(&format!(
        r#"{{"Version": "2012-10-17", "Statement": [{statements}]}}"#
    ))
}

fn decide(policies: &[(&str, &Policy)], action: &str, resources: &[&str], user: &str) -> Decision {
    policy::evaluate(
        policies,
        &AuthzRequest {
            action,
            resources,
            username: user,
        },
    )
}

fn decide_one(policy: &Policy, action: &str, resources: &[&str]) -> Decision {
    decide(&[("p", policy)], action, resources, "alice")
}

fn allows(policy: &Policy, action: &str, resources: &[&str]) -> bool {
    decide_one(policy, action, resources).allowed()
}

#[test]
fn default_deny_names_action_and_resource() {
    let policy =
        statements(r#"{"Effect": "Allow", "Action": "ssm:DescribeSessions", "Resource": "*"}"#);
    let decision = decide_one(&policy, "ssm:StartSession", &[TARGET]);
    assert!(!decision.allowed());
    assert_eq!(
        decision.to_string(),
        format!("no statement allows ssm:StartSession on {TARGET}")
    );
    let none: [(&str, &Policy); 0] = [];
    assert!(!decide(&none, "ssm:StartSession", &[TARGET], "alice").allowed());
}

#[test]
fn a_request_without_resources_is_denied() {
    let policy = statements(r#"{"Effect": "Allow", "Action": "*", "Resource": "*"}"#);
    let decision = decide_one(&policy, "ssm:StartSession", &[]);
    assert_eq!(
        decision,
        Decision::NoResource {
            action: "ssm:StartSession".into()
        }
    );
    assert!(!decision.allowed());
}

#[test]
fn allow_by_exact_action_and_resource_names_the_statement() {
    let policy = statements(&format!(
        r#"{{"Sid": "Exact", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "{TARGET}"}}"#
    ));
    let decision = decide(&[("ops", &policy)], "ssm:StartSession", &[TARGET], "alice");
    assert!(decision.allowed());
    assert_eq!(
        decision.to_string(),
        r#"allowed by policy "ops" statement "Exact""#
    );
    assert!(!allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ec2:us-east-1:123456789012:instance/i-0abcd"]
    ));
    assert!(!allows(&policy, "ssm:StartSessions", &[TARGET]));
}

#[test]
fn allow_by_wildcards() {
    for action in [
        "*",
        "ssm:*",
        "ssm:Start*",
        "ssm:*Session",
        "ssm:?tartSession",
    ] {
        let policy = statements(&format!(
            r#"{{"Effect": "Allow", "Action": "{action}", "Resource": "*"}}"#
        ));
        assert!(allows(&policy, "ssm:StartSession", &[TARGET]), "{action}");
        assert!(
            !allows(&policy, "kms:Decrypt", &[TARGET]) || action == "*",
            "{action}"
        );
    }
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "ssm:Start*", "Resource": "arn:aws:ec2:*:123456789012:instance/i-0ab?"}"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
    assert!(!allows(&policy, "ssm:TerminateSession", &[TARGET]));
    assert!(!allows(&policy, "kms:StartSession", &[TARGET]));
    assert!(!allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ec2:us-east-1:999999999999:instance/i-0abc"]
    ));
    // `*` spans `:` and `/`.
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "ssm:*", "Resource": "arn:aws:ssm:::document/*c"}"#,
    );
    assert!(allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ssm:::document/a:b/c"]
    ));
}

#[test]
fn explicit_deny_wins_regardless_of_order() {
    let allow = r#"{"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"}"#;
    let deny = r#"{"Sid": "NoProd", "Effect": "Deny", "Action": "ssm:StartSession", "Resource": "arn:aws:ec2:*:*:instance/i-0abc"}"#;
    for policy in [
        statements(&format!("{allow}, {deny}")),
        statements(&format!("{deny}, {allow}")),
    ] {
        let decision = decide(
            &[("restricted", &policy)],
            "ssm:StartSession",
            &[TARGET],
            "alice",
        );
        assert_eq!(
            decision.to_string(),
            format!(
                r#"denied by policy "restricted" statement "NoProd" (ssm:StartSession on {TARGET})"#
            )
        );
    }
    // Across policies, in both orders.
    let allowing = statements(allow);
    let denying = statements(deny);
    for policies in [
        [("a", &allowing), ("d", &denying)],
        [("d", &denying), ("a", &allowing)],
    ] {
        let decision = decide(&policies, "ssm:StartSession", &[TARGET], "alice");
        assert!(
            matches!(decision, Decision::ExplicitDeny { ref statement, .. } if statement.policy == "d")
        );
    }
    // The deny does not reach other actions.
    assert!(allows(
        &statements(&format!("{deny}, {allow}")),
        "ssm:TerminateSession",
        &[TARGET]
    ));
}

#[test]
fn statement_without_sid_is_named_by_index() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"},
           {"Effect": "Deny", "Action": "ssm:StartSession", "Resource": "*"}"#,
    );
    let decision = decide(&[("p", &policy)], "ssm:StartSession", &[TARGET], "alice");
    assert_eq!(
        decision.to_string(),
        format!(r#"denied by policy "p" Statement[1] (ssm:StartSession on {TARGET})"#)
    );
}

#[test]
fn not_action_allows_every_other_action() {
    let policy = statements(
        r#"{"Effect": "Allow", "NotAction": ["ssm:TerminateSession", "kms:*"], "Resource": "*"}"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
    assert!(allows(&policy, "ssm:DescribeSessions", &[TARGET]));
    assert!(!allows(&policy, "ssm:TerminateSession", &[TARGET]));
    assert!(!allows(&policy, "kms:Decrypt", &[TARGET]));
}

#[test]
fn not_action_deny_denies_every_other_action() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "*"},
           {"Sid": "OnlyDescribe", "Effect": "Deny", "NotAction": "ssm:Describe*", "Resource": "*"}"#,
    );
    assert!(allows(&policy, "ssm:DescribeSessions", &[TARGET]));
    assert!(!allows(&policy, "ssm:StartSession", &[TARGET]));
}

#[test]
fn not_resource_covers_every_other_resource() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "ssm:StartSession", "NotResource": "arn:aws:ec2:*:*:instance/i-0prod*"}"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
    assert!(!allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ec2:us-east-1:123456789012:instance/i-0prod1"]
    ));
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "*"},
           {"Sid": "OnlyDev", "Effect": "Deny", "Action": "*", "NotResource": "arn:aws:ec2:*:*:instance/i-0dev*"}"#,
    );
    assert!(!allows(&policy, "ssm:StartSession", &[TARGET]));
    assert!(allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ec2:us-east-1:123456789012:instance/i-0dev1"]
    ));
}

#[test]
fn every_resource_must_be_allowed() {
    let policy = statements(&format!(
        r#"{{"Sid": "Targets", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "arn:aws:ec2:*:*:instance/*"}},
           {{"Sid": "Shell", "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "{DOCUMENT}"}}"#
    ));
    let decision = decide(
        &[("p", &policy)],
        "ssm:StartSession",
        &[TARGET, DOCUMENT],
        "alice",
    );
    assert_eq!(
        decision.to_string(),
        r#"allowed by policy "p" statement "Targets", policy "p" statement "Shell""#
    );
    let other = "arn:aws:ssm:us-east-1::document/AWS-StartSSHSession";
    let decision = decide_one(&policy, "ssm:StartSession", &[TARGET, other]);
    assert_eq!(
        decision,
        Decision::ImplicitDeny {
            action: "ssm:StartSession".into(),
            resource: other.into()
        }
    );
    assert_eq!(
        decision.to_string(),
        format!("no statement allows ssm:StartSession on {other}")
    );
}

#[test]
fn a_deny_on_any_resource_denies_the_request() {
    let policy = statements(&format!(
        r#"{{"Effect": "Allow", "Action": "*", "Resource": "*"}},
           {{"Sid": "NoShell", "Effect": "Deny", "Action": "ssm:StartSession", "Resource": "{DOCUMENT}"}}"#
    ));
    let decision = decide_one(&policy, "ssm:StartSession", &[TARGET, DOCUMENT]);
    assert!(
        matches!(&decision, Decision::ExplicitDeny { resource, .. } if resource == DOCUMENT),
        "{decision}"
    );
}

#[test]
fn username_variable_limits_alice_to_her_own_sessions() {
    let policy = statements(
        r#"{"Sid": "Own", "Effect": "Allow", "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
            "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*"}"#,
    );
    let session = |id: &str| policy::session_arn("us-east-1", "123456789012", id);
    let (alice, bob) = (session("alice-0123"), session("bob-0123"));
    let policies = [("own", &policy)];
    assert!(decide(&policies, "ssm:TerminateSession", &[&alice], "alice").allowed());
    assert!(!decide(&policies, "ssm:TerminateSession", &[&bob], "alice").allowed());
    assert!(decide(&policies, "ssm:TerminateSession", &[&bob], "bob").allowed());
    // A name is not a prefix pattern: "ali" is not alice.
    assert!(!decide(&policies, "ssm:TerminateSession", &[&alice], "ali").allowed());
    // The name is literal: a `*` in it is no wildcard, and an empty name matches nothing.
    assert!(!decide(&policies, "ssm:TerminateSession", &[&alice], "*").allowed());
    assert!(!decide(&policies, "ssm:TerminateSession", &[&session("-1")], "").allowed());
}

#[test]
fn userid_variable_and_variable_names_ignore_case() {
    for variable in ["${aws:userid}", "${AWS:UserName}"] {
        let policy = statements(&format!(
            r#"{{"Effect": "Allow", "Action": "ssm:TerminateSession", "Resource": "arn:aws:ssm:*:*:session/{variable}-*"}}"#
        ));
        let alice = policy::session_arn("us-east-1", "1", "alice-1");
        let policies = [("p", &policy)];
        assert!(decide(&policies, "ssm:TerminateSession", &[&alice], "alice").allowed());
        assert!(!decide(&policies, "ssm:TerminateSession", &[&alice], "bob").allowed());
    }
}

#[test]
fn escapes_are_literal_characters() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ssm:::document/a${*}b${?}c${$}d"}"#,
    );
    assert!(allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ssm:::document/a*b?c$d"]
    ));
    assert!(!allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ssm:::document/axbxc$d"]
    ));
}

#[test]
fn unknown_variable_matches_nothing() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ssm:*:*:session/${aws:PrincipalTag/team}-*"}"#,
    );
    let literal = "arn:aws:ssm:us-east-1:1:session/${aws:PrincipalTag/team}-1";
    assert!(!allows(&policy, "ssm:TerminateSession", &[literal]));
    assert!(!allows(
        &policy,
        "ssm:TerminateSession",
        &["arn:aws:ssm:us-east-1:1:session/-1"]
    ));
    // Nor does an unterminated one.
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ssm:*:*:session/${aws:username"}"#,
    );
    assert!(!allows(
        &policy,
        "ssm:TerminateSession",
        &["arn:aws:ssm:us-east-1:1:session/${aws:username"]
    ));
    // In NotResource of an Allow, it grants nothing rather than everything.
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:ssm:*:*:session/${aws:nope}"}"#,
    );
    assert!(!allows(&policy, "ssm:StartSession", &[TARGET]));
    // In a Deny's Resource it denies nothing (IAM behaviour).
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "*"},
           {"Effect": "Deny", "Action": "*", "Resource": "arn:aws:ec2:*:*:instance/${aws:nope}*"}"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
}

#[test]
fn actions_ignore_case_but_resources_do_not() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "SSM:startsession", "Resource": "arn:aws:ec2:*:*:instance/i-0abc"}"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
    assert!(allows(&policy, "SSM:STARTSESSION", &[TARGET]));
    assert!(!allows(
        &policy,
        "ssm:StartSession",
        &["arn:aws:ec2:us-east-1:123456789012:instance/I-0ABC"]
    ));
    let policy = statements(r#"{"Effect": "Allow", "Action": "ssm:start*", "Resource": "*"}"#);
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
}

#[test]
fn accepted_shapes() {
    // Single statement object, string Action/Resource, no Version, whitespace around arrays.
    let policy = parse(
        r#"{"Statement": {"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*"}}"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
    let policy = parse(
        r#"{ "Statement" :
              [ {"Effect": "Allow", "Action": [ "ssm:StartSession" ], "Resource": [ "*" ]} ] ,
             "Version" : "2012-10-17" }"#,
    );
    assert!(allows(&policy, "ssm:StartSession", &[TARGET]));
    // The gateway's development policy.
    parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Sid": "Sessions", "Effect": "Allow",
             "Action": ["ssm:StartSession", "ssm:DescribeSessions", "ssm:DescribeInstanceInformation"],
             "Resource": "*"},
            {"Sid": "OwnSessions", "Effect": "Allow",
             "Action": ["ssm:ResumeSession", "ssm:TerminateSession"],
             "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*"},
            {"Sid": "SessionKeys", "Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"}]}"#,
    );
}

/// The shapes the gateway uses: owned `(String, Policy)` pairs, ARNs built as `String`s.
#[test]
fn evaluate_takes_owned_pairs_too() {
    let document = serde_json::json!({"Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}});
    let attached: Vec<(String, Policy)> = vec![(
        "owned".to_owned(),
        Policy::from_json(&document.to_string()).expect("valid"),
    )];
    let (region, account) = ("us-east-1".to_owned(), "1".to_owned());
    let arns = [policy::kms_key_arn(&region, &account, "k")];
    let resources: Vec<&str> = arns.iter().map(String::as_str).collect();
    let decision = policy::evaluate(
        &attached,
        &AuthzRequest {
            action: "kms:Decrypt",
            resources: &resources,
            username: "alice",
        },
    );
    assert!(decision.allowed(), "{decision}");
}

fn refusal(json: &str) -> PolicyError {
    match Policy::from_json(json) {
        Ok(policy) => panic!("{json} accepted: {policy:?}"),
        Err(error) => error,
    }
}

/// A statement refusal, with the message it must contain.
fn refuse_statement(statement: &str, message: &str) -> PolicyError {
    let json = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "Fine", "Effect": "Allow", "Action": "*", "Resource": "*"}}, {statement}]}}"#
    );
    let error = refusal(&json);
    let text = error.to_string();
    assert!(text.contains(message), "{text:?} lacks {message:?}");
    error
}

fn second(sid: Option<&str>) -> StatementLocation {
    let json = match sid {
        Some(sid) => {
            format!(r#"{{"Sid": "{sid}", "Effect": "Maybe", "Action": "*", "Resource": "*"}}"#)
        }
        None => r#"{"Effect": "Maybe", "Action": "*", "Resource": "*"}"#.to_owned(),
    };
    match refuse_statement(&json, "Maybe") {
        PolicyError::UnknownEffect { at, .. } => at,
        other => panic!("{other}"),
    }
}

#[test]
fn refusals_name_the_statement() {
    let at = second(Some("NoProd"));
    assert_eq!((at.index, at.sid.as_deref()), (1, Some("NoProd")));
    assert_eq!(at.to_string(), r#"Statement[1] (Sid "NoProd")"#);
    assert_eq!(second(None).to_string(), "Statement[1]");
}

#[test]
fn refuses_bad_json_and_top_level_shapes() {
    assert!(matches!(refusal("{"), PolicyError::Json(_)));
    assert!(matches!(refusal("[]"), PolicyError::Json(_)));
    assert!(matches!(refusal(r#""policy""#), PolicyError::Json(_)));
    assert!(matches!(
        refusal(r#"{"Version": "2012-10-17"}"#),
        PolicyError::NoStatements
    ));
    assert!(matches!(
        refusal(r#"{"Version": "2012-10-17", "Statement": []}"#),
        PolicyError::NoStatements
    ));
    assert!(matches!(
        refusal(r#"{"Statement": "Allow everything"}"#),
        PolicyError::StatementNotAnObject { index: 0 }
    ));
    let error =
        refusal(r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, 7]}"#);
    assert!(matches!(
        error,
        PolicyError::StatementNotAnObject { index: 1 }
    ));
    assert!(
        error
            .to_string()
            .starts_with("Statement[1] is not a JSON object")
    );
}

#[test]
fn refuses_versions_other_than_2012() {
    for version in [r#""2008-10-17""#, r#""2012-10-18""#, "2012", "null"] {
        let error = refusal(&format!(
            r#"{{"Version": {version}, "Statement": {{"Effect": "Allow", "Action": "*", "Resource": "*"}}}}"#
        ));
        assert!(
            matches!(&error, PolicyError::UnsupportedVersion { found } if found == version),
            "{error}"
        );
        assert!(error.to_string().contains(r#"write "2012-10-17""#));
    }
}

#[test]
fn refuses_unknown_and_repeated_keys() {
    let error = refusal(
        r#"{"Version": "2012-10-17", "Id": "x", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
    );
    assert!(matches!(&error, PolicyError::UnknownKey { at: Location::Policy, key } if key == "Id"));
    assert!(error.to_string().contains(r#""Version" and "Statement""#));
    let error = refusal(r#"{"statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#);
    assert!(error.to_string().contains("case-sensitive"), "{error}");

    let error = refuse_statement(
        r#"{"Sid": "Typo", "Effect": "Allow", "Actions": "*", "Resource": "*"}"#,
        r#"Statement[1] (Sid "Typo"): unknown key "Actions""#,
    );
    assert!(matches!(
        error,
        PolicyError::UnknownKey {
            at: Location::Statement(_),
            ..
        }
    ));
    refuse_statement(
        r#"{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}"#,
        r#"unknown key "Principal""#,
    );

    let error = refuse_statement(
        r#"{"Effect": "Deny", "Action": "*", "Resource": "*", "Effect": "Allow"}"#,
        r#"Statement[1]: key "Effect" appears twice"#,
    );
    assert!(matches!(error, PolicyError::DuplicateKey { .. }));
    let error = refusal(
        r#"{"Version": "2012-10-17", "Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
    );
    assert!(matches!(
        error,
        PolicyError::DuplicateKey {
            at: Location::Policy,
            ..
        }
    ));
}

#[test]
fn refuses_condition() {
    let error = refuse_statement(
        r#"{"Sid": "Office", "Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}"#,
        r#"Statement[1] (Sid "Office"): Condition is not supported"#,
    );
    assert!(matches!(error, PolicyError::ConditionNotSupported { .. }));
    assert!(error.to_string().contains("widen access"));
}

#[test]
fn refuses_bad_effects() {
    let error = refuse_statement(
        r#"{"Action": "*", "Resource": "*"}"#,
        "Statement[1]: Effect is missing",
    );
    assert!(matches!(error, PolicyError::MissingEffect { .. }));
    for effect in [r#""allow""#, r#""Permit""#, "true"] {
        let error = refuse_statement(
            &format!(r#"{{"Effect": {effect}, "Action": "*", "Resource": "*"}}"#),
            &format!(r#"Effect {effect} is neither "Allow" nor "Deny""#),
        );
        assert!(matches!(error, PolicyError::UnknownEffect { .. }));
    }
}

#[test]
fn refuses_missing_and_doubled_action_and_resource() {
    let error = refuse_statement(
        r#"{"Effect": "Allow", "Resource": "*"}"#,
        "neither Action nor NotAction",
    );
    assert!(matches!(error, PolicyError::MissingAction { .. }));
    let error = refuse_statement(
        r#"{"Effect": "Allow", "Action": "ssm:*", "NotAction": "ssm:TerminateSession", "Resource": "*"}"#,
        "both Action and NotAction",
    );
    assert!(matches!(error, PolicyError::ActionAndNotAction { .. }));
    let error = refuse_statement(
        r#"{"Effect": "Allow", "Action": "*"}"#,
        "neither Resource nor NotResource",
    );
    assert!(matches!(error, PolicyError::MissingResource { .. }));
    let error = refuse_statement(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "*", "NotResource": "arn:aws:ssm:::x"}"#,
        "both Resource and NotResource",
    );
    assert!(matches!(error, PolicyError::ResourceAndNotResource { .. }));
}

#[test]
fn refuses_wrong_value_types() {
    for (statement, message) in [
        (
            r#"{"Sid": 1, "Effect": "Allow", "Action": "*", "Resource": "*"}"#,
            "Sid must be a string",
        ),
        (
            r#"{"Effect": "Allow", "Action": [], "Resource": "*"}"#,
            "Action must be a string or a non-empty array",
        ),
        (
            r#"{"Effect": "Allow", "Action": ["*", 3], "Resource": "*"}"#,
            "Action must be",
        ),
        (
            r#"{"Effect": "Allow", "NotAction": {}, "Resource": "*"}"#,
            "NotAction must be",
        ),
        (
            r#"{"Effect": "Allow", "Action": "*", "Resource": null}"#,
            "Resource must be",
        ),
        (
            r#"{"Effect": "Allow", "Action": "*", "NotResource": []}"#,
            "NotResource must be",
        ),
    ] {
        let error = refuse_statement(statement, message);
        assert!(matches!(error, PolicyError::WrongType { .. }), "{error}");
    }
}

#[test]
fn refuses_malformed_actions_and_resources() {
    for action in [
        "",
        "ssm",
        "ssm:",
        ":StartSession",
        "ssm-StartSession",
        "ssm:Start Session",
        "ss*:StartSession",
        "ssm:Start:Session",
    ] {
        let error = refuse_statement(
            &format!(r#"{{"Effect": "Allow", "Action": "{action}", "Resource": "*"}}"#),
            &format!("action {action:?} is not"),
        );
        assert!(matches!(error, PolicyError::InvalidAction { .. }));
    }
    for resource in [
        "",
        "i-0abc",
        "arn:aws:ec2",
        "**",
        "ARN:aws:ec2:us-east-1:1:instance/i-1",
    ] {
        let error = refuse_statement(
            &format!(r#"{{"Effect": "Allow", "Action": "*", "Resource": "{resource}"}}"#),
            &format!("resource {resource:?} is not"),
        );
        assert!(matches!(error, PolicyError::InvalidResource { .. }));
    }
}

#[test]
fn refuses_variables_without_version() {
    let error = refusal(
        r#"{"Statement": {"Sid": "Own", "Effect": "Allow", "Action": "*",
            "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*"}}"#,
    );
    assert!(matches!(error, PolicyError::VariableWithoutVersion { .. }));
    assert!(
        error
            .to_string()
            .starts_with(r#"Statement[0] (Sid "Own"): resource"#),
        "{error}"
    );
}

#[test]
fn refuses_repeated_sids() {
    let error = refuse_statement(
        r#"{"Sid": "Fine", "Effect": "Deny", "Action": "*", "Resource": "*"}"#,
        r#"Sid "Fine" is used by Statement[0] and Statement[1]"#,
    );
    assert!(matches!(
        error,
        PolicyError::DuplicateSid {
            first: 0,
            second: 1,
            ..
        }
    ));
}

#[test]
fn arn_helpers_follow_the_conventions() {
    assert_eq!(
        policy::target_arn("eu-west-1", "123456789012", "mi-0123456789abcdef0"),
        "arn:aws:ssm:eu-west-1:123456789012:managed-instance/mi-0123456789abcdef0"
    );
    assert_eq!(
        policy::target_arn("eu-west-1", "123456789012", "i-0abc"),
        "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc"
    );
    assert_eq!(
        policy::document_arn("eu-west-1", "123456789012", "SSM-SessionManagerRunShell"),
        "arn:aws:ssm:eu-west-1::document/SSM-SessionManagerRunShell"
    );
    assert_eq!(
        policy::document_arn("eu-west-1", "123456789012", "AWS-StartSSHSession"),
        "arn:aws:ssm:eu-west-1::document/AWS-StartSSHSession"
    );
    assert_eq!(
        policy::document_arn("eu-west-1", "123456789012", "SSM-Mine"),
        "arn:aws:ssm:eu-west-1:123456789012:document/SSM-Mine"
    );
    assert_eq!(
        policy::session_arn("eu-west-1", "123456789012", "alice-0123"),
        "arn:aws:ssm:eu-west-1:123456789012:session/alice-0123"
    );
    assert_eq!(
        policy::kms_key_arn("eu-west-1", "123456789012", "1234abcd-12ab"),
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab"
    );
}

#[test]
fn decisions_escape_control_characters() {
    let policy =
        statements(r#"{"Effect": "Allow", "Action": "ssm:DescribeSessions", "Resource": "*"}"#);
    let target = policy::target_arn("us-east-1", "1", "i-1\nforged log line");
    let text = decide_one(&policy, "ssm:StartSession", &[&target]).to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.ends_with(r"i-1\nforged log line"), "{text}");
}

#[test]
fn a_many_star_pattern_against_a_long_resource_finishes() {
    let policy = statements(
        r#"{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ssm:*:*:session/a*a*a*a*a*a*a*a*a*a*b"}"#,
    );
    let resource = format!("arn:aws:ssm:us-east-1:1:session/{}", "a".repeat(50_000));
    assert!(!allows(&policy, "ssm:TerminateSession", &[&resource]));
}

/// The obvious recursive matcher, for short strings.
fn reference(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| reference(rest, &text[skip..])),
        Some((p, rest)) => {
            text.first().is_some_and(|t| *p == '?' || p == t) && reference(rest, &text[1..])
        }
    }
}

proptest! {
    #[test]
    fn resource_matching_agrees_with_reference(pattern in "[ab/:*?]{0,8}", text in "[ab/:]{0,10}") {
        let policy = statements(&format!(
            r#"{{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:ssm:::{pattern}"}}"#
        ));
        let resource = format!("arn:aws:ssm:::{text}");
        let expected = reference(&pattern.chars().collect::<Vec<_>>(), &text.chars().collect::<Vec<_>>());
        prop_assert_eq!(allows(&policy, "ssm:StartSession", &[&resource]), expected);
    }

    #[test]
    fn action_matching_agrees_with_reference_ignoring_case(
        pattern in "[aB*?]{1,8}",
        text in "[AbB]{1,10}",
    ) {
        let policy = statements(&format!(
            r#"{{"Effect": "Allow", "Action": "ssm:{pattern}", "Resource": "*"}}"#
        ));
        let lower = |s: &str| s.to_ascii_lowercase().chars().collect::<Vec<_>>();
        let expected = reference(&lower(&pattern), &lower(&text));
        prop_assert_eq!(allows(&policy, &format!("SSM:{text}"), &[TARGET]), expected);
    }

    #[test]
    fn parsing_never_panics(json in any::<String>()) {
        let _ = Policy::from_json(&json);
    }

    #[test]
    fn evaluation_never_panics(
        pattern in any::<String>(),
        resource in any::<String>(),
        action in any::<String>(),
        user in any::<String>(),
    ) {
        let document = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": format!("arn:a:b:c:d:{pattern}")},
                {"Effect": "Deny", "Action": "ssm:*", "NotResource": format!("arn:a:b:c:d:{pattern}")},
            ]
        });
        let policy = parse(&document.to_string());
        let decision = decide(&[("p", &policy)], &action, &[&resource], &user);
        let _ = decision.to_string();
    }
}
