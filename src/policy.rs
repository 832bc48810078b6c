//! IAM-style identity policies: which principal may call which API action on which resource.
//!
//! The gateway attaches named policies to each principal and asks [`evaluate`] before every
//! call (`ssm:StartSession`, `ssm:ResumeSession`, `ssm:TerminateSession`,
//! `ssm:DescribeSessions`, `ssm:DescribeInstanceInformation`, `kms:GenerateDataKey`,
//! `kms:Decrypt`, …). Everything here is pure: no IO, no clock.
//!
//! # Policy documents
//!
//! [`Policy::from_json`] reads the IAM identity-policy shape:
//!
//! ```json
//! {"Version": "2012-10-17",
//!  "Statement": [{"Sid": "Shells", "Effect": "Allow",
//!                 "Action": ["ssm:StartSession"], "Resource": "arn:aws:ec2:*:*:instance/*"}]}
//! ```
//!
//! `Statement` is one object or an array of them; `Action`, `NotAction`, `Resource` and
//! `NotResource` are a string or a non-empty array of strings. The reader is strict, because
//! this is our own configuration and a typo must neither widen nor narrow access silently:
//! unknown or repeated keys (names are case-sensitive, as in IAM), a missing or unknown `Effect`,
//! a statement with neither or both of `Action`/`NotAction` (likewise `Resource`/`NotResource`),
//! an action that is not `*` or `service:Name`, a resource that is not `*` or an ARN, and repeated
//! `Sid`s (a decision must name one statement) are all refused with a [`PolicyError`] that names
//! the statement (`Statement[1] (Sid "NoProd")`, indexes from 0). `Condition` is refused too:
//! we do not evaluate conditions, and ignoring one would widen access.
//!
//! `Version` must be `"2012-10-17"` or absent; both mean the same language. IAM, however, reads a
//! policy without `Version` as the 2008 language, where `${aws:username}` is plain text, so a
//! policy that leaves `Version` out and uses a policy variable is refused: the author must say
//! which reading they mean.
//!
//! # Matching
//!
//! * Actions compare ignoring ASCII case; `*` matches any run of characters and `?` exactly one
//!   (`*`, `ssm:*`, `ssm:Start*`, `ssm:?ermin*`).
//! * Resources compare case-sensitively with the same wildcards; `*` also spans `/` and `:`.
//! * Resource patterns may use the policy variables `${aws:username}` and `${aws:userid}` (names
//!   ignore case). Both resolve to the principal's configured name: the gateway's principals have
//!   no unique id apart from it. The value is matched literally (a `*` in a name is no wildcard),
//!   and an empty name resolves to nothing. `${*}`, `${?}` and `${$}` are a literal `*`, `?`, `$`.
//! * A pattern with any other variable (or an unterminated `${`) matches no resource, as in IAM.
//!   In the `NotResource` of an `Allow` statement such a pattern makes the statement not apply,
//!   so that an unresolved variable never grants access.
//! * Matching is the greedy two-pointer wildcard algorithm: at worst pattern length × resource
//!   length steps, no recursion, no exponential backtracking.
//!
//! # Decisions
//!
//! A request names one action and one or more resources (StartSession: the target and the
//! document). It is allowed only if no `Deny` statement of any policy matches the action on any
//! of the resources, and every resource is matched by some `Allow` statement. An explicit deny
//! wins whatever the order of statements and policies; when nothing allows a resource the answer
//! is the default deny, naming the first such resource. A request with no resource is denied.
//! The [`Decision`] prints for audit logs and users:
//!
//! * `allowed by policy "all-targets" statement "Sessions"`
//! * `denied by policy "restricted" statement "NoProd" (ssm:StartSession on arn:aws:…)`
//! * `no statement allows ssm:StartSession on arn:aws:ec2:us-east-1:123456789012:instance/i-0abc`
//!
//! A statement without `Sid` prints as its index: `policy "restricted" Statement[2]`.
//!
//! # ARN conventions
//!
//! The gateway names resources the way AWS does, built by the functions here:
//!
//! | resource | ARN | built by |
//! |---|---|---|
//! | managed instance (id `mi-…`) | `arn:aws:ssm:{region}:{account}:managed-instance/{id}` | [`target_arn`] |
//! | any other target (EC2 `i-…`) | `arn:aws:ec2:{region}:{account}:instance/{id}` | [`target_arn`] |
//! | AWS-owned document | `arn:aws:ssm:{region}::document/{name}` (no account) | [`document_arn`] |
//! | custom document | `arn:aws:ssm:{region}:{account}:document/{name}` | [`document_arn`] |
//! | session | `arn:aws:ssm:{region}:{account}:session/{session_id}` | [`session_arn`] |
//! | KMS key | `arn:aws:kms:{region}:{account}:key/{key_id}` | [`kms_key_arn`] |
//!
//! AWS-owned documents are the built-ins the gateway ships
//! ([`BUILTIN_DOCUMENTS`](crate::document::BUILTIN_DOCUMENTS), including
//! `SSM-SessionManagerRunShell`) and any name starting with `AWS-`, a prefix AWS reserves (the
//! document store refuses it for custom documents). Every other name is the account's own, so
//! a custom `SSM-Mine` has the account in its ARN. Session ids start with the owner's name
//! (`alice-0123…`), which is what lets `session/${aws:username}-*` mean "my own sessions".
//!
//! # Examples
//!
//! ```
//! use ssm_session::policy::{self, AuthzRequest, Policy};
//!
//! let restricted = Policy::from_json(
//!     r#"{
//!         "Version": "2012-10-17",
//!         "Statement": [
//!             {"Sid": "Shells", "Effect": "Allow", "Action": "ssm:StartSession",
//!              "Resource": ["arn:aws:ec2:*:123456789012:instance/*",
//!                           "arn:aws:ssm:*::document/SSM-SessionManagerRunShell"]},
//!             {"Sid": "NoProd", "Effect": "Deny", "Action": "ssm:*",
//!              "Resource": "arn:aws:ec2:*:*:instance/i-0prod*"},
//!             {"Sid": "OwnSessions", "Effect": "Allow", "Action": "ssm:TerminateSession",
//!              "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*"}
//!         ]
//!     }"#,
//! )?;
//! let policies = [("restricted", &restricted)];
//! let start = |target: &str| {
//!     let target = policy::target_arn("us-east-1", "123456789012", target);
//!     let document = policy::document_arn("us-east-1", "123456789012", "SSM-SessionManagerRunShell");
//!     let request = AuthzRequest {
//!         action: "ssm:StartSession",
//!         resources: &[&target, &document],
//!         username: "alice",
//!     };
//!     policy::evaluate(&policies, &request)
//! };
//!
//! let decision = start("i-0abc");
//! assert!(decision.allowed());
//! println!("{decision}"); // allowed by policy "restricted" statement "Shells"
//!
//! let decision = start("i-0prod1");
//! assert!(!decision.allowed());
//! assert!(decision.to_string().starts_with(r#"denied by policy "restricted" statement "NoProd""#));
//!
//! let session = policy::session_arn("us-east-1", "123456789012", "bob-0123");
//! let decision = policy::evaluate(
//!     &policies,
//!     &AuthzRequest { action: "ssm:TerminateSession", resources: &[&session], username: "alice" },
//! );
//! assert_eq!(
//!     decision.to_string(),
//!     "no statement allows ssm:TerminateSession on arn:aws:ssm:us-east-1:123456789012:session/bob-0123",
//! );
//! # Ok::<(), ssm_session::policy::PolicyError>(())
//! ```

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The one policy language version we implement.
pub const POLICY_VERSION: &str = "2012-10-17";

