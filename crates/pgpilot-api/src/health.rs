//! Health-check status codes (spec/rest-api.md §1.2).
