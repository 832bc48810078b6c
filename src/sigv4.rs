//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`, signature in the `Authorization` header):
//! [`sign`] for our client and agent, [`verify`] for the gateway, which must accept what the
//! AWS CLI (botocore) and the AWS SDKs send to `--endpoint-url http://127.0.0.1:PORT`.
//!
//! Pure functions: the caller passes the time as Unix seconds and the request as it is (or
//! will be) on the wire. Nothing here reads a clock, a socket or the environment.
//!
//! # What to pass
//!
//! * [`Request::path`] — the path exactly as on the request line, still percent-encoded, without
//!   the query: `/`, `/v1/control-channel/mi-1`. Do not decode it. The canonical URI
//!   percent-encodes it once more (`%3A` becomes `%253A`), as botocore, the Go SDK and the AWS
//!   test suite do for every service but S3. An empty path counts as `/`.
//! * [`Request::query`] — the raw query string without the `?`, possibly empty.
//! * [`Request::headers`] — every header as received (names in any case, repeats kept in
//!   order). It must contain `host` as sent: `127.0.0.1:9999` with the port, which is what
//!   botocore signs when the port is not the scheme's default.
//! * [`Request::body`] — the whole body.
//!
//! # Canonicalisation (matches botocore and the AWS SigV4 test suite)
//!
//! * URI: `.` and `..` segments are resolved and empty segments (`//`) dropped, a trailing `/`
//!   is kept; then every byte outside `A-Z a-z 0-9 - . _ ~` except `/` becomes `%XX`.
//! * Query: split on `&` (empty pieces ignored); each name and value is percent-decoded
//!   (`+` decodes to a space, as the Go and Rust SDKs parse queries; botocore never sends a
//!   bare `+`) and re-encoded with the unreserved set; pairs are sorted by encoded name, then
//!   encoded value; a missing value gives `name=`.
//! * Headers: names lowercased, values trimmed with inner runs of whitespace collapsed to one
//!   space, repeated headers joined with `,` in the order received, sorted by name.
//! * Payload: the SHA-256 of the body (a signed `x-amz-content-sha256` must equal it and is then
//!   used as written, as botocore does).
//!
//! # What [`verify`] enforces, as AWS does
//!
//! A signature proves little unless it covers what the request means and is bound to the
//! endpoint it was made for, so [`verify`] refuses:
//!
//! * a payload left out of the signature: `x-amz-content-sha256: UNSIGNED-PAYLOAD` (or any
//!   value other than the body's hash, signed or not), since anyone on the path could swap
//!   the body ([`SigV4Error::UnsignedPayload`], [`SigV4Error::PayloadHashMismatch`]);
//! * a `SignedHeaders` list without `host` or without a header the endpoint names in
//!   [`Expected::signed_headers`] (the JSON API names `x-amz-target`, which selects the
//!   operation): [`SigV4Error::HeaderNotSigned`];
//! * a credential scope for another region or service than [`Expected`]'s
//!   ([`SigV4Error::WrongRegion`], [`SigV4Error::WrongService`]), or for another day than the
//!   request time ([`SigV4Error::ScopeDateMismatch`]);
//! * a request time more than [`MAX_CLOCK_SKEW_SECONDS`] away from the verifier's clock.
//!
//! Within the skew window a valid request can be sent again unchanged; a verifier that must
//! not act twice on one request remembers [`Verified::signature`] until
//! [`Verified::request_time`] plus [`MAX_CLOCK_SKEW_SECONDS`].
//!
//! The gateway expects its own region in every scope, and per endpoint: `ssm` with a signed
//! `x-amz-target` for `AmazonSSM.*`, `kms` with a signed `x-amz-target` for `TrentService.*`,
//! and `ssmmessages` for the agents' `/v1/control-channel/` and `/v1/data-channel/` (what
//! botocore, the AWS SDKs, the stock Go agent and our own client and agent sign). StartSession,
//! ResumeSession, CreateDataChannel and the control-channel upgrade are good once: our
//! [`sign`] callers add a signed random `amz-sdk-invocation-id` so that two identical calls in
//! one second still differ.
//!
//! # Examples
//!
//! ```
//! use ssm_session::sigv4::{self, Credentials, Expected, Request};
//!
//! let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
//! let credentials = Credentials::new("AKIDEXAMPLE", secret, None);
//! let body = br#"{"Target": "i-0123456789abcdef0"}"#;
//! let mut headers = vec![
//!     ("host".to_owned(), "127.0.0.1:9999".to_owned()),
//!     ("content-type".to_owned(), "application/x-amz-json-1.1".to_owned()),
//!     ("x-amz-target".to_owned(), "AmazonSSM.StartSession".to_owned()),
//! ];
//! let now = 1_768_469_405; // 2026-01-15T09:30:05Z, from the caller's clock
//! let request = Request { method: "POST", path: "/", query: "", headers: &headers, body };
//! headers.extend(sigv4::sign(&request, &credentials, "us-east-1", "ssm", now));
//!
//! // The gateway, a little later, with the request as received:
//! let received = Request { method: "POST", path: "/", query: "", headers: &headers, body };
//! let expected = Expected { region: "us-east-1", service: "ssm", signed_headers: &["x-amz-target"] };
//! let lookup = |key: &str| (key == "AKIDEXAMPLE").then(|| credentials.secret_access_key.clone());
//! let verified = sigv4::verify(&received, &expected, lookup, now + 2)?;
//! assert_eq!(verified.access_key_id, "AKIDEXAMPLE");
//! assert_eq!(verified.service, "ssm");
//! # Ok::<(), sigv4::SigV4Error>(())
//! ```