/// The ARN of a session target: a managed instance (`mi-…`) or an EC2 instance.
pub fn target_arn(region: &str, account: &str, target: &str) -> String {
    if target.starts_with("mi-") {
        format!("arn:aws:ssm:{region}:{account}:managed-instance/{target}")
    } else {
        format!("arn:aws:ec2:{region}:{account}:instance/{target}")
    }
}

/// The ARN of a session document: without an account for AWS-owned documents (the built-ins
/// and the reserved `AWS-` prefix), with `account` for custom ones.
pub fn document_arn(region: &str, account: &str, name: &str) -> String {
    let aws_owned = crate::document::BUILTIN_DOCUMENTS.contains(&name) || name.starts_with("AWS-");
    let account = if aws_owned { "" } else { account };
    format!("arn:aws:ssm:{region}:{account}:document/{name}")
}

/// The ARN of a session, the resource of ResumeSession, TerminateSession and DescribeSessions.
pub fn session_arn(region: &str, account: &str, session_id: &str) -> String {
    format!("arn:aws:ssm:{region}:{account}:session/{session_id}")
}

/// The ARN of a KMS key, the resource of `kms:GenerateDataKey` and `kms:Decrypt`.
pub fn kms_key_arn(region: &str, account: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{key_id}")
}

/// A parsed, validated policy document. Build it with [`Policy::from_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    actions: Listing<Vec<Token>>,
    resources: Listing<ResourcePattern>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// `Action`/`Resource` (any pattern matches) or `NotAction`/`NotResource` (none matches).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listing<T> {
    Listed(Vec<T>),
    Not(Vec<T>),
}

