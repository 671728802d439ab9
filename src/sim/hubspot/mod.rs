//! Simulated HubSpot CRM v3 API.
