//! Services that `.ci/run` provides to some tests.

/// The value of `variable`, which names a service `.ci/run` provides (a KMS emulator, the AWS
/// CLI). The tests that call this are `#[ignore]`d, so that a plain `cargo test` reports them
/// as not run; run with `-- --include-ignored` (as `.ci/run` does), they fail when the
/// service is missing rather than pass without it.
pub fn external(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{variable} is not set: this test needs the service it names \
             (`.ci/run` starts it; see the README)"
        ),
    }
}
