//! Pages of the list calls (`ListSandboxes`, `ListNetworks`): the request's
//! size and token, and one page of domain values. A token is the id of the
//! last item of the previous page; the next page starts at the first key
//! after it (an etcd range read), so nothing is listed twice. The byte
//! budget that ends a page early is the gRPC edge's (`grpc/page.rs`).
//! Limits: `berth_core::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PAGE_BYTES}`.
use berth_core::limits;

use crate::error::Result;

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Items to read at most.
    pub size: usize,
    /// The id after which the page starts; empty for the first page.
    pub after: String,
}

impl PageRequest {
    pub fn validate(page_size: u32, page_token: &str) -> Result<Self> {
        // Tokens are ids (64 lowercase hex characters) this server handed out.
        if !(page_token.is_empty()
            || (page_token.len() <= 64 && page_token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))))
        {
            return Err(berth_core::Invalid::new(
                "page_token",
                "not a token from a previous page of this list",
            )
            .into());
        }
        Ok(Self {
            size: limits::page_size(page_size),
            after: page_token.to_string(),
        })
    }
}

/// One page of a list, in key (id) order, and whether more follow in the store.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use berth_core::limits::*;

    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            PageRequest::validate(0, "").unwrap(),
            PageRequest {
                size: DEFAULT_PAGE_SIZE,
                after: String::new()
            }
        );
        assert_eq!(PageRequest::validate(5000, "").unwrap().size, MAX_PAGE_SIZE);
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(PageRequest::validate(10, &id).unwrap().after, id);
        for bad in ["../x", "ABC", "x", &"a".repeat(65)] {
            let e = PageRequest::validate(10, bad).unwrap_err().to_string();
            assert_eq!(
                e, "invalid page_token: not a token from a previous page of this list",
                "{bad}"
            );
        }
    }
}
