//! Writing an OCI layer tar (PAX) of a layer or of its changes against a parent.
