//! Properties of the session engine over the emulated network: whatever the loss, duplication,
//! reordering and connection drops, both byte streams arrive exactly; an encrypted handshake
//! completes under 20 % loss.

use std::time::Duration;

use proptest::prelude::*;
use ssm_session::session::{AgentConfig, ClientConfig, SessionType};
use ssm_session::sim::{LinkConfig, Pair};

fn pair(seed: u64, link: LinkConfig, extensions: bool, encrypt: bool) -> Pair {
    let mut client = ClientConfig::new("s-prop", "i-prop");
    let mut agent = AgentConfig::new("s-prop", "i-prop", SessionType::StandardStream);
    client.extensions = extensions;
    agent.extensions = extensions;
    if encrypt {
        agent.kms_key_id = Some("alias/prop".into());
    }
    Pair::new(client, agent, link, seed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn delivery_is_exact_under_any_schedule(
        seed in any::<u64>(),
        loss in 0.0..0.3f64,
        duplicate in 0.0..0.1f64,
        reorder in 0.0..0.3f64,
        drops in proptest::collection::vec(1..3_000u64, 0..3),
        to_agent in proptest::collection::vec(any::<u8>(), 1..6_000),
        to_client in proptest::collection::vec(any::<u8>(), 1..6_000),
        extensions in any::<bool>(),
        encrypt in any::<bool>(),
    ) {
        let link = LinkConfig { delay: Duration::from_millis(15), jitter: Duration::from_millis(10), loss, duplicate, reorder };
        let mut pair = pair(seed, link, extensions, encrypt);
        pair.drops = drops.iter().map(|ms| pair.now + Duration::from_millis(*ms)).collect();
        pair.client_source = to_agent.clone();
        pair.agent_source = to_client.clone();
        let (a, c) = (to_agent.len(), to_client.len());
        pair.run_until(|p| p.agent_received.len() >= a && p.client_received.len() >= c, 2_000_000);
        prop_assert!(!pair.closed(), "{:?}", pair.events);
        prop_assert!(pair.agent_received == to_agent, "client → agent stream differs");
        prop_assert!(pair.client_received == to_client, "agent → client stream differs");
    }

    #[test]
    fn encrypted_handshake_completes_under_twenty_percent_loss(seed in any::<u64>(), extensions in any::<bool>()) {
        let link = LinkConfig { loss: 0.2, delay: Duration::from_millis(30), ..LinkConfig::default() };
        let mut pair = pair(seed, link, extensions, true);
        let start = pair.now;
        prop_assert!(pair.run_until(|p| p.handshake_done(), 200_000), "{:?}", pair.events);
        prop_assert!(pair.now - start < Duration::from_secs(15), "within the agent's 15 s limit");
    }
}
