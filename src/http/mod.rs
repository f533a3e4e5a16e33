//! HTTP/1.x on the wire: reading and parsing heads, deciding where bodies end, streaming
//! bodies, rewriting headers between client and backend, and sluice's own error answers.
//!
//! Nothing here knows about backends or pools; `proxy` puts these pieces together.

pub mod body;
pub mod cookie;
pub mod error;
pub mod framing;
pub mod head;
pub mod headers;
pub mod request;
pub mod stream;
