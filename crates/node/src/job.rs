//! One AsyncTask for every call: runs a core closure on the libuv pool, turns a core error
//! into a JS error whose message is a JSON record the TS facade unpacks into a `BtrfsError`,
//! and turns a panic into an error instead of an abort.

use btrfs_layers_core::Error as CoreError;
use napi::bindgen_prelude::*;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

type Work<R> = Box<dyn FnOnce() -> btrfs_layers_core::Result<R> + Send>;

pub struct Job<R: Send + 'static> {
    work: Option<Work<R>>,
}

impl<R: ToNapiValue + TypeName + Send + 'static> Job<R> {
    pub fn new(
        f: impl FnOnce() -> btrfs_layers_core::Result<R> + Send + 'static,
    ) -> AsyncTask<Self> {
        AsyncTask::new(Job {
            work: Some(Box::new(f)),
        })
    }
}

impl<R: ToNapiValue + TypeName + Send + 'static> Task for Job<R> {
    type Output = R;
    type JsValue = R;

    fn compute(&mut self) -> Result<R> {
        let work = self
            .work
            .take()
            .ok_or_else(|| to_js_error(&CoreError::internal("job ran twice")))?;
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(to_js_error(&e)),
            Err(panic) => Err(to_js_error(&CoreError::internal(format!(
                "panic in native code: {}",
                panic_message(&panic)
            )))),
        }
    }

    fn resolve(&mut self, _env: Env, output: R) -> Result<R> {
        Ok(output)
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// The JSON record the facade's `fromNative` reads: code, errno, syscall, path, message.
pub fn to_js_error(e: &CoreError) -> Error {
    Error::new(Status::GenericFailure, record(e, &[]))
}

/// As [`to_js_error`], with every error of a many-error operation in `errors`.
pub fn to_js_error_many(first: &CoreError, all: &[CoreError]) -> Error {
    Error::new(Status::GenericFailure, record(first, all))
}

/// A path's bytes as JS gets them: a string (U+FFFD for bytes that are not UTF-8), and the
/// bytes themselves as a Buffer only when they are not UTF-8.
pub fn js_path(bytes: Vec<u8>) -> (String, Option<Buffer>) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, None),
        Err(e) => {
            let bytes = e.into_bytes();
            (
                String::from_utf8_lossy(&bytes).into_owned(),
                Some(Buffer::from(bytes)),
            )
        }
    }
}

fn record(e: &CoreError, all: &[CoreError]) -> String {
    let mut s = String::from("{\"btrfsLayers\":1,\"code\":");
    json_str(&mut s, e.code_str());
    s.push_str(",\"errno\":");
    match e.errno() {
        Some(n) => s.push_str(&n.to_string()),
        None => s.push_str("null"),
    }
    s.push_str(",\"syscall\":");
    json_str(&mut s, e.syscall);
    s.push_str(",\"path\":");
    match &e.path {
        Some(p) => json_str(&mut s, &p.to_string_lossy()),
        None => s.push_str("null"),
    }
    // A path that is not UTF-8 also goes as its bytes, in hex (JSON holds no raw bytes).
    if let Some(bytes) = e
        .path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes())
        .filter(|b| std::str::from_utf8(b).is_err())
    {
        s.push_str(",\"rawPath\":\"");
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s.push('"');
    }
    s.push_str(",\"message\":");
    json_str(&mut s, &e.message);
    if !all.is_empty() {
        s.push_str(",\"errors\":[");
        for (i, each) in all.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&record(each, &[]));
        }
        s.push(']');
    }
    s.push('}');
    s
}

fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
