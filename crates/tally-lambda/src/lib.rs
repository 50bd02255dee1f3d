//! tally Lambda functions. Placeholder: being written.