use std::fmt;

use ring::{digest, hmac};

/// The only algorithm accepted and produced.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last component of every credential scope.
const TERMINATOR: &str = "aws4_request";
/// The `x-amz-content-sha256` value that leaves the body out of the signature.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// How far the request time may be from the verifier's clock, either way, as AWS allows.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 300;

/// Headers [`sign`] leaves out, as botocore does: hop-by-hop headers and ones that proxies or
/// HTTP stacks add or rewrite after signing.
const UNSIGNED_HEADERS: [&str; 11] = [
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Headers [`sign`] produces itself; copies in its input are ignored, not signed.
const SIGNER_HEADERS: [&str; 3] = ["authorization", "x-amz-date", "x-amz-security-token"];

/// An access key: the id is public, the secret and the session token are not (and [`fmt::Debug`]
/// does not show them).
#[derive(Clone)]
pub struct Credentials {
    /// The access key id, e.g. `AKIDEXAMPLE`; sent in the clear in the credential scope.
    pub access_key_id: String,
    /// The secret access key; only ever used as HMAC key material.
    pub secret_access_key: String,
    /// The session token of temporary credentials, sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl Credentials {
    /// Credentials from their parts.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssm_session::sigv4::Credentials;
    ///
    /// let credentials = Credentials::new("AKIDEXAMPLE", "s3cr3t", Some("token"));
    /// assert!(!format!("{credentials:?}").contains("s3cr3t"));
    /// ```
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<&str>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.map(str::to_owned),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One HTTP request as signed or received; see the [module documentation](self) for what each
/// field must hold.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The method as on the request line, e.g. `POST`.
    pub method: &'a str,
    /// The path as on the request line, still percent-encoded, without the query.
    pub path: &'a str,
    /// The raw query string without `?`, possibly empty.
    pub query: &'a str,
    /// Every header, names in any case, in the order sent; must include `host`.
    pub headers: &'a [(String, String)],
    /// The whole body.
    pub body: &'a [u8],
}

impl fmt::Debug for Request<'_> {
    /// Header values are left out: `x-amz-security-token` is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What the verifier requires of a request besides a valid signature: the credential scope of
/// the endpoint it was sent to, and the headers whose change would change what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The region the credential scope must name, e.g. `us-east-1`.
    pub region: &'a str,
    /// The signing name the credential scope must name, e.g. `ssm`.
    pub service: &'a str,
    /// Lowercase headers that must be in `SignedHeaders` besides `host`, e.g. `x-amz-target`.
    pub signed_headers: &'a [&'a str],
}

/// Who signed an accepted request, and what the signature covers: made with the secret of
/// `access_key_id` for the [`Expected`] scope.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The access key id from the credential scope, known to the lookup.
    pub access_key_id: String,
    /// The region from the credential scope, e.g. `us-east-1`.
    pub region: String,
    /// The service from the credential scope, e.g. `ssm`.
    pub service: String,
    /// The signed header names, lowercase, as listed in the `Authorization` header.
    pub signed_headers: Vec<String>,
    /// The `x-amz-security-token` value when that header is signed. It is not checked here.
    pub session_token: Option<String>,
    /// The request time (`x-amz-date`, else `date`) as Unix seconds, 0 before 1970.
    pub request_time: u64,
    /// The signature: it identifies the request, for a verifier that accepts each only once.
    pub signature: [u8; 32],
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("signed_headers", &self.signed_headers)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("request_time", &self.request_time)
            .finish_non_exhaustive()
    }
}

