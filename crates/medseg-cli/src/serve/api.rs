//! The viewer's HTTP API: the token check, the routes, and one session per opened volume.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medseg::io::output::Outputs;
use medseg::propagate::{parse_steps, SessionStep};
use medseg::{io, Intensity, SegmentRequest, Segmenter, SessionOptions, Volume, VolumeSession};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};

use super::files;
use super::review::Review;

/// The page, built into the binary.
const PAGE: &str = include_str!("page.html");
/// An opened volume unused this long is dropped.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// Request bodies larger than this are refused.
const MAX_BODY: u64 = 1 << 20;

/// One opened volume.
struct Opened {
    path: PathBuf,
    options: SessionOptions,
    vol: Volume,
    session: VolumeSession,
    steps: Vec<SessionStep>,
    /// 8-bit slices per display window.
    shown: HashMap<String, Vec<u8>>,
    used: Instant,
}

/// What every request shares.
pub struct State {
    seg: Segmenter,
    /// The model's 8-bit rule (`--window`; default by modality), also the page's default view.
    window: Option<Intensity>,
    roots: Vec<PathBuf>,
    token: String,
    opened: Mutex<HashMap<String, Arc<Mutex<Opened>>>>,
    counter: AtomicU64,
    review: Option<Review>,
    /// Per session: slices a running step has visited, and the last one (read without the
    /// session's lock, for the page's progress line).
    progress: Mutex<HashMap<String, (usize, usize)>>,
}

