//! `scripts/demo.sh` prints its success banner only when every process it started is
//! alive and every node answers; otherwise it says what failed and exits 1.
//!
//! The demo's addresses and state directory (/tmp/opengslb-demo) are fixed by
//! examples/cluster: this file is the only test that uses them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use opengslb_tests::process::Spawned;
use opengslb_tests::{agent_binary, poll_until, workspace_root};

const BANNER: &str = "OpenGSLB demo: 3 overwatch nodes";
const STATE: &str = "/tmp/opengslb-demo";

fn demo(name: &str) -> Spawned {
    let bin: PathBuf = agent_binary().parent().expect("target dir").to_owned();
    let mut command = Command::new("bash");
    command
        .arg(workspace_root().join("scripts/demo.sh"))
        .env("OPENGSLB_DEMO_BIN", bin);
    Spawned::start(name, command)
}

/// Waits until nothing listens on the demo's API ports any more.
fn wait_stopped() {
    poll_until(
        Duration::from_secs(10),
        "the demo's processes to stop",
        || {
            (1..=3)
                .all(|i| std::net::TcpStream::connect(("127.0.0.1", 8000 + i)).is_err())
                .then_some(())
        },
    );
}

#[test]
fn the_demo_refuses_to_print_its_banner_when_something_failed() {
    let _ = std::fs::remove_dir_all(STATE);
    let first = demo("demo.sh (first)");
    first.wait_for_line(BANNER, Duration::from_secs(90));

    // A second demo beside the first: every address is taken. It must say so, not
    // print the banner over processes that died of "Address already in use".
    let (status, stdout, all) = demo("demo.sh (second)").finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(!stdout.contains(BANNER), "{all}");
    assert!(
        all.contains("already in use; is another demo running?")
            && all.contains("127.0.0.1:8001 (tcp"),
        "{all}"
    );

    drop(first);
    wait_stopped();

    // A node that cannot open its data directory dies at start: the demo names it.
    let data = PathBuf::from(STATE).join("overwatch-2");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::write(&data, "not a directory").expect("block overwatch-2's data_dir");
    let (status, stdout, all) = demo("demo.sh (broken node)").finish(Duration::from_secs(60));
    let _ = std::fs::remove_file(&data);
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(!stdout.contains(BANNER), "{all}");
    assert!(
        all.contains("scripts/demo.sh: exited: overwatch-2;")
            && all.contains("the demo did NOT start"),
        "{all}"
    );
    wait_stopped();
}