/// One element of a compiled wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// This character (ignoring ASCII case for actions).
    Char(char),
    /// `?`: exactly one character.
    AnyOne,
    /// `*`: any run of characters, including none.
    AnyRun,
}

/// A resource pattern; `None` when it uses a variable we cannot resolve, so it matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourcePattern(Option<Vec<Piece>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Token(Token),
    /// `${aws:username}` or `${aws:userid}`.
    PrincipalName,
}

/// Where in a policy document an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The top-level object.
    Policy,
    /// One statement.
    Statement(StatementLocation),
}

impl Location {
    /// The keys allowed here, for error messages.
    fn allowed_keys(&self) -> &'static str {
        match self {
            Location::Policy => r#""Version" and "Statement""#,
            Location::Statement(_) => {
                r#""Sid", "Effect", "Action", "NotAction", "Resource" and "NotResource""#
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Policy => f.write_str("policy"),
            Location::Statement(statement) => statement.fmt(f),
        }
    }
}

/// A statement by position (from 0 in `Statement`) and `Sid`, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatementLocation {
    /// Index in the `Statement` array; 0 when `Statement` is a single object.
    pub index: usize,
    /// The statement's `Sid`, if it has one.
    pub sid: Option<String>,
}

impl fmt::Display for StatementLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Statement[{}]", self.index)?;
        match &self.sid {
            Some(sid) => write!(f, " (Sid {sid:?})"),
            None => Ok(()),
        }
    }
}

