//! The byte budget of a list response: a page ends before its items pass
//! [`MAX_PAGE_BYTES`] encoded, and the next page's token is the id of the
//! last item kept (see `crate::page` for the request and the range read).
use berth_core::limits::MAX_PAGE_BYTES;
use prost::Message;

/// Bytes `item` adds to a response as one element of a repeated field.
fn framed_len<T: Message>(item: &T) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Cuts `items` (in key order) to at most [`MAX_PAGE_BYTES`] (but never
/// below one item) and returns them with the next page's token: the id of
/// the last item kept when items were cut or `more` follow in the store,
/// else empty.
pub fn fit<T: Message>(mut items: Vec<T>, more: bool, id: impl Fn(&T) -> &str) -> (Vec<T>, String) {
    let mut bytes = 0;
    let keep = items
        .iter()
        .position(|item| {
            bytes += framed_len(item);
            bytes > MAX_PAGE_BYTES
        })
        .map_or(items.len(), |i| i.max(1));
    let cut = keep < items.len();
    items.truncate(keep);
    let token = match items.last() {
        Some(last) if cut || more => id(last).to_string(),
        _ => String::new(),
    };
    (items, token)
}

#[cfg(test)]
mod tests {
    use berth_core::limits::*;
    use berth_proto::v1 as pb;

    use super::*;

    fn net(i: usize, label_bytes: usize) -> pb::Network {
        pb::Network {
            id: format!("{i:064x}"),
            labels: [("k".to_string(), "v".repeat(label_bytes))].into(),
            ..Default::default()
        }
    }

    #[test]
    fn pages_end_at_the_byte_budget_or_the_store() {
        let small: Vec<pb::Network> = (0..10).map(|i| net(i, 10)).collect();
        let (kept, token) = fit(small.clone(), false, |n| &n.id);
        assert_eq!((kept.len(), token.as_str()), (10, ""));
        let (kept, token) = fit(small, true, |n| &n.id);
        assert_eq!((kept.len(), token), (10, format!("{:064x}", 9)));
        // 1 MiB each: two would pass the budget.
        let big: Vec<pb::Network> = (0..5).map(|i| net(i, 1 << 20)).collect();
        let (kept, token) = fit(big, false, |n| &n.id);
        assert_eq!((kept.len(), token), (1, format!("{:064x}", 0)));
        let (kept, token) = fit(Vec::<pb::Network>::new(), false, |n| &n.id);
        assert!(kept.is_empty() && token.is_empty());
    }

    /// A sandbox as `sandbox create NAME --node node1` makes it, and one
    /// with everything the limits allow.
    fn typical_sandbox(i: usize) -> pb::Sandbox {
        let name = format!("sandbox-{i:05}");
        pb::Sandbox {
            id: format!("{i:064x}"),
            name: name.clone(),
            node: "node1".into(),
            mode: pb::SandboxMode::Namespace as i32,
            created: "2025-01-01T10:00:00.123456789Z".into(),
            netns: name.clone(),
            generation: 1_000_000 + i as u64,
            phase: pb::SandboxPhase::Ready as i32,
            endpoints: vec![pb::Endpoint {
                id: format!("{i:064x}"),
                network_id: "f".repeat(64),
                network_name: "bridge".into(),
                sandbox_id: format!("{i:064x}"),
                sandbox_name: name,
                node: "node1".into(),
                ip: "172.17.39.16".into(),
                prefix_len: 16,
                mac: "02:42:ac:11:27:10".into(),
                ifname: "eth0".into(),
                gateway: "172.17.0.1".into(),
                default_route: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn worst_sandbox() -> pb::Sandbox {
        let name = "n".repeat(63);
        let endpoint = |i: usize| pb::Endpoint {
            id: "e".repeat(64),
            network_id: "f".repeat(64),
            network_name: name.clone(),
            sandbox_id: "a".repeat(64),
            sandbox_name: name.clone(),
            node: name.clone(),
            ip: "255.255.255.254".into(),
            prefix_len: 30,
            mac: "02:42:ff:ff:ff:fe".into(),
            ifname: format!("eth{i}"),
            aliases: vec![name.clone(); MAX_ALIASES],
            gateway: "255.255.255.253".into(),
            revision: u64::MAX,
            default_route: i == 0,
            ip6: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".into(),
            prefix_len6: 124,
            gateway6: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd".into(),
        };
        pb::Sandbox {
            id: "a".repeat(64),
            name: name.clone(),
            node: name.clone(),
            mode: pb::SandboxMode::Namespace as i32,
            ports: (0..MAX_PORTS)
                .map(|i| pb::PortMapping {
                    host_ip: "255.255.255.255".into(),
                    host_port: 65535 - i as u32,
                    container_port: 65535,
                    protocol: pb::PortProtocol::Tcp as i32,
                })
                .collect(),
            links: vec![
                pb::Link {
                    name: name.clone(),
                    alias: name.clone()
                };
                MAX_LINKS
            ],
            // As many arguments as the total allows, at the largest count.
            command: vec!["x".repeat(MAX_COMMAND_BYTES / MAX_COMMAND_ARGS); MAX_COMMAND_ARGS],
            created: "2025-01-01T10:00:00.123456789+00:00".into(),
            endpoints: (0..MAX_NETWORKS_PER_SANDBOX).map(endpoint).collect(),
            netns: name.clone(),
            generation: u64::MAX,
            phase: pb::SandboxPhase::Removing as i32,
            // A runtime's sandbox has no command, but count its fields too.
            origin: pb::SandboxOrigin::Docker as i32,
            container_id: "c".repeat(1024),
            netns_path: format!("/{}", "p".repeat(4095)),
            netns_inode: u64::MAX,
            ifname: "i".repeat(15),
        }
    }

    fn worst_network() -> pb::Network {
        // Option keys are berth's five; values up to the limit.
        let options = berth_core::options::KNOWN
            .iter()
            .map(|(k, _)| (k.to_string(), "v".repeat(MAX_OPTION_VALUE_BYTES)))
            .collect();
        // Label bytes split over the most labels.
        let per = MAX_LABELS_BYTES / MAX_LABELS;
        let labels = (0..MAX_LABELS)
            .map(|i| (format!("{i:02}"), "v".repeat(per - 2)))
            .collect();
        pb::Network {
            id: "f".repeat(64),
            name: "n".repeat(63),
            driver: pb::NetworkDriver::Overlay as i32,
            scope: pb::NetworkScope::Global as i32,
            subnet: "255.255.255.252/30".into(),
            gateway: "255.255.255.253".into(),
            options,
            labels,
            created: "2025-01-01T10:00:00.123456789+00:00".into(),
            vni: u32::MAX,
            bridge: "b".repeat(15),
            mtu: 65535,
            builtin: false,
            internal: true,
            ip_range: "255.255.255.252/30".into(),
            aux_addresses: (0..berth_core::limits::MAX_AUX_ADDRESSES)
                .map(|i| (format!("{i:02}{}", "a".repeat(61)), "255.255.255.254".into()))
                .collect(),
            enable_ipv6: true,
            subnet6: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124".into(),
            gateway6: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd".into(),
        }
    }

    /// The numbers in docs/limits.md ("Lists and gRPC's 4 MiB"); run with
    /// `--nocapture` to see them.
    #[test]
    fn list_sizes_at_ten_thousand() {
        const GRPC_LIMIT: usize = 4 << 20;
        let typical = framed_len(&typical_sandbox(39_999));
        let all = pb::ListSandboxesResponse {
            sandboxes: (0..10_000).map(typical_sandbox).collect(),
            next_page_token: String::new(),
        }
        .encoded_len();
        let worst = framed_len(&worst_sandbox());
        let network = framed_len(&worst_network());
        println!(
            "sandbox: typical {typical} B, 10,000 typical {all} B; worst case {worst} B, \
             10,000 worst {} B; a page of {MAX_PAGE_SIZE} typical {} B, worst case {} per page; \
             network worst case {network} B, {} per page",
            worst * 10_000,
            typical * MAX_PAGE_SIZE,
            MAX_PAGE_BYTES / worst,
            MAX_PAGE_BYTES / network,
        );
        // One unpaged response of 10,000 plain sandboxes would not fit.
        assert!(all > GRPC_LIMIT, "{all}");
        // A full page of typical ones is far below the budget; a page of
        // the largest sandboxes the limits allow is cut by bytes, and even
        // one of them is far below it.
        assert!(typical * MAX_PAGE_SIZE < MAX_PAGE_BYTES / 4);
        assert!(worst * MAX_PAGE_SIZE > MAX_PAGE_BYTES);
        assert!(worst < MAX_PAGE_BYTES / 20 && network < MAX_PAGE_BYTES / 20);
        // A response is its items plus a token of at most 64 bytes.
        assert!(MAX_PAGE_BYTES + worst + 70 < GRPC_LIMIT);
        let page = fit(vec![worst_sandbox(); MAX_PAGE_SIZE], false, |s| &s.id).0;
        let bytes = pb::ListSandboxesResponse {
            sandboxes: page,
            next_page_token: "a".repeat(64),
        }
        .encoded_len();
        assert!(bytes <= MAX_PAGE_BYTES + 70, "{bytes}");
    }
}
