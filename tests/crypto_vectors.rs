//! The reference implementations' encryption vectors (tests/data/crypto.json): key split,
//! AES-GCM payloads, the agent's nonce counter, decrypt outcomes and the challenge exchange.

use serde_json::Value;
use ssm_session::crypto::{Cipher, CryptoError, Direction};
use ssm_session::payload::{EncryptionChallenge, JsonPayload};

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/data/crypto.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["cases"]
        .as_array()
        .unwrap()
        .clone()
}

fn hex(case: &Value, key: &str) -> Vec<u8> {
    hex::decode(
        case[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing")),
    )
    .unwrap()
}

fn data_key() -> [u8; 64] {
    let split = cases()
        .into_iter()
        .find(|c| c["kind"] == "key_split")
        .unwrap();
    let key: [u8; 64] = hex(&split, "data_key").try_into().unwrap();
    assert_eq!(key[..32], hex(&split, "agent_to_client_key")[..]);
    assert_eq!(key[32..], hex(&split, "client_to_agent_key")[..]);
    key
}

fn nonce(case: &Value, key: &str) -> [u8; 12] {
    hex(case, key).try_into().unwrap()
}

#[test]
fn encrypt_vectors_match_byte_for_byte() {
    let key = data_key();
    let mut agent: Option<Cipher> = None;
    let mut checked = 0;
    for case in cases().iter().filter(|c| c["kind"] == "encrypt") {
        let sealed = if case["direction"] == "client_to_agent" {
            // Our client uses a counter nonce; its first value is the initial one.
            Cipher::new(&key, Direction::Client, nonce(case, "nonce")).seal(&hex(case, "plaintext"))
        } else {
            // The agent's cases come from one counter, in order.
            agent
                .get_or_insert_with(|| Cipher::new(&key, Direction::Agent, nonce(case, "nonce")))
                .seal(&hex(case, "plaintext"))
        };
        assert_eq!(
            hex::encode(&sealed),
            case["encrypted_payload"].as_str().unwrap(),
            "{}",
            case["name"]
        );
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn the_send_counter_follows_the_agent_nonce_sequences() {
    let key = data_key();
    for case in cases()
        .iter()
        .filter(|c| c["kind"] == "agent_nonce_sequence")
    {
        let mut cipher = Cipher::new(&key, Direction::Agent, nonce(case, "initial_nonce"));
        for expected in case["nonces"].as_array().unwrap() {
            let sealed = cipher.seal(b"");
            assert_eq!(
                hex::encode(&sealed[..12]),
                expected.as_str().unwrap(),
                "{}",
                case["name"]
            );
        }
    }
}

#[test]
fn decrypt_probes_fail_cleanly_where_go_panics() {
    let key = data_key();
    for case in cases().iter().filter(|c| c["kind"] == "decrypt_probe") {
        let direction = if case["side"] == "client" {
            Direction::Client
        } else {
            Direction::Agent
        };
        let mut cipher = Cipher::new(&key, direction, [0; 12]);
        let input = hex(case, "input");
        let result = cipher.open(&input);
        match case["outcome"].as_str().unwrap() {
            "ok" => assert_eq!(result.unwrap(), hex(case, "plaintext"), "{}", case["name"]),
            "panic" => assert_eq!(
                result,
                Err(CryptoError::TooShort { len: input.len() }),
                "{}",
                case["name"]
            ),
            _ if input.len() < 28 => assert_eq!(
                result,
                Err(CryptoError::TooShort { len: input.len() }),
                "{}",
                case["name"]
            ),
            _ => assert_eq!(result, Err(CryptoError::Authentication), "{}", case["name"]),
        }
    }
}

#[test]
fn challenge_exchange_matches_the_reference() {
    let key = data_key();
    let case = cases()
        .into_iter()
        .find(|c| c["kind"] == "challenge_exchange")
        .unwrap();
    let (request, response) = (&case["request"], &case["response"]);
    let plaintext = hex(&case, "challenge_plaintext");
    let mut agent = Cipher::new(&key, Direction::Agent, nonce(request, "nonce"));
    let sealed = agent.seal(&plaintext);
    assert_eq!(hex::encode(&sealed), request["encrypted"].as_str().unwrap());
    let payload = EncryptionChallenge {
        challenge: sealed.clone(),
    }
    .to_json();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        request["payload_json"].as_str().unwrap()
    );
    let mut client = Cipher::new(&key, Direction::Client, nonce(response, "nonce"));
    let opened = client.open(&sealed).unwrap();
    assert_eq!(opened, plaintext);
    let answer = client.seal(&opened);
    assert_eq!(
        hex::encode(&answer),
        response["encrypted"].as_str().unwrap()
    );
    assert_eq!(agent.open(&answer).unwrap(), plaintext);
}
