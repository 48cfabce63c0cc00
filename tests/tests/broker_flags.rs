//! The real `sluice-broker` refuses flags out of range at startup, saying why.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use sluice_e2e::{Process, WAIT, binary};

fn refused(args: &[&str]) -> String {
    let mut command = Command::new(binary("sluice-broker"));
    command.args(["--addr", "127.0.0.1:0"]).args(args);
    let mut broker = Process::spawn(command);
    let status = broker
        .wait_exit(WAIT)
        .expect("the broker should refuse to start");
    assert!(!status.success(), "{args:?} was accepted");
    broker.log()
}

#[test]
fn durations_out_of_range_are_refused() {
    assert!(refused(&["--default-timeout", "0s"]).contains("--default-timeout must be 1s to 24h"));
    assert!(refused(&["--lease-duration", "2d"]).contains("--lease-duration must be 1s to 24h"));
    assert!(
        refused(&["--backoff-initial", "1m", "--backoff-max", "1s"])
            .contains("--backoff-initial must not exceed --backoff-max")
    );
}

#[test]
fn attempts_and_retention_limits_are_refused() {
    assert!(refused(&["--max-attempts", "0"]).contains("max-attempts"));
    assert!(refused(&["--max-attempts", "10001"]).contains("max-attempts"));
    assert!(refused(&["--max-retained", "0"]).contains("max-retained"));
}