/// Why [`verify`] refused a request. Messages may quote (shortened) request values but never a
/// secret, a session token or the signature the verifier expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error(
        "missing Authorization header: sign the request with AWS Signature Version 4 \
         (AWS4-HMAC-SHA256) and valid credentials"
    )]
    MissingAuthorization,
    /// The `Authorization` header is not of the SigV4 form.
    #[error(
        "malformed Authorization header ({0}); expected `AWS4-HMAC-SHA256 \
         Credential=KEY/YYYYMMDD/REGION/SERVICE/aws4_request, SignedHeaders=host;..., \
         Signature=<64 hex digits>`"
    )]
    Malformed(String),
    /// An algorithm other than `AWS4-HMAC-SHA256` (SigV2, SigV4a, another scheme).
    #[error("unsupported authorization scheme {0}: sign with AWS4-HMAC-SHA256 (SigV4)")]
    UnsupportedAlgorithm(String),
    /// `host`, or a header the endpoint requires signed, is not among the signed headers.
    #[error("{0} must be among the SignedHeaders: sign it, or anyone on the path could change it")]
    HeaderNotSigned(String),
    /// A header listed in `SignedHeaders` is not in the request.
    #[error("signed header {0} is not in the request: send every header listed in SignedHeaders")]
    SignedHeaderMissing(String),
    /// Neither `x-amz-date` nor `date`.
    #[error(
        "the request has neither an X-Amz-Date nor a Date header: send X-Amz-Date \
         (YYYYMMDDTHHMMSSZ) with the signed request"
    )]
    MissingDate,
    /// The request time cannot be read.
    #[error(
        "invalid request time {0}: X-Amz-Date must be YYYYMMDDTHHMMSSZ in UTC \
         (or Date an RFC 7231 date in GMT)"
    )]
    InvalidDate(String),
    /// The credential scope names another day than the request time.
    #[error(
        "date in the credential scope ({scope}) does not match the request date ({request}): \
         derive the signing key for the day of X-Amz-Date"
    )]
    ScopeDateMismatch {
        /// `YYYYMMDD` from the `Credential` component.
        scope: String,
        /// `YYYYMMDD` of the request time.
        request: String,
    },
    /// The request time is more than [`MAX_CLOCK_SKEW_SECONDS`] from the verifier's clock.
    #[error(
        "signature expired or not yet valid: the request time {request_time} is more than \
         5 minutes from the server time {server_time}; correct the clock and sign again"
    )]
    RequestExpired {
        /// The request time, `YYYYMMDDTHHMMSSZ`.
        request_time: String,
        /// The verifier's time, `YYYYMMDDTHHMMSSZ`.
        server_time: String,
    },
    /// The credential scope names another region than the endpoint's.
    #[error(
        "credential should be scoped to a valid region, not {scope}: this endpoint is region \
         {expected}; sign for it (AWS_REGION, --region, or the agent's region setting)"
    )]
    WrongRegion {
        /// The region of the `Credential` component, quoted.
        scope: String,
        /// The endpoint's region.
        expected: String,
    },
    /// The credential scope names another service than the endpoint's signing name.
    #[error(
        "credential should be scoped to the correct service: {expected} here, not {scope}; \
         sign with the signing name of the operation's service"
    )]
    WrongService {
        /// The service of the `Credential` component, quoted.
        scope: String,
        /// The endpoint's signing name.
        expected: String,
    },
    /// The lookup does not know the access key id.
    #[error(
        "the security token included in the request is invalid: access key {0} is unknown \
         here; use credentials issued for this endpoint"
    )]
    UnknownAccessKey(String),
    /// `x-amz-content-sha256` says `UNSIGNED-PAYLOAD`: the body is not covered.
    #[error(
        "UNSIGNED-PAYLOAD is not accepted: sign the body (send x-amz-content-sha256 as the hex \
         SHA-256 of the body, or leave it out)"
    )]
    UnsignedPayload,
    /// `x-amz-content-sha256` is not the body's hash.
    #[error(
        "x-amz-content-sha256 does not match the body: send the hex SHA-256 of the exact \
         body, or leave the header out"
    )]
    PayloadHashMismatch,
    /// The signature is not the one the secret gives for this request.
    #[error(
        "the request signature we calculated does not match the signature you provided: \
         check the secret access key, the region and service of the scope, and that the \
         request was not changed after signing"
    )]
    SignatureMismatch,
}

impl SigV4Error {
    /// The AWS error code for the `__type` of a JSON error response, as the AWS JSON
    /// services name these failures.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssm_session::sigv4::SigV4Error;
    ///
    /// assert_eq!(SigV4Error::SignatureMismatch.aws_code(), "InvalidSignatureException");
    /// ```
    pub fn aws_code(&self) -> &'static str {
        match self {
            SigV4Error::MissingAuthorization => "MissingAuthenticationTokenException",
            SigV4Error::Malformed(_)
            | SigV4Error::UnsupportedAlgorithm(_)
            | SigV4Error::HeaderNotSigned(_)
            | SigV4Error::SignedHeaderMissing(_)
            | SigV4Error::MissingDate
            | SigV4Error::InvalidDate(_) => "IncompleteSignatureException",
            SigV4Error::ScopeDateMismatch { .. }
            | SigV4Error::RequestExpired { .. }
            | SigV4Error::WrongRegion { .. }
            | SigV4Error::WrongService { .. }
            | SigV4Error::UnsignedPayload
            | SigV4Error::PayloadHashMismatch
            | SigV4Error::SignatureMismatch => "InvalidSignatureException",
            SigV4Error::UnknownAccessKey(_) => "UnrecognizedClientException",
        }
    }
}

