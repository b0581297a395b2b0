//! Read-side latency figures against an emulator with synthetic events (called from tests or
//! the bench binary).
