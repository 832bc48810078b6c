//! The AWS SDK side (feature `aws-kms`; `aws` adds SSM): configuration loaded the standard AWS
//! way (environment, profiles, SSO, instance and container roles, `AWS_ENDPOINT_URL_*`), a
//! [`KeyProvider`] on `aws-sdk-kms`, and the bridge from the SDK's credentials and
//! `StartSession` answer to this crate's client.
//!
//! The SDK's HTTPS client is built on rustls with *ring*, the same TLS stack as the rest of
//! the crate.
//!
//! # Examples
//!
//! ```no_run
//! use ssm_session::aws_sdk::{self, AwsKms, SdkOptions};
//! use ssm_session::kms::{EncryptionContext, KeyProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = aws_sdk::load_config(&SdkOptions::default()).await?;
//! let kms = AwsKms::new(&config, None);
//! let context = EncryptionContext::from([("aws:ssm:SessionId".into(), "s-1".into())]);
//! let key = kms.generate_data_key("alias/session-manager", &context).await?;
//! assert_eq!(kms.decrypt("alias/session-manager", &key.ciphertext_blob, &context).await?, key.plaintext);
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::primitives::Blob;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};

use crate::aws::{CredentialSource, CredentialsError, CredentialsFuture};
use crate::crypto::DATA_KEY_LEN;
use crate::kms::{DataKey, EncryptionContext, KeyProvider, KmsError, KmsFuture};
use crate::sigv4::Credentials;

/// What to load the SDK configuration with, beyond the environment and the shared files.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SdkOptions {
    /// Profile of `~/.aws/config` (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Region (else `AWS_REGION` or the profile's).
    pub region: Option<String>,
    /// A PEM bundle of extra CAs to trust (e.g. a self-hosted gateway's).
    pub ca_pem: Option<Vec<u8>>,
    /// Fixed credentials instead of the credential chain (e.g. an agent's gateway identity).
    pub credentials: Option<Credentials>,
}

impl SdkOptions {
    /// Options for `profile` (empty means none) in `region`.
    pub fn new(profile: Option<&str>, region: Option<&str>) -> SdkOptions {
        let given = |text: Option<&str>| text.filter(|text| !text.is_empty()).map(str::to_owned);
        SdkOptions {
            profile: given(profile),
            region: given(region),
            ca_pem: None,
            credentials: None,
        }
    }

    /// Sign with `credentials` instead of looking for any.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Trust the CAs of the PEM bundle `pem` besides the system's.
    pub fn ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca_pem = Some(pem);
        self
    }
}

/// Why the SDK configuration or its credentials could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkConfigError {
    /// The extra CA bundle is unusable.
    #[error("the CA bundle is unusable: {0}")]
    Tls(String),
}

/// Loads the standard AWS configuration with `options` applied.
pub async fn load_config(options: &SdkOptions) -> Result<SdkConfig, SdkConfigError> {
    let mut trust = TrustStore::default();
    if let Some(pem) = &options.ca_pem {
        trust = trust.with_pem_certificate(pem.clone());
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|error| SdkConfigError::Tls(error.to_string()))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(fixed) = &options.credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            &fixed.access_key_id,
            &fixed.secret_access_key,
            fixed.session_token.clone(),
            None,
            "ssm-session",
        ));
    }
    Ok(loader.load().await)
}

/// The SDK's whole credential chain (environment, profiles, SSO, assume-role,
/// `credential_process`, instance and container roles) as an [`ApiClient`]'s
/// [`CredentialSource`]: resolved at each signed call (the SDK caches and refreshes), never
/// when the client is built.
///
/// [`ApiClient`]: crate::aws::ApiClient
#[derive(Debug, Clone)]
pub struct SdkCredentials {
    provider: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    profile: String,
}

impl SdkCredentials {
    /// The credential chain of `config`; `profile` names it in errors.
    pub fn new(config: &SdkConfig, profile: Option<&str>) -> SdkCredentials {
        SdkCredentials {
            provider: config.credentials_provider(),
            profile: profile.filter(|name| !name.is_empty()).map_or_else(
                || std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into()),
                str::to_owned,
            ),
        }
    }
}

