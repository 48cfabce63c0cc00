//! How `sluice` fails and connects: exit 1 with one line for an unreachable
//! broker and with the gRPC code and message for a refused request, exit 2
//! for usage errors; TLS and tokens through the worker's options (a
//! producer token may enqueue and is refused the Admin service); shell
//! completions.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;

use sluice_e2e::cli::{self, CliOutput, sluice};
use sluice_e2e::tls::TestPki;
use sluice_e2e::{BrokerProcess, scratch_dir};

const PRODUCER_TOKEN: &str = "producer-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// `sluice args...` with a clean environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut command = cli::command(args);
    command.envs(env.iter().copied());
    cli::run(command, None)
}

#[test]
fn an_unreachable_broker_is_one_line_and_exit_1() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for command in [
        &["stats"][..],
        &["enqueue", "--type", "t"],
        &["top", "--once"],
    ] {
        let mut args = vec!["--broker", url.as_str()];
        args.extend_from_slice(command);
        let out = run(&args, &[]).exited(1);
        assert_eq!(
            out.stderr,
            format!("sluice: cannot reach the broker at {url}: connection refused\n"),
            "{command:?}"
        );
        assert_eq!(out.stdout, "");
    }
    // SLUICE_BROKER is --broker's variable, as for the worker.
    let out = run(&["stats"], &[("SLUICE_BROKER", &url)]).exited(1);
    assert!(out.stderr.contains(&url), "{out:?}");
}

#[test]
fn a_refused_request_prints_the_grpc_code_and_message_and_exits_1() {
    let broker = BrokerProcess::start(&[]);
    let unknown = "00000000-0000-4000-8000-000000000000";
    for format in ["table", "json"] {
        let out = sluice(&broker, &["-o", format, "jobs", "get", unknown]).exited(1);
        assert_eq!(
            out.stderr,
            format!("sluice: NOT_FOUND: job {unknown} not found\n")
        );
        assert_eq!(out.stdout, "");
    }
    let out = sluice(&broker, &["jobs", "get", "not-a-uuid"]).exited(1);
    assert!(
        out.stderr.starts_with("sluice: INVALID_ARGUMENT: "),
        "{out:?}"
    );
    let out = sluice(&broker, &["enqueue", "--queue", "bad queue", "--type", "t"]).exited(1);
    assert!(
        out.stderr.starts_with("sluice: INVALID_ARGUMENT: "),
        "{out:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let broker = BrokerProcess::start(&[]);
    for args in [
        &["no-such-command"][..],
        &["enqueue"],
        &["enqueue", "--type", "t", "--max-attempts", "many"],
        &["jobs", "list", "--state", "asleep"],
        &["-o", "yaml", "stats"],
        &["stats", "--tls-cert", "c.pem"],
        &["completions", "tcsh"],
    ] {
        let out = sluice(&broker, args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    // TLS options need https://, as for the worker.
    let out = sluice(&broker, &["stats", "--tls-ca", "/nonexistent/ca.pem"]).exited(2);
    assert!(out.stderr.contains("https://"), "{out:?}");
    // Two tokens.
    let dir = scratch_dir("cli-two-tokens");
    let file = dir.join("token");
    std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let url = broker.url();
    let out = run(
        &[
            "--broker",
            &url,
            "--token-file",
            file.to_str().unwrap(),
            "stats",
        ],
        &[("SLUICE_TOKEN", ADMIN_TOKEN)],
    )
    .exited(2);
    assert!(out.stderr.contains("two tokens"), "{out:?}");
}

#[test]
fn tls_and_tokens_work_as_for_the_worker_and_roles_are_enforced() {
    let dir = scratch_dir("cli-tls");
    let pki = TestPki::new(&dir).unwrap();
    let tokens = dir.join("auth-tokens");
    std::fs::write(
        &tokens,
        format!("producer {PRODUCER_TOKEN}\nadmin {ADMIN_TOKEN}\n"),
    )
    .unwrap();
    let broker = BrokerProcess::start(&[
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
        "--auth-tokens",
        tokens.to_str().unwrap(),
    ]);
    let url = format!("https://{}", broker.addr);
    let ca = pki.ca.to_str().unwrap();
    let token_file = dir.join("producer.token");
    std::fs::write(&token_file, format!("{PRODUCER_TOKEN}\n")).unwrap();

    // A producer token (from --token-file) may enqueue...
    let out = run(
        &[
            "--broker",
            &url,
            "--tls-ca",
            ca,
            "--token-file",
            token_file.to_str().unwrap(),
            "enqueue",
            "--type",
            "secure",
        ],
        &[],
    )
    .ok();
    let id = out.stdout.trim().to_owned();
    assert_eq!(id.len(), 36, "{out:?}");

    // ...and nothing of the Admin service: PERMISSION_DENIED, exit 1.
    for admin_command in [
        &["stats"][..],
        &["workers"],
        &["jobs", "get", &id],
        &["top", "--once"],
    ] {
        let mut args = vec!["--broker", url.as_str(), "--tls-ca", ca];
        args.extend_from_slice(admin_command);
        let out = run(&args, &[("SLUICE_TOKEN", PRODUCER_TOKEN)]).exited(1);
        assert!(
            out.stderr.starts_with("sluice: PERMISSION_DENIED: "),
            "{admin_command:?}: {out:?}"
        );
    }

    // The admin token (from SLUICE_TOKEN) sees the job.
    let out = run(
        &[
            "--broker", &url, "--tls-ca", ca, "-o", "json", "jobs", "get", &id,
        ],
        &[("SLUICE_TOKEN", ADMIN_TOKEN)],
    )
    .ok();
    assert_eq!(out.json()["job_type"], "secure");

    // No token: UNAUTHENTICATED. Plaintext to a TLS broker: unreachable.
    let out = run(&["--broker", &url, "--tls-ca", ca, "stats"], &[]).exited(1);
    assert!(
        out.stderr.starts_with("sluice: UNAUTHENTICATED: "),
        "{out:?}"
    );
    let plain = format!("http://{}", broker.addr);
    let out = run(
        &["--broker", &plain, "stats"],
        &[("SLUICE_TOKEN", ADMIN_TOKEN)],
    )
    .exited(1);
    assert!(out.stderr.starts_with("sluice: "), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], &[]).ok();
        assert!(out.stdout.contains("sluice"), "{shell}");
        for subcommand in ["enqueue", "stats", "purge", "top"] {
            assert!(out.stdout.contains(subcommand), "{shell}: no {subcommand}");
        }
    }
}