/// An answer: status and body.
type Reply = (u16, &'static str, Vec<u8>);

fn error(status: u16, msg: impl std::fmt::Display) -> Reply {
    let body = json!({ "error": msg.to_string() }).to_string();
    (status, "application/json", body.into_bytes())
}

fn ok(v: Value) -> Reply {
    (200, "application/json", v.to_string().into_bytes())
}

impl State {
    /// The state of a server over `roots`.
    pub fn new(
        seg: Segmenter,
        window: Option<Intensity>,
        roots: Vec<PathBuf>,
        token: String,
        review: Option<Review>,
    ) -> Self {
        Self {
            review,
            seg,
            window,
            roots,
            token,
            opened: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            progress: Mutex::new(HashMap::new()),
        }
    }
}

/// Answer one request (on its own thread).
pub fn handle(state: &State, mut request: Request) {
    let (status, kind, body) = route(state, &mut request);
    let header = Header::from_bytes("Content-Type", kind).expect("a valid header");
    let nosniff = Header::from_bytes("X-Content-Type-Options", "nosniff").expect("valid");
    let response = Response::from_data(body)
        .with_status_code(status)
        .with_header(header)
        .with_header(nosniff);
    let _ = request.respond(response);
}

/// `(path, query)` of a URL, the query percent-decoded.
fn split_url(url: &str) -> (&str, HashMap<String, String>) {
    let (path, q) = url.split_once('?').unwrap_or((url, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    (path, query)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16).ok())
            .flatten();
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equal tokens, compared in constant time.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn route(state: &State, request: &mut Request) -> Reply {
    let url = request.url().to_string();
    let (path, query) = split_url(&url);
    let header_token = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Medseg-Token"))
        .map(|h| h.value.as_str().to_string());
    let token = query.get("token").cloned().or(header_token);
    // The body is read first, whatever the answer: a connection closed with unread bytes is
    // reset, and the client would lose the answer.
    let body = read_body(request);
    if !token.is_some_and(|t| same(&t, &state.token)) {
        return error(
            401,
            "missing or wrong token: use the address medseg serve printed",
        );
    }
    state.evict_idle();
    let body = match body {
        Ok(b) => b,
        Err(r) => return r,
    };
    match (request.method(), path) {
        (Method::Get, "/") => (200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
        (Method::Get, "/api/files") => ok(json!({ "files": files::list(&state.roots) })),
        (Method::Post, "/api/open") => state.open(&body),
        (Method::Get, "/api/slice") => state.with(&query, |o| slice_png(o, &query, state.window)),
        (Method::Get, "/api/overlay") => state.with(&query, |o| overlay_png(o, &query)),
        (Method::Get, "/api/objects") => state.with(&query, |o| ok(objects(o))),
        (Method::Post, "/api/step") => {
            let id = body["session"].as_str().unwrap_or_default().to_string();
            let report = |z: usize| state.report(&id, Some(z));
            let reply = state.with_body(&body, |o, b| step(o, b, &report));
            state.report(&id, None);
            reply
        }
        (Method::Get, "/api/progress") => {
            let id = query.get("session").cloned().unwrap_or_default();
            let now = state.progress.lock().ok().and_then(|m| m.get(&id).copied());
            let (visited, slice) = now.map_or((0, None), |(n, z)| (n, Some(z)));
            ok(json!({ "visited": visited, "slice": slice }))
        }
        (Method::Post, "/api/undo") => state.with_body(&body, |o, _| undo(o, &state.seg)),
        (Method::Post, "/api/save") => state.with_body(&body, |o, b| save(o, b, &state.seg)),
        (Method::Get, "/api/review") => match &state.review {
            Some(r) => ok(r.cases()),
            None => error(404, "not a review: start medseg serve --review DIR"),
        },
        (Method::Post, "/api/review") => state.decide(&body),
        _ => error(404, format!("no such page: {path}")),
    }
}

fn read_body(request: &mut Request) -> Result<Value, Reply> {
    let mut text = String::new();
    let reader = request.as_reader();
    if reader.take(MAX_BODY + 1).read_to_string(&mut text).is_err() || text.len() as u64 > MAX_BODY
    {
        return Err(error(400, "the request body is not UTF-8 JSON under 1 MiB"));
    }
    if *request.method() != Method::Post {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text)
        .map_err(|e| error(400, format!("the request body is not JSON: {e}")))
}

impl State {
    /// A slice visited by the running step of session `id` (`None`: the step ended).
    fn report(&self, id: &str, slice: Option<usize>) {
        if let Ok(mut m) = self.progress.lock() {
            match slice {
                Some(z) => {
                    let e = m.entry(id.to_string()).or_insert((0, z));
                    *e = (e.0 + 1, z);
                }
                None => {
                    m.remove(id);
                }
            }
        }
    }

    fn options(&self) -> SessionOptions {
        SessionOptions {
            intensity: self.window,
            ..Default::default()
        }
    }

    fn evict_idle(&self) {
        if let Ok(mut m) = self.opened.lock() {
            // A session at work (locked) is in use: kept, and never waited for here, so no
            // request stalls behind another tab's propagation.
            m.retain(|_, o| match o.try_lock() {
                Ok(o) => o.used.elapsed() < IDLE,
                Err(std::sync::TryLockError::WouldBlock) => true,
                Err(std::sync::TryLockError::Poisoned(_)) => false,
            });
        }
    }

    /// Open a volume under the served folders: a new session.
    fn open(&self, body: &Value) -> Reply {
        let Some(requested) = body["path"].as_str() else {
            return error(400, "open: give {\"path\": ...}");
        };
        let Some(path) = files::allowed(&self.roots, requested) else {
            return error(
                403,
                format!("{requested}: not under the folders this server was started on"),
            );
        };
        let req = match request_of(body) {
            Ok(r) => r,
            Err(e) => return error(400, e),
        };
        let mut vol = match io::read_volume(&path) {
            Ok(v) => v,
            Err(e) => return error(400, format!("{}: {e}", path.display())),
        };
        if let Some(m) = req.options.modality {
            vol.set_modality(m);
        }
        let mut options = self.options();
        options.intensity = req.window.or(options.intensity);
        if let Some(d) = req.options.max_drift {
            options.max_intensity_drift = (d > 0.0).then_some(d);
        }
        let session = match VolumeSession::new(&self.seg, &vol, &options) {
            Ok(s) => s,
            Err(e) => return error(400, e),
        };
        let id = format!("s{}", self.counter.fetch_add(1, Ordering::Relaxed) + 1);
        let reply = json!({
            "session": id, "path": path, "dims": vol.dims, "spacing": vol.spacing,
            "modality": vol.modality.to_string(), "notes": vol.notes, "model": self.seg.family().name(),
        });
        let opened = Opened {
            path,
            options,
            vol,
            session,
            steps: Vec::new(),
            shown: HashMap::new(),
            used: Instant::now(),
        };
        match self.opened.lock() {
            Ok(mut m) => m.insert(id, Arc::new(Mutex::new(opened))),
            Err(_) => return error(500, "state lock poisoned"),
        };
        ok(reply)
    }

    /// A reviewer's decision on a case; `corrected` saves the session's mask beside the
    /// original first.
    fn decide(&self, body: &Value) -> Reply {
        let Some(review) = &self.review else {
            return error(404, "not a review: start medseg serve --review DIR");
        };
        let id = body["case_id"].as_str().unwrap_or_default();
        let Some(case) = review.case(id) else {
            return error(404, format!("no case {id:?} in {}", review.dir.display()));
        };
        let decision = body["decision"].as_str().unwrap_or_default();
        let corrected = match decision {
            "accept" | "reject" => None,
            "corrected" => {
                let dest = review.corrected_path(id);
                let mut keep: Vec<PathBuf> = case.mask.iter().cloned().collect();
                keep.push(PathBuf::from(&case.run.input));
                let info = mask_info(&self.seg);
                let saved = self.run(body["session"].as_str(), |o| {
                    save_to(o, &dest, &keep, &info)
                });
                if saved.0 != 200 {
                    return saved;
                }
                Some(dest)
            }
            _ => {
                return error(
                    400,
                    format!("decision {decision:?}: accept, reject or corrected"),
                )
            }
        };
        match review.decide(id, decision, corrected.as_deref()) {
            Ok(()) => {
                ok(json!({ "case_id": id, "decision": decision, "corrected_mask": corrected }))
            }
            Err(e) => error(500, e),
        }
    }

    fn find(&self, id: Option<&str>) -> Result<Arc<Mutex<Opened>>, Reply> {
        let id = id.ok_or_else(|| error(400, "give the session"))?;
        let m = self
            .opened
            .lock()
            .map_err(|_| error(500, "state lock poisoned"))?;
        m.get(id).cloned().ok_or_else(|| {
            error(
                404,
                format!("no session {id} (closed after 30 minutes unused?)"),
            )
        })
    }

    fn with(&self, query: &HashMap<String, String>, f: impl FnOnce(&mut Opened) -> Reply) -> Reply {
        self.run(query.get("session").map(String::as_str), f)
    }

    fn with_body(&self, body: &Value, f: impl FnOnce(&mut Opened, &Value) -> Reply) -> Reply {
        self.run(body["session"].as_str(), |o| f(o, body))
    }

    fn run(&self, id: Option<&str>, f: impl FnOnce(&mut Opened) -> Reply) -> Reply {
        let opened = match self.find(id) {
            Ok(o) => o,
            Err(r) => return r,
        };
        let Ok(mut o) = opened.lock() else {
            return error(500, "session lock poisoned");
        };
        o.used = Instant::now();
        f(&mut o)
    }
}

/// Slice `z` of the query, checked.
fn slice_of(o: &Opened, query: &HashMap<String, String>) -> Result<usize, Reply> {
    let nz = o.vol.dims[0];
    match query.get("z").and_then(|z| z.parse::<usize>().ok()) {
        Some(z) if z < nz => Ok(z),
        _ => Err(error(400, format!("z: a slice from 0 to {}", nz - 1))),
    }
}

fn png(data: Vec<u8>, w: usize, h: usize, channels: usize) -> Reply {
    let mut out = std::io::Cursor::new(Vec::new());
    let color = if channels == 4 {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::L8
    };
    let enc = image::codecs::png::PngEncoder::new(&mut out);
    match image::ImageEncoder::write_image(enc, &data, w as u32, h as u32, color) {
        Ok(()) => (200, "image/png", out.into_inner()),
        Err(e) => error(500, e),
    }
}

/// A slice in 8 bits under the query's window (default: the model's).
/// A JSON body's request fields (`window`, `modality`, `max_drift`; strings, numbers, booleans
/// and lists as text) through the library's one parser, as the CLI's flags and Python's
/// keywords.
fn request_of(body: &Value) -> medseg::Result<SegmentRequest> {
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
            Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
    let given = SegmentRequest::names().filter_map(|k| Some((k, text(body.get(k)?))));
    let fields: Vec<(&str, String)> = given.collect();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    SegmentRequest::parse(&fields)
}

fn slice_png(o: &mut Opened, query: &HashMap<String, String>, model: Option<Intensity>) -> Reply {
    let z = match slice_of(o, query) {
        Ok(z) => z,
        Err(r) => return r,
    };
    let name = query.get("window").cloned().unwrap_or_default();
    if !o.shown.contains_key(&name) {
        let rule = if name.is_empty() {
            Ok(model.unwrap_or(Intensity::default_for(o.vol.modality)))
        } else {
            Intensity::parse(&name)
        };
        match rule {
            Ok(rule) => o
                .shown
                .insert(name.clone(), medseg::volume::to_u8(&o.vol.data, rule)),
            Err(e) => return error(400, e),
        };
    }
    let [_, h, w] = o.vol.dims;
    let n = h * w;
    png(o.shown[&name][z * n..(z + 1) * n].to_vec(), w, h, 1)
}

/// Object colours (RGB) by id.
pub const COLOURS: [[u8; 3]; 6] = [
    [230, 60, 60],
    [60, 160, 230],
    [80, 200, 90],
    [240, 200, 40],
    [190, 90, 220],
    [250, 140, 40],
];

/// The label map on slice `z` as a translucent RGBA overlay.
fn overlay_png(o: &mut Opened, query: &HashMap<String, String>) -> Reply {
    let z = match slice_of(o, query) {
        Ok(z) => z,
        Err(r) => return r,
    };
    let [_, h, w] = o.vol.dims;
    let mut rgba = vec![0u8; 4 * h * w];
    for (px, l) in rgba.chunks_mut(4).zip(o.session.label_slice(z)) {
        if l > 0 {
            let c = COLOURS[(usize::from(l) - 1) % COLOURS.len()];
            px.copy_from_slice(&[c[0], c[1], c[2], 120]);
        }
    }
    png(rgba, w, h, 4)
}

/// Every object's mL, voxels and slice range.
fn objects(o: &Opened) -> Value {
    let list: Vec<Value> = o
        .session
        .object_ids()
        .into_iter()
        .filter_map(|id| {
            let st = o.session.stats(id).ok()?;
            Some(json!({ "id": id, "ml": st.volume_ml, "voxels": st.voxels, "slices": st.slice_range }))
        })
        .collect();
    json!({ "objects": list, "steps": o.steps.len() })
}

/// Apply one session-script entry (a box, clicks, a propagation, a cleared slice, a removed
/// object; no mask files from the page).
fn step(o: &mut Opened, body: &Value, progress: &dyn Fn(usize)) -> Reply {
    let steps = match parse_steps(&Value::Array(vec![body["step"].clone()]).to_string()) {
        Ok(s) => s,
        Err(e) => return error(400, e),
    };
    let mut no_files = |_: &str| {
        Err(medseg::Error::InvalidPrompt(
            "the viewer sends no mask files".into(),
        ))
    };
    match o
        .session
        .apply(&steps[0], &mut no_files, &mut |z| progress(z))
    {
        Ok(visited) => {
            o.steps.push(steps[0].clone());
            let mut v = objects(o);
            v["visited"] = json!(visited.unwrap_or_default());
            ok(v)
        }
        Err(e) => error(400, e),
    }
}

/// Undo the last step: the session again from the steps before it.
fn undo(o: &mut Opened, seg: &Segmenter) -> Reply {
    if o.steps.pop().is_none() {
        return error(400, "nothing to undo");
    }
    let mut fresh = match VolumeSession::new(seg, &o.vol, &o.options) {
        Ok(s) => s,
        Err(e) => return error(500, e),
    };
    let mut no_files = |_: &str| Err(medseg::Error::InvalidPrompt("no mask files".into()));
    for s in &o.steps {
        if let Err(e) = fresh.apply(s, &mut no_files, &mut |_| {}) {
            return error(500, e);
        }
    }
    o.session = fresh;
    ok(objects(o))
}

/// Save the label map beside the input: `<name>.medseg.nii.gz` (or `.medseg.dcm`, a DICOM SEG
/// over a DICOM input), atomically, never over an input.
fn save(o: &mut Opened, body: &Value, seg: &Segmenter) -> Reply {
    let format = body["format"].as_str().unwrap_or("nii.gz");
    if format != "nii.gz" && format != "dcm" {
        return error(400, format!("format {format:?}: nii.gz or dcm"));
    }
    let name = o
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .trim_end_matches(".dcm");
    let dest = o.path.with_file_name(format!("{stem}.medseg.{format}"));
    let keep = [o.path.clone()];
    save_to(o, &dest, &keep, &mask_info(seg))
}

/// What a saved mask says made it (a DICOM SEG's algorithm).
fn mask_info(seg: &Segmenter) -> io::mask::MaskInfo {
    let by = medseg::io::segment::Segment::by_model(
        seg.family().name(),
        seg.weights_sha256().unwrap_or(""),
    );
    io::mask::MaskInfo {
        segment: by,
        all_frames: false,
    }
}

/// Write the session's label map at `dest` (its extension says the format), atomically,
/// never over `keep` or the input.
fn save_to(
    o: &mut Opened,
    dest: &std::path::Path,
    keep: &[PathBuf],
    info: &io::mask::MaskInfo,
) -> Reply {
    let ids = o.session.object_ids();
    if ids.is_empty() || ids.iter().any(|&i| i > 255) {
        return error(400, "nothing to save (or an object id over 255)");
    }
    let labels: Vec<u8> = o.session.label_map().into_iter().map(|v| v as u8).collect();
    let objects: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
    let mut inputs = keep.to_vec();
    inputs.push(o.path.clone());
    let mut outputs = Outputs::new(&inputs);
    let written = outputs
        .plan(dest)
        .and_then(|()| {
            io::mask::stage_labels(&mut outputs, dest, &labels, &objects, &o.vol, 0, info)
        })
        .and_then(|()| outputs.commit());
    match written {
        Ok(()) => ok(json!({ "saved": dest })),
        Err(e) => error(400, e),
    }
}