/// Why a policy document was refused; each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not JSON, or not a JSON object.
    #[error("policy is not a JSON object: {0}")]
    Json(#[source] serde_json::Error),
    /// A key appears twice in one object (JSON readers would silently keep one of them).
    #[error("{at}: key {key:?} appears twice: keep one")]
    DuplicateKey {
        /// Which object.
        at: Location,
        /// The repeated key.
        key: String,
    },
    /// A key this policy language does not have (often a typo or a wrong case).
    #[error("{at}: unknown key {key:?}: use {} (names are case-sensitive)", at.allowed_keys())]
    UnknownKey {
        /// Which object.
        at: Location,
        /// The unknown key.
        key: String,
    },
    /// `Version` is something other than `"2012-10-17"`.
    #[error("Version {found} is not supported: write \"2012-10-17\" or leave Version out")]
    UnsupportedVersion {
        /// The value found, as JSON.
        found: String,
    },
    /// `Statement` is missing or an empty array.
    #[error("policy has no statements: add \"Statement\" with at least one statement")]
    NoStatements,
    /// An element of `Statement` (or `Statement` itself) is not a JSON object.
    #[error(
        "Statement[{index}] is not a JSON object: write {{\"Effect\": …, \"Action\": …, \"Resource\": …}}"
    )]
    StatementNotAnObject {
        /// Index in the `Statement` array.
        index: usize,
    },
    /// A statement has a `Condition`, which we do not evaluate.
    #[error(
        "{at}: Condition is not supported: remove it and narrow Action or Resource instead \
         (ignoring it would widen access)"
    )]
    ConditionNotSupported {
        /// Which statement.
        at: StatementLocation,
    },
    /// A statement has no `Effect`.
    #[error("{at}: Effect is missing: add \"Effect\": \"Allow\" or \"Deny\"")]
    MissingEffect {
        /// Which statement.
        at: StatementLocation,
    },
    /// `Effect` is neither `"Allow"` nor `"Deny"`.
    #[error("{at}: Effect {found} is neither \"Allow\" nor \"Deny\" (case-sensitive)")]
    UnknownEffect {
        /// Which statement.
        at: StatementLocation,
        /// The value found, as JSON.
        found: String,
    },
    /// A value has the wrong JSON type.
    #[error("{at}: {key} must be {expected}")]
    WrongType {
        /// Which statement.
        at: StatementLocation,
        /// The key whose value is wrong.
        key: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A statement has neither `Action` nor `NotAction`.
    #[error("{at}: neither Action nor NotAction: add one")]
    MissingAction {
        /// Which statement.
        at: StatementLocation,
    },
    /// A statement has both `Action` and `NotAction`.
    #[error("{at}: both Action and NotAction: keep one")]
    ActionAndNotAction {
        /// Which statement.
        at: StatementLocation,
    },
    /// A statement has neither `Resource` nor `NotResource`.
    #[error("{at}: neither Resource nor NotResource: add one (\"*\" for every resource)")]
    MissingResource {
        /// Which statement.
        at: StatementLocation,
    },
    /// A statement has both `Resource` and `NotResource`.
    #[error("{at}: both Resource and NotResource: keep one")]
    ResourceAndNotResource {
        /// Which statement.
        at: StatementLocation,
    },
    /// An action is not `*` or `service:Name`.
    #[error(
        "{at}: action {action:?} is not \"*\" or service:Name with letters, digits, * and ? \
         in the name (like \"ssm:StartSession\" or \"ssm:Start*\")"
    )]
    InvalidAction {
        /// Which statement.
        at: StatementLocation,
        /// The action as written.
        action: String,
    },
    /// A resource is not `*` or an ARN.
    #[error(
        "{at}: resource {resource:?} is not \"*\" or an ARN \
         (arn:partition:service:region:account:resource)"
    )]
    InvalidResource {
        /// Which statement.
        at: StatementLocation,
        /// The resource as written.
        resource: String,
    },
    /// A resource uses a policy variable but the policy has no `Version`.
    #[error(
        "{at}: resource {resource:?} uses a policy variable, which needs \"Version\": \
         \"2012-10-17\" (without it IAM reads ${{…}} as plain text)"
    )]
    VariableWithoutVersion {
        /// Which statement.
        at: StatementLocation,
        /// The resource as written.
        resource: String,
    },
    /// Two statements share a `Sid`, so a decision could not say which one decided.
    #[error("Sid {sid:?} is used by Statement[{first}] and Statement[{second}]: make Sids unique")]
    DuplicateSid {
        /// The repeated Sid.
        sid: String,
        /// Index of the first statement with it.
        first: usize,
        /// Index of the second.
        second: usize,
    },
}

impl Policy {
    /// Reads and validates a policy document (see the [module docs](self) for the rules).
    pub fn from_json(json: &str) -> Result<Policy, PolicyError> {
        let top: Members<Box<RawValue>> = serde_json::from_str(json).map_err(PolicyError::Json)?;
        let top = top.into_unique(|| Location::Policy)?;
        let mut versioned = false;
        let mut statement = None;
        for (key, value) in top {
            match key.as_str() {
                "Version" => {
                    if serde_json::from_str::<Value>(value.get()).ok()
                        != Some(Value::from(POLICY_VERSION))
                    {
                        let found = value.get().to_owned();
                        return Err(PolicyError::UnsupportedVersion { found });
                    }
                    versioned = true;
                }
                "Statement" => statement = Some(value),
                _ => {
                    return Err(PolicyError::UnknownKey {
                        at: Location::Policy,
                        key,
                    });
                }
            }
        }
        let statement = statement.ok_or(PolicyError::NoStatements)?;
        let raw_statements = if statement.get().starts_with('[') {
            serde_json::from_str::<Vec<Box<RawValue>>>(statement.get())
                .map_err(PolicyError::Json)?
        } else {
            vec![statement]
        };
        if raw_statements.is_empty() {
            return Err(PolicyError::NoStatements);
        }
        let mut statements = Vec::with_capacity(raw_statements.len());
        let mut sids = BTreeMap::new();
        for (index, raw) in raw_statements.iter().enumerate() {
            let members: Members<Value> = serde_json::from_str(raw.get())
                .map_err(|_| PolicyError::StatementNotAnObject { index })?;
            let parsed = Statement::parse(index, members, versioned)?;
            if let Some(sid) = &parsed.sid
                && let Some(first) = sids.insert(sid.clone(), index)
            {
                let sid = sid.clone();
                return Err(PolicyError::DuplicateSid {
                    sid,
                    first,
                    second: index,
                });
            }
            statements.push(parsed);
        }
        Ok(Policy { statements })
    }
}