impl CredentialSource for SdkCredentials {
    fn credentials(&self) -> CredentialsFuture<'_> {
        Box::pin(async move {
            let refused =
                |detail: String| CredentialsError::new(self.profile.clone(), Some(detail));
            let provider = self
                .provider
                .as_ref()
                .ok_or_else(|| refused("the configuration has no credential provider".into()))?;
            let found = provider.provide_credentials().await.map_err(|error| {
                refused(format!(
                    "{}; for SSO profiles, log in with `aws sso login`",
                    DisplayErrorContext(&error)
                ))
            })?;
            Ok(Credentials::new(
                found.access_key_id(),
                found.secret_access_key(),
                found.session_token(),
            ))
        })
    }
}

/// A [`KeyProvider`] calling AWS KMS (or any KMS-compatible endpoint) through `aws-sdk-kms`.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
}

impl AwsKms {
    /// KMS with `config`; `endpoint` overrides where calls go (otherwise the configuration's,
    /// which honours `AWS_ENDPOINT_URL_KMS`).
    pub fn new(config: &SdkConfig, endpoint: Option<&str>) -> AwsKms {
        let mut builder = aws_sdk_kms::config::Builder::from(config);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        AwsKms::from_client(aws_sdk_kms::Client::from_conf(builder.build()))
    }

    /// KMS through an SDK client configured elsewhere.
    pub fn from_client(client: aws_sdk_kms::Client) -> AwsKms {
        AwsKms { client }
    }
}

fn kms_error<E, R>(key_id: &str, error: aws_sdk_kms::error::SdkError<E, R>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = DisplayErrorContext(&error).to_string();
    match error.code() {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => KmsError::InvalidCiphertext,
        Some("NotFoundException") => KmsError::KeyNotFound {
            key_id: key_id.to_owned(),
        },
        Some("AccessDeniedException") => KmsError::AccessDenied(text),
        _ => KmsError::Other(text),
    }
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn data_key_bytes(blob: Option<Blob>) -> Result<[u8; DATA_KEY_LEN], KmsError> {
    blob.map(Blob::into_inner)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| KmsError::Other("KMS returned no 64-byte plaintext".into()))
}

impl KeyProvider for AwsKms {
    fn generate_data_key<'a>(
        &'a self,
        key_id: &'a str,
        context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey> {
        Box::pin(async move {
            let answer = self
                .client
                .generate_data_key()
                .key_id(key_id)
                .number_of_bytes(DATA_KEY_LEN as i32)
                .set_encryption_context(Some(context_map(context)))
                .send()
                .await
                .map_err(|error| kms_error(key_id, error))?;
            let ciphertext_blob = answer
                .ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| KmsError::Other("KMS returned no CiphertextBlob".into()))?;
            Ok(DataKey {
                plaintext: data_key_bytes(answer.plaintext)?,
                ciphertext_blob,
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
            let answer = self
                .client
                .decrypt()
                .key_id(key_id)
                .ciphertext_blob(Blob::new(blob))
                .set_encryption_context(Some(context_map(context)))
                .send()
                .await
                .map_err(|error| kms_error(key_id, error))?;
            data_key_bytes(answer.plaintext)
        })
    }
}

/// The session `StartSession` made through `aws-sdk-ssm`, for [`SessionClient::connect`]
/// (`target` as it was asked for: it is part of the KMS encryption context).
///
/// [`SessionClient::connect`]: crate::client::SessionClient::connect
#[cfg(feature = "aws")]
pub fn started_session(
    answer: &aws_sdk_ssm::operation::start_session::StartSessionOutput,
    target: &str,
) -> Result<crate::client::StartedSession, crate::aws::ApiCallError> {
    let field = |value: Option<&str>, name: &str| {
        value
            .map(str::to_owned)
            .ok_or_else(|| crate::aws::ApiCallError::Answer(format!("the answer has no {name}")))
    };
    Ok(crate::client::StartedSession {
        session_id: field(answer.session_id(), "SessionId")?,
        stream_url: field(answer.stream_url(), "StreamUrl")?,
        token_value: field(answer.token_value(), "TokenValue")?,
        target: target.to_owned(),
    })
}
