//! The socket-option layer (being written).
