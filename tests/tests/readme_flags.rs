//! The README's flag tables say what the binaries do: every flag of
//! `--help` is in its table and no other, with the same environment
//! variable and the same default. The defaults are written once in the
//! code (the broker's `Config`/`QueueConfig` defaults, the worker's
//! `defaults` module) and shown by `--help`; this test fails when the
//! hand-written tables drift from them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use sluice_e2e::binary;

/// A flag's environment variable and default, as one side states them.
#[derive(Debug, PartialEq)]
struct FlagDoc {
    env: Option<String>,
    default: Option<String>,
}

/// The flags `binary --help` shows (without --help and --version);
/// `name` may name a subcommand after the binary (`sluice-kafka run`).
fn help_flags(name: &str) -> BTreeMap<String, FlagDoc> {
    let mut words = name.split_whitespace();
    let mut command = Command::new(binary(words.next().unwrap()));
    command.args(words).arg("--help");
    // Set variables would show as `[env: NAME=value]` and change defaults.
    for (key, _) in std::env::vars() {
        if key.starts_with("SLUICE_") {
            command.env_remove(key);
        }
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{name} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, FlagDoc)> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('-') && indent <= 6 {
            flags.extend(current.take());
            let flag = trimmed
                .split([' ', ','])
                .find(|word| word.starts_with("--"))
                .unwrap()
                .to_owned();
            current = Some((
                flag,
                FlagDoc {
                    env: None,
                    default: None,
                },
            ));
        }
        // A short help has the brackets on the flag's own line.
        if let Some((_, doc)) = current.as_mut() {
            if let Some(env) = bracketed(trimmed, "[env: ") {
                doc.env = Some(env.trim_end_matches('=').to_owned());
            }
            if let Some(default) = bracketed(trimmed, "[default: ") {
                doc.default = Some(default.to_owned());
            }
        }
    }
    flags.extend(current);
    flags.remove("--help");
    flags.remove("--version");
    flags
}

fn bracketed<'a>(line: &'a str, open: &str) -> Option<&'a str> {
    let rest = line.split_once(open)?.1;
    Some(rest.split_once(']')?.0)
}

/// The rows of the README's table under `### \`name\``: flag -> (env, default).
fn readme_flags(name: &str) -> BTreeMap<String, FlagDoc> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let heading = format!("### `{name}`");
    let section = readme
        .split_once(&heading)
        .unwrap_or_else(|| panic!("the README has no {heading:?} section"))
        .1;
    let mut flags = BTreeMap::new();
    for row in section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (flag, env, default) = (cells[1], cells[2], cells[3]);
        let flag = first_code(flag)
            .unwrap_or_else(|| panic!("no `--flag` in row {row:?}"))
            .split(' ')
            .next()
            .unwrap()
            .to_owned();
        let doc = FlagDoc {
            env: first_code(env).map(str::to_owned),
            // A default the code sets is written as code; a description
            // ("unbounded", "none") means the flag has none.
            default: default
                .starts_with('`')
                .then(|| first_code(default).unwrap().to_owned()),
        };
        flags.insert(flag, doc);
    }
    flags
}

/// The text of the first `code span` in a cell.
fn first_code(cell: &str) -> Option<&str> {
    Some(cell.split('`').nth(1))
        .filter(|_| cell.contains('`'))
        .flatten()
}

/// Whether two defaults say the same thing: equal text, or equal durations
/// written differently (`60s` and `1m`).
fn same_default(readme: &str, code: &str) -> bool {
    let duration = |s: &str| humantime::parse_duration(s).ok();
    readme == code || duration(readme).is_some_and(|d: Duration| Some(d) == duration(code))
}

fn check(name: &str) {
    let code = help_flags(name);
    let readme = readme_flags(name);
    assert_eq!(
        code.keys().collect::<Vec<_>>(),
        readme.keys().collect::<Vec<_>>(),
        "the flags of {name} --help and of its README table differ"
    );
    for (flag, in_code) in &code {
        let in_readme = &readme[flag];
        assert_eq!(
            in_readme.env, in_code.env,
            "{name} {flag}: environment variable"
        );
        match (&in_readme.default, &in_code.default) {
            (Some(r), Some(c)) => assert!(
                same_default(r, c),
                "{name} {flag}: the README says the default is {r:?}, the code {c:?}"
            ),
            (None, None) => {}
            (r, c) => panic!("{name} {flag}: the README's default is {r:?}, the code's {c:?}"),
        }
    }
}

#[test]
fn broker_flag_table_matches_the_code() {
    check("sluice-broker");
}

#[test]
fn worker_flag_table_matches_the_code() {
    check("sluice-worker");
}

#[test]
fn cli_flag_table_matches_the_code() {
    check("sluice");
}

#[test]
fn kafka_source_flag_tables_match_the_code() {
    check("sluice-kafka run");
    check("sluice-kafka reset");
}

#[test]
fn a_drifted_default_is_caught() {
    assert!(same_default("60s", "1m"));
    assert!(same_default("127.0.0.1:50051", "127.0.0.1:50051"));
    assert!(!same_default("30s", "25s"));
    assert!(!same_default("4", "5"));
}
