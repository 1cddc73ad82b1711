//! HTTP caching semantics for a shared cache, with no IO.
//!
//! Every function here takes the current time as a parameter, so the same logic runs in the
//! proxy, in tests, and in a simulator on a virtual clock. Rule references are to RFC 9111
//! (HTTP Caching) unless a module says otherwise.

pub mod accept_encoding;
pub mod authority;
pub mod cache_control;
pub mod cache_status;
pub mod conditional;
pub mod freshness;
pub mod hop_by_hop;
pub mod key;
pub mod policy;
pub mod range;
pub mod targeted;
pub mod vary;

pub use authority::{Authority, AuthorityError};
pub use cache_control::{RequestCacheControl, ResponseCacheControl};
pub use cache_status::CacheStatus;
pub use freshness::{Freshness, ResponseTimes};
pub use key::{CacheKey, KeyRules};
pub use policy::{CachePolicy, NotStorable, PolicyConfig};
