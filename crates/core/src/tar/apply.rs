//! Applying an OCI layer tar to a layer root, confined to it whatever the stream holds.
