//! Signed JSON calls to a gateway (or anything speaking the AWS JSON 1.1 protocol), and a
//! [`KeyProvider`] that asks a KMS endpoint over them.
//!
//! Available with the `api-client` feature, which `client` and `agent` bring in; credentials
//! come from a [`CredentialSource`] ([`SharedFileCredentials`] without the AWS SDK, the SDK's
//! chain with `aws-kms`). Transport errors say what to change when the URL's scheme or the
//! trusted CA is wrong ([`TlsMismatch`](crate::net::TlsMismatch)).
//!
//! # Examples
//!
//! ```no_run
//! use ssm_session::aws::ApiClient;
//! use ssm_session::net::TlsConfig;
//! use ssm_session::sigv4::Credentials;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = Credentials::new("AKIDEXAMPLE", "secret", None);
//! let ssm = ApiClient::new("http://127.0.0.1:8080", "us-east-1", credentials, TlsConfig::default())?;
//! let sessions = ssm
//!     .call("ssm", "AmazonSSM.DescribeSessions", &serde_json::json!({"State": "Active"}))
//!     .await?;
//! println!("{sessions}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

use crate::crypto::DATA_KEY_LEN;
use crate::kms::{DataKey, EncryptionContext, KeyProvider, KmsError, KmsFuture};
use crate::net::TlsConfig;
use crate::net::http::{self, Endpoint, EndpointError, HttpError};
use crate::sigv4::{self, Credentials};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiCallError {
    /// The endpoint URL is unusable.
    #[error("bad endpoint: {0}")]
    Endpoint(#[from] EndpointError),
    /// The request did not get an answer.
    #[error("{endpoint} did not answer: {error}")]
    Transport {
        /// The endpoint called.
        endpoint: String,
        /// What failed.
        #[source]
        error: HttpError,
    },
    /// The service refused the call (`__type` and `message` of the AWS error).
    #[error("{code}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// The AWS error code, e.g. `AccessDeniedException`.
        code: String,
        /// The service's explanation.
        message: String,
    },
    /// A 200 answer that is not JSON.
    #[error("unreadable answer: {0}")]
    Answer(String),
    /// The call needs AWS credentials and none could be found.
    #[error("{operation} needs AWS credentials: {source}")]
    Credentials {
        /// The operation that needed them (its `X-Amz-Target` or path).
        operation: String,
        /// Why there are none; its message says what to set.
        #[source]
        source: CredentialsError,
    },
}

impl ApiCallError {
    /// The AWS error code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiCallError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The future a [`CredentialSource`] returns.
pub type CredentialsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credentials, CredentialsError>> + Send + 'a>>;

/// Where an [`ApiClient`] gets the credentials it signs with. It is asked at each call, not
/// when the client is built: a plain shell or port forward started by the AWS CLI makes no
/// signed call at all, so it must not need credentials (as with the reference plugin).
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The credentials to sign the next call with.
    fn credentials(&self) -> CredentialsFuture<'_>;
}

/// Fixed credentials.
impl CredentialSource for Credentials {
    fn credentials(&self) -> CredentialsFuture<'_> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// Static keys from the environment or the shared files ([`load_credentials`]), looked up at
/// the first call that needs them and then kept.
#[derive(Debug, Default)]
pub struct SharedFileCredentials {
    profile: Option<String>,
    found: Mutex<Option<Credentials>>,
}

impl SharedFileCredentials {
    /// Credentials of `profile` (`None`: the environment, then `AWS_PROFILE`, then `default`).
    pub fn new(profile: Option<&str>) -> SharedFileCredentials {
        SharedFileCredentials {
            profile: profile.map(str::to_owned),
            found: Mutex::default(),
        }
    }
}

impl CredentialSource for SharedFileCredentials {
    fn credentials(&self) -> CredentialsFuture<'_> {
        let mut found = crate::net::runtime::lock(&self.found);
        let credentials = match &*found {
            Some(credentials) => Ok(credentials.clone()),
            None => load_credentials(self.profile.as_deref()).inspect(|credentials| {
                *found = Some(credentials.clone());
            }),
        };
        Box::pin(std::future::ready(credentials))
    }
}

