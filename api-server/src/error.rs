//! The API server's one error type and its mapping to gRPC status codes.
use berth_core::Invalid;
use tonic::{Code, Status};

/// Everything a request can fail with. Every variant maps to exactly one gRPC
/// code in [`From<ApiError> for Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is malformed (INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The named object does not exist (NOT_FOUND).
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The name or address is taken (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in a state that allows the request (FAILED_PRECONDITION):
    /// a network with endpoints, an overlapping subnet, a port already
    /// published, a node not ready.
    #[error("{0}")]
    FailedPrecondition(String),
    /// An address pool has no room left (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Exhausted(String),
    /// etcd or an agent could not be reached (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// A transaction kept losing races after bounded retries (ABORTED).
    #[error("{0}")]
    Aborted(String),
    /// The requested history is no longer kept (OUT_OF_RANGE): `berth
    /// events --since` before this server's revision clock or etcd's
    /// compaction.
    #[error("{0}")]
    OutOfRange(String),
    /// The request needs a part of berth that is not built yet (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// A bug or corrupt state (INTERNAL).
    #[error("internal error: {0}")]
    Internal(String),
    /// A node's agent failed the command with this code (e.g. a kernel
    /// failure: INTERNAL, with the node, the object and the kernel's words).
    #[error("{message}")]
    Node { code: Code, message: String },
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Exhausted(_) => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::OutOfRange(_) => Code::OutOfRange,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Node { code, .. } => *code,
        }
    }
}

impl From<etcd_client::Error> for ApiError {
    fn from(e: etcd_client::Error) -> Self {
        ApiError::Unavailable(format!("etcd: {e}"))
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(format!("corrupt record in etcd: {e}"))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code() {
        let cases = [
            (
                ApiError::Invalid(Invalid::new("subnet", "bad")),
                Code::InvalidArgument,
            ),
            (ApiError::not_found("network", "x"), Code::NotFound),
            (ApiError::AlreadyExists("x".into()), Code::AlreadyExists),
            (ApiError::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (ApiError::Exhausted("x".into()), Code::ResourceExhausted),
            (ApiError::Unavailable("x".into()), Code::Unavailable),
            (ApiError::Aborted("x".into()), Code::Aborted),
            (ApiError::OutOfRange("x".into()), Code::OutOfRange),
            (ApiError::Unimplemented("x".into()), Code::Unimplemented),
            (ApiError::Internal("x".into()), Code::Internal),
            (
                ApiError::Node {
                    code: Code::Internal,
                    message: "x".into(),
                },
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
        let s = Status::from(ApiError::Invalid(Invalid::new("subnet", "bad")));
        assert_eq!(s.message(), "invalid subnet: bad");
        let s = Status::from(ApiError::not_found("network", "foo"));
        assert_eq!(s.message(), "network \"foo\" not found");
    }
}
