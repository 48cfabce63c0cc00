//! The deployment files (`deploy/`) against the binaries they start.
//!
//! Every YAML document under `deploy/kubernetes/` parses; the kinds the
//! README describes are there; every `--flag` that a container, an
//! `ExecStart` line or the Dockerfile's `ENTRYPOINT` passes is one that
//! binary's `--help` lists; grace periods and stop timeouts exceed the
//! drain timeouts they must hold; the broker's probes are gRPC probes on
//! its port; the broker and the workers run as different users; no sample
//! broker is open off loopback (TLS and tokens, or a NetworkPolicy);
//! the worker's unit signals the worker alone (`KillMode=mixed`);
//! the broker's unit keeps its data in its `StateDirectory`; the Dockerfile
//! builds workspace packages. The manifests are also checked against the
//! Kubernetes API's schemas by `kubernetes-validate` (PyPI, installed by
//! `scripts/test`), and, where `systemd-analyze` exists, the units by it.
//!
//! Not tested here: a docker build, a real cluster, KEDA, systemd running
//! the units.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sluice_e2e::{binary, scratch_dir};
use sluice_worker::timing::{EXIT_GRACE, RELEASE_GRACE};
use yaml_rust2::{Yaml, YamlLoader};

/// Packages the Dockerfile builds before the workspace has them: the admin
/// CLI (issue 11). Remove it from here once it is a workspace member.
const NOT_YET_IN_WORKSPACE: &[&str] = &["sluice-cli"];

/// The broker's gRPC port, as the manifests and the Dockerfile use it.
const BROKER_PORT: i64 = 50051;

// ---------------------------------------------------------------------------
// Files

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The text of a file under the repository's root.
fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("{relative} cannot be read: {e}"))
}

/// Every file under `deploy/`, relative to the root, sorted.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{} cannot be listed: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let relative = path.strip_prefix(repo()).expect("a path under the root");
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("deploy"), &mut files);
    files.sort();
    files
}

// ---------------------------------------------------------------------------
// The binaries' flags

/// The flags a binary's `--help` lists, each with its default if it has one.
fn help_flags(name: &str) -> BTreeMap<String, Option<String>> {
    let mut command = Command::new(binary(name));
    command.arg("--help");
    // A set variable would show as the default.
    for (key, _) in std::env::vars() {
        if key.starts_with("SLUICE_") {
            command.env_remove(key);
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{name} --help: {e}"));
    assert!(output.status.success(), "{name} --help failed");
    let help = String::from_utf8(output.stdout).expect("--help is UTF-8");
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('-') && indent <= 6 {
            let flag = trimmed
                .split([' ', ','])
                .find(|word| word.starts_with("--"))
                .unwrap_or_else(|| panic!("{name} --help: no long flag in {line:?}"));
            flags.insert(flag.to_owned(), None);
            current = Some(flag.to_owned());
        } else if let Some(flag) = &current
            && let Some(rest) = trimmed.strip_prefix("[default: ")
        {
            let default = rest.trim_end_matches(']').to_owned();
            flags.insert(flag.clone(), Some(default));
        }
    }
    flags
}

/// One start of a binary as a deployment file writes it.
#[derive(Debug)]
struct Invocation {
    /// Where it is written: a file, and the container or line.
    place: String,
    /// The program's file name (`sluice-broker`).
    program: String,
    args: Vec<String>,
}

impl Invocation {
    /// A program (possibly a path) and its arguments.
    fn new(place: String, words: &[String]) -> Self {
        let (program, args) = words
            .split_first()
            .unwrap_or_else(|| panic!("{place}: no program"));
        let program = Path::new(program)
            .file_name()
            .unwrap_or_else(|| panic!("{place}: no program in {program:?}"))
            .to_string_lossy()
            .into_owned();
        Invocation {
            place,
            program,
            args: args.to_vec(),
        }
    }

    /// The names of the `--flags` it passes.
    fn flags(&self) -> impl Iterator<Item = &str> {
        self.args
            .iter()
            .filter(|arg| arg.starts_with("--"))
            .map(|arg| arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag))
    }

    /// The value given to `flag`, as `--flag=value` or `--flag value`.
    fn value(&self, flag: &str) -> Option<&str> {
        let inline = format!("{flag}=");
        self.args.iter().enumerate().find_map(|(i, arg)| {
            if let Some(value) = arg.strip_prefix(&inline) {
                Some(value)
            } else if arg == flag {
                self.args.get(i + 1).map(String::as_str)
            } else {
                None
            }
        })
    }

    /// Its `--drain-timeout`, or the binary's default.
    fn drain_timeout(&self) -> Duration {
        let given = self.value("--drain-timeout").map(str::to_owned);
        let default = || {
            help_flags(&self.program)
                .remove("--drain-timeout")
                .flatten()
        };
        let text = given
            .or_else(default)
            .unwrap_or_else(|| panic!("{}: no --drain-timeout and no default", self.place));
        humantime::parse_duration(&text)
            .unwrap_or_else(|e| panic!("{}: --drain-timeout {text:?}: {e}", self.place))
    }

    /// Fails unless every flag it passes is one `--help` lists.
    fn assert_real_flags(&self) {
        let known = help_flags(&self.program);
        for flag in self.flags() {
            assert!(
                known.contains_key(flag),
                "{}: {} has no flag {flag}",
                self.place,
                self.program
            );
        }
    }
}