/// Signs `request` at `unix_seconds` and returns the headers to add to it, lowercase:
/// `x-amz-date`, `x-amz-security-token` (with a session token) and `authorization`.
///
/// Every header of `request` is signed except hop-by-hop ones and `user-agent` (botocore's
/// list), and except `authorization`, `x-amz-date` and `x-amz-security-token`, which the
/// result replaces: leave those out of what you send. `request.headers` must contain `host`
/// with the value that will be sent, or no verifier will accept the signature. The body is
/// hashed into the signature; no `x-amz-content-sha256` is added (botocore sends none to SSM),
/// but one in `request.headers` is signed and used as the payload hash ([`verify`] accepts
/// only the body's).
///
/// # Examples
///
/// ```
/// use ssm_session::sigv4::{self, Credentials, Request};
///
/// let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// let credentials = Credentials::new("AKIDEXAMPLE", secret, None);
/// let headers = vec![("Host".to_owned(), "example.amazonaws.com".to_owned())];
/// let request = Request { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
/// // 2015-08-30T12:36:00Z: the AWS test suite's `get-vanilla`.
/// let added = sigv4::sign(&request, &credentials, "us-east-1", "service", 1_440_938_160);
/// assert_eq!(added[0], ("x-amz-date".to_owned(), "20150830T123600Z".to_owned()));
/// assert_eq!(
///     added[1].1,
///     "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
///      SignedHeaders=host;x-amz-date, \
///      Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
/// );
/// ```
pub fn sign(
    request: &Request<'_>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    unix_seconds: u64,
) -> Vec<(String, String)> {
    let timestamp = format_timestamp(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.clone()))
        .filter(|(name, _)| {
            !name.is_empty()
                && !UNSIGNED_HEADERS.contains(&name.as_str())
                && !SIGNER_HEADERS.contains(&name.as_str())
        })
        .collect();
    let mut added = vec![("x-amz-date".to_owned(), timestamp.clone())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    headers.extend(added.iter().cloned());

    let mut signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    signed.sort_unstable();
    signed.dedup();
    let payload_hash =
        joined_value(&headers, "x-amz-content-sha256").unwrap_or_else(|| sha256_hex(request.body));
    let canonical = canonical_request(
        &Request {
            headers: &headers,
            ..*request
        },
        &signed,
        &payload_hash,
    );
    let date = timestamp.get(..8).unwrap_or_default();
    let scope = format!("{date}/{region}/{service}/{TERMINATOR}");
    let key = signing_key(&credentials.secret_access_key, date, region, service);
    let signature = hmac::sign(
        &key,
        string_to_sign(&timestamp, &scope, &canonical).as_bytes(),
    );
    added.push((
        "authorization".to_owned(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={}",
            credentials.access_key_id,
            signed.join(";"),
            hex::encode(signature.as_ref())
        ),
    ));
    added
}

