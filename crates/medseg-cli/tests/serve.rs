//! `medseg serve` through the built binary and raw HTTP: the token on every request, only files
//! under the served folders (`..` and symlinks resolved), loopback by default, and a session
//! from a box to a saved label map.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

mod common;

use common::fixtures;

/// A running server; killed on drop.
struct Server {
    child: Child,
    /// Kept open while the server runs.
    _stdout: BufReader<std::process::ChildStdout>,
    addr: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(paths: &[&Path], extra: &[&str]) -> Server {
    medseg::weights::fetch_default().expect("the serve tests need the LiteMedSAM weights");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medseg"));
    cmd.arg("serve")
        .args(paths)
        .args(["--model", "lite-medsam", "--port", "0"])
        .args(extra);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let rest = url.trim_start_matches("http://");
    let (addr, query) = rest.split_once("/?token=").unwrap();
    Server {
        child,
        _stdout: stdout,
        addr: addr.to_string(),
        token: query.to_string(),
    }
}

/// `(status, body)` of one request.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} {path}: no complete answer: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

fn api(srv: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, b) = http(
        &srv.addr,
        method,
        &format!("{path}{sep}token={}", srv.token),
        body.as_ref(),
    );
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The MedSAM2 parity test's template slices as NIfTI in `dir`.
fn template(dir: &Path) -> PathBuf {
    common::template(dir).0
}

#[test]
fn the_token_is_needed_and_loopback_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    template(dir.path());
    let srv = serve(&[dir.path()], &[]);
    assert!(srv.addr.starts_with("127.0.0.1:"), "{}", srv.addr);
    for path in ["/", "/api/files", "/?token=wrong", "/api/files?token=0000"] {
        let (status, body) = http(&srv.addr, "GET", path, None);
        assert_eq!(status, 401, "{path}");
        assert!(String::from_utf8_lossy(&body).contains("token"), "{path}");
    }
    let (status, page) = http(&srv.addr, "GET", &format!("/?token={}", srv.token), None);
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&page).contains("<canvas"),
        "the page"
    );
}

