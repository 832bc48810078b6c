//! The `session-manager-plugin` argument contract (PROTOCOL.md §13). `aws ssm start-session` calls
//! `StartSession` itself and then runs the program named `session-manager-plugin` with the
//! answer; a program that accepts these arguments can be installed under that name.
//!
//! Arguments, after the program name:
//!
//! | # | Content |
//! |---|---------|
//! | 1 | the StartSession answer as JSON, or the name of an environment variable starting with `AWS_SSM_START_SESSION_RESPONSE` holding it |
//! | 2 | region |
//! | 3 | operation, `StartSession` |
//! | 4 | profile (empty for none) |
//! | 5 | the StartSession request as JSON (its `Target` is part of the KMS context) |
//! | 6 | the SSM endpoint, for `ResumeSession` and `TerminateSession` |
//!
//! None: the CLI's "is it installed" check. Only `--version`: the version. One or two: not an
//! operation. Three (CLIs older than the profile argument): a session, but without KMS
//! encryption, as the reference refuses it for such CLIs.
//!
//! # Examples
//!
//! ```
//! use ssm_session::client::plugin::{self, PluginCall};
//!
//! let args = [
//!     "AWS_SSM_START_SESSION_RESPONSE",
//!     "eu-west-1",
//!     "StartSession",
//!     "",
//!     r#"{"Target": "i-0123456789abcdef0"}"#,
//!     "https://ssm.eu-west-1.amazonaws.com",
//! ];
//! let response = r#"{"SessionId": "alice-0a1b", "StreamUrl": "wss://x/v1/data-channel/alice-0a1b", "TokenValue": "t"}"#;
//! let call = plugin::parse(&args, |name| {
//!     (name == "AWS_SSM_START_SESSION_RESPONSE").then(|| response.to_owned())
//! })?;
//! let PluginCall::Start(start) = call else { unreachable!() };
//! assert_eq!(start.session.session_id, "alice-0a1b");
//! assert_eq!(start.session.target, "i-0123456789abcdef0");
//! assert_eq!(start.kms_endpoint(None), "https://kms.eu-west-1.amazonaws.com");
//! # Ok::<(), plugin::PluginArgsError>(())
//! ```

use serde_json::Value;

use super::StartedSession;
use crate::kms::{DataKey, EncryptionContext, KeyProvider, KmsError, KmsFuture};

/// The prefix of the environment variable the AWS CLI passes the answer in.
pub const RESPONSE_VARIABLE_PREFIX: &str = "AWS_SSM_START_SESSION_RESPONSE";

/// What the reference prints when run with no arguments.
pub const INSTALLED_MESSAGE: &str = "\nThe Session Manager plugin was installed successfully. Use the AWS CLI to start a session.\n";

/// The reference's KMS refusal for a CLI without the profile argument (PROTOCOL.md §8.2).
pub const LEGACY_CLI_KMS_ERROR: &str = "Installed version of CLI does not support Session Manager encryption feature. Please upgrade to the latest version of your CLI (e.g., AWS CLI).";

/// What the arguments ask for.
#[derive(Debug)]
pub enum PluginCall {
    /// No arguments: print [`INSTALLED_MESSAGE`].
    Installed,
    /// `--version`: print [`crate::version::CLIENT_VERSION`].
    Version,
    /// Run a session.
    Start(Box<PluginStart>),
}

/// A session handed over by the CLI.
#[derive(Debug)]
pub struct PluginStart {
    /// The session (the target from the request).
    pub session: StartedSession,
    /// Region for signing and for KMS.
    pub region: String,
    /// The CLI's profile, if it named one.
    pub profile: Option<String>,
    /// The StartSession request (`Target`, `DocumentName`, `Parameters`).
    pub request: Value,
    /// The SSM endpoint the CLI called.
    pub endpoint: String,
    /// Started by a CLI too old to pass a profile: KMS encryption is refused.
    pub legacy_cli: bool,
}

