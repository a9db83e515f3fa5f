//! API server start-up, replicas and node registration, against a real etcd.
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_tests::{Agent, ApiServer, Etcd, stderr, unique, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn two_api_servers_starting_at_once_ensure_builtins_once() {
    let etcd = Etcd::start().expect("etcd");
    let prefix = format!("/{}", unique("dual"));
    for round in 0..3 {
        let a = ApiServer::spawn(&etcd, &prefix, &[]).expect("api a");
        let b = ApiServer::spawn(&etcd, &prefix, &[]).expect("api b");
        a.wait_ready().expect("a ready");
        b.wait_ready().expect("b ready");
        let names = etcd.keys(&format!("{prefix}/v1/names/networks/"));
        assert_eq!(names.len(), 3, "round {round}: {names:?}");
        let nets = etcd.keys(&format!("{prefix}/v1/networks/"));
        assert_eq!(nets.len(), 3, "round {round}: {nets:?}");
        // Both replicas answer identically.
        let mut la = NetworkServiceClient::new(a.channel().await);
        let mut lb = NetworkServiceClient::new(b.channel().await);
        let na = la
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .expect("ls a")
            .into_inner();
        let nb = lb
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .expect("ls b")
            .into_inner();
        assert_eq!(na, nb);
        let bridge = na.networks.iter().find(|n| n.name == "bridge").expect("bridge");
        assert_eq!(
            (
                bridge.subnet.as_str(),
                bridge.gateway.as_str(),
                bridge.bridge.as_str()
            ),
            ("172.17.0.0/16", "172.17.0.1", "berth0")
        );
        let key = format!("{prefix}/v1/subnets/local/172.17.0.0-16/{}", bridge.id);
        assert_eq!(etcd.get(&key).as_deref(), Some(bridge.id.as_str()));
        assert_eq!(
            etcd.keys(&format!("{prefix}/v1/subnets/")).len(),
            1,
            "one subnet taken"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_register_and_lapse_to_not_ready() {
    let etcd = Etcd::start().expect("etcd");
    let prefix = format!("/{}", unique("nodes"));
    let api = ApiServer::start(&etcd, &prefix, &["--node-ttl", "2"]).expect("api");
    let mut agent = Agent::start(&api, "node-a", "192.168.205.10").expect("agent");
    let _other = Agent::start(&api, "node-b", "192.168.205.11").expect("agent b");

    let status = |name: &str| -> Option<String> {
        let v = api.cli_json(&["node", "ls"]);
        v.as_array()?
            .iter()
            .find(|n| n["Name"] == name)
            .and_then(|n| n["Status"].as_str().map(str::to_string))
    };
    assert!(
        wait_until(Duration::from_secs(15), || status("node-a").as_deref()
            == Some("ready")
            && status("node-b").as_deref() == Some("ready")),
        "agents never became ready:\n{}",
        agent.proc.log()
    );
    let v = api.cli_json(&["node", "ls"]);
    let a = v
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["Name"] == "node-a")
        .expect("node-a")
        .clone();
    assert_eq!(a["Address"], "192.168.205.10");
    let table = api.cli_ok(&["node", "ls"]);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("NAME") && h.contains("STATUS")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("node-a") && l.contains("192.168.205.10") && l.contains("ready"))
    );
    // Heartbeats keep it ready well past the TTL.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(status("node-a").as_deref(), Some("ready"));

    // A ready node is not removed without --force.
    let out = api.cli(&["node", "rm", "node-a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ready"), "{}", stderr(&out));

    agent.proc.crash();
    assert!(
        wait_until(Duration::from_secs(15), || status("node-a").as_deref()
            == Some("not ready")),
        "node-a stayed ready after its agent died"
    );
    assert_eq!(status("node-b").as_deref(), Some("ready"));
    // The record stays until removed.
    assert!(etcd.get(&format!("{prefix}/v1/nodes/node-a")).is_some());
    api.cli_ok(&["node", "rm", "node-a"]);
    assert_eq!(status("node-a"), None);
    assert!(etcd.get(&format!("{prefix}/v1/nodes/node-a")).is_none());

    // A restarted agent registers again.
    let _again = Agent::start(&api, "node-a", "192.168.205.10").expect("agent again");
    assert!(wait_until(Duration::from_secs(15), || status("node-a")
        .as_deref()
        == Some("ready")));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_are_served() {
    let etcd = Etcd::start().expect("etcd");
    let api = ApiServer::start(&etcd, &format!("/{}", unique("hr")), &[]).expect("api");
    let channel = api.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for svc in [
        "berth.v1.NetworkService",
        "berth.v1.NodeService",
        "berth.v1.RegistryService",
    ] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest { service: svc.into() })
            .await
            .unwrap_or_else(|e| panic!("{svc}: {e}"))
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{svc}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(channel);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = stream
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection reply {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for svc in [
        "berth.v1.NetworkService",
        "berth.v1.SandboxService",
        "berth.v1.NodeService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&svc), "{names:?} lacks {svc}");
    }
}
