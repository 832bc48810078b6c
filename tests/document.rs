//! Session documents: the built-ins, parameter resolution, preferences, the agent message round
//! trip, custom documents and the `allowedPattern` subset.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use ssm_session::document::{
    AgentSessionRequest, AllowedPattern, BUILTIN_DOCUMENTS, DEFAULT_DOCUMENT, Document,
    DocumentError, DocumentStore, ParameterRule, Parameters, PortKind, ResolvedSession,
    SessionType, ShellPreferences,
};

const PORT_DOCS: [&str; 3] = [
    "AWS-StartPortForwardingSession",
    "AWS-StartPortForwardingSessionToRemoteHost",
    "AWS-StartSSHSession",
];
const COMMAND_DOCS: [&str; 2] = [
    "AWS-StartInteractiveCommand",
    "AWS-StartNonInteractiveCommand",
];

fn params(pairs: &[(&str, &str)]) -> Parameters {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
        .collect()
}

fn builtin(name: &str) -> Document {
    DocumentStore::builtin()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is built in"))
}

/// The parameters each built-in needs beyond its defaults.
fn required_for(name: &str) -> Parameters {
    match name {
        "AWS-StartPortForwardingSessionToRemoteHost" => params(&[("host", "db.example.com")]),
        "AWS-StartInteractiveCommand" | "AWS-StartNonInteractiveCommand" => {
            params(&[("command", "uptime")])
        }
        _ => Parameters::new(),
    }
}

fn custom(json: Value) -> Result<Document, DocumentError> {
    Document::from_json("Custom-Doc", &json.to_string())
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(files: &[(&str, &str)]) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ssm-session-document-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write file");
        }
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Built-ins

