//! A directory as the summary bucket. (Being written: see issue 4.)

/// Placeholder until the summary work lands.
#[derive(Debug)]
pub struct DirSummarySink;
