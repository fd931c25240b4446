//! Partition log storage (see `../shared/DESIGN.md` §3). Being built on the `storage` branch.
