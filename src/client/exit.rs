//! The exit status of a client program, and how errors map to it.
//!
//! When the session ran and the target reported how its command ended, that exit code (0 to
//! 255) passes through unchanged. Anything else is a local failure or an interrupted session,
//! reported with a code from the BSD `sysexits.h` range:
//!
//! | Code | [`ExitCode`] | Meaning |
//! |-----:|--------------|---------|
//! | 64 | [`Usage`](ExitCode::Usage) | bad command line (unknown option, `--parameters` not JSON, bad plugin arguments) |
//! | 69 | [`Unavailable`](ExitCode::Unavailable) | the endpoint cannot be reached, or the service refused the call (`AccessDeniedException`, `TargetNotConnected`, `InvalidDocument`, throttling, HTTP 5xx) or the data channel |
//! | 70 | [`Software`](ExitCode::Software) | an error of no other class |
//! | 74 | [`ConnectionLost`](ExitCode::ConnectionLost) | the data channel was lost and could not be resumed, or the terminal or local listener failed |
//! | 75 | [`Interrupted`](ExitCode::Interrupted) | the gateway ended the session before the target reported an exit code (terminated elsewhere, access revoked, timed out, agent gone) |
//! | 76 | [`Protocol`](ExitCode::Protocol) | the endpoint speaks something else than the URL says (`http://` vs `https://`), answered what is not an API answer, or the session handshake failed |
//! | 77 | [`Credentials`](ExitCode::Credentials) | no AWS credentials (also for a KMS call), or the service did not accept them (`UnrecognizedClientException`, `InvalidSignatureException`, `ExpiredTokenException`, …) |
//! | 78 | [`Config`](ExitCode::Config) | configuration: a bad endpoint URL, an unusable CA file, a gateway certificate that the trusted CAs do not sign |
//!
//! A remote command can exit with any of these numbers too; the programs then print no
//! `Error:` line. A local failure always ends with a line `Error: …` on stderr that says what
//! went wrong (a session cut short: `The session was ended before the target finished it
//! (…)`), so scripts that must tell the two apart can look at it.
//!
//! # Examples
//!
//! ```
//! use ssm_session::aws::ApiCallError;
//! use ssm_session::client::exit::ExitCode;
//!
//! let refused = ApiCallError::Service {
//!     status: 400,
//!     code: "TargetNotConnected".into(),
//!     message: "i-0123 is not connected".into(),
//! };
//! assert_eq!(ExitCode::of(&refused), ExitCode::Unavailable);
//! assert_eq!(ExitCode::Unavailable.code(), 69);
//! ```

use std::error::Error;

use crate::aws::{ApiCallError, CredentialsError};
use crate::kms::KmsError;
use crate::net::http::HttpError;
use crate::net::{CaFileError, NetError, TlsMismatch, TokenError};

use super::RunError;

/// A client program's exit status for a local failure (see the [module](self) table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum ExitCode {
    /// 64: bad command line.
    Usage = 64,
    /// 69: unreachable endpoint, or the service refused the call or the data channel.
    Unavailable = 69,
    /// 70: an error of no other class.
    Software = 70,
    /// 74: the data channel was lost and not resumed, or local I/O failed.
    ConnectionLost = 74,
    /// 75: the gateway ended the session before the target reported an exit code.
    Interrupted = 75,
    /// 76: the endpoint does not speak what the URL says, or answered nonsense.
    Protocol = 76,
    /// 77: no credentials, or rejected credentials.
    Credentials = 77,
    /// 78: bad endpoint URL, CA file or untrusted certificate.
    Config = 78,
}

/// Bad command-line input found after parsing (e.g. `--parameters` that is not JSON).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// AWS error codes that mean the credentials, not the request, are the problem.
const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
];

