//! Scraping `/metrics` and parsing it with a real OpenMetrics parser: the
//! Prometheus project's Python client (`prometheus_client`, installed by
//! `scripts/test`), run as a child process that fetches the page, parses
//! it and prints every sample as JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::WAIT;

/// Fetches argv[1] (https: trusting only the CA file argv[2]) and prints
/// its samples, or the HTTP status on failure.
const SCRAPE: &str = r#"
import json, ssl, sys, urllib.request, urllib.error
from prometheus_client.openmetrics.parser import text_string_to_metric_families
context = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10, context=context) as r:
        ctype, text = r.headers["Content-Type"], r.read().decode()
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
    sys.exit(0)
samples = [{"name": s.name, "labels": s.labels, "value": s.value}
           for f in text_string_to_metric_families(text) for s in f.samples]
print(json.dumps({"status": 200, "content_type": ctype, "samples": samples}))
"#;

/// One sample: its name and labels.
pub type Key = (String, BTreeMap<String, String>);

/// A parsed scrape.
#[derive(Debug)]
pub struct Scrape {
    /// The response's content type.
    pub content_type: String,
    samples: BTreeMap<Key, f64>,
}

/// Scrapes `url` until `check` holds, at most [`WAIT`]; fails naming `what`.
pub async fn scrape_until(url: &str, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scraped = scrape(url);
        if check(&scraped) {
            return scraped;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scrapes `url`, which must answer 200.
pub fn scrape(url: &str) -> Scrape {
    scrape_with(url, None)
}

/// Scrapes the https `url`, trusting only the PEM CA in `ca`; it must answer 200.
pub fn scrape_tls(url: &str, ca: &Path) -> Scrape {
    scrape_with(url, Some(ca))
}

fn scrape_with(url: &str, ca: Option<&Path>) -> Scrape {
    let output = Command::new("python3")
        .args(["-c", SCRAPE, url])
        .args(ca)
        .output()
        .expect("running python3 (scripts/test installs prometheus_client)");
    assert!(
        output.status.success(),
        "the scrape failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = result["status"].as_u64().unwrap();
    assert_eq!(status, 200, "scraping {url}: {result}");
    let samples = result["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let name = s["name"].as_str().unwrap().to_owned();
            ((name, labels), s["value"].as_f64().unwrap())
        })
        .collect();
    Scrape {
        content_type: result["content_type"].as_str().unwrap().to_owned(),
        samples,
    }
}

impl Scrape {
    /// The value of sample `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// The value of sample `name` with exactly `labels`; fails if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let known: Vec<&Key> = self.samples.keys().filter(|k| k.0 == name).collect();
            panic!("no sample {name} {labels:?}; samples of that name: {known:?}")
        })
    }

    /// Every sample's key.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.samples.keys()
    }
}