/// Checks the SigV4 `Authorization` header of `request` at `now_unix` (Unix seconds) for the
/// endpoint described by `expected`, and returns who signed it.
///
/// `lookup` maps an access key id to its secret access key (`None`: unknown key). The checks,
/// in order: the header is present and well-formed with algorithm `AWS4-HMAC-SHA256`; `host`
/// and `expected.signed_headers` are signed; every signed header is present; the request time
/// (`x-amz-date`, else `date`) is readable, on the scope's day and within
/// [`MAX_CLOCK_SKEW_SECONDS`] of `now_unix`; the scope's region and service are `expected`'s;
/// the key is known; a present `x-amz-content-sha256` is the body's hash; the signature
/// matches, compared in constant time.
///
/// A valid request can be replayed within the skew window: see the [module documentation](self).
///
/// # Examples
///
/// ```
/// use ssm_session::sigv4::{self, Expected, Request, SigV4Error};
///
/// // The AWS test suite's `get-vanilla`, as received.
/// let headers = vec![
///     ("Host".to_owned(), "example.amazonaws.com".to_owned()),
///     ("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()),
///     ("Authorization".to_owned(), "AWS4-HMAC-SHA256 \
///         Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
///         SignedHeaders=host;x-amz-date, \
///         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31".to_owned()),
/// ];
/// let request = Request { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
/// let secret = |key: &str| {
///     (key == "AKIDEXAMPLE").then(|| "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned())
/// };
/// let expected = Expected { region: "us-east-1", service: "service", signed_headers: &[] };
/// let verified = sigv4::verify(&request, &expected, secret, 1_440_938_160 + 60)?;
/// assert_eq!(verified.region, "us-east-1");
///
/// // Six minutes later it is refused.
/// let late = sigv4::verify(&request, &expected, secret, 1_440_938_160 + 360).unwrap_err();
/// assert!(matches!(late, SigV4Error::RequestExpired { .. }));
/// assert_eq!(late.aws_code(), "InvalidSignatureException");
///
/// // So is the same signature presented to an endpoint in another region.
/// let elsewhere = Expected { region: "eu-west-1", ..expected };
/// let refused = sigv4::verify(&request, &elsewhere, secret, 1_440_938_160).unwrap_err();
/// assert!(matches!(refused, SigV4Error::WrongRegion { .. }));
/// # Ok::<(), SigV4Error>(())
/// ```
pub fn verify<S: AsRef<str>>(
    request: &Request<'_>,
    expected: &Expected<'_>,
    lookup: impl FnOnce(&str) -> Option<S>,
    now_unix: u64,
) -> Result<Verified, SigV4Error> {
    let mut authorizations = header_values(request.headers, "authorization");
    let authorization = authorizations
        .next()
        .ok_or(SigV4Error::MissingAuthorization)?;
    if authorizations.next().is_some() {
        return Err(malformed("more than one Authorization header"));
    }
    let parsed = parse_authorization(authorization)?;
    if let Some(unsigned) = ["host"]
        .iter()
        .chain(expected.signed_headers)
        .find(|name| !parsed.signed_headers.contains(name))
    {
        return Err(SigV4Error::HeaderNotSigned(excerpt(unsigned)));
    }
    if let Some(missing) = parsed
        .signed_headers
        .iter()
        .find(|name| header_values(request.headers, name).next().is_none())
    {
        return Err(SigV4Error::SignedHeaderMissing(excerpt(missing)));
    }

    let (timestamp, request_time) = request_time(request.headers)?;
    let request_date = timestamp.get(..8).unwrap_or_default();
    if parsed.date != request_date {
        return Err(SigV4Error::ScopeDateMismatch {
            scope: parsed.date.to_owned(),
            request: request_date.to_owned(),
        });
    }
    if i128::from(request_time).abs_diff(i128::from(now_unix)) > u128::from(MAX_CLOCK_SKEW_SECONDS)
    {
        return Err(SigV4Error::RequestExpired {
            request_time: timestamp,
            server_time: format_timestamp(i64::try_from(now_unix).unwrap_or(i64::MAX)),
        });
    }

    if parsed.region != expected.region {
        return Err(SigV4Error::WrongRegion {
            scope: excerpt(parsed.region),
            expected: expected.region.to_owned(),
        });
    }
    if parsed.service != expected.service {
        return Err(SigV4Error::WrongService {
            scope: excerpt(parsed.service),
            expected: expected.service.to_owned(),
        });
    }

    let Some(secret) = lookup(parsed.access_key_id) else {
        return Err(SigV4Error::UnknownAccessKey(excerpt(parsed.access_key_id)));
    };

    let is_signed = |name: &str| parsed.signed_headers.contains(&name);
    let body_hash = sha256_hex(request.body);
    let declared = joined_value(request.headers, "x-amz-content-sha256");
    let payload_hash = match declared {
        None => body_hash,
        Some(value) if value == UNSIGNED_PAYLOAD => return Err(SigV4Error::UnsignedPayload),
        Some(value) if value.eq_ignore_ascii_case(&body_hash) => {
            match is_signed("x-amz-content-sha256") {
                true => value,
                false => body_hash,
            }
        }
        Some(_) => return Err(SigV4Error::PayloadHashMismatch),
    };

    let canonical = canonical_request(request, &parsed.signed_headers, &payload_hash);
    let scope = format!(
        "{}/{}/{}/{TERMINATOR}",
        parsed.date, parsed.region, parsed.service
    );
    let key = signing_key(secret.as_ref(), parsed.date, parsed.region, parsed.service);
    hmac::verify(
        &key,
        string_to_sign(&timestamp, &scope, &canonical).as_bytes(),
        &parsed.signature,
    )
    .map_err(|_| SigV4Error::SignatureMismatch)?;

    let session_token = match is_signed("x-amz-security-token") {
        true => joined_value(request.headers, "x-amz-security-token"),
        false => None,
    };
    Ok(Verified {
        access_key_id: parsed.access_key_id.to_owned(),
        region: parsed.region.to_owned(),
        service: parsed.service.to_owned(),
        signed_headers: parsed
            .signed_headers
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        session_token,
        request_time: u64::try_from(request_time).unwrap_or(0),
        signature: parsed.signature,
    })
}

/// The parts of a well-formed `Authorization` header, borrowed from it.
struct Authorization<'h> {
    access_key_id: &'h str,
    date: &'h str,
    region: &'h str,
    service: &'h str,
    signed_headers: Vec<&'h str>,
    signature: [u8; 32],
}

fn malformed(reason: &str) -> SigV4Error {
    SigV4Error::Malformed(reason.to_owned())
}

/// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` (components in any
/// order, as AWS accepts).
fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigV4Error> {
    let value = value.trim();
    let (algorithm, components) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm(excerpt(algorithm)));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in components.split(',').map(str::trim) {
        if component.is_empty() {
            continue;
        }
        let Some((name, content)) = component.split_once('=') else {
            return Err(malformed("a component is not Name=value"));
        };
        let slot = match name.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(malformed("unknown component")),
        };
        if slot.replace(content.trim()).is_some() {
            return Err(malformed("a component is repeated"));
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| malformed("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("no Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let &[access_key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(malformed(
            "Credential must have five parts separated by '/'",
        ));
    };
    if [access_key_id, region, service]
        .iter()
        .any(|part| part.is_empty())
    {
        return Err(malformed("Credential has an empty part"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the Credential date must be YYYYMMDD"));
    }
    if terminator != TERMINATOR {
        return Err(malformed("Credential must end in /aws4_request"));
    }

    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    if signed_headers
        .iter()
        .any(|name| name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b <= b' '))
    {
        return Err(malformed(
            "SignedHeaders must be lowercase names separated by ';'",
        ));
    }
    if signed_headers.iter().enumerate().any(|(i, name)| {
        signed_headers
            .get(..i)
            .is_some_and(|seen| seen.contains(name))
    }) {
        return Err(malformed("SignedHeaders lists a header twice"));
    }

    let mut bytes = [0u8; 32];
    if signature.len() != 64 || hex::decode_to_slice(signature, &mut bytes).is_err() {
        return Err(malformed("Signature must be 64 hexadecimal digits"));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature: bytes,
    })
}

/// The request time as `YYYYMMDDTHHMMSSZ` and as Unix seconds, from `x-amz-date` or, failing
/// that, `date` (botocore sends `Date: Thu, 15 Jan 2026 09:30:05 -0000` when a caller set one).
fn request_time(headers: &[(String, String)]) -> Result<(String, i64), SigV4Error> {
    if let Some(value) = joined_value(headers, "x-amz-date") {
        let seconds =
            parse_timestamp(&value).ok_or_else(|| SigV4Error::InvalidDate(excerpt(&value)))?;
        return Ok((value, seconds));
    }
    let value = joined_value(headers, "date").ok_or(SigV4Error::MissingDate)?;
    let seconds =
        parse_http_date(&value).ok_or_else(|| SigV4Error::InvalidDate(excerpt(&value)))?;
    Ok((format_timestamp(seconds), seconds))
}

/// The canonical request of AWS SigV4: method, URI, query, headers, signed header list and
/// payload hash, one per line.
fn canonical_request(request: &Request<'_>, signed_headers: &[&str], payload_hash: &str) -> String {
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query)
    );
    for name in signed_headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&joined_value(request.headers, name).unwrap_or_default());
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(payload_hash);
    canonical
}

/// The values of the headers called `name` (any case), in order.
fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |(header, _)| header.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The canonical value of header `name`: each value trimmed with inner whitespace runs
/// collapsed (as botocore does), repeats joined by `,`; `None` when absent.
fn joined_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut joined: Option<String> = None;
    for value in header_values(headers, name) {
        let joined = match &mut joined {
            Some(joined) => {
                joined.push(',');
                joined
            }
            None => joined.insert(String::new()),
        };
        for (i, word) in value.split_whitespace().enumerate() {
            if i > 0 {
                joined.push(' ');
            }
            joined.push_str(word);
        }
    }
    joined
}

/// botocore's `quote(remove_dot_segments(path), safe='/~')`: dot segments resolved, empty
/// segments dropped, a trailing slash kept, then each segment percent-encoded.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut uri = String::with_capacity(path.len() + 1);
    if path.starts_with('/') || segments.is_empty() {
        uri.push('/');
    }
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            uri.push('/');
        }
        percent_encode(&mut uri, segment.as_bytes());
    }
    if path.ends_with('/') && !segments.is_empty() {
        uri.push('/');
    }
    uri
}

/// Decoded, re-encoded and sorted `name=value` pairs joined by `&`.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut encoded = (String::new(), String::new());
            percent_encode(&mut encoded.0, &percent_decode(name));
            percent_encode(&mut encoded.1, &percent_decode(value));
            encoded
        })
        .collect();
    pairs.sort_unstable();
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

/// Appends `bytes` with everything but RFC 3986 unreserved characters as `%XX` (upper case).
fn percent_encode(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// Query-component decoding: `%XX` to its byte, `+` to a space; a `%` not followed by two hex
/// digits stays a `%`.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let hex = |i: usize| {
        bytes
            .get(i)
            .and_then(|&b| char::from(b).to_digit(16))
            .and_then(|digit| u8::try_from(digit).ok())
    };
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match (byte, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push(high << 4 | low);
                i += 3;
                continue;
            }
            (b'+', _, _) => decoded.push(b' '),
            (byte, _, _) => decoded.push(byte),
        }
        i += 1;
    }
    decoded
}

