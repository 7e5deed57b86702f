//! Core errors as JS values: a plain object built here, thrown or rejected as it is, which the
//! facade (`ts/errors.ts`) turns into a `BtrfsError`. No JSON on the way.

use btrfs_layers_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::JsValue;
use napi_derive::napi;
use std::os::unix::ffi::OsStrExt;

/// What a native call rejects (or throws) with: an `Error` carrying these fields (the ones
/// in `errors` are plain objects).
#[napi(object)]
pub struct NativeError {
    /// Tells these apart from napi's own errors.
    #[napi(ts_type = "'BtrfsNativeError'")]
    pub name: String,
    /// `ENOENT`, `ERR_BAD_LAYER`, ...
    pub code: String,
    /// The kernel's errno, negative as in Node's fs errors; absent when the kernel gave none.
    pub errno: Option<i32>,
    /// The system call or ioctl that failed; absent for checks of arguments.
    pub syscall: Option<String>,
    /// The core operation that failed (`create`, `remap`, `idmap`).
    pub operation: Option<String>,
    /// The path concerned; bytes that are not UTF-8 show as U+FFFD.
    pub path: Option<String>,
    /// The path's bytes, only when they are not UTF-8.
    pub raw_path: Option<Buffer>,
    pub message: String,
    /// Every error of an operation that goes on past failures (remap), the first included.
    pub errors: Option<Vec<NativeError>>,
}

/// A failed call: its first error, and all of them when it went on past failures.
#[derive(Debug)]
pub struct Failure {
    pub first: CoreError,
    pub all: Vec<CoreError>,
}

impl From<CoreError> for Failure {
    fn from(first: CoreError) -> Self {
        Failure {
            first,
            all: Vec::new(),
        }
    }
}

impl Failure {
    /// Every error of `all` (at least one), the first as the error.
    pub fn many(all: Vec<CoreError>) -> Option<Failure> {
        Some(Failure {
            first: all.first()?.clone(),
            all,
        })
    }

    pub fn panicked() -> Failure {
        CoreError::internal("panic in native code").into()
    }

    fn during(self, op: &'static str) -> Failure {
        Failure {
            first: self.first.during(op),
            all: self.all,
        }
    }

    /// The JS error for this failure of operation `op`: throw it, or reject with it.
    pub fn into_js(self, env: &Env, op: &'static str) -> Error {
        let f = self.during(op);
        let mut value = native_error(&f.first);
        if !f.all.is_empty() {
            value.errors = Some(f.all.iter().map(native_error).collect());
        }
        match js_error(env, value) {
            Ok(e) => e,
            Err(e) => e,
        }
    }
}

/// `value` as a JS `Error` (napi throws only an Error as it is) with its fields set.
fn js_error(env: &Env, value: NativeError) -> Result<Error> {
    let mut e = env.create_error(Error::new(Status::GenericFailure, value.message.clone()))?;
    e.set("name", value.name)?;
    e.set("code", value.code)?;
    e.set("message", value.message)?;
    if let Some(n) = value.errno {
        e.set("errno", n)?;
    }
    if let Some(s) = value.syscall {
        e.set("syscall", s)?;
    }
    if let Some(s) = value.operation {
        e.set("operation", s)?;
    }
    if let Some(s) = value.path {
        e.set("path", s)?;
    }
    if let Some(b) = value.raw_path {
        e.set("rawPath", b)?;
    }
    if let Some(all) = value.errors {
        e.set("errors", all)?;
    }
    Ok(Error::from(e.to_unknown()))
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

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn native_error(e: &CoreError) -> NativeError {
    let (path, raw_path) = match &e.path {
        Some(p) => {
            let (s, raw) = js_path(p.as_os_str().as_bytes().to_vec());
            (Some(s), raw)
        }
        None => (None, None),
    };
    NativeError {
        name: "BtrfsNativeError".into(),
        code: e.code_str().to_string(),
        errno: e.errno().map(|n| -n),
        syscall: non_empty(e.syscall),
        operation: non_empty(e.op),
        path,
        raw_path,
        message: e.message.clone(),
        errors: None,
    }
}
