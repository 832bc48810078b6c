//! The gateway's KMS-compatible endpoint (`X-Amz-Target: TrentService.*`): `GenerateDataKey`,
//! `Decrypt`, `Encrypt` and `DescribeKey` on the keys of the configuration, wrapped by one
//! [`LocalKms`](crate::kms::LocalKms) master key. Users are authorised by their policies
//! (`kms:GenerateDataKey`, `kms:Decrypt`, `kms:Encrypt`, `kms:DescribeKey` on the key's ARN);
//! an agent may only `Decrypt`, and only the data key of a live session on itself.
//!
//! Trust: whoever runs this endpoint holds the master key, so it can open every session key
//! it issued — and this process also relays the sessions' ciphertext. Serving KMS here keeps a
//! self-hosted system self-contained; for encryption that the relay operator cannot undo, give
//! clients and agents a KMS run by someone else (AWS KMS with the `aws-kms` feature, or a
//! second gateway process holding only keys).

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiError, Call, Caller, parse};
use super::service::Service;
use crate::entropy::{Entropy, SystemEntropy};
use crate::kms::{CONTEXT_SESSION_ID, CONTEXT_TARGET_ID, EncryptionContext, LocalKms};
use crate::policy::kms_key_arn;

/// Largest `Encrypt` plaintext, as in AWS KMS.
const MAX_PLAINTEXT: usize = 4096;
/// Largest `GenerateDataKey` `NumberOfBytes`, as in AWS KMS.
const MAX_DATA_KEY: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyInput {
    key_id: String,
    #[serde(default)]
    number_of_bytes: Option<usize>,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: String,
    plaintext: String,
    #[serde(default)]
    encryption_context: EncryptionContext,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyInput {
    key_id: String,
}

impl Service {
    pub(super) fn generate_data_key(
        &self,
        caller: &Caller,
        body: Value,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let input: GenerateDataKeyInput = parse(body)?;
        let key = Key::for_user(
            self,
            caller,
            "kms:GenerateDataKey",
            &input.key_id,
            &input.encryption_context,
            call,
        )?;
        let length = match (input.number_of_bytes, input.key_spec.as_deref()) {
            (Some(bytes @ 1..=MAX_DATA_KEY), None) => bytes,
            (None, Some("AES_256")) => 32,
            (None, Some("AES_128")) => 16,
            _ => {
                return Err(invalid(
                    "give either NumberOfBytes (1 to 1024) or KeySpec (AES_256 or AES_128)",
                ));
            }
        };
        let mut plaintext = vec![0; length];
        SystemEntropy::new().fill(&mut plaintext);
        let blob = seal(&self.kms, &key, &input.encryption_context, &plaintext);
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "Plaintext": b64(&plaintext),
            "KeyId": key.arn,
        }))
    }

    pub(super) fn encrypt(
        &self,
        caller: &Caller,
        body: Value,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let input: EncryptInput = parse(body)?;
        let key = Key::for_user(
            self,
            caller,
            "kms:Encrypt",
            &input.key_id,
            &input.encryption_context,
            call,
        )?;
        let plaintext = base64::engine::general_purpose::STANDARD
            .decode(input.plaintext.as_bytes())
            .map_err(|_| invalid("Plaintext is not base64"))?;
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(invalid("Plaintext holds 1 to 4096 bytes"));
        }
        let blob = seal(&self.kms, &key, &input.encryption_context, &plaintext);
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "KeyId": key.arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    pub(super) fn decrypt(
        &self,
        caller: &Caller,
        body: Value,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let input: DecryptInput = parse(body)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(input.ciphertext_blob.as_bytes())
            .map_err(|_| invalid_ciphertext("CiphertextBlob is not base64"))?;
        // The blob names its key; authorise on that key before opening anything.
        let made_under = LocalKms::blob_key_id(&blob)
            .ok_or_else(|| invalid_ciphertext("CiphertextBlob was not made by this KMS"))?;
        let key = Key::resolve(self, made_under, &input.encryption_context, call)?;
        if let Some(asked) = &input.key_id
            && Key::resolve(self, asked, &input.encryption_context, call)?.id != key.id
        {
            return Err(ApiError::new(
                400,
                "IncorrectKeyException",
                format!("the ciphertext was not made under {asked}"),
            ));
        }
        match caller {
            // An agent may open only keys of sessions that run on it.
            Caller::Agent(agent_id) => {
                let session = input
                    .encryption_context
                    .get(CONTEXT_SESSION_ID)
                    .and_then(|id| self.sessions.owner_and_target(id));
                let target = input.encryption_context.get(CONTEXT_TARGET_ID);
                let allowed = session
                    .is_some_and(|(_, session_target)| &session_target == agent_id)
                    && target == Some(agent_id);
                if !allowed {
                    return Err(ApiError::new(
                        400,
                        "AccessDeniedException",
                        format!("agent {agent_id} may decrypt only keys of its own live sessions"),
                    ));
                }
                call.record.reason = Some("agent of the session".into());
            }
            Caller::User(name) => {
                self.authorize(name, "kms:Decrypt", std::slice::from_ref(&key.arn), call)?
            }
        }
        let (_, plaintext) = self
            .kms
            .open(&blob, &input.encryption_context)
            .map_err(|error| invalid_ciphertext(&error.to_string()))?;
        Ok(json!({
            "Plaintext": b64(&plaintext),
            "KeyId": key.arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    pub(super) fn describe_key(
        &self,
        caller: &Caller,
        body: Value,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let input: DescribeKeyInput = parse(body)?;
        let key = Key::for_user(
            self,
            caller,
            "kms:DescribeKey",
            &input.key_id,
            &EncryptionContext::new(),
            call,
        )?;
        Ok(json!({
            "KeyMetadata": {
                "AWSAccountId": self.account,
                "KeyId": key.id,
                "Arn": key.arn,
                "Enabled": true,
                "KeyState": "Enabled",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
                "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
                "KeyManager": "CUSTOMER",
                "Origin": "AWS_KMS",
                "MultiRegion": false,
                "Description": "a key of the ssm-session gateway's built-in KMS",
            }
        }))
    }
}

/// A configured key, found by id, alias or ARN.
struct Key {
    id: String,
    arn: String,
}

impl Key {
    /// Resolves `name` and notes the key and the session (from the context) in the audit record.
    fn resolve(
        service: &Service,
        name: &str,
        context: &EncryptionContext,
        call: &mut Call,
    ) -> Result<Key, ApiError> {
        let id = service.auth().key_id(name).ok_or_else(|| {
            ApiError::new(
                400,
                "NotFoundException",
                format!("key {name} does not exist in this gateway's KMS"),
            )
        })?;
        let arn = kms_key_arn(&service.region, &service.account, &id);
        call.record.target = Some(arn.clone());
        call.record.session_id = context.get(CONTEXT_SESSION_ID).cloned();
        Ok(Key { id, arn })
    }

    /// Resolves `name` for a user whose policies must allow `action` on the key.
    fn for_user(
        service: &Service,
        caller: &Caller,
        action: &str,
        name: &str,
        context: &EncryptionContext,
        call: &mut Call,
    ) -> Result<Key, ApiError> {
        let user = caller.user()?;
        let key = Key::resolve(service, name, context, call)?;
        service.authorize(user, action, std::slice::from_ref(&key.arn), call)?;
        Ok(key)
    }
}

fn seal(kms: &LocalKms, key: &Key, context: &EncryptionContext, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0; 12];
    SystemEntropy::new().fill(&mut nonce);
    kms.encrypt_with(&key.id, context, plaintext, nonce)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(400, "ValidationException", message)
}

fn invalid_ciphertext(message: &str) -> ApiError {
    ApiError::new(400, "InvalidCiphertextException", message)
}