fn string_to_sign(timestamp: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, TERMINATOR] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes());
        key = tag.as_ref().to_vec();
    }
    hmac::Key::new(hmac::HMAC_SHA256, &key)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// A shortened, quoted copy of a request value for an error message.
fn excerpt(value: &str) -> String {
    const LIMIT: usize = 64;
    let mut short: String = value.chars().take(LIMIT).collect();
    if short.len() < value.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// Unix seconds as `YYYYMMDDTHHMMSSZ` (proleptic Gregorian calendar, UTC).
fn format_timestamp(unix: i64) -> String {
    let (days, seconds) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `YYYYMMDDTHHMMSSZ` to Unix seconds; `None` unless exactly that form with valid fields.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes.get(8) != Some(&b'T') || bytes.get(15) != Some(&b'Z') {
        return None;
    }
    let field = |range: std::ops::Range<usize>| number(text.get(range)?);
    to_unix(
        field(0..4)?,
        field(4..6)?,
        field(6..8)?,
        field(9..11)?,
        field(11..13)?,
        field(13..15)?,
    )
}

/// An RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds; the zone may also
/// be written `UTC`, `+0000` or `-0000` (Python's `email.utils.formatdate`, used by botocore).
fn parse_http_date(text: &str) -> Option<i64> {
    const WEEKDAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let &[weekday, day, month, year, time, zone] = fields.as_slice() else {
        return None;
    };
    if !WEEKDAYS.contains(&weekday)
        || !matches!(zone, "GMT" | "UTC" | "+0000" | "-0000")
        || !(1..=2).contains(&day.len())
        || year.len() != 4
    {
        return None;
    }
    let month = MONTHS.iter().position(|name| *name == month)? + 1;
    let time: Vec<&str> = time.split(':').collect();
    let &[hour, minute, second] = time.as_slice() else {
        return None;
    };
    if [hour, minute, second].iter().any(|part| part.len() != 2) {
        return None;
    }
    to_unix(
        number(year)?,
        i64::try_from(month).ok()?,
        number(day)?,
        number(hour)?,
        number(minute)?,
        number(second)?,
    )
}

/// A run of ASCII digits (no sign, no spaces) as a number.
fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Validated calendar fields (UTC) to Unix seconds.
fn to_unix(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date, counting in 400-year eras of 146 097
/// days with the year starting in March so that the leap day comes last.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days.saturating_add(719_468);
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// The canonical request `sign` builds, for comparison with the published `.creq` files.
    fn signed_canonical(
        method: &str,
        path: &str,
        query: &str,
        pairs: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        let headers = headers(pairs);
        let request = Request {
            method,
            path,
            query,
            headers: &headers,
            body,
        };
        let mut names: Vec<String> = headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let hash =
            joined_value(&headers, "x-amz-content-sha256").unwrap_or_else(|| sha256_hex(body));
        canonical_request(&request, &names, &hash)
    }

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const DATE: (&str, &str) = ("X-Amz-Date", "20150830T123600Z");

    /// `.creq` files of the AWS SigV4 test suite (aws-c-auth, as vendored by botocore).
    #[test]
    fn canonical_requests_match_the_aws_test_suite() {
        let get =
            |path: &str, query: &str| signed_canonical("GET", path, query, &[HOST, DATE], b"");
        let vanilla = |uri: &str, query: &str| {
            format!(
                "GET\n{uri}\n{query}\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
                 host;x-amz-date\n{EMPTY}"
            )
        };
        // get-vanilla-query-order-encoded, -order-value, get-vanilla-utf8-query
        assert_eq!(
            get("/", "Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
            vanilla("/", "%E1%88%B4=Value1&Param=Value2&Param-3=Value3")
        );
        assert_eq!(
            get("/", "Param1=value2&Param1=value1"),
            vanilla("/", "Param1=value1&Param1=value2")
        );
        assert_eq!(get("/", "ሴ=bar"), vanilla("/", "%E1%88%B4=bar"));
        // get-utf8 and normalize-path/*
        assert_eq!(get("/ሴ", ""), vanilla("/%E1%88%B4", ""));
        assert_eq!(get("/example space/", ""), vanilla("/example%20space/", ""));
        assert_eq!(get("//example//", ""), vanilla("/example/", ""));
        assert_eq!(get("/example1/example2/../..", ""), vanilla("/", ""));
        assert_eq!(
            get("/example/$delete", ""),
            vanilla("/example/%24delete", "")
        );

        let my_header = |values: &[&str]| {
            let mut headers = vec![HOST, DATE];
            headers.extend(values.iter().map(|value| ("My-Header1", *value)));
            signed_canonical("GET", "/", "", &headers, b"")
        };
        let expected = |value: &str| {
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:{value}\n\
                 x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n{EMPTY}"
            )
        };
        // get-header-value-multiline, get-header-key-duplicate
        assert_eq!(
            my_header(&["value1\n  value2\n     value3"]),
            expected("value1 value2 value3")
        );
        assert_eq!(
            my_header(&["value2", "value2", "value1"]),
            expected("value2,value2,value1")
        );

        // post-x-www-form-urlencoded
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        assert_eq!(
            signed_canonical("POST", "/", "", &[form, HOST, DATE], b"Param1=value1"),
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\n\
             host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
    }

    /// botocore 1.43 (`SigV4Auth.canonical_request`) for
    /// `GET http://127.0.0.1:9999/v1/control-channel/mi-1%3Aa%20b/./x//y?role=publish_subscribe&b=a%20b&a=`:
    /// the escapes of the path are encoded a second time.
    #[test]
    fn canonical_request_matches_botocore_for_an_escaped_path() {
        let actual = signed_canonical(
            "GET",
            "/v1/control-channel/mi-1%3Aa%20b/./x//y",
            "role=publish_subscribe&b=a%20b&a=",
            &[
                ("host", "127.0.0.1:9999"),
                ("x-amz-date", "20260115T093005Z"),
            ],
            b"",
        );
        assert_eq!(
            actual,
            format!(
                "GET\n/v1/control-channel/mi-1%253Aa%2520b/x/y\na=&b=a%20b&role=publish_subscribe\n\
                 host:127.0.0.1:9999\nx-amz-date:20260115T093005Z\n\nhost;x-amz-date\n{EMPTY}"
            )
        );
    }

    #[test]
    fn uri_normalisation_follows_botocore() {
        for (path, expected) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/..", "/"),
            ("/./", "/"),
            ("/a/", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/%41", "/%2541"),
            ("/a b+c", "/a%20b%2Bc"),
        ] {
            assert_eq!(canonical_uri(path), expected, "{path:?}");
        }
    }

    #[test]
    fn query_decoding_is_lenient_and_stable() {
        for (query, expected) in [
            ("", ""),
            ("&&", ""),
            ("a", "a="),
            ("b=1&a=2", "a=2&b=1"),
            ("a=%zz&b=%4", "a=%25zz&b=%254"),
            ("a=x+y&c=x%20y&b=x%2By", "a=x%20y&b=x%2By&c=x%20y"),
            ("a==b", "a=%3Db"),
            ("%7e=%7E", "~=~"),
        ] {
            assert_eq!(canonical_query(query), expected, "{query:?}");
        }
    }

    #[test]
    fn timestamps_round_trip_through_the_calendar() {
        assert_eq!(format_timestamp(0), "19700101T000000Z");
        assert_eq!(format_timestamp(1_440_938_160), "20150830T123600Z");
        assert_eq!(format_timestamp(951_782_400), "20000229T000000Z");
        assert_eq!(format_timestamp(-1), "19691231T235959Z");
        for unix in [
            0,
            1,
            59,
            86_399,
            86_400,
            951_782_399,
            1_709_164_800,
            4_102_444_800,
            253_402_300_799,
        ] {
            assert_eq!(
                parse_timestamp(&format_timestamp(unix)),
                Some(unix),
                "{unix}"
            );
        }
        // Only the exact basic form with real dates.
        for bad in [
            "20150830T123600",
            "2015-08-30T12:36:00Z",
            "20150230T123600Z",
            "20150830T243600Z",
            "20150830T123660Z",
            "2015083+T123600Z",
            "20150830t123600Z",
            "20150830T123600Zé",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        // Huge clocks do not overflow.
        let far = format_timestamp(i64::MAX);
        assert!(far.ends_with('Z'));
    }

    #[test]
    fn http_dates_in_the_forms_botocore_and_rfc_7231_use() {
        assert_eq!(
            parse_http_date("Thu, 15 Jan 2026 09:30:05 -0000"),
            Some(1_768_469_405)
        );
        assert_eq!(
            parse_http_date("Thu, 15 Jan 2026 09:30:05 GMT"),
            Some(1_768_469_405)
        );
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 +0000"),
            Some(1_440_938_160)
        );
        for bad in [
            "Thu, 15 Jan 2026 09:30:05 +0100",
            "Thursday, 15-Jan-26 09:30:05 GMT",
            "Thu Jan 15 09:30:05 2026",
            "Thu, 31 Feb 2026 09:30:05 GMT",
            "Thu, 15 Jan 2026 9:30:05 GMT",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn signing_key_matches_the_aws_documentation() {
        // docs.aws.amazon.com "Create a signed AWS API request", IAM ListUsers example:
        // the string to sign and the signature that key gives.
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        let string_to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n\
                              f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
        assert_eq!(
            hex::encode(hmac::sign(&key, string_to_sign.as_bytes()).as_ref()),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }
}
