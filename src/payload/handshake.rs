//! The handshake payloads (PROTOCOL.md §5.8–5.10): what the agent asks, what the client answers,
//! the completion notice and the encryption challenge.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::gojson::{self, go_struct};
use super::{JsonPayload, PayloadError};

/// A JSON value kept exactly as received, for fields Go declares as `interface{}`
/// (`ActionParameters`, `ActionResult`) whose shape depends on a sibling field.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Encodes `value` with Go's rules.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> RawJson {
        let text = String::from_utf8(gojson::to_vec(value))
            .expect("serde_json writes UTF-8 and GoFormatter only adds ASCII escapes");
        RawJson(RawValue::from_string(text).expect("serde_json output is valid JSON"))
    }

    /// Parses the value as `T`; JSON `null` gives `T::default()`, as in Go.
    pub fn decode<T: DeserializeOwned + Default>(&self) -> Result<T, PayloadError> {
        gojson::field_value(&self.0).map_err(PayloadError::Json)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({})", self.get())
    }
}

go_struct! {
    /// PayloadType 5, agent → client: the actions the client must carry out, `SessionType`
    /// first, then `KMSEncryption` when the session is encrypted.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct HandshakeRequest {
        /// The agent's version; drives the client's feature choices (PROTOCOL.md §14).
        "AgentVersion" => pub agent_version: String,
        /// The actions, in the order they must be answered.
        "RequestedClientActions" => pub requested_client_actions: Vec<RequestedClientAction>,
    }
}

go_struct! {
    /// One requested action. Its parameters are kept raw and read with
    /// [`RequestedClientAction::parameters`] once the type is known.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct RequestedClientAction {
        /// [`RequestedClientAction::SESSION_TYPE`], [`RequestedClientAction::KMS_ENCRYPTION`] or
        /// an action this crate does not know.
        "ActionType" => pub action_type: String,
        /// The parameters, whose shape depends on the action type.
        "ActionParameters" => pub action_parameters: Option<RawJson>,
    }
}

impl RequestedClientAction {
    /// Action type carrying [`SessionTypeRequest`] parameters.
    pub const SESSION_TYPE: &str = "SessionType";
    /// Action type carrying [`KmsEncryptionRequest`] parameters.
    pub const KMS_ENCRYPTION: &str = "KMSEncryption";
    /// Our own action, carrying [`Extensions`]; always sent last.
    pub const EXTENSIONS: &str = "ssm-session:Extensions";

    /// A `SessionType` action.
    pub fn session_type(parameters: &SessionTypeRequest) -> Self {
        Self::with_parameters(Self::SESSION_TYPE, parameters)
    }

    /// A `KMSEncryption` action.
    pub fn kms_encryption(parameters: &KmsEncryptionRequest) -> Self {
        Self::with_parameters(Self::KMS_ENCRYPTION, parameters)
    }

    /// Our `ssm-session:Extensions` action.
    pub fn extensions(parameters: &Extensions) -> Self {
        Self::with_parameters(Self::EXTENSIONS, parameters)
    }

    fn with_parameters<T: JsonPayload>(action_type: &str, parameters: &T) -> Self {
        RequestedClientAction {
            action_type: action_type.to_owned(),
            action_parameters: Some(RawJson::encode(parameters)),
        }
    }

    /// Reads the parameters as `T`; absent or `null` parameters give `T::default()`, as in Go.
    ///
    /// # Examples
    ///
    /// ```
    /// use ssm_session::payload::{HandshakeRequest, JsonPayload, RequestedClientAction, SessionTypeRequest};
    ///
    /// let request = HandshakeRequest::from_json(br#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[
    ///     {"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":null}}]}"#)?;
    /// let action = &request.requested_client_actions[0];
    /// assert_eq!(action.action_type, RequestedClientAction::SESSION_TYPE);
    /// assert_eq!(action.parameters::<SessionTypeRequest>()?.session_type, "Standard_Stream");
    /// # Ok::<(), ssm_session::payload::PayloadError>(())
    /// ```
    pub fn parameters<T: JsonPayload + Default>(&self) -> Result<T, PayloadError> {
        match &self.action_parameters {
            Some(raw) => raw.decode(),
            None => Ok(T::default()),
        }
    }
}

go_struct! {
    /// Parameters of the `SessionType` action.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct SessionTypeRequest {
        /// `Standard_Stream`, `InteractiveCommands`, `NonInteractiveCommands` or `Port`.
        "SessionType" => pub session_type: String,
        /// The document's properties for `Port` sessions, `None` (JSON `null`) otherwise.
        /// Written with object keys sorted, as the agent's Go map encoding does.
        #[serde(serialize_with = "crate::payload::gojson::sorted_json")]
        "Properties" => pub properties: Option<serde_json::Value>,
    }
}

go_struct! {
    /// Parameters of the `KMSEncryption` action.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct KmsEncryptionRequest {
        /// Key id or ARN the client must generate the data key under.
        "KMSKeyId" => pub kms_key_id: String,
        /// Base64 text of 16 random bytes, used verbatim as the `aws:ssm:RandomChallenge`
        /// encryption context value; empty from older agents.
        "Challenge" => pub challenge: String,
    }
}