/// Whether this program is one of ours whose flags can be checked.
fn is_sluice_binary(program: &str) -> bool {
    matches!(program, "sluice-broker" | "sluice-worker")
}

// ---------------------------------------------------------------------------
// Kubernetes

/// Every document of every `deploy/kubernetes/*.yaml`, with its file.
fn manifests() -> Vec<(String, Yaml)> {
    let files: Vec<String> = deploy_files()
        .into_iter()
        .filter(|f| f.starts_with("deploy/kubernetes/") && f.ends_with(".yaml"))
        .collect();
    assert!(!files.is_empty(), "deploy/kubernetes/ has no .yaml file");
    let mut docs = Vec::new();
    for file in files {
        let parsed = YamlLoader::load_from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        for doc in parsed {
            assert!(doc.is_hash(), "{file}: a document that is not a mapping");
            docs.push((file.clone(), doc));
        }
    }
    docs
}

/// The documents of one kind, with their files.
fn of_kind(kind: &str) -> Vec<(String, Yaml)> {
    manifests()
        .into_iter()
        .filter(|(_, doc)| doc["kind"].as_str() == Some(kind))
        .collect()
}

/// The one document of a kind and name.
fn object(kind: &str, name: &str) -> (String, Yaml) {
    of_kind(kind)
        .into_iter()
        .find(|(_, doc)| doc["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/kubernetes/"))
}

/// The containers of a workload's pod template.
fn containers(file: &str, workload: &Yaml) -> Vec<Yaml> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap_or_else(|| panic!("{file}: a workload without containers"))
        .clone()
}

/// A list of strings in a manifest (`command`, `args`), empty if absent.
fn strings(file: &str, node: &Yaml) -> Vec<String> {
    match node {
        Yaml::BadValue => Vec::new(),
        Yaml::Array(items) => items
            .iter()
            .map(|item| match item {
                Yaml::String(s) => s.clone(),
                other => panic!("{file}: {other:?} in a command or args is not a string"),
            })
            .collect(),
        other => panic!("{file}: {other:?} where a list of strings belongs"),
    }
}

/// What a container runs. It must name its command: the image's
/// entrypoint is not visible from here.
fn container_invocation(file: &str, container: &Yaml) -> Invocation {
    let name = container["name"].as_str().unwrap_or("?");
    let place = format!("{file} (container {name})");
    let command = strings(file, &container["command"]);
    assert!(!command.is_empty(), "{place}: no command");
    let mut words = command;
    words.extend(strings(file, &container["args"]));
    Invocation::new(place, &words)
}

/// Every container of every workload, as invocations.
fn workload_invocations() -> Vec<(String, Yaml, Invocation)> {
    let mut all = Vec::new();
    for kind in ["StatefulSet", "Deployment"] {
        for (file, workload) in of_kind(kind) {
            for container in containers(&file, &workload) {
                all.push((
                    file.clone(),
                    workload.clone(),
                    container_invocation(&file, &container),
                ));
            }
        }
    }
    all
}

/// The port of a `HOST:PORT` address.
fn port_of(place: &str, addr: &str) -> i64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{place}: no port in {addr:?}"))
}

/// The logical lines of `text`: trimmed, those ending in `\\` joined with
/// the next, and the lines `skipped` names (given whether a continuation
/// is open) left out.
fn logical_lines(text: &str, skipped: impl Fn(&str, bool) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if skipped(trimmed, !pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        lines.push(std::mem::take(&mut pending));
    }
    lines
}

// ---------------------------------------------------------------------------
// systemd

