//! CLI habits Docker users have, on a real cluster: `ls -q`, `network
//! prune` (keeps networks in use and the built-in ones; refuses to run
//! unasked without a terminal) and `berth version` (client and server).
use berth_tests::cluster::{Cluster, must};
use berth_tests::stderr;

#[test]
fn quiet_ls_prune_and_version() {
    let c = must(Cluster::start(1), "cluster");
    c.cli_ok(&["network", "create", "used"]);
    c.cli_ok(&["network", "create", "spare1"]);
    c.cli_ok(&["network", "create", "spare2"]);
    c.cli_ok(&["sandbox", "create", "hq", "--node", "node1", "--network", "used"]);

    let ids = c.cli_ok(&["network", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 6, "{ids}");
    assert!(
        ids.lines()
            .all(|l| l.len() == 12 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "{ids}"
    );
    let sb = c.cli_ok(&["sandbox", "ls", "-q"]);
    let full = c.cli_json(&["sandbox", "inspect", "hq"]);
    assert!(full[0]["Id"].as_str().unwrap().starts_with(sb.trim()), "{sb}");
    assert_eq!(c.cli_ok(&["node", "ls", "-q"]), "node1\n");

    // Not a terminal and no --force: nothing is removed.
    let out = c.cli(&["network", "prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("berth: network prune removes every unused network: pass --force"));
    assert_eq!(c.cli_ok(&["network", "ls", "-q"]).lines().count(), 6);

    let out = c.cli_ok(&["network", "prune", "--force"]);
    assert_eq!(out, "Deleted Networks:\nspare1\nspare2\n");
    let names: Vec<String> = c
        .cli_json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["bridge", "host", "none", "used"]);
    // Nothing left to prune: no output.
    assert_eq!(c.cli_ok(&["network", "prune", "-f"]), "");

    let v = c.cli_json(&["version"]);
    assert_eq!(v["Server"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["Client"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["Server"]["ApiVersion"], "berth.v1");
}