/// Why the arguments cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginArgsError {
    /// One or two arguments, not `--version`.
    #[error(
        "Unknown operation {0}. Use session-manager-plugin --version to check the version, or run this through `aws ssm start-session`."
    )]
    UnknownOperation(String),
    /// An operation other than `StartSession`.
    #[error("Invalid operation {0}: only StartSession is supported")]
    InvalidOperation(String),
    /// The answer variable is not set.
    #[error("environment variable {0} is not set: run this through `aws ssm start-session`")]
    MissingVariable(String),
    /// The StartSession answer or request is not usable.
    #[error("the {what} argument is not usable: {why}")]
    BadJson {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// Interprets the arguments after the program name; `env` reads environment variables (the
/// answer may be in one).
pub fn parse<S: AsRef<str>>(
    args: &[S],
    mut env: impl FnMut(&str) -> Option<String>,
) -> Result<PluginCall, PluginArgsError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    match args.as_slice() {
        [] => return Ok(PluginCall::Installed),
        ["--version"] => return Ok(PluginCall::Version),
        [first] | [first, _] => return Err(PluginArgsError::UnknownOperation(first.to_string())),
        _ => {}
    }
    let (response, region, operation) = (args[0], args[1], args[2]);
    if operation != "StartSession" {
        return Err(PluginArgsError::InvalidOperation(operation.to_owned()));
    }
    let response = match response.starts_with(RESPONSE_VARIABLE_PREFIX) {
        true => env(response).ok_or_else(|| PluginArgsError::MissingVariable(response.into()))?,
        false => response.to_owned(),
    };
    let request: Value = match args.get(4) {
        Some(text) => serde_json::from_str(text).map_err(|error| PluginArgsError::BadJson {
            what: "StartSession request",
            why: error.to_string(),
        })?,
        None => Value::Null,
    };
    let target = request
        .get("Target")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let answer: Value =
        serde_json::from_str(&response).map_err(|error| PluginArgsError::BadJson {
            what: "StartSession answer",
            why: error.to_string(),
        })?;
    let session = super::started(&answer, target).map_err(|error| PluginArgsError::BadJson {
        what: "StartSession answer",
        why: error.to_string(),
    })?;
    Ok(PluginCall::Start(Box::new(PluginStart {
        session,
        region: region.to_owned(),
        profile: args
            .get(3)
            .filter(|name| !name.is_empty())
            .map(|name| name.to_string()),
        request,
        endpoint: match args.get(5) {
            Some(endpoint) => endpoint.to_string(),
            None => format!("https://ssm.{region}.amazonaws.com"),
        },
        legacy_cli: args.len() == 3,
    })))
}

impl PluginStart {
    /// Where KMS calls go: `override_url` (`AWS_ENDPOINT_URL_KMS`) if given; the region's AWS
    /// KMS when the SSM endpoint is AWS's; otherwise the SSM endpoint itself, which for a
    /// self-hosted gateway serves KMS too.
    pub fn kms_endpoint(&self, override_url: Option<&str>) -> String {
        if let Some(url) = override_url.filter(|url| !url.is_empty()) {
            return url.to_owned();
        }
        let host = self
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        match [".amazonaws.com", ".amazonaws.com.cn"]
            .into_iter()
            .find(|suffix| host.ends_with(suffix))
        {
            Some(suffix) => format!("https://kms.{}{suffix}", self.region),
            None => self.endpoint.clone(),
        }
    }
}

/// The key provider of a [`PluginStart::legacy_cli`] session: refuses, as the reference does.
#[derive(Debug, Clone, Copy, Default)]
pub struct LegacyCliKms;

impl KeyProvider for LegacyCliKms {
    fn generate_data_key<'a>(
        &'a self,
        _key_id: &'a str,
        _context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey> {
        Box::pin(std::future::ready(Err(KmsError::Other(
            LEGACY_CLI_KMS_ERROR.into(),
        ))))
    }

