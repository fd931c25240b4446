//! Every `*_max` bound of the broker in one place, with compile-time checks where bounds relate.
//!
//! Nothing here is mutable; values that a user may tune live in `config` and are validated
//! against these ceilings at start.