go_struct! {
    /// PayloadType 6, client → agent: one processed action per requested one, in order.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct HandshakeResponse {
        /// The client's 4-part version; the agent gates features on it (PROTOCOL.md §14).
        "ClientVersion" => pub client_version: String,
        /// The answers, in request order.
        "ProcessedClientActions" => pub processed_client_actions: Vec<ProcessedClientAction>,
        /// Every failure text, or `None` (`null`) when nothing failed.
        "Errors" => pub errors: Option<Vec<String>>,
    }
}

impl HandshakeResponse {
    /// An empty response from a client reporting `client_version`.
    pub fn new(client_version: impl Into<String>) -> Self {
        HandshakeResponse {
            client_version: client_version.into(),
            processed_client_actions: Vec::new(),
            errors: None,
        }
    }

    /// Records a successful action with its result (`None` for `SessionType`).
    pub fn push_success(&mut self, action_type: &str, result: Option<RawJson>) {
        self.processed_client_actions.push(ProcessedClientAction {
            action_type: action_type.to_owned(),
            action_status: ActionStatus::SUCCESS,
            action_result: result,
            error: String::new(),
        });
    }

    /// Records a failed action the way the Go client words it.
    pub fn push_failure(&mut self, action_type: &str, error: &str) {
        self.processed_client_actions.push(ProcessedClientAction {
            action_type: action_type.to_owned(),
            action_status: ActionStatus::FAILED,
            action_result: None,
            error: format!("Failed to process action {action_type}: {error}"),
        });
        self.errors.get_or_insert_default().push(error.to_owned());
    }

    /// Records an action the client does not know, byte for byte as the Go client does: status
    /// 0 with the Unsupported code 3 in `ActionResult` (PROTOCOL.md §15.2). Any status but 1 makes
    /// the Go agent fail the session.
    pub fn push_unsupported(&mut self, action_type: &str) {
        let error = format!("Unsupported action {action_type}");
        self.processed_client_actions.push(ProcessedClientAction {
            action_type: action_type.to_owned(),
            action_status: ActionStatus(0),
            action_result: Some(RawJson::encode(&ActionStatus::UNSUPPORTED)),
            error: error.clone(),
        });
        self.errors.get_or_insert_default().push(error);
    }
}

go_struct! {
    /// The client's answer to one action.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct ProcessedClientAction {
        /// The action type answered.
        "ActionType" => pub action_type: String,
        /// 1 success, 2 failed, 3 unsupported (0 from the Go client for unknown actions).
        "ActionStatus" => pub action_status: ActionStatus,
        /// `null`, a [`KmsEncryptionResult`], or the Go client's stray `3`.
        "ActionResult" => pub action_result: Option<RawJson>,
        /// Failure text, empty on success.
        "Error" => pub error: String,
    }
}

/// `ActionStatus` of a processed action: a Go `int`, so any value may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionStatus(pub i64);

impl ActionStatus {
    /// The action was carried out.
    pub const SUCCESS: ActionStatus = ActionStatus(1);
    /// The action failed; `Error` says why.
    pub const FAILED: ActionStatus = ActionStatus(2);
    /// The client does not support the action.
    pub const UNSUPPORTED: ActionStatus = ActionStatus(3);
}

go_struct! {
    /// `ActionResult` of a successful `KMSEncryption` action.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct KmsEncryptionResult {
        /// The KMS `CiphertextBlob` of the 64-byte data key.
        #[serde(with = "crate::payload::gojson::base64_bytes")]
        "KMSCipherTextKey" => pub kms_cipher_text_key: Vec<u8>,
        /// Never set by the Go client (`null`).
        #[serde(with = "crate::payload::gojson::base64_option")]
        "KMSCipherTextHash" => pub kms_cipher_text_hash: Option<Vec<u8>>,
        /// Set (true) only by challenge-aware clients; the Go client omits the key.
        #[serde(skip_serializing_if = "Option::is_none")]
        "ChallengeAcknowledgement" => pub challenge_acknowledgement: Option<bool>,
    }
}

go_struct! {
    /// PayloadType 7, agent → client: the handshake is over.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct HandshakeComplete {
        /// Nanoseconds the handshake took (Go `time.Duration`).
        "HandshakeTimeToComplete" => pub handshake_time_to_complete: i64,
        /// Text the client prints, e.g. "This session is encrypted using AWS KMS."; may be empty.
        "CustomerMessage" => pub customer_message: String,
    }
}

impl HandshakeComplete {
    /// The handshake duration (negative values read as zero).
    pub fn time_to_complete(&self) -> Duration {
        Duration::from_nanos(self.handshake_time_to_complete.max(0).unsigned_abs())
    }
}

go_struct! {
    /// PayloadTypes 8 and 9: the encryption challenge and its answer share this shape.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct EncryptionChallenge {
        /// nonce ‖ ciphertext ‖ tag of the 64-byte challenge.
        #[serde(with = "crate::payload::gojson::base64_bytes")]
        "Challenge" => pub challenge: Vec<u8>,
    }
}

go_struct! {
    /// Parameters and result of our own handshake action,
    /// [`RequestedClientAction::EXTENSIONS`]. The Go client answers it as unsupported, so only
    /// two ends built from this crate ever enable what it offers.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Extensions {
        /// Version of the extension set; 1.
        "Version" => pub version: u32,
        /// Largest plaintext chunk either end may put in one stream message.
        "MaxPayloadSize" => pub max_payload_size: u32,
        /// Whether in-order messages may be acknowledged cumulatively.
        "CumulativeAck" => pub cumulative_ack: bool,
    }
}