impl Statement {
    fn parse(index: usize, members: Members<Value>, versioned: bool) -> Result<Self, PolicyError> {
        // The Sid names the statement in every later error, wherever it appears in the object.
        let sid = members
            .0
            .iter()
            .find(|(key, _)| key == "Sid")
            .map(|(_, value)| value);
        let at = StatementLocation {
            index,
            sid: sid.and_then(Value::as_str).map(str::to_owned),
        };
        if sid.is_some_and(|sid| !sid.is_string()) {
            let expected = "a string";
            return Err(PolicyError::WrongType {
                at,
                key: "Sid",
                expected,
            });
        }
        let members = members.into_unique(|| Location::Statement(at.clone()))?;
        let mut effect = None;
        let (mut action, mut not_action, mut resource, mut not_resource) = (None, None, None, None);
        for (key, value) in members {
            match key.as_str() {
                "Sid" => {}
                "Effect" => effect = Some(value),
                "Action" => action = Some(strings(&at, "Action", value)?),
                "NotAction" => not_action = Some(strings(&at, "NotAction", value)?),
                "Resource" => resource = Some(strings(&at, "Resource", value)?),
                "NotResource" => not_resource = Some(strings(&at, "NotResource", value)?),
                "Condition" => return Err(PolicyError::ConditionNotSupported { at }),
                _ => {
                    let at = Location::Statement(at);
                    return Err(PolicyError::UnknownKey { at, key });
                }
            }
        }
        let effect = match effect {
            None => return Err(PolicyError::MissingEffect { at }),
            Some(Value::String(effect)) if effect == "Allow" => Effect::Allow,
            Some(Value::String(effect)) if effect == "Deny" => Effect::Deny,
            Some(other) => {
                let found = other.to_string();
                return Err(PolicyError::UnknownEffect { at, found });
            }
        };
        let actions = match (action, not_action) {
            (None, None) => return Err(PolicyError::MissingAction { at }),
            (Some(_), Some(_)) => return Err(PolicyError::ActionAndNotAction { at }),
            (Some(list), None) => Listing::Listed(compile_actions(&at, list)?),
            (None, Some(list)) => Listing::Not(compile_actions(&at, list)?),
        };
        let resources = match (resource, not_resource) {
            (None, None) => return Err(PolicyError::MissingResource { at }),
            (Some(_), Some(_)) => return Err(PolicyError::ResourceAndNotResource { at }),
            (Some(list), None) => Listing::Listed(compile_resources(&at, list, versioned)?),
            (None, Some(list)) => Listing::Not(compile_resources(&at, list, versioned)?),
        };
        Ok(Statement {
            sid: at.sid,
            effect,
            actions,
            resources,
        })
    }

    /// Whether this statement covers `action` on `resource` for `principal`.
    fn applies(&self, action: &[char], resource: &[char], principal: &str) -> bool {
        let action_matches =
            |pattern: &Vec<Token>| wildcard_match(pattern, action, same_ascii_case);
        let actions = match &self.actions {
            Listing::Listed(patterns) => patterns.iter().any(action_matches),
            Listing::Not(patterns) => !patterns.iter().any(action_matches),
        };
        actions
            && match &self.resources {
                Listing::Listed(patterns) => patterns
                    .iter()
                    .any(|pattern| pattern.matches(resource, principal) == Some(true)),
                // An unresolvable pattern excludes nothing (IAM), but must not grant access.
                Listing::Not(patterns) => {
                    patterns
                        .iter()
                        .all(|pattern| match pattern.matches(resource, principal) {
                            Some(matched) => !matched,
                            None => self.effect == Effect::Deny,
                        })
                }
            }
    }
}

/// A string or a non-empty array of strings.
fn strings(
    at: &StatementLocation,
    key: &'static str,
    value: Value,
) -> Result<Vec<String>, PolicyError> {
    let wrong = || PolicyError::WrongType {
        at: at.clone(),
        key,
        expected: "a string or a non-empty array of strings",
    };
    match value {
        Value::String(one) => Ok(vec![one]),
        Value::Array(many) if !many.is_empty() => many
            .into_iter()
            .map(|item| match item {
                Value::String(item) => Ok(item),
                _ => Err(wrong()),
            })
            .collect(),
        _ => Err(wrong()),
    }
}