/// A SigV4-signing JSON client for one endpoint and identity.
#[derive(Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
    url: String,
    region: String,
    credentials: Arc<dyn CredentialSource>,
    tls: TlsConfig,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("endpoint", &self.url)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of `endpoint` (`http://` or `https://`) signing for `region` with fixed
    /// credentials.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: Credentials,
        tls: TlsConfig,
    ) -> Result<ApiClient, ApiCallError> {
        ApiClient::with_credentials(endpoint, region, Arc::new(credentials), tls)
    }

    /// A client that asks `credentials` at each call (see [`CredentialSource`]).
    pub fn with_credentials(
        endpoint: &str,
        region: &str,
        credentials: Arc<dyn CredentialSource>,
        tls: TlsConfig,
    ) -> Result<ApiClient, ApiCallError> {
        Ok(ApiClient {
            endpoint: Endpoint::parse(endpoint)?,
            url: endpoint.to_owned(),
            region: region.to_owned(),
            credentials,
            tls,
        })
    }

    /// The endpoint's parts.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The TLS trust used.
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// The region signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `target` (`X-Amz-Target`, e.g. `AmazonSSM.StartSession`) of `service` at `/`.
    pub async fn call(
        &self,
        service: &str,
        target: &str,
        body: &Value,
    ) -> Result<Value, ApiCallError> {
        self.post(service, "/", Some(target), body).await
    }

    /// Posts signed JSON to `path`.
    pub async fn post(
        &self,
        service: &str,
        path: &str,
        target: Option<&str>,
        body: &Value,
    ) -> Result<Value, ApiCallError> {
        let credentials =
            self.credentials
                .credentials()
                .await
                .map_err(|source| ApiCallError::Credentials {
                    operation: target.unwrap_or(path).to_owned(),
                    source,
                })?;
        let body = bytes::Bytes::from(body.to_string());
        let mut headers = vec![
            ("host".to_owned(), self.endpoint.authority()),
            (
                "content-type".to_owned(),
                "application/x-amz-json-1.1".to_owned(),
            ),
        ];
        if let Some(target) = target {
            headers.push(("x-amz-target".to_owned(), target.to_owned()));
        }
        headers.push(invocation_id());
        let request = sigv4::Request {
            method: "POST",
            path,
            query: "",
            headers: &headers,
            body: &body,
        };
        let signature = sigv4::sign(
            &request,
            &credentials,
            &self.region,
            service,
            unix_seconds(),
        );
        headers.extend(signature);
        let answer = http::post(
            &self.endpoint,
            &self.tls,
            path,
            &headers,
            body,
            CALL_TIMEOUT,
        )
        .await
        .map_err(|error| ApiCallError::Transport {
            endpoint: self.url.clone(),
            error,
        })?;
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        if answer.status != 200 {
            let field = |name: &str| {
                json.as_ref()
                    .and_then(|json| json.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            return Err(ApiCallError::Service {
                status: answer.status,
                code: field("__type")
                    .map(|code| code.rsplit('#').next().unwrap_or_default().to_owned())
                    .unwrap_or_else(|| format!("HTTP {}", answer.status)),
                message: field("message").or_else(|| field("Message")).unwrap_or_else(|| {
                    match json {
                        Some(_) => "the error names no message".to_owned(),
                        None => format!(
                            "not an AWS JSON error, is {} a Session Manager endpoint? The answer begins: {}",
                            self.url,
                            excerpt(&answer.body)
                        ),
                    }
                }),
            });
        }
        json.ok_or_else(|| ApiCallError::Answer(format!("not JSON: {}", excerpt(&answer.body))))
    }
}

/// At most the first line (or an HTML page's title) and 120 characters of `body`.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|start| {
        let start = start + "<title>".len();
        let end = start + lower[start..].find("</title>")?;
        text.get(start..end)
    });
    let line = title
        .or_else(|| text.lines().map(str::trim).find(|line| !line.is_empty()))
        .unwrap_or("(empty)")
        .trim();
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// A signed `amz-sdk-invocation-id` header (as the AWS SDKs send), unique per call: two
/// identical calls in the same second get different signatures, so a gateway that accepts a
/// token-minting signature only once serves both.
pub(crate) fn invocation_id() -> (String, String) {
    (
        "amz-sdk-invocation-id".to_owned(),
        crate::net::runtime::random_uuid().to_string(),
    )
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A [`KeyProvider`] calling `TrentService.GenerateDataKey` and `Decrypt` on a KMS endpoint
/// (the gateway's own, or any KMS-compatible one).
#[derive(Debug, Clone)]
pub struct HttpKms {
    client: Arc<ApiClient>,
}

impl HttpKms {
    /// KMS calls through `client` (service name `kms`).
    pub fn new(client: ApiClient) -> HttpKms {
        HttpKms {
            client: Arc::new(client),
        }
    }
}

fn kms_error(error: ApiCallError) -> KmsError {
    if let ApiCallError::Credentials { .. } = error {
        return KmsError::NoCredentials(error.to_string());
    }
    match error.code() {
        Some("InvalidCiphertextException") => KmsError::InvalidCiphertext,
        Some("AccessDeniedException") => KmsError::AccessDenied(error.to_string()),
        _ => KmsError::Other(error.to_string()),
    }
}

fn base64_field(answer: &Value, name: &str) -> Result<Vec<u8>, KmsError> {
    answer
        .get(name)
        .and_then(Value::as_str)
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .ok_or_else(|| KmsError::Other(format!("the KMS answer has no base64 {name}")))
}

impl KeyProvider for HttpKms {
    fn generate_data_key<'a>(
        &'a self,
        key_id: &'a str,
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey> {
        Box::pin(async move {
            let request = json!({
                "KeyId": key_id,
                "NumberOfBytes": DATA_KEY_LEN,
                "EncryptionContext": context,
            });
            let answer = self
                .client
                .call("kms", "TrentService.GenerateDataKey", &request)
                .await
                .map_err(kms_error)?;
            let plaintext: [u8; DATA_KEY_LEN] = base64_field(&answer, "Plaintext")?
                .try_into()
                .map_err(|_| KmsError::Other("the KMS returned a key of the wrong size".into()))?;
            Ok(DataKey {
                plaintext,
                ciphertext_blob: base64_field(&answer, "CiphertextBlob")?,
            })
        })
    }

    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        blob: &'a [u8],
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, [u8; DATA_KEY_LEN]> {
        Box::pin(async move {
            let request = json!({
                "KeyId": key_id,
                "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(blob),
                "EncryptionContext": context,
            });
            let answer = self
                .client
                .call("kms", "TrentService.Decrypt", &request)
                .await
                .map_err(kms_error)?;
            base64_field(&answer, "Plaintext")?
                .try_into()
                .map_err(|_| KmsError::Other("the KMS returned a key of the wrong size".into()))
        })
    }
}

/// Why no credentials were found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error(
    "no AWS credentials for profile {profile:?}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or aws_access_key_id and aws_secret_access_key in ~/.aws/credentials{}",
    detail.as_deref().map_or(" (profiles using SSO, roles or processes need the `aws-kms` build, which uses the AWS SDK's credential chain)".to_owned(), |detail| format!(" ({detail})"))
)]
pub struct CredentialsError {
    /// The profile looked for.
    pub profile: String,
    /// What the credential chain reported, when one was asked.
    pub detail: Option<String>,
}

