//! Compression detection and in-process (de)compression: plain tar, gzip, zstd.
