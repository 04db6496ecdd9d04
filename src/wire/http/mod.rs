//! Sans-IO HTTP/1.1 (docs/protocol.md §1.3, §2): request heads, body framing, the framer that turns
//! bytes into requests, and the response writers.
//!
//! The connection driver owns the buffers and the policy (routing, 404/405/401/411/415/...);
//! this layer reports what a request says and which framing errors it has.

pub mod body;
pub mod error;
pub mod framer;
pub mod parse;
pub mod response;

pub use body::{check_content_length, ChunkedDecoder, Decoded};
pub use error::HttpError;
pub use framer::{Framer, Interim, Step};
pub use parse::{
    is_json_content_type, parse_head, percent_decode, query_pairs, BodyFraming, HeadStatus, Method,
    RequestHead, Version,
};
pub use response::{
    reason, write_chunk, write_error, write_head, write_json, write_last_chunk, Persist,
    CONTINUE_100,
};