/// A unit file's directives in order, continuation lines joined and
/// comments dropped: `(section, key, value)`.
fn unit_directives(file: &str) -> Vec<(String, String, String)> {
    let mut directives = Vec::new();
    let mut section = String::new();
    // A comment starts a line of its own, never one inside a continuation.
    let comment = |line: &str, continuing: bool| {
        !continuing && (line.starts_with('#') || line.starts_with(';'))
    };
    for logical in logical_lines(&read(file), comment) {
        if let Some(name) = logical.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
        } else if let Some((key, value)) = logical.split_once('=') {
            directives.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    directives
}

/// The last value of a `[Service]` directive (the one systemd uses).
fn service_directive(file: &str, key: &str) -> Option<String> {
    unit_directives(file)
        .into_iter()
        .filter(|(section, k, _)| section == "Service" && k == key)
        .map(|(_, _, value)| value)
        .next_back()
}

/// A command line split as systemd splits it: on spaces, with double or
/// single quotes around words that hold spaces.
fn split_words(place: &str, line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return words;
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some(c) => word.push(c),
                    None => panic!("{place}: unterminated quote in {line:?}"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

/// What a unit's `ExecStart` runs (prefixes such as `-` or `+` removed).
fn exec_start(file: &str) -> Invocation {
    let line =
        service_directive(file, "ExecStart").unwrap_or_else(|| panic!("{file}: no ExecStart"));
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    Invocation::new(format!("{file} (ExecStart)"), &split_words(file, line))
}

/// A systemd time span (`45s`, `1min 30s`, or plain seconds).
fn time_span(place: &str, text: &str) -> Duration {
    if let Ok(seconds) = text.parse() {
        return Duration::from_secs(seconds);
    }
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{place}: {text:?}: {e}"))
}

const BROKER_UNIT: &str = "deploy/systemd/sluice-broker.service";
const WORKER_UNIT: &str = "deploy/systemd/sluice-worker.service";

// ---------------------------------------------------------------------------
// Dockerfile

const DOCKERFILE: &str = "deploy/Dockerfile";

/// The Dockerfile's instructions, continuation lines joined and comments
/// dropped: `(INSTRUCTION, rest)`.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    // Comments anywhere, and blank lines inside a continuation, are dropped.
    let skipped =
        |line: &str, continuing: bool| line.starts_with('#') || (line.is_empty() && continuing);
    for logical in logical_lines(&read(DOCKERFILE), skipped) {
        if let Some((instruction, rest)) = logical.split_once(char::is_whitespace) {
            instructions.push((instruction.to_uppercase(), rest.trim().to_owned()));
        }
    }
    instructions
}

/// What the image runs: its `ENTRYPOINT` (exec form) and `CMD`.
fn dockerfile_entrypoint() -> Invocation {
    let exec_form = |rest: &str| -> Vec<String> {
        serde_json::from_str(rest)
            .unwrap_or_else(|e| panic!("{DOCKERFILE}: {rest:?} is not an exec-form list: {e}"))
    };
    let instructions = dockerfile_instructions();
    let last = |name: &str| {
        instructions
            .iter()
            .rfind(|(instruction, _)| instruction == name)
            .map(|(_, rest)| exec_form(rest))
    };
    let mut words = last("ENTRYPOINT").unwrap_or_else(|| panic!("{DOCKERFILE}: no ENTRYPOINT"));
    words.extend(last("CMD").unwrap_or_default());
    Invocation::new(format!("{DOCKERFILE} (ENTRYPOINT)"), &words)
}

/// The packages the Dockerfile's `cargo build` lines build (`-p NAME`).
fn dockerfile_packages() -> Vec<String> {
    let mut packages = Vec::new();
    for (instruction, rest) in dockerfile_instructions() {
        if instruction != "RUN" || !rest.contains("cargo build") {
            continue;
        }
        let words = split_words(DOCKERFILE, &rest);
        for pair in words.windows(2) {
            if pair[0] == "-p" || pair[0] == "--package" {
                packages.push(pair[1].clone());
            }
        }
    }
    packages
}

/// The package names of the workspace's members.
fn workspace_packages() -> BTreeSet<String> {
    let manifest = read("Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("Cargo.toml lists its members");
    members
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|member| {
            let file = format!("{member}/Cargo.toml");
            let text = read(&file);
            text.lines()
                .find_map(|line| line.strip_prefix("name = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{file}: no package name"))
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn every_deployment_file_is_explained_in_the_readme() {
    let readme = read("README.md");
    for file in deploy_files() {
        assert!(readme.contains(&file), "the README does not mention {file}");
    }
    assert!(
        readme.contains(".dockerignore"),
        "the README does not mention .dockerignore"
    );
}

#[test]
fn kubernetes_manifests_parse_and_hold_the_expected_kinds() {
    let kinds: BTreeSet<String> = manifests()
        .iter()
        .map(|(file, doc)| {
            doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: a document without a kind"))
                .to_owned()
        })
        .collect();
    for kind in ["StatefulSet", "Service", "Deployment", "ScaledObject"] {
        assert!(kinds.contains(kind), "deploy/kubernetes/ has no {kind}");
    }
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    // kubernetes-validate (PyPI) ships the API's JSON schemas and checks
    // offline, against its newest Kubernetes version unless told; --strict
    // refuses unknown fields. It has no schema for KEDA's ScaledObject (a
    // custom resource) and says so with a warning.
    let files: Vec<PathBuf> = deploy_files()
        .into_iter()
        .filter(|f| f.starts_with("deploy/kubernetes/") && f.ends_with(".yaml"))
        .map(|f| repo().join(f))
        .collect();
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate could not run ({e}): install it with \
                 `pip install kubernetes-validate` (scripts/test does)"
            )
        });
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    print!("{report}");
    assert!(
        output.status.success(),
        "deploy/kubernetes/ does not match the Kubernetes schemas: {report}"
    );
}

#[test]
fn every_flag_in_the_deployment_files_is_a_real_flag() {
    let mut invocations: Vec<Invocation> = workload_invocations()
        .into_iter()
        .map(|(_, _, invocation)| invocation)
        .collect();
    invocations.push(exec_start(BROKER_UNIT));
    invocations.push(exec_start(WORKER_UNIT));
    invocations.push(dockerfile_entrypoint());
    for invocation in &invocations {
        assert!(
            is_sluice_binary(&invocation.program),
            "{}: runs {:?}, not sluice-broker or sluice-worker",
            invocation.place,
            invocation.program
        );
        invocation.assert_real_flags();
    }
}

#[test]
fn kubernetes_grace_periods_exceed_the_drain_timeouts() {
    for (file, workload, invocation) in workload_invocations() {
        let grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or_else(|| panic!("{file}: no terminationGracePeriodSeconds"));
        let grace = Duration::from_secs(grace.try_into().expect("a positive grace period"));
        let needed = stop_time(&invocation);
        assert!(
            grace > needed,
            "{}: terminationGracePeriodSeconds {grace:?} is not above the {needed:?} the drain may take",
            invocation.place
        );
    }
}

/// How long a binary may take to exit after SIGTERM: its drain timeout,
/// and for the worker the stop and release of the jobs still running at
/// its deadline and the runtime's shutdown.
fn stop_time(invocation: &Invocation) -> Duration {
    let drain = invocation.drain_timeout();
    match invocation.program.as_str() {
        "sluice-worker" => drain + RELEASE_GRACE + EXIT_GRACE,
        _ => drain,
    }
}

#[test]
fn broker_probes_are_grpc_probes_on_its_port() {
    let (file, statefulset) = object("StatefulSet", "sluice-broker");
    let container = containers(&file, &statefulset)
        .into_iter()
        .find(|c| container_invocation(&file, c).program == "sluice-broker")
        .unwrap_or_else(|| panic!("{file}: no container runs sluice-broker"));
    let invocation = container_invocation(&file, &container);
    let addr = invocation
        .value("--addr")
        .unwrap_or_else(|| panic!("{file}: the broker has no --addr (its default is loopback)"));
    let port = port_of(&file, addr);
    assert_eq!(port, BROKER_PORT, "{file}: --addr {addr}");
    let startup = !container["startupProbe"].is_badvalue();
    let probes = ["readinessProbe", "livenessProbe"]
        .into_iter()
        .chain(startup.then_some("startupProbe"));
    for probe in probes {
        let grpc = &container[probe]["grpc"];
        assert!(!grpc.is_badvalue(), "{file}: {probe} is not a grpc probe");
        assert_eq!(grpc["port"].as_i64(), Some(port), "{file}: {probe} port");
    }
    // Kubernetes' defaults: a probe every 10s, 3 failures in a row.
    let liveness = &container["livenessProbe"];
    let period = liveness["periodSeconds"].as_i64().unwrap_or(10);
    let failures = liveness["failureThreshold"].as_i64().unwrap_or(3);
    let window = Duration::from_secs((period * failures).try_into().expect("a positive window"));
    let drain = invocation.drain_timeout();
    assert!(
        window > drain,
        "{file}: the liveness probe fails a draining broker (NOT_SERVING) after {window:?}, \
         within its {drain:?} drain"
    );
    assert!(
        !statefulset["spec"]["volumeClaimTemplates"].is_badvalue(),
        "{file}: the broker has no volumeClaimTemplates"
    );
    let data_dir = invocation
        .value("--data-dir")
        .unwrap_or_else(|| panic!("{file}: the broker has no --data-dir"));
    let mounted = container["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|mount| mount["mountPath"].as_str())
        .any(|path| Path::new(data_dir).starts_with(path));
    assert!(mounted, "{file}: --data-dir {data_dir} is on no volume");
}

#[test]
fn scaled_object_scales_the_worker_deployment_on_queue_depth() {
    for (file, scaled) in of_kind("ScaledObject") {
        let target = scaled["spec"]["scaleTargetRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no scaleTargetRef.name"));
        let (deployment_file, deployment) = object("Deployment", target);
        let runs_worker = containers(&deployment_file, &deployment)
            .iter()
            .any(|c| container_invocation(&deployment_file, c).program == "sluice-worker");
        assert!(runs_worker, "{file}: {target} does not run sluice-worker");
        let triggers = scaled["spec"]["triggers"]
            .as_vec()
            .unwrap_or_else(|| panic!("{file}: no triggers"));
        let on_depth = triggers.iter().any(|trigger| {
            trigger["type"].as_str() == Some("prometheus")
                && trigger["metadata"]["query"]
                    .as_str()
                    .is_some_and(|q| q.contains("sluice_jobs{"))
        });
        assert!(on_depth, "{file}: no prometheus trigger on sluice_jobs");
    }
}

#[test]
fn systemd_stop_timeouts_exceed_the_drain_timeouts() {
    for unit in [BROKER_UNIT, WORKER_UNIT] {
        let invocation = exec_start(unit);
        let timeout = service_directive(unit, "TimeoutStopSec")
            .unwrap_or_else(|| panic!("{unit}: no TimeoutStopSec"));
        let timeout = time_span(unit, &timeout);
        let needed = stop_time(&invocation);
        assert!(
            timeout > needed,
            "{unit}: TimeoutStopSec {timeout:?} is not above the {needed:?} the drain may take"
        );
    }
}

#[test]
fn worker_unit_signals_the_worker_alone() {
    assert_eq!(exec_start(WORKER_UNIT).program, "sluice-worker");
    assert_eq!(
        service_directive(WORKER_UNIT, "KillMode").as_deref(),
        Some("mixed"),
        "{WORKER_UNIT}: KillMode"
    );
}

#[test]
fn broker_unit_keeps_its_data_in_its_state_directory() {
    let invocation = exec_start(BROKER_UNIT);
    assert_eq!(invocation.program, "sluice-broker");
    let state = service_directive(BROKER_UNIT, "StateDirectory")
        .unwrap_or_else(|| panic!("{BROKER_UNIT}: no StateDirectory"));
    let data_dir = invocation
        .value("--data-dir")
        .unwrap_or_else(|| panic!("{BROKER_UNIT}: no --data-dir"));
    let state_path = Path::new("/var/lib").join(&state);
    assert!(
        Path::new(data_dir).starts_with(&state_path),
        "{BROKER_UNIT}: --data-dir {data_dir} is not under {}",
        state_path.display()
    );
}

#[test]
fn dockerfile_builds_workspace_packages_and_serves_the_broker_port() {
    let workspace = workspace_packages();
    let packages = dockerfile_packages();
    for package in ["sluice-broker", "sluice-worker", "sluice-cli"] {
        assert!(
            packages.iter().any(|p| p == package),
            "{DOCKERFILE} does not build {package}"
        );
    }
    for package in &packages {
        if workspace.contains(package) {
            continue;
        }
        assert!(
            NOT_YET_IN_WORKSPACE.contains(&package.as_str()),
            "{DOCKERFILE} builds {package}, which is no workspace package"
        );
        println!("note: {DOCKERFILE}: {package} is not in the workspace yet; allowed until it is");
    }
    let entrypoint = dockerfile_entrypoint();
    let addr = entrypoint
        .value("--addr")
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the ENTRYPOINT has no --addr"));
    let port = port_of(DOCKERFILE, addr).to_string();
    let exposed = dockerfile_instructions()
        .into_iter()
        .filter(|(instruction, _)| instruction == "EXPOSE")
        .any(|(_, ports)| ports.split_whitespace().any(|p| p == port));
    assert!(
        exposed,
        "{DOCKERFILE} does not EXPOSE {port}, the port of --addr"
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let available = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        println!("note: systemd-analyze is not installed: the units were not verified by it");
        return;
    }
    // systemd-analyze verify checks that ExecStart's program exists: the
    // units' /usr/local/bin paths become the binaries built here.
    let dir = scratch_dir("deploy-units");
    let mut copies = Vec::new();
    for unit in [BROKER_UNIT, WORKER_UNIT] {
        let mut text = read(unit);
        for name in ["sluice-broker", "sluice-worker"] {
            let built = binary(name);
            text = text.replace(&format!("/usr/local/bin/{name}"), &built.to_string_lossy());
        }
        let copy = dir.join(Path::new(unit).file_name().expect("a unit file name"));
        std::fs::write(&copy, text).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
        copies.push(copy);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // It warns (exit 0) about unknown keys and bad values: any line about
    // our units fails the test.
    let about_ours: Vec<&str> = report
        .lines()
        .filter(|line| {
            line.contains("sluice-broker.service") || line.contains("sluice-worker.service")
        })
        .collect();
    assert!(
        output.status.success() && about_ours.is_empty(),
        "systemd-analyze verify {BROKER_UNIT} {WORKER_UNIT}: {report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_broker_and_the_workers_run_as_different_users() {
    let user = |unit| service_directive(unit, "User").unwrap_or_else(|| panic!("{unit}: no User="));
    assert_ne!(
        user(BROKER_UNIT),
        user(WORKER_UNIT),
        "the units share a user"
    );
    let run_as = |kind, name| {
        let (file, workload) = object(kind, name);
        workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            .as_i64()
            .unwrap_or_else(|| panic!("{file}: {name} sets no runAsUser"))
    };
    assert_ne!(
        run_as("StatefulSet", "sluice-broker"),
        run_as("Deployment", "sluice-worker"),
        "the broker and the workers run as one user"
    );
}

#[test]
fn no_sample_broker_is_open_off_loopback() {
    // systemd: loopback, or TLS and tokens.
    let unit = exec_start(BROKER_UNIT);
    let secured =
        |i: &Invocation| i.value("--tls-cert").is_some() && i.value("--auth-tokens").is_some();
    let on_loopback = |i: &Invocation| {
        i.value("--addr")
            .is_none_or(|addr| addr.starts_with("127.") || addr.starts_with("[::1]"))
    };
    assert!(
        on_loopback(&unit) || secured(&unit),
        "{BROKER_UNIT}: open off loopback"
    );
    // Kubernetes: the same, or a NetworkPolicy that lets only chosen pods
    // reach the gRPC port.
    let (file, broker) = object("StatefulSet", "sluice-broker");
    let invocation = containers(&file, &broker)
        .iter()
        .map(|c| container_invocation(&file, c))
        .find(|i| i.program == "sluice-broker")
        .unwrap_or_else(|| panic!("{file}: no broker container"));
    if on_loopback(&invocation) || secured(&invocation) {
        return;
    }
    let pod_labels = &broker["spec"]["template"]["metadata"]["labels"];
    let guarded = of_kind("NetworkPolicy").iter().any(|(_, policy)| {
        let spec = &policy["spec"];
        let selects = spec["podSelector"]["matchLabels"]
            .as_hash()
            .is_some_and(|wanted| {
                wanted
                    .iter()
                    .all(|(k, v)| &pod_labels[k.as_str().unwrap_or("")] == v)
            });
        let rules = spec["ingress"].as_vec().cloned().unwrap_or_default();
        // Every rule that opens the gRPC port names who may come.
        let grpc_guarded = rules.iter().all(|rule| {
            let ports = rule["ports"].as_vec().cloned().unwrap_or_default();
            let opens_grpc = ports.is_empty()
                || ports.iter().any(|p| {
                    p["port"].as_str() == Some("grpc") || p["port"].as_i64() == Some(BROKER_PORT)
                });
            !opens_grpc || rule["from"].as_vec().is_some_and(|from| !from.is_empty())
        });
        selects && grpc_guarded
    });
    assert!(
        guarded,
        "{file}: the broker listens off loopback without TLS and tokens, and no NetworkPolicy guards its gRPC port"
    );
}
