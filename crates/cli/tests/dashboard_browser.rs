//! The dashboard in a real browser: `tests/browser/dashboard.mjs` (Playwright driving Debian's
//! headless Chromium) serves the FreshMart example with this build's binary and checks the page
//! against the API: pipelines with freshness, live serving tables, the Lambda view, rejects, the
//! manifest, alerts, and screenshots it decodes and compares.
//!
//! Needs Node.js, Chromium (`/usr/bin/chromium` or `$CHROMIUM`) and `npm ci --prefix
//! tests/browser`; `.ci/run` installs all three.

use std::path::Path;
use std::process::Command;

#[test]
fn dashboard_works_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "the browser test needs its packages: run `npm ci --prefix tests/browser` (and install \
         Chromium: `apt-get install chromium`); .ci/run does both"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} (`apt-get install chromium`, or set \
         $CHROMIUM); .ci/run installs it"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .args([
            "--serve",
            env!("CARGO_BIN_EXE_flowline"),
            "--token",
            "s3cret",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("cannot run node (install Node.js 20 or newer)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    // The screenshots it checked are there, as PNG files.
    for shot in [
        "dashboard-initial.png",
        "dashboard-later.png",
        "table-fraud_alerts.png",
    ] {
        let bytes = std::fs::read(out.join(shot)).unwrap_or_else(|e| panic!("{shot}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{shot} is not a PNG"
        );
        assert!(bytes.len() > 10_000, "{shot} is suspiciously small");
    }
}