    fn decrypt<'a>(
        &'a self,
        _key_id: &'a str,
        _blob: &'a [u8],
        _context: &'a EncryptionContext,
    ) -> KmsFuture<'a, [u8; crate::crypto::DATA_KEY_LEN]> {
        Box::pin(std::future::ready(Err(KmsError::Other(
            LEGACY_CLI_KMS_ERROR.into(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"SessionId":"u-1","StreamUrl":"ws://g/v1/data-channel/u-1","TokenValue":"tok","ResponseMetadata":{}}"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn start(args: &[&str]) -> PluginStart {
        match parse(args, no_env).unwrap() {
            PluginCall::Start(start) => *start,
            other => panic!("not a start: {other:?}"),
        }
    }

    #[test]
    fn no_arguments_and_version() {
        assert!(matches!(
            parse::<&str>(&[], no_env),
            Ok(PluginCall::Installed)
        ));
        assert!(matches!(
            parse(&["--version"], no_env),
            Ok(PluginCall::Version)
        ));
    }

    #[test]
    fn one_or_two_arguments_are_not_an_operation() {
        for args in [&["x"][..], &["x", "y"]] {
            let error = parse(args, no_env).unwrap_err();
            assert!(matches!(&error, PluginArgsError::UnknownOperation(op) if op == "x"));
        }
    }

    #[test]
    fn only_start_session_is_an_operation() {
        let error = parse(&[ANSWER, "r", "ResumeSession", ""], no_env).unwrap_err();
        assert!(matches!(error, PluginArgsError::InvalidOperation(op) if op == "ResumeSession"));
    }

    #[test]
    fn full_contract_from_json_argument() {
        let start = start(&[
            ANSWER,
            "eu-west-1",
            "StartSession",
            "dev",
            r#"{"Target":"mi-1","DocumentName":"AWS-StartPortForwardingSession"}"#,
            "http://127.0.0.1:8080",
        ]);
        assert_eq!(start.session.session_id, "u-1");
        assert_eq!(start.session.stream_url, "ws://g/v1/data-channel/u-1");
        assert_eq!(start.session.token_value, "tok");
        assert_eq!(start.session.target, "mi-1");
        assert_eq!(start.region, "eu-west-1");
        assert_eq!(start.profile.as_deref(), Some("dev"));
        assert_eq!(
            start.request["DocumentName"],
            "AWS-StartPortForwardingSession"
        );
        assert_eq!(start.endpoint, "http://127.0.0.1:8080");
        assert!(!start.legacy_cli);
        // A self-hosted gateway serves KMS on its own endpoint.
        assert_eq!(start.kms_endpoint(None), "http://127.0.0.1:8080");
        assert_eq!(start.kms_endpoint(Some("http://k:1")), "http://k:1");
    }

    #[test]
    fn answer_from_the_named_variable() {
        let mut asked = Vec::new();
        let call = parse(
            &[
                "AWS_SSM_START_SESSION_RESPONSE_1",
                "r",
                "StartSession",
                "",
                "{}",
                "e",
            ],
            |name| {
                asked.push(name.to_owned());
                Some(ANSWER.to_owned())
            },
        )
        .unwrap();
        assert_eq!(asked, ["AWS_SSM_START_SESSION_RESPONSE_1"]);
        let PluginCall::Start(start) = call else {
            panic!("not a start")
        };
        assert_eq!(start.session.session_id, "u-1");
        assert_eq!(start.profile, None);
        let missing = parse(
            &["AWS_SSM_START_SESSION_RESPONSE", "r", "StartSession", ""],
            no_env,
        );
        assert!(matches!(missing, Err(PluginArgsError::MissingVariable(_))));
    }

    #[test]
    fn legacy_cli_has_no_profile_and_aws_endpoints() {
        let start = start(&[ANSWER, "cn-north-1", "StartSession"]);
        assert!(start.legacy_cli);
        assert_eq!(start.endpoint, "https://ssm.cn-north-1.amazonaws.com");
        assert_eq!(
            start.kms_endpoint(None),
            "https://kms.cn-north-1.amazonaws.com"
        );
        let china = PluginStart {
            endpoint: "https://ssm.cn-north-1.amazonaws.com.cn".into(),
            ..start
        };
        assert_eq!(
            china.kms_endpoint(None),
            "https://kms.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn unusable_json_is_refused() {
        let bad_answer = parse(&["{", "r", "StartSession", "", "{}"], no_env);
        assert!(matches!(bad_answer, Err(PluginArgsError::BadJson { .. })));
        let no_token = parse(
            &[r#"{"SessionId":"s","StreamUrl":"u"}"#, "r", "StartSession"],
            no_env,
        );
        assert!(matches!(no_token, Err(PluginArgsError::BadJson { .. })));
        let bad_request = parse(&[ANSWER, "r", "StartSession", "", "{"], no_env);
        assert!(matches!(bad_request, Err(PluginArgsError::BadJson { .. })));
    }

    #[test]
    fn legacy_kms_refuses_with_the_reference_text() {
        let refused = futures_util::FutureExt::now_or_never(
            LegacyCliKms.generate_data_key("k", &EncryptionContext::new()),
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(refused.to_string(), LEGACY_CLI_KMS_ERROR);
    }
}