#[test]
fn every_builtin_is_present_and_resolves_with_defaults() {
    let store = DocumentStore::builtin();
    assert_eq!(store.names().count(), BUILTIN_DOCUMENTS.len());
    assert!(store.get(DEFAULT_DOCUMENT).is_some());
    let expected_types = [
        SessionType::StandardStream,
        SessionType::Port,
        SessionType::Port,
        SessionType::Port,
        SessionType::InteractiveCommands,
        SessionType::NonInteractiveCommands,
    ];
    for (name, session_type) in BUILTIN_DOCUMENTS.into_iter().zip(expected_types) {
        let doc = store.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(doc.name(), name);
        assert_eq!(doc.session_type(), session_type, "{name}");
        assert_eq!(doc.content()["schemaVersion"], "1.0", "{name}");
        assert!(doc.description().is_some_and(|d| !d.is_empty()), "{name}");
        let resolved = doc
            .resolve(&required_for(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resolved.session_type, session_type);
        assert_eq!(resolved.port.is_some(), session_type == SessionType::Port);
        assert_eq!(
            resolved.command.is_some(),
            matches!(
                session_type,
                SessionType::InteractiveCommands | SessionType::NonInteractiveCommands
            )
        );
        assert_eq!(resolved.properties, resolved.content["properties"]);
        let serialized = serde_json::to_string(&resolved.properties).expect("json");
        assert!(!serialized.contains("{{"), "{name}: {serialized}");
    }
}

#[test]
fn builtins_have_the_aws_parameter_definitions() {
    let port_pattern = "^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
    let local_pattern = "^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
    for (name, default) in [
        ("AWS-StartPortForwardingSession", "80"),
        ("AWS-StartPortForwardingSessionToRemoteHost", "80"),
        ("AWS-StartSSHSession", "22"),
    ] {
        let doc = builtin(name);
        let port = &doc.parameters()["portNumber"];
        assert_eq!(port.default, Some(vec![default.to_owned()]), "{name}");
        assert_eq!(
            port.allowed_pattern.as_ref().map(AllowedPattern::as_str),
            Some(port_pattern)
        );
        assert_eq!(
            doc.content()["properties"]["portNumber"],
            "{{ portNumber }}"
        );
    }
    for name in &PORT_DOCS[..2] {
        let doc = builtin(name);
        let local = &doc.parameters()["localPortNumber"];
        assert_eq!(local.default, Some(vec!["0".to_owned()]));
        assert_eq!(
            local.allowed_pattern.as_ref().map(AllowedPattern::as_str),
            Some(local_pattern)
        );
        assert_eq!(doc.content()["properties"]["type"], "LocalPortForwarding");
        assert_eq!(
            doc.content()["properties"]["localPortNumber"],
            "{{ localPortNumber }}"
        );
    }
    let remote = builtin("AWS-StartPortForwardingSessionToRemoteHost");
    assert_eq!(remote.parameters()["host"].default, None);
    assert_eq!(remote.content()["properties"]["host"], "{{ host }}");
    let ssh = builtin("AWS-StartSSHSession");
    assert_eq!(ssh.parameters().len(), 1);
    assert!(ssh.content()["properties"].get("type").is_none());
    for name in COMMAND_DOCS {
        let doc = builtin(name);
        assert_eq!(doc.parameters()["command"].default, None);
        assert_eq!(
            doc.content()["properties"]["linux"]["commands"],
            "{{ command }}"
        );
        assert_eq!(doc.content()["properties"]["linux"]["runAsElevated"], false);
    }
    let shell = builtin(DEFAULT_DOCUMENT);
    let inputs = &shell.content()["inputs"];
    for key in [
        "s3BucketName",
        "s3KeyPrefix",
        "s3EncryptionEnabled",
        "cloudWatchLogGroupName",
        "cloudWatchEncryptionEnabled",
        "cloudWatchStreamingEnabled",
        "kmsKeyId",
        "runAsEnabled",
        "runAsDefaultUser",
        "idleSessionTimeout",
        "maxSessionDuration",
    ] {
        assert!(inputs.get(key).is_some(), "inputs.{key}");
    }
    assert_eq!(inputs["shellProfile"], json!({"windows": "", "linux": ""}));
}

#[test]
fn default_shell_has_aws_default_preferences() {
    let doc = builtin(DEFAULT_DOCUMENT);
    let prefs = doc.preferences().expect("valid inputs");
    assert_eq!(prefs, ShellPreferences::default());
    assert_eq!(prefs.idle_session_timeout, Duration::from_secs(20 * 60));
    assert_eq!(prefs.max_session_duration, None);
    assert_eq!(prefs.kms_key_id, None);
    assert!(!prefs.run_as_enabled);
    assert_eq!(prefs.run_as_default_user, None);
    assert_eq!(prefs.shell_profile_linux, None);
    let resolved = doc.resolve(&Parameters::new()).expect("resolves");
    assert_eq!(resolved.preferences, prefs);
    assert_eq!(resolved.properties, Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Port documents

#[test]
fn port_number_validation() {
    for name in PORT_DOCS {
        let doc = builtin(name);
        for bad in [
            "0",
            "65536",
            "abc",
            "",
            "080",
            "-1",
            " 80",
            "99999999999999999999",
        ] {
            let mut given = required_for(name);
            given.insert("portNumber".into(), vec![bad.into()]);
            match doc.resolve(&given) {
                Err(DocumentError::ParameterValue {
                    parameter,
                    value,
                    rule: ParameterRule::AllowedPattern(_),
                }) => {
                    assert_eq!(parameter, "portNumber");
                    assert_eq!(value, bad);
                }
                other => panic!("{name} portNumber {bad:?}: {other:?}"),
            }
        }
        for (good, port) in [("1", 1), ("65535", 65535), ("8080", 8080)] {
            let mut given = required_for(name);
            given.insert("portNumber".into(), vec![good.into()]);
            let resolved = doc
                .resolve(&given)
                .unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(resolved.port.map(|p| p.port), Some(port));
            assert_eq!(resolved.properties["portNumber"], good);
        }
    }
}

#[test]
fn local_port_number_validation() {
    let doc = builtin("AWS-StartPortForwardingSession");
    for (value, expected) in [("0", None), ("1", Some(1)), ("65535", Some(65535))] {
        let resolved = doc
            .resolve(&params(&[("localPortNumber", value)]))
            .expect("valid");
        assert_eq!(
            resolved.port.and_then(|p| p.local_port),
            expected,
            "{value}"
        );
    }
    for bad in ["65536", "x", "00"] {
        assert!(matches!(
            doc.resolve(&params(&[("localPortNumber", bad)])),
            Err(DocumentError::ParameterValue { parameter, .. }) if parameter == "localPortNumber"
        ));
    }
}

#[test]
fn port_forwarding_defaults() {
    let resolved = builtin("AWS-StartPortForwardingSession")
        .resolve(&Parameters::new())
        .expect("defaults");
    assert_eq!(
        resolved.properties,
        json!({"portNumber": "80", "type": "LocalPortForwarding", "localPortNumber": "0"})
    );
    let target = resolved.port.expect("port");
    assert_eq!(target.port, 80);
    assert_eq!(target.host, None);
    assert_eq!(target.local_port, None);
    assert_eq!(target.local_unix_socket, None);
    assert_eq!(target.kind, PortKind::LocalPortForwarding);
    assert_eq!(
        resolved.parameters,
        params(&[("localPortNumber", "0"), ("portNumber", "80")])
    );
}

#[test]
fn ssh_document_uses_standard_stream_forwarding() {
    let resolved = builtin("AWS-StartSSHSession")
        .resolve(&Parameters::new())
        .expect("defaults");
    assert_eq!(resolved.properties, json!({"portNumber": "22"}));
    let target = resolved.port.expect("port");
    assert_eq!((target.port, target.kind), (22, PortKind::Standard));
    assert_eq!(target.host, None);
}

#[test]
fn remote_host_document_requires_and_uses_host() {
    let doc = builtin("AWS-StartPortForwardingSessionToRemoteHost");
    match doc.resolve(&Parameters::new()) {
        Err(DocumentError::MissingParameter { parameter }) => assert_eq!(parameter, "host"),
        other => panic!("{other:?}"),
    }
    let resolved = doc
        .resolve(&params(&[
            ("host", "db.example.com"),
            ("portNumber", "5432"),
            ("localPortNumber", "15432"),
        ]))
        .expect("valid");
    assert_eq!(resolved.properties["host"], "db.example.com");
    let target = resolved.port.expect("port");
    assert_eq!(target.host.as_deref(), Some("db.example.com"));
    assert_eq!((target.port, target.local_port), (5432, Some(15432)));
    assert_eq!(target.kind, PortKind::LocalPortForwarding);
    for good in ["10.0.0.1", "fe80::1", "my-db.internal"] {
        assert!(doc.resolve(&params(&[("host", good)])).is_ok(), "{good}");
    }
    for bad in ["ab", "a;b.example", "$(id)", "a b|c", "x`y`z", "a=b"] {
        assert!(
            matches!(
                doc.resolve(&params(&[("host", bad)])),
                Err(DocumentError::ParameterValue { ref parameter, .. }) if parameter == "host"
            ),
            "{bad}"
        );
    }
}

#[test]
fn unix_socket_and_numeric_port_properties() {
    let doc = custom(json!({
        "schemaVersion": "1.0",
        "sessionType": "Port",
        "properties": {"portNumber": 8443, "type": "LocalPortForwarding",
                       "localConnectionType": "unix", "localUnixSocket": "/tmp/s.sock"}
    }))
    .expect("valid");
    let target = doc
        .resolve(&Parameters::new())
        .expect("resolves")
        .port
        .expect("port");
    assert_eq!(target.port, 8443);
    assert_eq!(target.local_unix_socket.as_deref(), Some("/tmp/s.sock"));
}

// ---------------------------------------------------------------------------------------------
// Command documents and substitution

#[test]
fn command_documents_substitute_the_command() {
    for (name, session_type) in COMMAND_DOCS.into_iter().zip([
        SessionType::InteractiveCommands,
        SessionType::NonInteractiveCommands,
    ]) {
        let doc = builtin(name);
        let command = r#"sh -c 'echo "a b" | tr a-z A-Z' && echo {{ command }}"#;
        let resolved = doc
            .resolve(&params(&[("command", command)]))
            .expect("valid");
        assert_eq!(resolved.session_type, session_type);
        // One pass: the `{{ command }}` the value brings in stays literal.
        assert_eq!(resolved.command.as_deref(), Some(command));
        assert!(!resolved.run_as_elevated);
        for platform in ["linux", "windows", "macos"] {
            assert_eq!(
                resolved.properties[platform]["commands"], command,
                "{platform}"
            );
        }
        assert!(matches!(
            doc.resolve(&Parameters::new()),
            Err(DocumentError::MissingParameter { parameter }) if parameter == "command"
        ));
        assert!(matches!(
            doc.resolve(&params(&[("command", "  ")])),
            Err(DocumentError::Property { property, .. }) if property == "linux.commands"
        ));
    }
}

#[test]
fn placeholders_with_and_without_spaces() {
    let doc = custom(json!({
        "schemaVersion": "1.0",
        "sessionType": "InteractiveCommands",
        "parameters": {
            "a": {"type": "String", "default": "A"},
            "b": {"type": "String", "default": "B"},
            "list": {"type": "StringList", "default": ["x", "y"]}
        },
        "properties": {
            "linux": {"commands": "{{a}} {{ a }} {{\tb }} pre-{{b}}-post {{ ssm:secret }} {{ nope }}",
                      "runAsElevated": true},
            "exact": "{{ list }}",
            "inline": "items={{list}}",
            "nested": [{"deep": "{{ b }}"}, 7, null]
        }
    }))
    .expect("valid");
    let resolved = doc.resolve(&Parameters::new()).expect("defaults");
    assert_eq!(
        resolved.command.as_deref(),
        Some("A A B pre-B-post {{ ssm:secret }} {{ nope }}")
    );
    assert!(resolved.run_as_elevated);
    assert_eq!(resolved.properties["exact"], json!(["x", "y"]));
    assert_eq!(resolved.properties["inline"], r#"items=["x","y"]"#);
    assert_eq!(
        resolved.properties["nested"],
        json!([{"deep": "B"}, 7, null])
    );
}

#[test]
fn unknown_parameter_is_refused() {
    let doc = builtin("AWS-StartPortForwardingSession");
    let error = doc
        .resolve(&params(&[("portNumber", "80"), ("hostname", "x")]))
        .expect_err("unknown");
    match &error {
        DocumentError::UnknownParameter {
            parameter,
            accepted,
        } => {
            assert_eq!(parameter, "hostname");
            assert_eq!(accepted, &["localPortNumber", "portNumber"]);
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("hostname") && message.contains("localPortNumber"),
        "{message}"
    );
    assert!(matches!(
        builtin(DEFAULT_DOCUMENT).resolve(&params(&[("x", "y")])),
        Err(DocumentError::UnknownParameter { .. })
    ));
}

#[test]
fn string_parameters_take_exactly_one_value() {
    let doc = builtin("AWS-StartSSHSession");
    for values in [vec![], vec!["22".to_owned(), "23".to_owned()]] {
        let given = Parameters::from([("portNumber".to_owned(), values)]);
        assert!(matches!(
            doc.resolve(&given),
            Err(DocumentError::ParameterValue {
                rule: ParameterRule::SingleValue,
                ..
            })
        ));
    }
}

#[test]
fn typed_rules_allowed_values_and_limits() {
    let doc = custom(json!({
        "schemaVersion": "1.0",
        "sessionType": "NonInteractiveCommands",
        "parameters": {
            "mode": {"type": "String", "allowedValues": ["fast", "slow"], "default": "fast"},
            "name": {"type": "String", "minChars": 2, "maxChars": "4", "default": "ab"},
            "files": {"type": "StringList", "minItems": 1, "maxItems": 2, "default": ["a"],
                      "allowedPattern": "^[a-z]+$"},
            "verbose": {"type": "Boolean", "default": false},
            "count": {"type": "Integer", "default": 3}
        },
        "properties": {"linux": {"commands": "run {{ mode }} {{ name }} {{ files }} {{ verbose }} {{ count }}"}}
    }))
    .expect("valid");
    let resolved = doc.resolve(&Parameters::new()).expect("defaults");
    assert_eq!(
        resolved.command.as_deref(),
        Some(r#"run fast ab ["a"] false 3"#)
    );
    let rule_of = |given: Parameters| match doc.resolve(&given) {
        Err(DocumentError::ParameterValue { rule, .. }) => rule,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rule_of(params(&[("mode", "medium")])),
        ParameterRule::AllowedValues(vec!["fast".into(), "slow".into()])
    );
    assert_eq!(
        rule_of(params(&[("name", "a")])),
        ParameterRule::MinChars(2)
    );
    assert_eq!(
        rule_of(params(&[("name", "abcde")])),
        ParameterRule::MaxChars(4)
    );
    assert_eq!(
        rule_of(Parameters::from([("files".into(), vec![])])),
        ParameterRule::MinItems(1)
    );
    assert_eq!(
        rule_of(Parameters::from([(
            "files".into(),
            vec!["a".into(), "b".into(), "c".into()]
        )])),
        ParameterRule::MaxItems(2)
    );
    assert!(matches!(
        rule_of(Parameters::from([("files".into(), vec!["A".into()])])),
        ParameterRule::AllowedPattern(_)
    ));
    assert_eq!(
        rule_of(params(&[("verbose", "yes")])),
        ParameterRule::Boolean
    );
    assert_eq!(rule_of(params(&[("count", "3.5")])), ParameterRule::Integer);
    let two = doc
        .resolve(&Parameters::from([(
            "files".into(),
            vec!["x".into(), "y".into()],
        )]))
        .expect("two files");
    assert_eq!(
        two.command.as_deref(),
        Some(r#"run fast ab ["x","y"] false 3"#)
    );
}

// ---------------------------------------------------------------------------------------------
// Preferences

fn shell_with_inputs(inputs: Value) -> Result<Document, DocumentError> {
    custom(json!({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": inputs}))
}

#[test]
fn preferences_parse_with_fractional_minutes() {
    let doc = shell_with_inputs(json!({
        "kmsKeyId": "alias/sessions",
        "runAsEnabled": "true",
        "runAsDefaultUser": "ops",
        "idleSessionTimeout": "0.05",
        "maxSessionDuration": "1.5",
        "shellProfile": {"windows": "date", "linux": "cd /srv && exec bash -l"}
    }))
    .expect("valid");
    let prefs = doc.preferences().expect("valid");
    assert_eq!(prefs.kms_key_id.as_deref(), Some("alias/sessions"));
    assert!(prefs.run_as_enabled);
    assert_eq!(prefs.run_as_default_user.as_deref(), Some("ops"));
    assert_eq!(prefs.idle_session_timeout, Duration::from_secs(3));
    assert_eq!(prefs.max_session_duration, Some(Duration::from_secs(90)));
    assert_eq!(
        prefs.shell_profile_linux.as_deref(),
        Some("cd /srv && exec bash -l")
    );
}

#[test]
fn preferences_accept_numbers_bounds_and_empty_values() {
    let cases = [
        (
            json!({"idleSessionTimeout": 60, "maxSessionDuration": 1440}),
            3600,
            Some(86_400),
        ),
        (
            json!({"idleSessionTimeout": "1", "maxSessionDuration": ""}),
            60,
            None,
        ),
        (
            json!({"idleSessionTimeout": "", "maxSessionDuration": null}),
            1200,
            None,
        ),
        (json!({"idleSessionTimeout": " 20 "}), 1200, None),
        (json!({}), 1200, None),
    ];
    for (inputs, idle, max) in cases {
        let prefs = shell_with_inputs(inputs.clone())
            .and_then(|d| d.preferences())
            .unwrap_or_else(|e| panic!("{inputs}: {e}"));
        assert_eq!(
            prefs.idle_session_timeout,
            Duration::from_secs(idle),
            "{inputs}"
        );
        assert_eq!(
            prefs.max_session_duration,
            max.map(Duration::from_secs),
            "{inputs}"
        );
    }
    let empty = shell_with_inputs(json!({"kmsKeyId": "", "runAsDefaultUser": "",
                                         "runAsEnabled": false, "shellProfile": {"linux": ""}}))
    .and_then(|d| d.preferences())
    .expect("valid");
    assert_eq!(empty, ShellPreferences::default());
}

#[test]
fn invalid_preferences_are_refused_naming_the_input() {
    for (inputs, input) in [
        (json!({"idleSessionTimeout": "0"}), "idleSessionTimeout"),
        (json!({"idleSessionTimeout": "61"}), "idleSessionTimeout"),
        (
            json!({"idleSessionTimeout": "twenty"}),
            "idleSessionTimeout",
        ),
        (json!({"idleSessionTimeout": true}), "idleSessionTimeout"),
        (json!({"maxSessionDuration": "1441"}), "maxSessionDuration"),
        (json!({"maxSessionDuration": "-5"}), "maxSessionDuration"),
        (json!({"runAsEnabled": "maybe"}), "runAsEnabled"),
        (json!({"kmsKeyId": 7}), "kmsKeyId"),
        (json!({"shellProfile": "bash"}), "shellProfile"),
        (json!({"shellProfile": {"linux": 1}}), "shellProfile.linux"),
    ] {
        match shell_with_inputs(inputs.clone()) {
            Err(DocumentError::Input { input: found, .. }) => assert_eq!(found, input, "{inputs}"),
            other => panic!("{inputs}: {other:?}"),
        }
    }
    let message = shell_with_inputs(json!({"idleSessionTimeout": "61"}))
        .expect_err("refused")
        .to_string();
    assert!(
        message.contains("idleSessionTimeout") && message.contains("1 to 60"),
        "{message}"
    );
}

#[test]
fn preferences_come_from_substituted_inputs() {
    let doc = custom(json!({
        "schemaVersion": "1.0",
        "sessionType": "Standard_Stream",
        "parameters": {
            "idle": {"type": "String", "default": "5", "allowedPattern": "^[0-9.]+$"},
            "profile": {"type": "String", "default": "exec bash -l"}
        },
        "inputs": {"idleSessionTimeout": "{{ idle }}", "shellProfile": {"linux": "{{profile}}"}}
    }))
    .expect("valid");
    assert!(matches!(
        doc.preferences(),
        Err(DocumentError::Input { .. })
    ));
    let resolved = doc.resolve(&params(&[("idle", "0.5")])).expect("valid");
    assert_eq!(
        resolved.preferences.idle_session_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(
        resolved.preferences.shell_profile_linux.as_deref(),
        Some("exec bash -l")
    );
    assert_eq!(resolved.content["inputs"]["idleSessionTimeout"], "0.5");
    assert!(matches!(
        doc.resolve(&params(&[("idle", "90")])),
        Err(DocumentError::Input { input, .. }) if input == "idleSessionTimeout"
    ));
}

// ---------------------------------------------------------------------------------------------
// Agent message round trip

fn assert_same_session(request: &AgentSessionRequest, resolved: &ResolvedSession) {
    assert_eq!(&request.session, resolved);
}

#[test]
fn agent_message_round_trip_for_every_builtin() {
    for name in BUILTIN_DOCUMENTS {
        let doc = builtin(name);
        let resolved = doc.resolve(&required_for(name)).expect("resolves");
        let content = doc.agent_message_content(
            &resolved,
            "alice-0123456789abcdef0",
            Some("ops"),
            "arn:aws:iam::123456789012:user/alice",
        );
        assert_eq!(content["DocumentName"], name);
        assert_eq!(content["SessionId"], "alice-0123456789abcdef0");
        assert_eq!(content["RunAsUser"], "ops");
        assert_eq!(
            content["SessionOwner"],
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(
            content["DocumentContent"]["sessionType"],
            doc.session_type().as_str()
        );
        assert_eq!(
            content["DocumentContent"]["properties"],
            resolved.properties
        );
        for (parameter, values) in &resolved.parameters {
            assert_eq!(
                content["Parameters"][parameter], values[0],
                "String → string"
            );
        }
        let request = AgentSessionRequest::from_json(&content.to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(request.document_name, name);
        assert_eq!(request.session_id, "alice-0123456789abcdef0");
        assert_eq!(request.run_as_user.as_deref(), Some("ops"));
        assert_eq!(
            request.session_owner,
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_same_session(&request, &resolved);
    }
}

#[test]
fn agent_message_round_trip_with_lists_and_preferences() {
    let doc = custom(json!({
        "schemaVersion": "1.0",
        "sessionType": "InteractiveCommands",
        "parameters": {
            "files": {"type": "StringList", "default": ["a", "b"]},
            "idle": {"type": "String", "default": "0.1"}
        },
        "inputs": {"idleSessionTimeout": "{{ idle }}", "runAsEnabled": true,
                   "kmsKeyId": "alias/k"},
        "properties": {"linux": {"commands": "ls {{ files }}", "runAsElevated": "true"}}
    }))
    .expect("valid");
    let resolved = doc.resolve(&Parameters::new()).expect("defaults");
    let content = doc.agent_message_content(&resolved, "s-1", None, "owner");
    assert_eq!(content["Parameters"]["files"], json!(["a", "b"]));
    assert_eq!(content["RunAsUser"], "");
    let request = AgentSessionRequest::from_value(&content).expect("parses");
    assert_eq!(request.run_as_user, None);
    assert_eq!(
        request.session.preferences.idle_session_timeout,
        Duration::from_secs(6)
    );
    assert_eq!(
        request.session.preferences.kms_key_id.as_deref(),
        Some("alias/k")
    );
    assert!(request.session.run_as_elevated);
    assert_same_session(&request, &resolved);
}

#[test]
fn agent_request_is_lenient_like_go() {
    let document = builtin("AWS-StartSSHSession")
        .resolve(&params(&[("portNumber", "2222")]))
        .expect("valid")
        .content;
    let text = json!({
        "documentname": "AWS-StartSSHSession",
        "DOCUMENTCONTENT": document.to_string(),
        "sessionId": "s-2",
        "parameters": {"portNumber": ["2222"], "ignored": null},
        "ClientId": "unknown keys are skipped",
        "sessionowner": "arn:aws:iam::1:user/b"
    })
    .to_string();
    let request = AgentSessionRequest::from_json(&text).expect("lenient");
    assert_eq!(request.session_id, "s-2");
    assert_eq!(request.run_as_user, None);
    assert_eq!(request.session_owner, "arn:aws:iam::1:user/b");
    assert_eq!(
        request.session.parameters,
        params(&[("portNumber", "2222")])
    );
    assert_eq!(
        request.session.port.map(|p| (p.port, p.kind)),
        Some((2222, PortKind::Standard))
    );
}

#[test]
fn agent_request_does_not_substitute_again() {
    let doc = builtin("AWS-StartNonInteractiveCommand");
    let resolved = doc
        .resolve(&params(&[("command", "echo {{ command }}")]))
        .expect("valid");
    let content = doc.agent_message_content(&resolved, "s-3", None, "o");
    let request = AgentSessionRequest::from_value(&content).expect("parses");
    assert_eq!(
        request.session.command.as_deref(),
        Some("echo {{ command }}")
    );
}

#[test]
fn malformed_agent_requests_are_refused() {
    let content = builtin(DEFAULT_DOCUMENT).content().clone();
    for bad in [
        "not json".to_owned(),
        "[]".to_owned(),
        json!({"DocumentName": DEFAULT_DOCUMENT, "DocumentContent": content}).to_string(),
        json!({"DocumentName": DEFAULT_DOCUMENT, "SessionId": "s"}).to_string(),
        json!({"DocumentName": DEFAULT_DOCUMENT, "SessionId": 5, "DocumentContent": content})
            .to_string(),
        json!({"DocumentName": DEFAULT_DOCUMENT, "SessionId": "s", "DocumentContent": content,
               "Parameters": {"x": {"y": 1}}})
        .to_string(),
        json!({"DocumentName": DEFAULT_DOCUMENT, "SessionId": "s",
               "DocumentContent": {"schemaVersion": "2.2", "sessionType": "Port"}})
        .to_string(),
    ] {
        assert!(AgentSessionRequest::from_json(&bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Custom documents

#[test]
fn valid_custom_document() {
    let doc = custom(json!({
        "schemaVersion": "1.0",
        "description": "Forward to the database only",
        "sessionType": "Port",
        "parameters": {
            "localPortNumber": {
                "type": "string",
                "description": "Local port",
                "allowedPattern": "^\\d{1,5}$",
                "default": "5432",
                "displayType": "ignored unknown key"
            }
        },
        "properties": {"portNumber": "5432", "host": "db.internal", "type": "LocalPortForwarding",
                       "localPortNumber": "{{ localPortNumber }}"}
    }))
    .expect("valid");
    assert_eq!(doc.name(), "Custom-Doc");
    assert_eq!(doc.description(), Some("Forward to the database only"));
    let target = doc
        .resolve(&Parameters::new())
        .expect("defaults")
        .port
        .expect("port");
    assert_eq!(target.host.as_deref(), Some("db.internal"));
    assert_eq!((target.port, target.local_port), (5432, Some(5432)));
}

#[test]
fn invalid_session_type_is_refused() {
    for session_type in ["Shell", "standard_stream", "port", ""] {
        match custom(json!({"schemaVersion": "1.0", "sessionType": session_type})) {
            Err(DocumentError::UnknownSessionType { found, .. }) => assert_eq!(found, session_type),
            other => panic!("{session_type}: {other:?}"),
        }
    }
}

#[test]
fn malformed_documents_are_refused() {
    let cases = [
        json!([]),
        json!({"sessionType": "Standard_Stream"}),
        json!({"schemaVersion": "2.2", "sessionType": "Standard_Stream"}),
        json!({"schemaVersion": 1.0, "sessionType": "Standard_Stream"}),
        json!({"schemaVersion": "1.0"}),
        json!({"schemaVersion": "1.0", "sessionType": 4}),
        json!({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": []}),
        json!({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "parameters": []}),
        json!({"schemaVersion": "1.0", "sessionType": "Standard_Stream", "description": 3}),
        json!({"schemaVersion": "1.0", "sessionType": "Port", "properties": {"type": "x"}}),
        json!({"schemaVersion": "1.0", "sessionType": "Port"}),
        json!({"schemaVersion": "1.0", "sessionType": "Port", "properties": "portNumber"}),
        json!({"schemaVersion": "1.0", "sessionType": "InteractiveCommands",
               "properties": {"windows": {"commands": "dir"}}}),
        json!({"schemaVersion": "1.0", "sessionType": "Port",
               "properties": {"portNumber": "http"}}),
    ];
    for case in cases {
        assert!(
            matches!(custom(case.clone()), Err(DocumentError::Shape { .. })),
            "{case}: {:?}",
            custom(case.clone())
        );
    }
    assert!(matches!(
        Document::from_json("Custom-Doc", "{\"schemaVersion\": "),
        Err(DocumentError::Json { .. })
    ));
    assert!(matches!(
        Document::from_json("x", "{}"),
        Err(DocumentError::InvalidName { .. })
    ));
}

#[test]
fn bad_parameter_definitions_are_refused() {
    let cases = [
        ("port-number", json!({"type": "String"}), "letters"),
        ("p", json!("String"), "object"),
        ("p", json!({}), "type is missing"),
        ("p", json!({"type": "Number"}), "not supported"),
        ("p", json!({"type": 1}), "type must be"),
        (
            "p",
            json!({"type": "String", "default": ["a"]}),
            "default must be",
        ),
        (
            "p",
            json!({"type": "StringList", "default": "a"}),
            "default must be",
        ),
        (
            "p",
            json!({"type": "String", "allowedValues": "a"}),
            "allowedValues",
        ),
        (
            "p",
            json!({"type": "String", "allowedValues": []}),
            "allowedValues",
        ),
        (
            "p",
            json!({"type": "String", "allowedValues": [{}]}),
            "allowedValues",
        ),
        (
            "p",
            json!({"type": "String", "allowedPattern": 5}),
            "allowedPattern must be",
        ),
        (
            "p",
            json!({"type": "String", "allowedPattern": "^(?i)x$"}),
            "not supported",
        ),
        (
            "p",
            json!({"type": "String", "maxChars": "many"}),
            "maxChars",
        ),
        ("p", json!({"type": "String", "minItems": -1}), "minItems"),
        (
            "p",
            json!({"type": "String", "description": ["d"]}),
            "description",
        ),
        (
            "p",
            json!({"type": "String", "allowedPattern": "^[0-9]+$", "default": "x"}),
            "default is invalid",
        ),
        (
            "p",
            json!({"type": "String", "allowedValues": ["a"], "default": "b"}),
            "default is invalid",
        ),
        (
            "p",
            json!({"type": "Boolean", "default": "yes"}),
            "default is invalid",
        ),
    ];
    for (name, definition, hint) in cases {
        let result = custom(json!({
            "schemaVersion": "1.0",
            "sessionType": "Standard_Stream",
            "parameters": {name: definition}
        }));
        match &result {
            Err(error @ DocumentError::ParameterDefinition { parameter, .. }) => {
                assert_eq!(parameter, name);
                assert!(error.to_string().contains(hint), "{definition}: {error}");
            }
            other => panic!("{definition}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store

const TOP: &str = r#"{"schemaVersion": "1.0", "sessionType": "InteractiveCommands",
                      "properties": {"linux": {"commands": "top"}}}"#;
const SHORT_SHELL: &str = r#"{"schemaVersion": "1.0", "sessionType": "Standard_Stream",
                              "inputs": {"idleSessionTimeout": "5"}}"#;

#[test]
fn load_dir_adds_custom_documents() {
    let dir = TempDir::new(&[
        ("Top.json", TOP),
        ("Team.Shell_v2.json", SHORT_SHELL),
        ("notes.txt", "not a document"),
    ]);
    std::fs::create_dir(dir.0.join("sub.json")).expect("subdir is skipped");
    let mut store = DocumentStore::builtin();
    assert_eq!(store.load_dir(&dir.0).expect("loads"), 2);
    assert_eq!(
        store.get("Top").map(Document::session_type),
        Some(SessionType::InteractiveCommands)
    );
    let shell = store.get("Team.Shell_v2").expect("loaded");
    assert_eq!(
        shell.preferences().expect("valid").idle_session_timeout,
        Duration::from_secs(300)
    );
    assert_eq!(store.names().count(), BUILTIN_DOCUMENTS.len() + 2);
    // Loading the same directory again collides with what is loaded.
    match store.load_dir(&dir.0) {
        Err(DocumentError::File { source, .. }) => {
            assert!(
                matches!(*source, DocumentError::Duplicate { .. }),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_dir_refuses_builtin_and_reserved_names() {
    for file in [
        "AWS-StartSSHSession.json",
        "AWS-Mine.json",
        "aws-mine.json",
        "AmazonThing.json",
        "AMZN-x.json",
    ] {
        let dir = TempDir::new(&[(file, TOP)]);
        match DocumentStore::builtin().load_dir(&dir.0) {
            Err(error @ DocumentError::File { .. }) => {
                let DocumentError::File { source, path } = &error else {
                    unreachable!()
                };
                assert!(
                    matches!(**source, DocumentError::ReservedName { .. }),
                    "{file}"
                );
                assert!(path.ends_with(file));
                assert!(error.to_string().contains("reserved"), "{error}");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn load_dir_refuses_invalid_names_and_documents_all_or_nothing() {
    for (file, text) in [
        ("ab.json", TOP),
        ("Bad Name.json", TOP),
        ("Broken.json", "{"),
        (
            "Wrong.json",
            r#"{"schemaVersion": "1.0", "sessionType": "Telnet"}"#,
        ),
    ] {
        let dir = TempDir::new(&[("Aaa-Good.json", TOP), (file, text)]);
        let mut store = DocumentStore::builtin();
        assert!(
            matches!(store.load_dir(&dir.0), Err(DocumentError::File { .. })),
            "{file}"
        );
        assert!(
            store.get("Aaa-Good").is_none(),
            "nothing added after {file}"
        );
    }
    let missing = std::env::temp_dir().join("ssm-session-document-test-does-not-exist");
    assert!(matches!(
        DocumentStore::builtin().load_dir(&missing),
        Err(DocumentError::Io { .. })
    ));
}

#[test]
fn the_default_shell_document_can_be_replaced() {
    let dir = TempDir::new(&[("SSM-SessionManagerRunShell.json", SHORT_SHELL)]);
    let mut store = DocumentStore::builtin();
    assert_eq!(store.load_dir(&dir.0).expect("replaces"), 1);
    let prefs = store
        .get(DEFAULT_DOCUMENT)
        .expect("present")
        .preferences()
        .expect("valid");
    assert_eq!(prefs.idle_session_timeout, Duration::from_secs(300));
    assert_eq!(store.names().count(), BUILTIN_DOCUMENTS.len());
    assert!(matches!(
        store.load_dir(&dir.0),
        Err(DocumentError::File { source, .. }) if matches!(*source, DocumentError::Duplicate { .. })
    ));
    let port = TempDir::new(&[("SSM-SessionManagerRunShell.json", TOP)]);
    assert!(DocumentStore::builtin().load_dir(&port.0).is_err());
}

// ---------------------------------------------------------------------------------------------
// allowedPattern subset

#[test]
fn allowed_pattern_table() {
    let port = "^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
    let host = r#"^[^,$^&\(\)!;'"<>\`{}\[\]\|#=]{3,}$"#;
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            port,
            &["1", "22", "443", "8080", "65535", "10000"],
            &["0", "65536", "080", "", "1a", "99999"],
        ),
        (
            host,
            &["db.example.com", "10.0.0.1", "fe80::1%eth0"],
            &["ab", "a,b,c", "x$(y)", "a b{c}", "[::1]", "a=bc"],
        ),
        (
            "^[a-zA-Z0-9-_/]+(.log)$",
            &["/var/log/x.log", "a-b_c/dlog", "a.log"],
            &["x.txt", ".log", "a b.log"],
        ),
        ("^1080$", &["1080"], &["10800", "1080\n", " 1080"]),
        ("^(80|443)$", &["80", "443"], &["8", "4430", ""]),
        ("abc", &["abc", "xxabcxx"], &["ab", "acb"]),
        ("^a*$", &["", "a", "aaaa"], &["b", "ab"]),
        (
            "^a+b?c{2}d{1,}e{0,2}$",
            &["accd", "abccd", "aaccddee"],
            &["acc", "abbccd", "accdeee"],
        ),
        (
            r"^\d{3}-\w+\s?\S$",
            &["123-ab_9 x", "000-zz!"],
            &["12-ab x", "123- x"],
        ),
        (r"^[^\d]+$", &["abc", "é"], &["a1", ""]),
        (
            r"^[\w.-]+@[a-z]+\.(com|org)$",
            &["a.b-c@x.com", "_@y.org"],
            &["a@x.net", "@x.com"],
        ),
        (r"^(?:ab|cd)*?$", &["", "ab", "abcdab"], &["abc", "a"]),
        (
            r"^\.\*\+\?\(\)\[\]\{\}\|\\\^\$\/$",
            &[r".*+?()[]{}|\^$/"],
            &["x"],
        ),
        ("^[]a]+$", &["]", "a]a"], &["b"]),
        ("^[a-]$|^[-b]$", &["a", "-", "b"], &["c"]),
        ("^.{2}$", &["ab", "éü"], &["a", "abc", "a\n"]),
        (r"\Aend\z", &["end"], &["end\n", "xend"]),
        ("^(a|ab)(c|bcd)(d*)$", &["abcd", "acd", "abcdddd"], &["abd"]),
        (r"^[\t\n\r ]$", &["\t", "\n", " "], &["x"]),
        ("^x{0}y$", &["y"], &["xy"]),
        ("", &["", "anything"], &[]),
        (
            "^(a*)*$",
            &["", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
            &["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"],
        ),
    ];
    for (pattern, accepted, refused) in table {
        let compiled = AllowedPattern::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(compiled.as_str(), *pattern);
        for value in *accepted {
            assert!(
                compiled.is_match(value),
                "{pattern} should accept {value:?}"
            );
        }
        for value in *refused {
            assert!(
                !compiled.is_match(value),
                "{pattern} should refuse {value:?}"
            );
        }
    }
}

#[test]
fn unsupported_pattern_syntax_is_refused() {
    for pattern in [
        r"^\bword$",
        "^(?i)abc$",
        "^(?P<name>a)$",
        r"^(a)\1$",
        r"^\p{L}+$",
        r"^\x41$",
        "^[[:alpha:]]+$",
        "^a{2,1}$",
        "^a{1001}$",
        "^a{x}$",
        "^{2}$",
        "^a**$",
        "^*a$",
        "^(ab$",
        "^ab)$",
        "^[ab$",
        "^[z-a]$",
        "^a\\",
        r"^\q$",
        "^(a{1000}){20}$",
        "^^*$",
    ] {
        match AllowedPattern::new(pattern) {
            Err(error @ DocumentError::Pattern { .. }) => {
                assert!(error.to_string().contains("allowedPattern"), "{error}");
            }
            other => panic!("{pattern}: {other:?}"),
        }
    }
    let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
    assert!(AllowedPattern::new(&deep).is_err());
}

// ---------------------------------------------------------------------------------------------
// Properties

fn parameter_map() -> impl Strategy<Value = Parameters> {
    let name = prop_oneof![
        Just("portNumber".to_owned()),
        Just("localPortNumber".to_owned()),
        Just("host".to_owned()),
        Just("command".to_owned()),
        "[a-zA-Z]{0,12}",
        ".{0,8}",
    ];
    let value = prop_oneof![
        "[0-9]{0,6}",
        ".{0,40}",
        "\\{\\{ ?(host|command|portNumber) ?\\}\\}"
    ];
    prop::collection::btree_map(name, prop::collection::vec(value, 0..3), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resolve_never_panics(parameters in parameter_map()) {
        let store = DocumentStore::builtin();
        for name in BUILTIN_DOCUMENTS {
            let doc = store.get(name).expect("built in");
            if let Ok(resolved) = doc.resolve(&parameters) {
                // Whatever resolves also survives the trip to the agent.
                let content = doc.agent_message_content(&resolved, "s", None, "o");
                let request = AgentSessionRequest::from_json(&content.to_string());
                prop_assert!(request.is_ok(), "{}: {:?}", name, request);
            }
        }
    }

    #[test]
    fn port_pattern_accepts_exactly_canonical_ports(value in "[0-9]{1,6}") {
        let doc = builtin("AWS-StartSSHSession");
        let canonical = value.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
            && !value.starts_with('0');
        let resolved = doc.resolve(&params(&[("portNumber", &value)]));
        prop_assert_eq!(resolved.is_ok(), canonical, "{}", value);
    }

    #[test]
    fn patterns_and_requests_never_panic(pattern in ".{0,24}", text in ".{0,64}") {
        if let Ok(compiled) = AllowedPattern::new(&pattern) {
            let _ = compiled.is_match(&text);
        }
        let _ = AgentSessionRequest::from_json(&text);
        let _ = Document::from_json("Fuzzed-Doc", &text);
    }
}