fn compile_actions(
    at: &StatementLocation,
    actions: Vec<String>,
) -> Result<Vec<Vec<Token>>, PolicyError> {
    actions
        .into_iter()
        .map(|action| {
            let valid = action == "*"
                || action.split_once(':').is_some_and(|(service, name)| {
                    !service.is_empty()
                        && service
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
                });
            if valid {
                Ok(action_pattern(&action))
            } else {
                Err(PolicyError::InvalidAction {
                    at: at.clone(),
                    action,
                })
            }
        })
        .collect()
}

/// An action pattern's tokens: every `*` and `?` is a wildcard.
fn action_pattern(action: &str) -> Vec<Token> {
    action
        .chars()
        .map(|c| match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            c => Token::Char(c),
        })
        .collect()
}

fn compile_resources(
    at: &StatementLocation,
    resources: Vec<String>,
    versioned: bool,
) -> Result<Vec<ResourcePattern>, PolicyError> {
    resources
        .into_iter()
        .map(|resource| {
            // An ARN has six colon-separated parts; "*" alone stands for every resource.
            if resource != "*"
                && !(resource.starts_with("arn:") && resource.matches(':').count() >= 5)
            {
                return Err(PolicyError::InvalidResource {
                    at: at.clone(),
                    resource,
                });
            }
            if !versioned && resource.contains("${") {
                return Err(PolicyError::VariableWithoutVersion {
                    at: at.clone(),
                    resource,
                });
            }
            Ok(ResourcePattern::parse(&resource))
        })
        .collect()
}

impl ResourcePattern {
    fn parse(pattern: &str) -> ResourcePattern {
        let mut pieces = Vec::with_capacity(pattern.len());
        let mut rest = pattern;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("${") {
                let Some((name, after)) = after.split_once('}') else {
                    return ResourcePattern(None);
                };
                pieces.push(match name {
                    "*" => Piece::Token(Token::Char('*')),
                    "?" => Piece::Token(Token::Char('?')),
                    "$" => Piece::Token(Token::Char('$')),
                    name if name.eq_ignore_ascii_case("aws:username")
                        || name.eq_ignore_ascii_case("aws:userid") =>
                    {
                        Piece::PrincipalName
                    }
                    _ => return ResourcePattern(None),
                });
                rest = after;
                continue;
            }
            pieces.push(Piece::Token(match c {
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                c => Token::Char(c),
            }));
            rest = &rest[c.len_utf8()..];
        }
        ResourcePattern(Some(pieces))
    }

    /// `None` when a variable has no value, so the pattern can match nothing.
    fn matches(&self, resource: &[char], principal: &str) -> Option<bool> {
        let pieces = self.0.as_ref()?;
        let mut tokens = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Token(token) => tokens.push(*token),
                Piece::PrincipalName if principal.is_empty() => return None,
                // The name is matched literally: a `*` in it is no wildcard.
                Piece::PrincipalName => tokens.extend(principal.chars().map(Token::Char)),
            }
        }
        Some(wildcard_match(&tokens, resource, char::eq))
    }
}

fn same_ascii_case(a: &char, b: &char) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Greedy two-pointer wildcard matching. Only the most recent `*` is ever revisited: any
/// earlier `*` could only have absorbed what the later one can, so at most
/// `pattern.len() × text.len()` steps, with no recursion and no exponential blowup.
fn wildcard_match(pattern: &[Token], text: &[char], same: impl Fn(&char, &char) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    // The pattern index after the last `*`, and the text index that `*` currently stops at.
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = text.get(t) {
        match pattern.get(p) {
            Some(Token::AnyRun) => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(Token::AnyOne) => {
                (p, t) = (p + 1, t + 1);
                continue;
            }
            Some(Token::Char(expected)) if same(expected, c) => {
                (p, t) = (p + 1, t + 1);
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character and retry after it.
        let Some((after_star, stop)) = star else {
            return false;
        };
        star = Some((after_star, stop + 1));
        (p, t) = (after_star, stop + 1);
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|token| *token == Token::AnyRun))
}

/// One API call to authorise.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The action, like `ssm:StartSession`.
    pub action: &'a str,
    /// Every resource the call touches; all must be allowed.
    pub resources: &'a [&'a str],
    /// The principal's name: the value of `${aws:username}` and `${aws:userid}`.
    pub username: &'a str,
}