impl CredentialsError {
    /// No credentials for `profile`; `detail` is what the credential chain said.
    pub fn new(profile: impl Into<String>, detail: Option<String>) -> CredentialsError {
        CredentialsError {
            profile: profile.into(),
            detail,
        }
    }
}

/// Static credentials the way the AWS tools find them, without the SDK: with no `profile`,
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`; otherwise (or if those
/// are unset) the keys of the profile (`profile`, else `AWS_PROFILE`, else `default`) in
/// `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`), then in `AWS_CONFIG_FILE`
/// (`~/.aws/config`).
pub fn load_credentials(profile: Option<&str>) -> Result<Credentials, CredentialsError> {
    credentials_from(
        profile,
        |name| std::env::var(name).ok(),
        |path| std::fs::read_to_string(path).ok(),
    )
}

fn credentials_from(
    profile: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    read: impl Fn(&std::path::Path) -> Option<String>,
) -> Result<Credentials, CredentialsError> {
    let profile = profile.filter(|name| !name.is_empty());
    if profile.is_none()
        && let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(Credentials::new(
            id,
            secret,
            env("AWS_SESSION_TOKEN").as_deref(),
        ));
    }
    let profile = profile
        .map(str::to_owned)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let home = env("HOME").unwrap_or_default();
    let file = |variable: &str, default: &str| {
        env(variable).unwrap_or_else(|| format!("{home}/.aws/{default}"))
    };
    let sources = [
        (
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            profile.clone(),
        ),
        (
            file("AWS_CONFIG_FILE", "config"),
            match profile.as_str() {
                "default" => profile.clone(),
                other => format!("profile {other}"),
            },
        ),
    ];
    for (path, section) in sources {
        let Some(text) = read(std::path::Path::new(&path)) else {
            continue;
        };
        let keys = ini_section(&text, &section);
        let key = |name: &str| keys.iter().find(|(key, _)| key == name).map(|(_, v)| v);
        if let (Some(id), Some(secret)) = (key("aws_access_key_id"), key("aws_secret_access_key")) {
            return Ok(Credentials::new(
                id.as_str(),
                secret.as_str(),
                key("aws_session_token").map(String::as_str),
            ));
        }
    }
    Err(CredentialsError::new(profile, None))
}

/// The `key = value` pairs of `[section]` in an AWS shared file.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut pairs = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inside = name.trim() == section;
        } else if inside
            && !line.starts_with(['#', ';'])
            && let Some((key, value)) = line.split_once('=')
        {
            pairs.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_of_non_json_bodies_are_short() {
        let page = b"<!DOCTYPE html>\n<html><head><TITLE>501 Not Implemented</TITLE></head>\n<body>...</body></html>";
        assert_eq!(excerpt(page), "501 Not Implemented");
        assert_eq!(excerpt(b"\n\n  first line  \nsecond"), "first line");
        assert_eq!(excerpt(b""), "(empty)");
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), 121);
    }

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n# comment\n[dev]\naws_access_key_id=AKIDDEV\naws_secret_access_key=s2\naws_session_token = tok\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n[profile ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = s3\n[profile sso]\nsso_start_url = https://x\n";

    fn load(profile: Option<&str>, vars: &[(&str, &str)]) -> Result<Credentials, CredentialsError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        credentials_from(
            profile,
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            |path| match path.to_str() {
                Some("/home/u/.aws/credentials") => Some(CREDENTIALS.into()),
                Some("/home/u/.aws/config") => Some(CONFIG.into()),
                _ => None,
            },
        )
    }

    #[test]
    fn environment_first_unless_a_profile_is_named() {
        let env = [
            ("HOME", "/home/u"),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "s0"),
        ];
        assert_eq!(load(None, &env).unwrap().access_key_id, "AKIDENV");
        assert_eq!(load(Some(""), &env).unwrap().access_key_id, "AKIDENV");
        let dev = load(Some("dev"), &env).unwrap();
        assert_eq!(dev.access_key_id, "AKIDDEV");
        assert_eq!(dev.session_token.as_deref(), Some("tok"));
    }

    #[test]
    fn profiles_from_both_files() {
        let home = [("HOME", "/home/u")];
        assert_eq!(load(None, &home).unwrap().access_key_id, "AKIDDEFAULT");
        assert_eq!(load(Some("ops"), &home).unwrap().access_key_id, "AKIDOPS");
        let chosen = [("HOME", "/home/u"), ("AWS_PROFILE", "dev")];
        assert_eq!(load(None, &chosen).unwrap().access_key_id, "AKIDDEV");
    }

    #[test]
    fn profiles_without_static_keys_are_refused() {
        let home = [("HOME", "/home/u")];
        let error = load(Some("sso"), &home).unwrap_err();
        assert_eq!(error.profile, "sso");
        assert!(error.to_string().contains("aws-kms"));
        assert!(load(None, &[("HOME", "/nowhere")]).is_err());
    }
}
