//! Waiting for an agent to come online, as the gateway reports it.

use std::time::{Duration, Instant};

use ssm_session::aws::ApiClient;

/// Polls `DescribeInstanceInformation` through `api` until `agent_id` is `Online`; panics
/// after 20 s.
pub async fn wait_online(api: &ApiClient, agent_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = api
            .call(
                "ssm",
                "AmazonSSM.DescribeInstanceInformation",
                &serde_json::json!({}),
            )
            .await
            .unwrap();
        let online = answer["InstanceInformationList"]
            .as_array()
            .unwrap()
            .iter()
            .any(|instance| {
                instance["InstanceId"] == agent_id && instance["PingStatus"] == "Online"
            });
        if online {
            return;
        }
        assert!(Instant::now() < deadline, "{agent_id} did not come online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
