//! `medseg serve`: a local web viewer over the library's 3D session. One page (built into the
//! binary) and a small JSON API; every request carries the token printed with the URL; only
//! files under the folders given on the command line can be opened (symlinks and `..` resolved
//! first); bound to 127.0.0.1 unless `--host` says otherwise. Each request runs on its own
//! thread (the model never blocks the accept loop); each opened volume has its own session
//! (locked while it works, so two tabs on one volume take turns), dropped after 30 minutes
//! unused.

mod api;
mod files;
mod review;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use medseg::{ModelFamily, Precision};

pub use api::State;

/// What `medseg serve` was asked for.
pub struct ServeArgs {
    pub paths: Vec<PathBuf>,
    pub family: ModelFamily,
    pub weights: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub window: Option<medseg::Intensity>,
    /// A `medseg batch` output folder to review.
    pub review: Option<PathBuf>,
}

/// A random token of 32 hex digits from the operating system.
fn new_token() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no random source for the token: {e}"))?;
    Ok(b.iter().map(|v| format!("{v:02x}")).collect())
}

/// Serve until killed.
pub fn serve(a: ServeArgs) -> Result<()> {
    let review = a.review.as_deref().map(review::Review::open).transpose()?;
    let mut roots = files::roots(&a.paths)?;
    roots.extend(review.iter().flat_map(|r| r.roots()));
    let seg = crate::load_segmenter(a.family, a.weights.as_deref(), Precision::F32)?;
    let token = new_token()?;
    let server = tiny_http::Server::http((a.host.as_str(), a.port))
        .map_err(|e| anyhow!("--host {} --port {}: {e}", a.host, a.port))?;
    let addr = server
        .server_addr()
        .to_ip()
        .context("the server's address")?;
    // Written once and never again: a reader that closes the pipe after the address (a
    // script, a test) must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "medseg serve: {} on http://{addr}/?token={token}\n(open that address in a browser; Ctrl-C stops)",
        a.family.name()
    );
    let _ = out.flush();
    drop(out);
    let state = Arc::new(State::new(seg, a.window, roots, token, review));
    for request in server.incoming_requests() {
        let state = Arc::clone(&state);
        std::thread::spawn(move || api::handle(&state, request));
    }
    Ok(())
}
