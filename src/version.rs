//! The version-gating rules both ends apply to the other's self-reported version (PROTOCOL.md §9.2,
//! §14). Each end decides alone, so a compatible implementation must compare exactly as the
//! reference does.

use std::cmp::Ordering;

/// The version this client reports in its HandshakeResponse and to `--version`: above every
/// gate of PROTOCOL.md §14 (mux without smux keep-alive, separated output), and above the AWS CLI's
/// `1.2.497.0`, so the CLI passes the StartSession answer in an environment variable, and at
/// the AWS CLI's recommended minimum (`1.2.764.0` in awscli 1.46), so it does not warn that
/// the plugin is outdated on every session.
pub const CLIENT_VERSION: &str = "1.2.764.0";

/// The client's comparison: both versions numeric with the same number of dot-separated
/// components, compared component by component; anything else is "not comparable".
fn client_compare(version: &str, threshold: &str) -> Option<Ordering> {
    let parse = |text: &str| -> Option<Vec<u64>> {
        text.split('.').map(|part| part.parse().ok()).collect()
    };
    let (version, threshold) = (parse(version)?, parse(threshold)?);
    (version.len() == threshold.len()).then(|| version.cmp(&threshold))
}

/// The agent's comparison: numeric component by component where both parse, text otherwise,
/// and on a tie the version with fewer components is smaller.
fn agent_compare(version: &str, threshold: &str) -> Ordering {
    let mut left = version.split('.');
    let mut right = threshold.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(a), Some(b)) => {
                let order = match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) => a.cmp(&b),
                    _ => a.cmp(b),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// Client rule: the agent accepts Flag `TerminateSession` (agent > 2.3.722.0).
pub fn agent_supports_terminate_flag(agent_version: &str) -> bool {
    client_compare(agent_version, "2.3.722.0") == Some(Ordering::Greater)
}

/// Client rule: use smux for `LocalPortForwarding` (agent > 3.0.196.0).
pub fn client_uses_mux(agent_version: &str) -> bool {
    client_compare(agent_version, "3.0.196.0") == Some(Ordering::Greater)
}

/// Client rule: disable smux keep-alive (agent > 3.1.1511.0).
pub fn client_disables_smux_keepalive(agent_version: &str) -> bool {
    client_compare(agent_version, "3.1.1511.0") == Some(Ordering::Greater)
}

/// Agent rule: use smux for `LocalPortForwarding` (client ≥ 1.1.70).
pub fn agent_uses_mux(client_version: &str) -> bool {
    agent_compare(client_version, "1.1.70") != Ordering::Less
}

/// Agent rule: disable smux keep-alive (client > 1.2.331.0).
pub fn agent_disables_smux_keepalive(client_version: &str) -> bool {
    agent_compare(client_version, "1.2.331.0") == Ordering::Greater
}

/// Agent rule: the client predates separate stdout/stderr (client ≤ 1.2.295).
pub fn client_lacks_output_separation(client_version: &str) -> bool {
    agent_compare(client_version, "1.2.295") != Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_rules_need_equal_component_counts() {
        assert!(client_uses_mux("3.0.197.0"));
        assert!(!client_uses_mux("3.0.196.0"));
        assert!(
            !client_uses_mux("3.1"),
            "different component count: not supported"
        );
        assert!(!client_uses_mux("3.x.1.0"));
        assert!(
            client_disables_smux_keepalive("3.3.0.0")
                && !client_disables_smux_keepalive("3.1.1511.0")
        );
        assert!(
            agent_supports_terminate_flag("3.3.987.0")
                && !agent_supports_terminate_flag("2.3.722.0")
        );
    }

    #[test]
    fn agent_rules_compare_componentwise_with_shorter_smaller() {
        assert!(
            agent_uses_mux("1.1.70") && agent_uses_mux("1.2.0.0") && !agent_uses_mux("1.1.69.9")
        );
        assert!(
            agent_disables_smux_keepalive("1.2.332.0")
                && !agent_disables_smux_keepalive("1.2.331.0")
        );
        assert!(
            client_lacks_output_separation("1.2.0.0") && client_lacks_output_separation("1.2.295")
        );
        assert!(
            !client_lacks_output_separation("1.2.295.0"),
            "more components on a tie is greater"
        );
        assert!(!client_lacks_output_separation("1.2.312.0"));
    }
}
