//! Payload decoding accepts what Go's encoding/json accepts (PROTOCOL.md §5.1).

use ssm_session::payload::{
    Acknowledge, ActionStatus, ChannelClosed, HandshakeComplete, HandshakeRequest,
    HandshakeResponse, JsonPayload, KmsEncryptionRequest, KmsEncryptionResult,
    OpenDataChannelInput, PayloadError, RawJson, RequestedClientAction, SessionTypeRequest,
    TerminalSize,
};

#[test]
fn keys_match_in_any_case_and_unknown_keys_are_ignored() {
    let ack = Acknowledge::from_json(
        br#"{"acknowledgedmessagetype":"input_stream_data","ACKNOWLEDGEDMESSAGEID":"x",
            "acknowledgedMessageSequenceNumber":7,"isSequentialMessage":true,"Extra":[1,{"a":2}]}"#,
    )
    .unwrap();
    assert_eq!(ack.acknowledged_message_type, "input_stream_data");
    assert_eq!(ack.acknowledged_message_id, "x");
    assert_eq!(ack.acknowledged_message_sequence_number, 7);
    assert!(ack.is_sequential_message);
}

#[test]
fn missing_keys_and_nulls_leave_zero_values() {
    let size = TerminalSize::from_json(br#"{"cols":80}"#).unwrap();
    assert_eq!(size, TerminalSize { cols: 80, rows: 0 });
    let size = TerminalSize::from_json(br#"{"cols":null,"rows":24}"#).unwrap();
    assert_eq!(size, TerminalSize { cols: 0, rows: 24 });
    assert_eq!(
        HandshakeResponse::from_json(b"{}").unwrap(),
        HandshakeResponse::default()
    );
    let request =
        HandshakeRequest::from_json(br#"{"AgentVersion":"3.3.0.0","RequestedClientActions":null}"#)
            .unwrap();
    assert!(request.requested_client_actions.is_empty());
}

#[test]
fn the_last_of_repeated_keys_wins() {
    let size = TerminalSize::from_json(br#"{"cols":1,"COLS":2,"rows":3}"#).unwrap();
    assert_eq!(size.cols, 2);
}

#[test]
fn wrong_json_types_are_errors_naming_the_problem() {
    let error = TerminalSize::from_json(br#"{"cols":"wide"}"#).unwrap_err();
    assert!(matches!(error, PayloadError::Json(_)));
    assert!(
        error.to_string().contains("invalid JSON payload"),
        "{error}"
    );
    assert!(TerminalSize::from_json(br#"{"cols":-1}"#).is_err());
    assert!(TerminalSize::from_json(b"[1,2]").is_err());
    assert!(TerminalSize::from_json(b"{\"cols\":1").is_err());
    assert!(TerminalSize::from_json(b"").is_err());
}

#[test]
fn channel_closed_accepts_a_numeric_created_date_and_either_field_order() {
    let closed = ChannelClosed::from_json(
        br#"{"MessageType":"channel_closed","CreatedDate":1700000123456,"SessionId":"s-1","Output":"bye <x>"}"#,
    )
    .unwrap();
    assert_eq!(closed.created_date, "1700000123456");
    assert_eq!(closed.session_id, "s-1");
    assert_eq!(closed.output, "bye <x>");
    assert!(
        String::from_utf8(closed.to_json())
            .unwrap()
            .contains(r#""Output":"bye \u003cx\u003e""#)
    );
}

#[test]
fn handshake_actions_keep_their_parameters_until_read() {
    let request = HandshakeRequest::from_json(
        br#"{"agentversion":"3.3.0.0","requestedclientactions":[
            {"actiontype":"SessionType","actionparameters":{"sessiontype":"Port","properties":{"type":"LocalPortForwarding","portNumber":"22"}}},
            {"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"alias/k"}},
            {"ActionType":"FooAction"}]}"#,
    )
    .unwrap();
    let [session, kms, foo] = &request.requested_client_actions[..] else {
        panic!("three actions expected");
    };
    let session: SessionTypeRequest = session.parameters().unwrap();
    assert_eq!(session.session_type, "Port");
    assert_eq!(session.properties.as_ref().unwrap()["portNumber"], "22");
    // An older agent sends no Challenge.
    let kms: KmsEncryptionRequest = kms.parameters().unwrap();
    assert_eq!(
        (kms.kms_key_id.as_str(), kms.challenge.as_str()),
        ("alias/k", "")
    );
    assert_eq!(foo.action_parameters, None);
    assert_eq!(
        foo.parameters::<SessionTypeRequest>().unwrap(),
        SessionTypeRequest::default()
    );
    // Properties come out with sorted keys, as from the Go agent.
    let again = RequestedClientAction::session_type(&session);
    assert_eq!(
        again.action_parameters.unwrap().get(),
        r#"{"SessionType":"Port","Properties":{"portNumber":"22","type":"LocalPortForwarding"}}"#
    );
}

#[test]
fn action_results_keep_their_exact_text() {
    let response = HandshakeResponse::from_json(
        br#"{"ClientVersion":"1.2.0.0","ProcessedClientActions":[
            {"ActionType":"KMSEncryption","ActionStatus":1,"ActionResult":{"kmsciphertextkey":"AQID","KMSCipherTextHash":null}},
            {"ActionType":"FooAction","ActionStatus":0,"ActionResult":3,"Error":"Unsupported action FooAction"}],"Errors":null}"#,
    )
    .unwrap();
    let kms = &response.processed_client_actions[0];
    assert_eq!(kms.action_status, ActionStatus::SUCCESS);
    let result: KmsEncryptionResult = kms.action_result.as_ref().unwrap().decode().unwrap();
    assert_eq!(result.kms_cipher_text_key, [1, 2, 3]);
    assert_eq!(result.kms_cipher_text_hash, None);
    let foo = &response.processed_client_actions[1];
    assert_eq!(foo.action_status, ActionStatus(0));
    assert_eq!(foo.action_result.as_ref().map(RawJson::get), Some("3"));
    assert_eq!(response.errors, None);
}

#[test]
fn base64_fields_reject_bad_base64() {
    let error =
        KmsEncryptionResult::from_json(br#"{"KMSCipherTextKey":"not base64!"}"#).unwrap_err();
    assert!(matches!(error, PayloadError::Json(_)), "{error}");
}

#[test]
fn handshake_time_reads_as_a_duration() {
    let complete = HandshakeComplete {
        handshake_time_to_complete: 1_500_000_000,
        customer_message: String::new(),
    };
    assert_eq!(complete.time_to_complete().as_millis(), 1500);
    let negative = HandshakeComplete {
        handshake_time_to_complete: -5,
        ..complete
    };
    assert_eq!(negative.time_to_complete().as_nanos(), 0);
}

#[test]
fn tokens_never_appear_in_debug_output() {
    let input = OpenDataChannelInput {
        token_value: "SECRET-TOKEN".into(),
        ..Default::default()
    };
    let shown = format!("{input:?}");
    assert!(!shown.contains("SECRET-TOKEN"), "{shown}");
    assert!(shown.contains("<redacted>"));
}
