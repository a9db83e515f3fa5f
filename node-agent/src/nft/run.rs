//! Running nftables commands: in-process through libnftables (the library
//! the `nft` binary itself is made of), loaded at run time with
//! `libloading` so the agent builds without a -dev package; when the
//! library cannot be loaded, by spawning `nft -j -f -` (logged once).
//!
//! One libnftables context serves the whole process, on one thread of its
//! own that nothing else runs on: its netlink socket is opened when the
//! context is made and belongs to the network namespace of that thread
//! then. Every request carries the caller's namespace (its
//! `/proc/thread-self/ns/net`), and the thread enters it and makes a new
//! context when it differs from the one the context was made in, so a
//! command always acts on the namespace of the thread that asked, as a
//! spawned `nft` did (for the agent: its node's namespace).
//!
//! Input is libnftables' JSON (the JSON output flag makes 1.0.6 parse JSON
//! input too), output is JSON.
// The FFI to libnftables is confined to this module (the workspace denies
// unsafe code elsewhere); each block says why it holds.
#![allow(unsafe_code)]
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::io::AsyncWriteExt;

use super::NftError;

/// `NFT_CTX_DEFAULT`.
const CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_JSON`: JSON output, and JSON input parsed first.
const OUTPUT_JSON: c_uint = 1 << 4;
/// The library loaded unless [`use_library`] named another.
pub const LIBRARY: &str = "libnftables.so.1";

static CHOSEN: OnceLock<String> = OnceLock::new();

/// Which library to load (the agent's `--libnftables`); before the first
/// command, else it has no effect (false then).
pub fn use_library(name: &str) -> bool {
    CHOSEN.set(name.to_string()).is_ok()
}

/// The functions of libnftables berth uses.
struct Lib {
    ctx_new: unsafe extern "C" fn(u32) -> *mut c_void,
    ctx_free: unsafe extern "C" fn(*mut c_void),
    set_output_flags: unsafe extern "C" fn(*mut c_void, c_uint),
    buffer_output: unsafe extern "C" fn(*mut c_void) -> c_int,
    buffer_error: unsafe extern "C" fn(*mut c_void) -> c_int,
    output_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    error_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    run: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
    /// Kept loaded for as long as the functions above are used (forever).
    _lib: libloading::Library,
}

impl Lib {
    fn load(name: &str) -> Result<Self, libloading::Error> {
        // SAFETY: loading libnftables runs no initialiser with
        // preconditions; the symbols are looked up with the signatures of
        // nftables/libnftables.h (1.0.x), which have not changed since 0.9.
        unsafe {
            let lib = libloading::Library::new(name)?;
            Ok(Self {
                ctx_new: *lib.get(b"nft_ctx_new\0")?,
                ctx_free: *lib.get(b"nft_ctx_free\0")?,
                set_output_flags: *lib.get(b"nft_ctx_output_set_flags\0")?,
                buffer_output: *lib.get(b"nft_ctx_buffer_output\0")?,
                buffer_error: *lib.get(b"nft_ctx_buffer_error\0")?,
                output_buffer: *lib.get(b"nft_ctx_get_output_buffer\0")?,
                error_buffer: *lib.get(b"nft_ctx_get_error_buffer\0")?,
                run: *lib.get(b"nft_run_cmd_from_buffer\0")?,
                _lib: lib,
            })
        }
    }
}

/// A libnftables context and the namespace (inode) its socket is in.
struct Ctx {
    ptr: *mut c_void,
    netns: u64,
}

/// One request to the context's thread.
struct Job {
    /// The caller's network namespace.
    netns: OwnedFd,
    cmd: CString,
    reply: tokio::sync::oneshot::Sender<Result<String, NftError>>,
}

enum Backend {
    /// The context's thread takes jobs here.
    Library(Mutex<mpsc::Sender<Job>>),
    /// libnftables could not be loaded: `nft` is spawned.
    Process,
}

fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    let name = CHOSEN.get().map_or(LIBRARY, String::as_str);
    BACKEND.get_or_init(|| match Lib::load(name) {
        Ok(lib) => {
            let (tx, rx) = mpsc::channel();
            match std::thread::Builder::new()
                .name("berth-nft".into())
                .spawn(move || serve(lib, rx))
            {
                Ok(_) => {
                    tracing::info!(library = %name, "nftables in process through libnftables");
                    Backend::Library(Mutex::new(tx))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the nftables thread; spawning nft for every change");
                    Backend::Process
                }
            }
        }
        Err(e) => {
            tracing::warn!(library = %name, error = %e, "libnftables not loadable; spawning nft for every nftables change");
            Backend::Process
        }
    })
}

/// Makes the context now, in the calling thread's namespace (the agent's
/// node namespace, at start): its netlink socket takes a low descriptor
/// and keeps it. libnftables waits for netlink answers with `select(2)`,
/// and glibc aborts the process on a descriptor past FD_SETSIZE (1,024);
/// a context made first after a node's DNS responders opened their
/// thousands of sockets aborted the agent (an agent restart with 1,200
/// sandboxes on its node, in the bench). A context remade for another
/// namespace frees the old one first, so it takes the same low descriptor.
pub async fn warm_up() {
    if in_process()
        && let Err(e) = run(br#"{"nftables": [{"list": {"tables": null}}]}"#).await
    {
        tracing::warn!(error = %e, "libnftables: the first listing failed");
    }
}

/// Whether commands run in process (libnftables loaded).
pub fn in_process() -> bool {
    matches!(backend(), Backend::Library(_))
}

/// Runs one JSON command batch (atomic: all or nothing) in the calling
/// thread's network namespace; returns nft's JSON output (empty for
/// changes). nft's complaint is [`NftError::Refused`].
pub async fn run(json: &[u8]) -> Result<String, NftError> {
    match backend() {
        Backend::Library(tx) => {
            let netns = std::fs::File::open("/proc/thread-self/ns/net")?.into();
            let cmd = CString::new(json).map_err(|_| NftError::Refused("a NUL byte in the batch".into()))?;
            let (reply, rx) = tokio::sync::oneshot::channel();
            let job = Job { netns, cmd, reply };
            tx.lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(job)
                .map_err(|_| NftError::Refused("the nftables thread is gone".into()))?;
            rx.await
                .map_err(|_| NftError::Refused("the nftables thread dropped the request".into()))?
        }
        Backend::Process => spawn(json).await,
    }
}

/// The context's thread: one job at a time.
fn serve(lib: Lib, jobs: mpsc::Receiver<Job>) {
    let mut ctx: Option<Ctx> = None;
    for job in jobs {
        let result = run_job(&lib, &mut ctx, &job);
        let _ = job.reply.send(result);
    }
    if let Some(c) = ctx {
        // SAFETY: made by nft_ctx_new, freed once.
        unsafe { (lib.ctx_free)(c.ptr) };
    }
}

fn run_job(lib: &Lib, ctx: &mut Option<Ctx>, job: &Job) -> Result<String, NftError> {
    let netns = std::fs::File::from(job.netns.try_clone()?).metadata()?.ino();
    if ctx.as_ref().is_none_or(|c| c.netns != netns) {
        if let Some(old) = ctx.take() {
            // SAFETY: made by nft_ctx_new, freed once.
            unsafe { (lib.ctx_free)(old.ptr) };
        }
        nix::sched::setns(job.netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| NftError::Spawn(std::io::Error::from(e)))?;
        // SAFETY: plain constructor; the buffers it sets up are the
        // context's own. Its netlink socket is opened now, in the
        // namespace this thread just entered.
        let ptr = unsafe { (lib.ctx_new)(CTX_DEFAULT) };
        if ptr.is_null() {
            return Err(NftError::Refused("nft_ctx_new failed".into()));
        }
        // SAFETY: ptr is a live context.
        unsafe {
            (lib.set_output_flags)(ptr, OUTPUT_JSON);
            (lib.buffer_output)(ptr);
            (lib.buffer_error)(ptr);
        }
        *ctx = Some(Ctx { ptr, netns });
    }
    let c = ctx.as_ref().expect("made above");
    // SAFETY: a live context and a NUL-terminated command; the buffers
    // returned stay valid until the next call on the context, and are
    // copied before it.
    unsafe {
        let rc = (lib.run)(c.ptr, job.cmd.as_ptr());
        let out = text((lib.output_buffer)(c.ptr));
        let err = text((lib.error_buffer)(c.ptr));
        if rc != 0 {
            return Err(NftError::Refused(err.trim().to_string()));
        }
        Ok(out)
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The fallback: `nft -j -f -` with the C locale, in the calling thread's
/// namespace (a child is forked from it).
async fn spawn(json: &[u8]) -> Result<String, NftError> {
    let mut child = tokio::process::Command::new("nft")
        .env("LC_ALL", "C")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(json).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