#[test]
fn only_files_under_the_served_folders_open() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let inside = template(&served);
    std::fs::write(served.join("notes.txt"), "not an image").unwrap();
    let picture = served.join("slice.png");
    std::fs::copy(fixtures().join("images/demo_ct.png"), &picture).unwrap();
    let outside = template(dir.path());
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, served.join("link.nii.gz")).unwrap();
    let srv = serve(&[&served], &[]);
    let (status, files) = api(&srv, "GET", "/api/files", None);
    assert_eq!(status, 200);
    let files: Vec<String> = serde_json::from_value(files["files"].clone()).unwrap();
    let expect: Vec<String> = [&picture, &inside]
        .iter()
        .map(|p| p.canonicalize().unwrap().display().to_string())
        .collect();
    assert_eq!(files, expect, "the served volume and picture, nothing else");
    let dotdot = served.join("../template.nii.gz");
    let link = served.join("link.nii.gz");
    for p in [
        outside.as_path(),
        dotdot.as_path(),
        link.as_path(),
        Path::new("/etc/passwd"),
    ] {
        let (status, v) = api(&srv, "POST", "/api/open", Some(json!({ "path": p })));
        assert_eq!(status, 403, "{}: {v}", p.display());
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("not under the folders"),
            "{v}"
        );
    }
    let (status, v) = api(&srv, "POST", "/api/open", Some(json!({ "path": inside })));
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_session_from_a_box_to_a_saved_label_map() {
    let dir = tempfile::tempdir().unwrap();
    let input = template(dir.path());
    let srv = serve(&[dir.path()], &[]);
    let (status, v) = api(&srv, "POST", "/api/open", Some(json!({ "path": input })));
    assert_eq!(status, 200, "{v}");
    let session = v["session"].as_str().unwrap().to_string();
    assert_eq!(v["dims"][0], 14, "{v}");
    let step = |s: Value| {
        api(
            &srv,
            "POST",
            "/api/step",
            Some(json!({ "session": session, "step": s })),
        )
    };
    let (status, v) = step(json!({ "slice": 4, "object": 1, "box": [60, 80, 140, 150] }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["objects"][0]["id"], 1);
    let (status, v) = step(json!({ "slice": 4, "box": [60, 80, 9999, 150] }));
    assert_eq!(status, 400, "a box outside the slice: {v}");
    // The propagation in another thread; its progress read meanwhile without the session.
    let (addr, token, sid) = (srv.addr.clone(), srv.token.clone(), session.clone());
    let worker = std::thread::spawn(move || {
        let body = json!({ "session": sid, "step": { "propagate": "both" } });
        http(
            &addr,
            "POST",
            &format!("/api/step?token={token}"),
            Some(&body),
        )
    });
    let mut seen = 0;
    while !worker.is_finished() {
        let (_, p) = api(
            &srv,
            "GET",
            &format!("/api/progress?session={session}"),
            None,
        );
        seen = seen.max(p["visited"].as_u64().unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, body) = worker.join().unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(seen >= 1, "progress was reported while propagating");
    let visited = v["visited"].as_array().unwrap().len();
    assert!(visited >= 3, "{v}");
    let slices = v["objects"][0]["slices"].clone();
    let (status, png) = http(
        &srv.addr,
        "GET",
        &format!("/api/overlay?session={session}&z=5&token={}", srv.token),
        None,
    );
    assert_eq!(status, 200);
    let overlay = image::load_from_memory(&png).unwrap().to_rgba8();
    assert!(
        overlay.pixels().any(|p| p[3] > 0),
        "the mask shows on slice 5"
    );
    let (status, png) = http(
        &srv.addr,
        "GET",
        &format!("/api/slice?session={session}&z=99&token={}", srv.token),
        None,
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&png));

    let (status, v) = api(
        &srv,
        "POST",
        "/api/save",
        Some(json!({ "session": session })),
    );
    assert_eq!(status, 200, "{v}");
    let saved = PathBuf::from(v["saved"].as_str().unwrap());
    assert_eq!(
        saved,
        dir.path()
            .canonicalize()
            .unwrap()
            .join("template.medseg.nii.gz")
    );
    let labels = medseg::io::read_volume(&saved).unwrap();
    let voxels = labels.data.iter().filter(|&&l| l == 1.0).count();
    let (_, objects) = api(
        &srv,
        "GET",
        &format!("/api/objects?session={session}"),
        None,
    );
    assert_eq!(
        objects["objects"][0]["voxels"].as_u64(),
        Some(voxels as u64)
    );
    assert_eq!(objects["objects"][0]["slices"], slices);

    let (status, v) = api(
        &srv,
        "POST",
        "/api/undo",
        Some(json!({ "session": session })),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["steps"], 1, "the propagation undone: {v}");
    let (status, _) = api(
        &srv,
        "POST",
        "/api/undo",
        Some(json!({ "session": "nope" })),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_batch_folder_under_review() {
    let dir = tempfile::tempdir().unwrap();
    let input = template(dir.path());
    let cases = dir.path().join("cases.csv");
    let i = input.display();
    std::fs::write(
        &cases,
        format!("case_id,input,key_slice,x0,y0,x1,y1,window,max_drift\na,{i},4,60,80,140,150,\"127.5,255\",30\nb,{i},6,20,30,90,100,\"127.5,255\",\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_medseg"))
        .args([
            "batch",
            cases.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let original = std::fs::read(out.join("a.nii.gz")).unwrap();

    let srv = serve(&[], &["--review", out.to_str().unwrap()]);
    let (status, v) = api(&srv, "GET", "/api/review", None);
    assert_eq!(status, 200, "{v}");
    let listed = v["cases"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], "a");
    assert_eq!(listed[0]["status"], "ok");
    assert!(listed[0]["ml"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(listed[0]["box"], json!([60.0, 80.0, 140.0, 150.0]));
    // the options the case ran with, as request fields the page opens it with
    assert_eq!(listed[0]["options"], json!({ "max_drift": "30" }));
    assert_eq!(listed[1]["options"], json!({}));

    // A bad request field is refused in the library's words (the CLI's and Python's).
    for (field, value, reason) in [
        ("window", json!("40,0"), "window \"40,0\": use brain"),
        (
            "max_drift",
            json!(-1),
            "max_drift \"-1\": a number of grey levels",
        ),
        ("modality", json!("pet"), "modality \"pet\": give ct or mr"),
    ] {
        let mut body = json!({ "path": input });
        body[field] = value;
        let (status, v) = api(&srv, "POST", "/api/open", Some(body));
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().starts_with(reason), "{v}");
    }

    // The case's input opens (it is listed in results.csv), with the case's window.
    let (status, v) = api(
        &srv,
        "POST",
        "/api/open",
        Some(json!({ "path": input, "window": "127.5,255" })),
    );
    assert_eq!(status, 200, "{v}");
    let session = v["session"].as_str().unwrap().to_string();
    for step in [
        json!({ "slice": 4, "box": [60, 80, 140, 150] }),
        json!({ "propagate": "both" }),
    ] {
        let (status, v) = api(
            &srv,
            "POST",
            "/api/step",
            Some(json!({ "session": session, "step": step })),
        );
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = api(
        &srv,
        "POST",
        "/api/review",
        Some(json!({ "case_id": "a", "decision": "corrected", "session": session })),
    );
    assert_eq!(status, 200, "{v}");
    let corrected = out.canonicalize().unwrap().join("a.corrected.nii.gz");
    assert!(corrected.exists(), "{v}");
    assert_eq!(
        std::fs::read(out.join("a.nii.gz")).unwrap(),
        original,
        "the batch mask stays"
    );
    let (status, _) = api(
        &srv,
        "POST",
        "/api/review",
        Some(json!({ "case_id": "b", "decision": "reject" })),
    );
    assert_eq!(status, 200);
    let (status, v) = api(
        &srv,
        "POST",
        "/api/review",
        Some(json!({ "case_id": "b", "decision": "maybe" })),
    );
    assert_eq!(status, 400, "{v}");
    let (status, _) = api(
        &srv,
        "POST",
        "/api/review",
        Some(json!({ "case_id": "zz", "decision": "accept" })),
    );
    assert_eq!(status, 404);

    let mut r = csv::Reader::from_path(out.join("review.csv")).unwrap();
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][..2], ["a".to_string(), "corrected".to_string()]);
    assert_eq!(rows[0][2], corrected.display().to_string());
    assert_eq!(rows[1][..2], ["b".to_string(), "reject".to_string()]);
    let (_, v) = api(&srv, "GET", "/api/review", None);
    assert_eq!(v["cases"][1]["decision"], "reject");
    // Still nothing outside: the folder's own parent is not served.
    let (status, _) = api(
        &srv,
        "POST",
        "/api/open",
        Some(json!({ "path": dir.path().join("cases.csv") })),
    );
    assert_eq!(status, 403);
}
