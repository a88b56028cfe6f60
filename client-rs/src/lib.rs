//! mphub-client: placeholder until its issue.
