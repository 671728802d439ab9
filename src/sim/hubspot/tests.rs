//! HTTP-level tests of the HubSpot simulator.
