//! mphub broker library.
