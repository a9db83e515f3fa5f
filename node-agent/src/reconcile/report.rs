//! Results: every object's last outcome (ok, or an error of a typed kind),
//! kept per object and published by `AgentService.Status`; and the error a
//! command answers with.
use std::collections::BTreeMap;
use std::time::SystemTime;

use super::action::ObjectKey;
use crate::kernel::KernelError;

/// Why an object could not be realised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A name berth needs is held by something that is not berth's.
    Conflict,
    /// The kernel refused a change.
    Kernel,
    /// A file or process operation failed.
    Io,
    /// Not attempted: an object it depends on failed.
    Blocked,
}

/// One object's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    pub kind: ErrorKind,
    pub message: String,
    /// The kernel's errno, when it gave one.
    pub errno: Option<i32>,
}

impl ObjectError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            errno: None,
        }
    }

    pub fn io(op: &str, e: &std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Io,
            message: format!("{op}: {e}"),
            errno: e.raw_os_error(),
        }
    }
}

impl From<KernelError> for ObjectError {
    fn from(e: KernelError) -> Self {
        let kind = match e {
            KernelError::Io { .. } => ErrorKind::Io,
            KernelError::Foreign(_) => ErrorKind::Conflict,
            _ => ErrorKind::Kernel,
        };
        Self {
            kind,
            errno: e.errno(),
            message: e.to_string(),
        }
    }
}

impl From<crate::nft::NftError> for ObjectError {
    fn from(e: crate::nft::NftError) -> Self {
        let kind = match e {
            crate::nft::NftError::Refused(_) => ErrorKind::Kernel,
            _ => ErrorKind::Io,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<crate::proxy::ProxyError> for ObjectError {
    fn from(e: crate::proxy::ProxyError) -> Self {
        let mut o = Self::new(ErrorKind::Kernel, e.to_string());
        o.errno = e.source.raw_os_error();
        o
    }
}

/// An object's last outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: Result<(), ObjectError>,
    /// The sandbox whose object this is, if any.
    pub sandbox: Option<String>,
    pub at: SystemTime,
}

/// Every object's last outcome.
pub type Results = BTreeMap<ObjectKey, Outcome>;

/// What a command answers with when its objects did not all come out right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// Something that is not berth's holds a name the request needs (FAILED_PRECONDITION).
    #[error("{0}")]
    Conflict(String),
    /// The kernel refused a change (FAILED_PRECONDITION or INTERNAL by errno).
    #[error("{message}")]
    Kernel { message: String, errno: Option<i32> },
    /// The command realises an older generation than the agent holds, or a
    /// removed sandbox (ABORTED).
    #[error("{0}")]
    Stale(String),
    /// The command's spec does not parse (INVALID_ARGUMENT).
    #[error("{0}")]
    BadSpec(String),
    /// Anything else (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// The error a failed object gives the command that needed it.
    pub fn from_object(key: &ObjectKey, e: &ObjectError) -> Self {
        let message = format!("{key}: {}", e.message);
        match e.kind {
            ErrorKind::Conflict => AgentError::Conflict(message),
            ErrorKind::Kernel | ErrorKind::Blocked => AgentError::Kernel {
                message,
                errno: e.errno,
            },
            ErrorKind::Io => AgentError::Internal(message),
        }
    }

    /// The gRPC code: refusals that depend on the node's state are
    /// FAILED_PRECONDITION, other kernel failures INTERNAL.
    pub fn code(&self) -> tonic::Code {
        match self {
            AgentError::Conflict(_) => tonic::Code::FailedPrecondition,
            AgentError::Kernel { errno, .. } => match errno {
                Some(
                    libc::EEXIST
                    | libc::EBUSY
                    | libc::EADDRINUSE
                    | libc::ENOSPC
                    | libc::ERANGE
                    | libc::EINVAL
                    | libc::EOPNOTSUPP
                    | libc::ENODEV
                    | libc::ENOENT
                    | libc::ENOBUFS,
                ) => tonic::Code::FailedPrecondition,
                _ => tonic::Code::Internal,
            },
            AgentError::Stale(_) => tonic::Code::Aborted,
            AgentError::BadSpec(_) => tonic::Code::InvalidArgument,
            AgentError::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
