//! tally on AWS (adapters). Placeholder: being written.
