//! Leftovers of a create that a crash interrupted, found by the soak
//! (docs/reliability.md): an agent SIGKILLed inside its namespace creation,
//! after it made the file under /run/netns and before it bind-mounted the
//! namespace on it, leaves a plain file that no record names. The API's
//! repair loop then removes the sandbox and names its namespace to the
//! restarted agent, which must remove the file too.
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use berth_tests::cluster::{Cluster, ClusterOptions};
use berth_tests::invariants::{consistent, state};
use berth_tests::wait_until;

#[test]
fn a_namespace_file_never_mounted_goes_with_its_sandbox() {
    let opts = ClusterOptions {
        agent_args: vec![vec!["--resync-period".to_string(), "2".to_string()]],
        ..Default::default()
    };
    let mut c = Cluster::start_with(1, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    // The agent dies; its node is still ready until the lease lapses, so a
    // create is recorded, fails at the agent and is left for repair.
    c.crash_agent(1);
    let out = c.cli(&["sandbox", "create", "y", "--node", "node1"]);
    assert!(!out.status.success(), "the create cannot have succeeded");
    // What the crash inside netns::create leaves: a mode-0 empty file.
    let file = format!("/run/netns/{}", c.sandbox_ns("y"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&file)
        .expect("the leftover file");
    assert!(
        state(&c)
            .sandboxes
            .values()
            .any(|r| r["name"] == "y" && r["phase"] != "ready"),
        "the interrupted create is recorded"
    );
    c.start_agent(1).expect("agent");
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(30), || match consistent(&c) {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(ok, "{last}\n{}", c.logs());
    assert!(!std::path::Path::new(&file).exists(), "{file} is left");
}