/// A statement that decided, for audit logs and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatementRef {
    /// The policy's name as attached to the principal.
    pub policy: String,
    /// Index in the policy's `Statement` array.
    pub index: usize,
    /// The statement's `Sid`, if it has one.
    pub sid: Option<String>,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {:?} ", self.policy)?;
        match &self.sid {
            Some(sid) => write!(f, "statement {sid:?}"),
            None => write!(f, "Statement[{}]", self.index),
        }
    }
}

/// The answer to an [`AuthzRequest`]; `Display` gives the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Every resource is allowed and none denied.
    Allow {
        /// The statements that allowed, in resource order, each once.
        statements: Vec<StatementRef>,
    },
    /// A `Deny` statement matched one of the resources.
    ExplicitDeny {
        /// The deny statement.
        statement: StatementRef,
        /// The action requested.
        action: String,
        /// The resource it matched.
        resource: String,
    },
    /// No `Allow` statement matched this resource (the first such one).
    ImplicitDeny {
        /// The action requested.
        action: String,
        /// The resource nothing allowed.
        resource: String,
    },
    /// The request named no resource, so nothing can allow it.
    NoResource {
        /// The action requested.
        action: String,
    },
}

impl Decision {
    /// Whether the call may go ahead.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Requests carry caller-chosen text (target ids): escape it so a log line stays one line.
        match self {
            Decision::Allow { statements } => {
                f.write_str("allowed by ")?;
                for (i, statement) in statements.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    statement.fmt(f)?;
                }
                Ok(())
            }
            Decision::ExplicitDeny {
                statement,
                action,
                resource,
            } => write!(
                f,
                "denied by {statement} ({} on {})",
                action.escape_debug(),
                resource.escape_debug()
            ),
            Decision::ImplicitDeny { action, resource } => write!(
                f,
                "no statement allows {} on {}",
                action.escape_debug(),
                resource.escape_debug()
            ),
            Decision::NoResource { action } => {
                write!(f, "no resource named for {}: denied", action.escape_debug())
            }
        }
    }
}