impl ExitCode {
    /// The number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code for `error`, decided by the types in its chain ([`ApiCallError`],
    /// [`NetError`], [`CredentialsError`], [`TlsMismatch`], [`RunError`], …), never by its text.
    pub fn of(error: &(dyn Error + 'static)) -> ExitCode {
        let mut general = None;
        let mut next = Some(error);
        while let Some(error) = next {
            match classify(error) {
                Some(Class::Final(code)) => return code,
                Some(Class::Unless(code)) => {
                    general.get_or_insert(code);
                }
                None => {}
            }
            next = error.source();
        }
        general.unwrap_or(ExitCode::Software)
    }
}

enum Class {
    /// Nothing deeper in the chain can say more.
    Final(ExitCode),
    /// This, unless a deeper error is more specific.
    Unless(ExitCode),
}

fn classify(error: &(dyn Error + 'static)) -> Option<Class> {
    use Class::{Final, Unless};
    if error.is::<UsageError>() {
        return Some(Final(ExitCode::Usage));
    }
    if let Some(mismatch) = error.downcast_ref::<TlsMismatch>() {
        return Some(Final(match mismatch {
            TlsMismatch::UntrustedCertificate { .. } | TlsMismatch::BadCertificate { .. } => {
                ExitCode::Config
            }
            _ => ExitCode::Protocol,
        }));
    }
    if error.is::<CredentialsError>() {
        return Some(Final(ExitCode::Credentials));
    }
    if let Some(error) = error.downcast_ref::<KmsError>() {
        return match error {
            KmsError::NoCredentials(_) => Some(Final(ExitCode::Credentials)),
            KmsError::AccessDenied(_) => Some(Final(ExitCode::Unavailable)),
            _ => None,
        };
    }
    if error.is::<CaFileError>() {
        return Some(Final(ExitCode::Config));
    }
    if let Some(error) = error.downcast_ref::<ApiCallError>() {
        return Some(match error {
            ApiCallError::Endpoint(_) => Final(ExitCode::Config),
            ApiCallError::Transport { error, .. } => match error {
                HttpError::Tls(mismatch) => return classify(mismatch),
                HttpError::ServerName(_) | HttpError::Request(_) => Final(ExitCode::Config),
                HttpError::Http(_) | HttpError::TooLarge => Unless(ExitCode::Protocol),
                HttpError::Io(_) | HttpError::Timeout(_) => Unless(ExitCode::Unavailable),
            },
            ApiCallError::Service { code, .. } if CREDENTIAL_CODES.contains(&code.as_str()) => {
                Final(ExitCode::Credentials)
            }
            ApiCallError::Service { .. } => Final(ExitCode::Unavailable),
            ApiCallError::Answer(_) => Final(ExitCode::Protocol),
            ApiCallError::Credentials { .. } => Final(ExitCode::Credentials),
        });
    }
    if let Some(error) = error.downcast_ref::<RunError>() {
        // `Connect` and `Io` are transparent: their `source` skips the inner error.
        return Some(match error {
            RunError::Connect(error) => Final(ExitCode::of(error)),
            RunError::Io(_) => Unless(ExitCode::ConnectionLost),
            RunError::LocalPort(_) => Final(ExitCode::Protocol),
        });
    }
    if let Some(error) = error.downcast_ref::<NetError>() {
        return Some(match error {
            NetError::InvalidUrl(_) | NetError::Session(_) => Final(ExitCode::Protocol),
            NetError::Connect(_) | NetError::ConnectTimeout(_) => Unless(ExitCode::Unavailable),
            NetError::Refused(_) => Final(ExitCode::Unavailable),
            // Transparent: look at what the token source said.
            NetError::Token(TokenError::Final(cause) | TokenError::Retry(cause)) => {
                match ExitCode::of(cause.as_ref()) {
                    ExitCode::Software => Final(ExitCode::ConnectionLost),
                    code => Final(code),
                }
            }
            NetError::NoTokenSource(_)
            | NetError::ResumeFailed { .. }
            | NetError::SessionOver
            | NetError::EndedDuringHandshake(_) => Unless(ExitCode::ConnectionLost),
        });
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        // Its `source` skips the error it carries.
        if let Some(inner) = io.get_ref()
            && let Some(Final(code)) = classify(inner)
        {
            return Some(Final(code));
        }
        return Some(Unless(ExitCode::ConnectionLost));
    }
    None
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        code.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str) -> ApiCallError {
        ApiCallError::Service {
            status: 400,
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn errors_map_by_type() {
        assert_eq!(
            ExitCode::of(&service("AccessDeniedException")),
            ExitCode::Unavailable
        );
        assert_eq!(
            ExitCode::of(&service("UnrecognizedClientException")),
            ExitCode::Credentials
        );
        let missing = ApiCallError::Credentials {
            operation: "AmazonSSM.StartSession".into(),
            source: CredentialsError::new("default", None),
        };
        assert_eq!(ExitCode::of(&missing), ExitCode::Credentials);
        let refused = ApiCallError::Transport {
            endpoint: "http://127.0.0.1:1".into(),
            error: HttpError::Io(std::io::ErrorKind::ConnectionRefused.into()),
        };
        assert_eq!(ExitCode::of(&refused), ExitCode::Unavailable);
        let scheme = ApiCallError::Transport {
            endpoint: "https://127.0.0.1:1".into(),
            error: HttpError::Tls(TlsMismatch::PlainText),
        };
        assert_eq!(ExitCode::of(&scheme), ExitCode::Protocol);
        let lost = RunError::Connect(NetError::ResumeFailed {
            attempts: 3,
            elapsed: std::time::Duration::from_secs(1),
            last: Box::new(NetError::SessionOver),
        });
        assert_eq!(ExitCode::of(&lost), ExitCode::ConnectionLost);
        let boxed: Box<dyn Error> = Box::new(UsageError("--parameters is not JSON".into()));
        assert_eq!(ExitCode::of(boxed.as_ref()), ExitCode::Usage);
        let unknown: Box<dyn Error> = "something".into();
        assert_eq!(ExitCode::of(unknown.as_ref()), ExitCode::Software);
    }
}
