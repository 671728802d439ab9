//! Connector behaviour against the simulators.
