//! Signed JSON calls to a gateway (or anything speaking the AWS JSON 1.1 protocol), and a
//! [`KeyProvider`] that asks a KMS endpoint over them.
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
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

use crate::crypto::DATA_KEY_LEN;
use crate::kms::{DataKey, EncryptionContext, KeyProvider, KmsError, KmsFuture};
use crate::net::TlsConfig;
use crate::net::http::{self, Endpoint, HttpError};
use crate::sigv4::{self, Credentials};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiCallError {
    /// The endpoint URL is unusable.
    #[error("bad endpoint: {0}")]
    Endpoint(String),
    /// The request did not get an answer.
    #[error("{endpoint} did not answer: {error}")]
    Transport {
        /// The endpoint called.
        endpoint: String,
        /// What failed.
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

/// A SigV4-signing JSON client for one endpoint and identity.
#[derive(Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
    url: String,
    region: String,
    credentials: Credentials,
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
    /// A client of `endpoint` (`http://` or `https://`) signing for `region`.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: Credentials,
        tls: TlsConfig,
    ) -> Result<ApiClient, ApiCallError> {
        Ok(ApiClient {
            endpoint: Endpoint::parse(endpoint).map_err(ApiCallError::Endpoint)?,
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

    /// The access key id calls are signed with.
    pub fn access_key_id(&self) -> &str {
        &self.credentials.access_key_id
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
        let body = body.to_string().into_bytes();
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
        let request = sigv4::Request {
            method: "POST",
            path,
            query: "",
            headers: &headers,
            body: &body,
        };
        let signature = sigv4::sign(
            &request,
            &self.credentials,
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
            &body,
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
                message: field("message")
                    .or_else(|| field("Message"))
                    .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned()),
            });
        }
        json.ok_or_else(|| ApiCallError::Answer(String::from_utf8_lossy(&answer.body).into_owned()))
    }
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
