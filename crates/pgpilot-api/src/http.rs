//! Minimal HTTP/1.0 request parsing and response writing.
