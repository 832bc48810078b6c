//! Services that `.ci/run` provides to some tests.

/// The value of `variable`, which names a service `.ci/run` provides (a KMS emulator, the AWS
/// CLI). Unset: `None`, and the test says it skipped — unless `SSM_SESSION_REQUIRE_EXTERNAL`
/// is set, as `.ci/run` does, where a missing service fails the test.
pub fn external(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("SSM_SESSION_REQUIRE_EXTERNAL").is_some() => {
            panic!("{variable} is not set, and SSM_SESSION_REQUIRE_EXTERNAL requires this test")
        }
        _ => {
            eprintln!("{variable} is not set: skipped (`.ci/run` provides it)");
            None
        }
    }
}
