//! Every shell example in README.md and docs/*.md that talks to logexport's API runs, as
//! written, against a live `logexport run` (with the emulator's January 2024 data for acme), so
//! an example cannot rot.
//!
//! The ```sh blocks of one file that talk to the API (they name `127.0.0.1:8080`) run in order in one bash session (so a
//! variable set in one block is there in the next), with `set -euo pipefail` and `curl` failing
//! on any HTTP error (`--fail-with-body`). `127.0.0.1:8080` becomes the instance's address;
//! `logexport` on the PATH is the binary with the instance's configuration; `$T` (alice,
//! administrator of acme) and `$ROOT` (a superuser) are set beforehand.

use std::path::{Path, PathBuf};

use crate::operator::{Deployment, binary};

/// The ```sh blocks of `text` that talk to the API, with their first line numbers.
pub fn api_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```sh") || trimmed.starts_with("```bash") => {
                current = Some((n + 2, String::new()));
            }
            Some(_) if trimmed.starts_with("```") => {
                if let Some((start, body)) = current.take()
                    && body.contains("127.0.0.1:8080")
                {
                    blocks.push((start, body));
                }
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// README.md and every docs/*.md, in name order.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

#[tokio::test]
async fn every_api_example_in_the_readme_and_docs_runs_against_a_live_instance() {
    let deployment = Deployment::new(
        "[email]\ntransport = \"file\"\nfile_dir = \"mail\"\n[export]\nslices = 4\n",
    )
    .await;
    let alice = deployment
        .token(&["--user", "alice", "--admin-org", "acme"])
        .await;
    let root = deployment.token(&["--user", "root", "--superuser"]).await;
    let _run = deployment.start("run");
    deployment.ready().await;

    // `logexport` on the PATH: the binary with this instance's configuration.
    let bin = deployment.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("logexport");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --config {} \"$@\"\n",
            binary(),
            deployment.config.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let address = format!("127.0.0.1:{}", deployment.port);

    let mut ran = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let blocks = api_blocks(&text);
        if blocks.is_empty() {
            continue;
        }
        let name = document.file_name().unwrap().to_string_lossy().into_owned();
        let mut script =
            String::from("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n");
        for (line, body) in &blocks {
            script.push_str(&format!("echo '### {name}:{line}' >&2\n"));
            script.push_str(&body.replace("127.0.0.1:8080", &address));
            ran += 1;
        }
        let work = deployment.dir.join(format!("run-{name}"));
        std::fs::create_dir_all(&work).unwrap();
        let output = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&work)
            .env("PATH", &path)
            .env("T", &alice)
            .env("ROOT", &root)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let failed_at = stderr
            .lines()
            .rfind(|l| l.starts_with("### "))
            .unwrap_or("?");
        assert!(
            output.status.success(),
            "an example in {failed_at} failed:\n--- stdout\n{}\n--- stderr\n{stderr}",
            String::from_utf8_lossy(&output.stdout),
        );
    }
    assert!(ran >= 5, "only {ran} API examples were found");
}

#[test]
fn api_blocks_are_found_with_their_lines() {
    let text = "intro\n```sh\ncurl http://127.0.0.1:8080/api/v1/x\n```\n```sh\nls /api/v1\n```\n";
    assert_eq!(
        api_blocks(text),
        vec![(3, "curl http://127.0.0.1:8080/api/v1/x\n".to_owned())]
    );
}