/// Decides `request` against the principal's named policies: explicit deny, then allow, then
/// default deny (see the [module docs](self)). Accepts `&[(String, Policy)]` as well as
/// `&[(&str, &Policy)]`.
pub fn evaluate<N, P>(policies: &[(N, P)], request: &AuthzRequest<'_>) -> Decision
where
    N: AsRef<str>,
    P: Borrow<Policy>,
{
    let action: Vec<char> = request.action.chars().collect();
    let resources: Vec<Vec<char>> = request
        .resources
        .iter()
        .map(|r| r.chars().collect())
        .collect();
    let statements = || {
        policies.iter().flat_map(|(name, policy)| {
            let statements = policy.borrow().statements.iter().enumerate();
            statements.map(move |(index, statement)| (name.as_ref(), index, statement))
        })
    };
    let reference = |policy: &str, index: usize, statement: &Statement| StatementRef {
        policy: policy.to_owned(),
        index,
        sid: statement.sid.clone(),
    };
    let covering = |effect: Effect, resource: &[char]| {
        statements().find(|(_, _, statement)| {
            statement.effect == effect && statement.applies(&action, resource, request.username)
        })
    };

    if request.resources.is_empty() {
        return Decision::NoResource {
            action: request.action.to_owned(),
        };
    }
    for (resource, chars) in request.resources.iter().zip(&resources) {
        if let Some((policy, index, statement)) = covering(Effect::Deny, chars) {
            return Decision::ExplicitDeny {
                statement: reference(policy, index, statement),
                action: request.action.to_owned(),
                resource: (*resource).to_owned(),
            };
        }
    }
    let mut allowed_by = Vec::new();
    for (resource, chars) in request.resources.iter().zip(&resources) {
        let Some((policy, index, statement)) = covering(Effect::Allow, chars) else {
            return Decision::ImplicitDeny {
                action: request.action.to_owned(),
                resource: (*resource).to_owned(),
            };
        };
        let statement = reference(policy, index, statement);
        if !allowed_by.contains(&statement) {
            allowed_by.push(statement);
        }
    }
    Decision::Allow {
        statements: allowed_by,
    }
}

/// A JSON object's members in document order, repeated keys kept so they can be refused
/// (`serde_json::Value` would silently keep the last one).
struct Members<V>(Vec<(String, V)>);

impl<V> Members<V> {
    fn into_unique(self, at: impl Fn() -> Location) -> Result<Vec<(String, V)>, PolicyError> {
        let mut seen = BTreeSet::new();
        for (key, _) in &self.0 {
            if !seen.insert(key.as_str()) {
                let key = key.clone();
                return Err(PolicyError::DuplicateKey { at: at(), key });
            }
        }
        Ok(self.0)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Members<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MembersVisitor<V> {
            type Value = Members<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<V>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The obvious recursive matcher: exponential, but fine on short strings.
    fn reference(pattern: &[char], text: &[char], fold: bool) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| reference(rest, &text[skip..], fold)),
            Some((p, rest)) => match text.split_first() {
                Some((t, text)) => {
                    let same = *p == '?' || p == t || (fold && p.eq_ignore_ascii_case(t));
                    same && reference(rest, text, fold)
                }
                None => false,
            },
        }
    }

    fn chars(text: &str) -> Vec<char> {
        text.chars().collect()
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_reference(pattern in "[ab*?]{0,8}", text in "[ab]{0,10}") {
            let expected = reference(&chars(&pattern), &chars(&text), false);
            prop_assert_eq!(wildcard_match(&action_pattern(&pattern), &chars(&text), char::eq), expected);
        }

        #[test]
        fn folding_matcher_agrees_with_reference(pattern in "[aB*?:/]{0,8}", text in "[AbB:/]{0,10}") {
            let expected = reference(&chars(&pattern), &chars(&text), true);
            let got = wildcard_match(&action_pattern(&pattern), &chars(&text), same_ascii_case);
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn resource_patterns_without_variables_agree_with_reference(
            pattern in "[a/:*?]{0,8}",
            text in "[a/:]{0,10}",
        ) {
            let expected = reference(&chars(&pattern), &chars(&text), false);
            let got = ResourcePattern::parse(&pattern).matches(&chars(&text), "alice");
            prop_assert_eq!(got, Some(expected));
        }

        #[test]
        fn never_panics(pattern in any::<String>(), text in any::<String>(), name in any::<String>()) {
            let text = chars(&text);
            let _ = wildcard_match(&action_pattern(&pattern), &text, same_ascii_case);
            let _ = ResourcePattern::parse(&pattern).matches(&text, &name);
        }
    }

    #[test]
    fn escapes_and_variables_become_pieces() {
        let pattern = ResourcePattern::parse("a${*}${?}${$}${AWS:UserName}?*");
        let expected = vec![
            Piece::Token(Token::Char('a')),
            Piece::Token(Token::Char('*')),
            Piece::Token(Token::Char('?')),
            Piece::Token(Token::Char('$')),
            Piece::PrincipalName,
            Piece::Token(Token::AnyOne),
            Piece::Token(Token::AnyRun),
        ];
        assert_eq!(pattern, ResourcePattern(Some(expected)));
        assert_eq!(
            ResourcePattern::parse("a${aws:PrincipalTag/x}"),
            ResourcePattern(None)
        );
        assert_eq!(
            ResourcePattern::parse("a${aws:username"),
            ResourcePattern(None)
        );
        assert_eq!(
            ResourcePattern::parse("a$b"),
            ResourcePattern(Some(vec![
                Piece::Token(Token::Char('a')),
                Piece::Token(Token::Char('$')),
                Piece::Token(Token::Char('b')),
            ]))
        );
    }

    #[test]
    fn many_stars_against_a_long_run_finish() {
        let text = vec!['a'; 20_000];
        assert!(!wildcard_match(
            &action_pattern("a*a*a*a*a*b"),
            &text,
            char::eq
        ));
        assert!(wildcard_match(
            &action_pattern("a*a*a*a*a*a"),
            &text,
            char::eq
        ));
        let stars = "*a".repeat(200) + "b";
        assert!(!wildcard_match(&action_pattern(&stars), &text, char::eq));
    }
}
